//! Mobility options (RFC 6275 §6.2) and the ones NEMO and RFC 4285 add.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Option Type  | Option Length |   Option Data...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Offsets and alignment are counted from the first octet of the Mobility
//! Header, as RFC 6275 §6.2.1 and RFC 8200 §4.2 count them.

use std::fmt;
use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::fields::{Lifetime, NtpTimestamp};
use super::{addr_at, be16, DecodeError, EncodeError};

/// Where each option's fields lie, in octets from the start of its Option
/// Data (after type and length): the one place `data_len`, `write_data`
/// and `decode` take them from. `LEN` is a fixed-size option's data length;
/// a field that runs to the end is a `RangeFrom`.
pub mod field {
    /// Where the Option Data starts, from the option's first octet (after
    /// Option Type and Option Length; RFC 6275 §6.2.1).
    pub const DATA: usize = 2;

    /// Binding Refresh Advice (RFC 6275 §6.2.4).
    pub mod refresh_advice {
        use std::ops::Range;
        /// Refresh Interval, in units of 4 seconds.
        pub const INTERVAL: Range<usize> = 0..2;
        /// Option Data length.
        pub const LEN: usize = 2;
    }
    /// Alternate Care-of Address (RFC 6275 §6.2.5).
    pub mod alternate_care_of {
        use std::ops::Range;
        /// The address.
        pub const ADDRESS: Range<usize> = 0..16;
        /// Option Data length.
        pub const LEN: usize = 16;
    }
    /// Nonce Indices (RFC 6275 §6.2.6).
    pub mod nonce_indices {
        use std::ops::Range;
        /// Home Nonce Index.
        pub const HOME: Range<usize> = 0..2;
        /// Care-of Nonce Index.
        pub const CARE_OF: Range<usize> = 2..4;
        /// Option Data length.
        pub const LEN: usize = 4;
    }
    /// Mobile Network Prefix (RFC 3963 §4.3): a reserved octet first.
    pub mod network_prefix {
        use std::ops::Range;
        /// Prefix Length.
        pub const PREFIX_LEN: usize = 1;
        /// Mobile Network Prefix.
        pub const PREFIX: Range<usize> = 2..18;
        /// Option Data length.
        pub const LEN: usize = 18;
    }
    /// Mobile Node Identifier (RFC 4283 §3).
    pub mod node_identifier {
        use std::ops::RangeFrom;
        /// Subtype.
        pub const SUBTYPE: usize = 0;
        /// Identifier.
        pub const IDENTIFIER: RangeFrom<usize> = 1..;
    }
    /// Mobility Message Authentication (RFC 4285 §5).
    pub mod authentication {
        use std::ops::{Range, RangeFrom};
        /// Subtype.
        pub const SUBTYPE: usize = 0;
        /// Mobility SPI.
        pub const SPI: Range<usize> = 1..5;
        /// Authentication Data.
        pub const DATA: RangeFrom<usize> = 5..;
    }
    /// Mobility Message Replay Protection (RFC 4285 §6).
    pub mod replay_protection {
        use std::ops::Range;
        /// Timestamp (NTP format).
        pub const TIMESTAMP: Range<usize> = 0..8;
        /// Option Data length.
        pub const LEN: usize = 8;
    }
}

/// A mobility option type (IANA "Mobility Options" registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OptionType(pub u8);

