//! The options area of a Mobility Header (RFC 6275 §6.2.1): walking it
//! option by option, padding included, and laying options out with the
//! padding their alignment needs. What each option holds is [`super::option`].

use super::option::{field, MobilityOption, OptionType};
use super::{DecodeError, EncodeError};

/// One option as it sits in the message, padding included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawOption<'a> {
    /// Offset of the Option Type octet from the start of the Mobility Header.
    pub offset: usize,
    /// The Option Type.
    pub option_type: u8,
    /// The Option Data (empty for Pad1).
    pub data: &'a [u8],
}

/// Walks the options area of a Mobility Header (RFC 6275 §6.2.1), yielding
/// every option including padding and unknown types, and an error (once,
/// then nothing) when an option runs past the end.
#[derive(Debug, Clone)]
pub struct RawOptions<'a> {
    mh: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> RawOptions<'a> {
    /// Options of the Mobility Header `mh`, starting at `offset`.
    pub fn new(mh: &'a [u8], offset: usize) -> RawOptions<'a> {
        RawOptions {
            mh,
            offset,
            failed: false,
        }
    }
}

impl<'a> Iterator for RawOptions<'a> {
    type Item = Result<RawOption<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.mh.len() {
            return None;
        }
        let offset = self.offset;
        let option_type = self.mh[offset];
        if OptionType(option_type) == OptionType::PAD1 {
            self.offset += 1;
            return Some(Ok(RawOption {
                offset,
                option_type,
                data: &[],
            }));
        }
        let data_start = offset + field::DATA;
        let data_end = self
            .mh
            .get(offset + 1)
            .map(|&len| data_start + usize::from(len));
        match data_end {
            Some(end) if end <= self.mh.len() => {
                self.offset = end;
                Some(Ok(RawOption {
                    offset,
                    option_type,
                    data: &self.mh[data_start..end],
                }))
            }
            _ => {
                self.failed = true;
                Some(Err(DecodeError::OptionOverrun {
                    option_type,
                    offset,
                }))
            }
        }
    }
}

/// Decodes every option of the options area that starts at `offset`.
pub(super) fn decode_options(mh: &[u8], offset: usize) -> Result<Vec<MobilityOption>, DecodeError> {
    let mut options = Vec::new();
    for raw in RawOptions::new(mh, offset) {
        if let Some(option) = MobilityOption::decode(&raw?)? {
            options.push(option);
        }
    }
    Ok(options)
}

/// Appends `count` octets of padding: Pad1 for one, PadN for more
/// (RFC 6275 §6.2.2, §6.2.3). `count` is below 16 wherever this is used.
fn push_padding(out: &mut Vec<u8>, count: usize) {
    match count {
        0 => {}
        1 => out.push(OptionType::PAD1.0),
        n => {
            out.push(OptionType::PADN.0);
            out.push((n - 2) as u8);
            out.resize(out.len() + n - 2, 0);
        }
    }
}

/// Appends `options` to `out`, which holds the Mobility Header so far, with
/// the padding each option's alignment needs, and pads the whole to a
/// multiple of 8 octets (RFC 6275 §6.1.1). An authentication option placed
/// last ends the message with no padding after it, as RFC 6275 §6.2 and
/// RFC 4285 §5.1 require, whenever its length allows.
pub(super) fn encode_options(
    out: &mut Vec<u8>,
    options: &[MobilityOption],
) -> Result<(), EncodeError> {
    for (index, option) in options.iter().enumerate() {
        let data_len = option.data_len();
        if data_len > usize::from(u8::MAX) {
            return Err(EncodeError::OptionTooLong {
                option: option.name(),
                length: data_len,
            });
        }
        let (modulus, remainder) = option.alignment();
        let mut pad = (remainder + modulus - out.len() % modulus) % modulus;
        if index + 1 == options.len() && option.ends_message() {
            // Grow the padding in steps of the alignment until the option
            // ends on an 8-octet boundary; eight steps cover every residue.
            if let Some(fit) = (0..8)
                .map(|step| pad + step * modulus)
                .find(|p| (out.len() + p + 2 + data_len).is_multiple_of(8))
            {
                pad = fit;
            }
        }
        push_padding(out, pad);
        out.push(option.option_type().0);
        out.push(data_len as u8);
        option.write_data(out);
    }
    push_padding(out, (8 - out.len() % 8) % 8);
    Ok(())
}