impl OptionType {
    /// Pad1 (RFC 6275 §6.2.2): one octet, no length field.
    pub const PAD1: OptionType = OptionType(0);
    /// PadN (RFC 6275 §6.2.3).
    pub const PADN: OptionType = OptionType(1);
    /// Binding Refresh Advice (RFC 6275 §6.2.4).
    pub const BINDING_REFRESH_ADVICE: OptionType = OptionType(2);
    /// Alternate Care-of Address (RFC 6275 §6.2.5).
    pub const ALTERNATE_CARE_OF_ADDRESS: OptionType = OptionType(3);
    /// Nonce Indices (RFC 6275 §6.2.6).
    pub const NONCE_INDICES: OptionType = OptionType(4);
    /// Binding Authorization Data (RFC 6275 §6.2.7).
    pub const BINDING_AUTHORIZATION_DATA: OptionType = OptionType(5);
    /// Mobile Network Prefix (RFC 3963 §4.3).
    pub const MOBILE_NETWORK_PREFIX: OptionType = OptionType(6);
    /// Mobile Node Identifier (RFC 4283 §3).
    pub const MOBILE_NODE_IDENTIFIER: OptionType = OptionType(8);
    /// Mobility Message Authentication, AUTH-OPTION-TYPE (RFC 4285 §5).
    pub const AUTHENTICATION: OptionType = OptionType(9);
    /// Mobility Message Replay Protection, MESG-ID-OPTION-TYPE (RFC 4285 §6).
    pub const REPLAY_PROTECTION: OptionType = OptionType(10);
}

/// The Mobile Node Identifier subtype for a Network Access Identifier
/// (RFC 4283 §3.1).
pub const MN_ID_SUBTYPE_NAI: u8 = 1;

/// Subtype of the mobility message authentication option (RFC 4285 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthSubtype(pub u8);

impl AuthSubtype {
    /// MN-HA: shared key between mobile node and home agent (RFC 4285 §5.1).
    pub const MN_HA: AuthSubtype = AuthSubtype(1);
    /// MN-AAA: authenticated by a AAA server (RFC 4285 §5.2).
    pub const MN_AAA: AuthSubtype = AuthSubtype(2);
}

/// A Mobile Network Prefix as carried in the option (RFC 3963 §4.3).
///
/// Kept as received, not as an [`Ipv6Net`], so that a prefix length above
/// 128 or host bits beyond the length reach the home agent, which answers
/// them with status 141 (Invalid Prefix) instead of losing them in decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MobileNetworkPrefix {
    /// The Prefix Length field.
    pub prefix_len: u8,
    /// The Mobile Network Prefix field.
    pub prefix: Ipv6Addr,
}

impl MobileNetworkPrefix {
    /// The option for a prefix.
    pub fn new(net: Ipv6Net) -> MobileNetworkPrefix {
        MobileNetworkPrefix {
            prefix_len: net.prefix_len(),
            prefix: net.network(),
        }
    }

    /// The prefix, when the length is at most 128 and no bit beyond the
    /// length is set; `None` otherwise.
    pub fn to_net(&self) -> Option<Ipv6Net> {
        let net = Ipv6Net::new(self.prefix, self.prefix_len).ok()?;
        (net.network() == self.prefix).then_some(net)
    }
}

impl fmt::Display for MobileNetworkPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.prefix, self.prefix_len)
    }
}

/// A mobility option this library understands.
///
/// Pad1 and PadN are not values: the decoder skips them and the encoder
/// places them where alignment needs them. Unknown option types are skipped
/// by the decoder as RFC 6275 §6.2.1 requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MobilityOption {
    /// Binding Refresh Advice (RFC 6275 §6.2.4): when the mobile node should
    /// refresh, in 4-second units. Alignment 2n.
    ///
    /// ```text
    ///                                 +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ///                                 |   Type = 2    |   Length = 2  |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |       Refresh Interval        |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    BindingRefreshAdvice {
        /// The refresh interval.
        refresh_interval: Lifetime,
    },
    /// Alternate Care-of Address (RFC 6275 §6.2.5). Alignment 8n+6.
    ///
    /// ```text
    ///                                 +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ///                                 |   Type = 3    |  Length = 16  |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                   Alternate Care-of Address (128 bits)        |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    AlternateCareOfAddress(Ipv6Addr),
    /// Nonce Indices (RFC 6275 §6.2.6). Alignment 2n.
    ///
    /// ```text
    ///                                 +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ///                                 |   Type = 4    |   Length = 4  |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |         Home Nonce Index      |     Care-of Nonce Index       |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    NonceIndices {
        /// Home Nonce Index.
        home: u16,
        /// Care-of Nonce Index.
        care_of: u16,
    },
    /// Binding Authorization Data (RFC 6275 §6.2.7). Must be last; implicit
    /// alignment 8n+2.
    ///
    /// ```text
    ///                                 +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ///                                 |   Type = 5    | Option Length |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                         Authenticator                         |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    BindingAuthorizationData(Vec<u8>),
    /// Mobile Network Prefix (RFC 3963 §4.3). Alignment 8n+4.
    ///
    /// ```text
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |      Type     |   Length      |   Reserved    | Prefix Length |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                   Mobile Network Prefix (128 bits)            |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    MobileNetworkPrefix(MobileNetworkPrefix),
    /// Mobile Node Identifier (RFC 4283 §3). No alignment; must come before
    /// any authentication option (RFC 4283 §3.2).
    ///
    /// ```text
    ///                                 +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ///                                 |  Option Type  | Option Length |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |  Subtype      |          Identifier ...
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    MobileNodeIdentifier {
        /// Subtype; [`MN_ID_SUBTYPE_NAI`] for an NAI (`user@realm`).
        subtype: u8,
        /// The identifier.
        identifier: Vec<u8>,
    },
    /// Mobility Message Authentication (RFC 4285 §5). Alignment 4n+1; the
    /// encoder also makes it end the message, since RFC 4285 §5.1 wants it
    /// last.
    ///
    /// ```text
    ///                 +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ///                 |  Option Type  | Option Length |  Subtype      |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                  Mobility SPI                                 |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                  Authentication Data ....
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    Authentication {
        /// Who authenticates: MN-HA or MN-AAA.
        subtype: AuthSubtype,
        /// Mobility SPI, the index of the security association.
        spi: u32,
        /// Authentication Data.
        data: Vec<u8>,
    },
    /// Mobility Message Replay Protection (RFC 4285 §6). Alignment 8n+2.
    ///
    /// ```text
    ///                                 +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ///                                 |  Option Type  | Option Length |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                  Timestamp (64 bits, NTP format)              |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    ReplayProtection(NtpTimestamp),
}

impl MobilityOption {
    /// The option's type.
    pub fn option_type(&self) -> OptionType {
        match self {
            MobilityOption::BindingRefreshAdvice { .. } => OptionType::BINDING_REFRESH_ADVICE,
            MobilityOption::AlternateCareOfAddress(_) => OptionType::ALTERNATE_CARE_OF_ADDRESS,
            MobilityOption::NonceIndices { .. } => OptionType::NONCE_INDICES,
            MobilityOption::BindingAuthorizationData(_) => OptionType::BINDING_AUTHORIZATION_DATA,
            MobilityOption::MobileNetworkPrefix(_) => OptionType::MOBILE_NETWORK_PREFIX,
            MobilityOption::MobileNodeIdentifier { .. } => OptionType::MOBILE_NODE_IDENTIFIER,
            MobilityOption::Authentication { .. } => OptionType::AUTHENTICATION,
            MobilityOption::ReplayProtection(_) => OptionType::REPLAY_PROTECTION,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            MobilityOption::BindingRefreshAdvice { .. } => "Binding Refresh Advice",
            MobilityOption::AlternateCareOfAddress(_) => "Alternate Care-of Address",
            MobilityOption::NonceIndices { .. } => "Nonce Indices",
            MobilityOption::BindingAuthorizationData(_) => "Binding Authorization Data",
            MobilityOption::MobileNetworkPrefix(_) => "Mobile Network Prefix",
            MobilityOption::MobileNodeIdentifier { .. } => "Mobile Node Identifier",
            MobilityOption::Authentication { .. } => "Mobility Message Authentication",
            MobilityOption::ReplayProtection(_) => "Mobility Message Replay Protection",
        }
    }

    /// Alignment of the Option Type octet as (modulus, remainder): the option
    /// starts at an offset `modulus * n + remainder` from the start of the
    /// Mobility Header.
    fn alignment(&self) -> (usize, usize) {
        match self {
            // RFC 6275 §6.2.4 and §6.2.6: 2n.
            MobilityOption::BindingRefreshAdvice { .. } | MobilityOption::NonceIndices { .. } => {
                (2, 0)
            }
            // RFC 6275 §6.2.5: 8n+6.
            MobilityOption::AlternateCareOfAddress(_) => (8, 6),
            // RFC 6275 §6.2.7: implicitly 8n+2, being last.
            MobilityOption::BindingAuthorizationData(_) => (8, 2),
            // RFC 3963 §4.3: 8n+4.
            MobilityOption::MobileNetworkPrefix(_) => (8, 4),
            // RFC 4283 §3: no alignment requirement.
            MobilityOption::MobileNodeIdentifier { .. } => (1, 0),
            // RFC 4285 §5: 4n+1.
            MobilityOption::Authentication { .. } => (4, 1),
            // RFC 4285 §6: 8n+2.
            MobilityOption::ReplayProtection(_) => (8, 2),
        }
    }

    /// Options that must be the last in the message, with no padding after
    /// them (RFC 6275 §6.2, RFC 4285 §5.1).
    fn ends_message(&self) -> bool {
        matches!(
            self,
            MobilityOption::BindingAuthorizationData(_) | MobilityOption::Authentication { .. }
        )
    }

    /// Length of the Option Data, the value of the Option Length field.
    fn data_len(&self) -> usize {
        match self {
            MobilityOption::BindingRefreshAdvice { .. } => field::refresh_advice::LEN,
            MobilityOption::AlternateCareOfAddress(_) => field::alternate_care_of::LEN,
            MobilityOption::NonceIndices { .. } => field::nonce_indices::LEN,
            MobilityOption::BindingAuthorizationData(data) => data.len(),
            MobilityOption::MobileNetworkPrefix(_) => field::network_prefix::LEN,
            MobilityOption::MobileNodeIdentifier { identifier, .. } => {
                field::node_identifier::IDENTIFIER.start + identifier.len()
            }
            MobilityOption::Authentication { data, .. } => {
                field::authentication::DATA.start + data.len()
            }
            MobilityOption::ReplayProtection(_) => field::replay_protection::LEN,
        }
    }

    /// Appends the Option Data, each field where [`field`] puts it.
    fn write_data(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.data_len(), 0);
        let data = &mut out[start..];
        match self {
            MobilityOption::BindingRefreshAdvice { refresh_interval } => {
                data[field::refresh_advice::INTERVAL]
                    .copy_from_slice(&refresh_interval.0.to_be_bytes());
            }
            MobilityOption::AlternateCareOfAddress(address) => {
                data[field::alternate_care_of::ADDRESS].copy_from_slice(&address.octets());
            }
            MobilityOption::NonceIndices { home, care_of } => {
                data[field::nonce_indices::HOME].copy_from_slice(&home.to_be_bytes());
                data[field::nonce_indices::CARE_OF].copy_from_slice(&care_of.to_be_bytes());
            }
            MobilityOption::BindingAuthorizationData(bytes) => data.copy_from_slice(bytes),
            MobilityOption::MobileNetworkPrefix(mnp) => {
                data[field::network_prefix::PREFIX_LEN] = mnp.prefix_len;
                data[field::network_prefix::PREFIX].copy_from_slice(&mnp.prefix.octets());
            }
            MobilityOption::MobileNodeIdentifier {
                subtype,
                identifier,
            } => {
                data[field::node_identifier::SUBTYPE] = *subtype;
                data[field::node_identifier::IDENTIFIER].copy_from_slice(identifier);
            }
            MobilityOption::Authentication {
                subtype,
                spi,
                data: authenticator,
            } => {
                data[field::authentication::SUBTYPE] = subtype.0;
                data[field::authentication::SPI].copy_from_slice(&spi.to_be_bytes());
                data[field::authentication::DATA].copy_from_slice(authenticator);
            }
            MobilityOption::ReplayProtection(timestamp) => {
                data[field::replay_protection::TIMESTAMP]
                    .copy_from_slice(&timestamp.0.to_be_bytes());
            }
        }
    }

    /// Decodes one raw option. Padding and unknown types give `Ok(None)`:
    /// RFC 6275 §6.2.1 has the receiver skip options it does not recognize.
    pub fn decode(raw: &RawOption<'_>) -> Result<Option<MobilityOption>, DecodeError> {
        let data = raw.data;
        let exact = |option: &'static str, len: usize, expected: &'static str| {
            if data.len() == len {
                Ok(())
            } else {
                Err(DecodeError::BadOptionLength {
                    option,
                    length: data.len(),
                    expected,
                })
            }
        };
        let option = match OptionType(raw.option_type) {
            OptionType::PAD1 | OptionType::PADN => return Ok(None),
            OptionType::BINDING_REFRESH_ADVICE => {
                exact("Binding Refresh Advice", field::refresh_advice::LEN, "2")?;
                MobilityOption::BindingRefreshAdvice {
                    refresh_interval: Lifetime(be16(data, field::refresh_advice::INTERVAL.start)),
                }
            }
            OptionType::ALTERNATE_CARE_OF_ADDRESS => {
                exact(
                    "Alternate Care-of Address",
                    field::alternate_care_of::LEN,
                    "16",
                )?;
                MobilityOption::AlternateCareOfAddress(addr_at(
                    data,
                    field::alternate_care_of::ADDRESS.start,
                ))
            }
            OptionType::NONCE_INDICES => {
                exact("Nonce Indices", field::nonce_indices::LEN, "4")?;
                MobilityOption::NonceIndices {
                    home: be16(data, field::nonce_indices::HOME.start),
                    care_of: be16(data, field::nonce_indices::CARE_OF.start),
                }
            }
            OptionType::BINDING_AUTHORIZATION_DATA => {
                MobilityOption::BindingAuthorizationData(data.to_vec())
            }
            OptionType::MOBILE_NETWORK_PREFIX => {
                exact("Mobile Network Prefix", field::network_prefix::LEN, "18")?;
                MobilityOption::MobileNetworkPrefix(MobileNetworkPrefix {
                    prefix_len: data[field::network_prefix::PREFIX_LEN],
                    prefix: addr_at(data, field::network_prefix::PREFIX.start),
                })
            }
            OptionType::MOBILE_NODE_IDENTIFIER => {
                let Some((&subtype, identifier)) = data.split_first() else {
                    return Err(DecodeError::BadOptionLength {
                        option: "Mobile Node Identifier",
                        length: 0,
                        expected: "at least 1",
                    });
                };
                MobilityOption::MobileNodeIdentifier {
                    subtype,
                    identifier: identifier.to_vec(),
                }
            }
            OptionType::AUTHENTICATION => {
                let Some(spi) = data.get(field::authentication::SPI) else {
                    return Err(DecodeError::BadOptionLength {
                        option: "Mobility Message Authentication",
                        length: data.len(),
                        expected: "at least 5",
                    });
                };
                MobilityOption::Authentication {
                    subtype: AuthSubtype(data[field::authentication::SUBTYPE]),
                    spi: u32::from_be_bytes([spi[0], spi[1], spi[2], spi[3]]),
                    data: data[field::authentication::DATA].to_vec(),
                }
            }
            OptionType::REPLAY_PROTECTION => {
                exact(
                    "Mobility Message Replay Protection",
                    field::replay_protection::LEN,
                    "8",
                )?;
                let mut octets = [0u8; 8];
                octets.copy_from_slice(data);
                MobilityOption::ReplayProtection(NtpTimestamp(u64::from_be_bytes(octets)))
            }
            OptionType(_) => return Ok(None),
        };
        Ok(Some(option))
    }
}

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
