//! The replication stream between the members of a home-agent pair, over
//! TCP: length-prefixed frames. The first three authenticate both members
//! to each other on the pair's token without sending it (`secure.rs`);
//! every frame after them carries a MAC under a key of the session and
//! its direction, over an implicit sequence number.
//!
//! ```text
//! frame     = length:u32 (of kind, body and mac) kind:u8 body [mac:16]
//! Hello     (6) standby -> active: nonce:32
//! Challenge (7) active -> standby: nonce:32 proof:32   (the active knows the token)
//! Proof     (8) standby -> active: in_step_until:u64 (ms since the Unix epoch)
//!                                  proof:32            (the standby knows it)
//! -- every frame below carries its mac --
//! Offer     (5) standby -> active: last:u8 count:u32 (key:16 record:u16-prefixed)*
//!                                                      (its own cache, for a merge)
//! Snapshot  (2) active -> standby: as Offer
//! Batch     (3) active -> standby: id:u64 count:u32 change*
//!           change = 1 key:16 record:u16-prefixed   (upsert)
//!                  | 2 key:16                        (removal)
//! Ack       (4) standby -> active: id:u64            (the batch is on its disk)
//! ```
//!
//! Kind 1 was the hello of nemo-ha before the handshake (the token in
//! clear): it is refused, named. A record is the store's
//! (`crate::store::encode`), so what the standby keeps is byte for byte
//! what the active keeps.

use std::net::Ipv6Addr;
use std::sync::Arc;

use nemo::ha::Binding;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::messages::Replicated;
use crate::store;

/// Largest frame accepted, in octets: a snapshot frame holds at most
/// [`SNAPSHOT_CHUNK`] bindings of a few hundred octets each.
pub const MAX_FRAME: usize = 8 << 20;
/// Bindings per snapshot frame, at most.
pub const SNAPSHOT_CHUNK: usize = 4096;
/// Octets of bindings or changes an encoder puts in one frame, at most: a
/// frame then stays well under [`MAX_FRAME`] whatever the bindings hold
/// (up to `nemo::ha::MAX_PREFIXES` prefixes each, some 4.4 KB).
pub const FRAME_BUDGET: usize = MAX_FRAME / 2;

/// Octets a binding takes in a frame (its key, its record's length and
/// the record).
fn record_octets(binding: &Binding) -> usize {
    16 + 2 + store::encoded_len(binding)
}

/// Splits `items` into runs that each fit [`FRAME_BUDGET`] (and hold at
/// most `most` items), by `octets` each; an empty list gives one empty run.
pub fn runs<T>(items: Vec<T>, most: usize, octets: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut runs = vec![Vec::new()];
    let mut size = 0;
    for item in items {
        let item_octets = octets(&item);
        let full = runs.last().is_some_and(|run: &Vec<T>| {
            !run.is_empty() && (run.len() >= most || size + item_octets > FRAME_BUDGET)
        });
        if full {
            runs.push(Vec::new());
            size = 0;
        }
        size += item_octets;
        if let Some(run) = runs.last_mut() {
            run.push(item);
        }
    }
    runs
}

/// Octets a binding takes in a snapshot or an offer.
pub fn binding_octets(binding: &Binding) -> usize {
    record_octets(binding)
}

/// Octets a change takes in a batch.
pub fn change_octets(change: &Replicated) -> usize {
    match change {
        Replicated::Upsert(binding) => 1 + record_octets(binding),
        Replicated::Removed(_) => 1 + 16,
    }
}
/// Octets of a handshake nonce and of a proof (HMAC-SHA256).
pub const NONCE_LEN: usize = 32;
/// The kind octet of the hello nemo-ha sent before the handshake.
const CLEAR_TOKEN_HELLO: u8 = 1;

/// The kind octet of each frame (the diagram above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Snapshot = 2,
    Batch = 3,
    Ack = 4,
    Offer = 5,
    Hello = 6,
    Challenge = 7,
    Proof = 8,
}

impl Kind {
    fn of(octet: u8) -> Option<Kind> {
        [
            Kind::Snapshot,
            Kind::Batch,
            Kind::Ack,
            Kind::Offer,
            Kind::Hello,
            Kind::Challenge,
            Kind::Proof,
        ]
        .into_iter()
        .find(|kind| *kind as u8 == octet)
    }
}

/// The tag octet of each change in a batch.
const UPSERT: u8 = 1;
const REMOVAL: u8 = 2;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The standby opens the handshake with its nonce.
    Hello {
        /// Fresh random octets of the standby's.
        nonce: [u8; NONCE_LEN],
    },
    /// The active's nonce, and its proof that it knows the token.
    Challenge {
        /// Fresh random octets of the active's.
        nonce: [u8; NONCE_LEN],
        /// HMAC of both nonces under the token (`secure::proof`).
        proof: [u8; NONCE_LEN],
    },
    /// The standby's proof, and until when it was in step with the other
    /// member (its newest registration known to be on both); its offer
    /// follows.
    Proof {
        /// Its newest registration known to be on both members.
        in_step_until: std::time::SystemTime,
        /// HMAC of both nonces and `in_step_until` under the token.
        proof: [u8; NONCE_LEN],
    },
    /// Part of the active's whole binding cache; `last` ends it.
    Snapshot {
        /// These bindings.
        bindings: Vec<Binding>,
        /// The last part.
        last: bool,
    },
    /// Part of the standby's own binding cache, offered to the active
    /// before it takes the active's (a merge, after both were active);
    /// `last` ends it.
    Offer {
        /// These bindings.
        bindings: Vec<Binding>,
        /// The last part.
        last: bool,
    },
    /// Changes the active made durable, in order.
    Batch {
        /// The batch's number.
        id: u64,
        /// Its changes.
        changes: Vec<Replicated>,
    },
    /// The standby has a batch on its disk.
    Ack {
        /// The batch's number.
        id: u64,
    },
}

/// Why a frame cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection failed or closed.
    #[error("replication connection: {0}")]
    Io(#[from] std::io::Error),
    /// A frame over [`MAX_FRAME`].
    #[error("frame of {0} octets, more than allowed")]
    TooLarge(usize),
    /// A frame that does not decode.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// A frame whose MAC is not the session's next (forged, replayed,
    /// reordered, or from another session).
    #[error("a frame that fails its mac (forged, replayed or reordered)")]
    Forged,
    /// The handshake's proof failed.
    #[error("not authenticated: {0}")]
    Unauthenticated(&'static str),
    /// A binding record that does not decode.
    #[error("malformed record: {0}")]
    Record(#[from] store::StoreError),
}

impl WireError {
    /// Every reason [`WireError::reason`] names, `not_the_peer` (a
    /// connection from another address than the pair's peer) and
    /// `too_many_handshakes`.
    pub const REASONS: &'static [&'static str] = &[
        "not_the_peer",
        "too_many_handshakes",
        "unauthenticated",
        "forged",
        "malformed",
        "too_large",
        "connection",
    ];

    /// A short name for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Io(_) => "connection",
            WireError::TooLarge(_) => "too_large",
            WireError::Malformed(_) | WireError::Record(_) => "malformed",
            WireError::Forged => "forged",
            WireError::Unauthenticated(_) => "unauthenticated",
        }
    }
}

fn put_record(out: &mut Vec<u8>, binding: &Binding) {
    out.extend_from_slice(&binding.home_address.octets());
    let record = store::encode(binding);
    // A record is well under 64 KiB: at most 255 prefixes at 17 octets.
    out.extend_from_slice(&(record.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(&record);
}

impl Frame {
    /// The frame as sent.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let kind = match self {
            Frame::Hello { nonce } => {
                body.extend_from_slice(nonce);
                Kind::Hello
            }
            Frame::Challenge { nonce, proof } => {
                body.extend_from_slice(nonce);
                body.extend_from_slice(proof);
                Kind::Challenge
            }
            Frame::Proof {
                in_step_until,
                proof,
            } => {
                body.extend_from_slice(&store::unix_millis(*in_step_until).to_be_bytes());
                body.extend_from_slice(proof);
                Kind::Proof
            }
            Frame::Snapshot { bindings, last } | Frame::Offer { bindings, last } => {
                body.push(u8::from(*last));
                body.extend_from_slice(&(bindings.len() as u32).to_be_bytes());
                for binding in bindings {
                    put_record(&mut body, binding);
                }
                if matches!(self, Frame::Snapshot { .. }) {
                    Kind::Snapshot
                } else {
                    Kind::Offer
                }
            }
            Frame::Batch { id, changes } => {
                body.extend_from_slice(&id.to_be_bytes());
                body.extend_from_slice(&(changes.len() as u32).to_be_bytes());
                for change in changes {
                    match change {
                        Replicated::Upsert(binding) => {
                            body.push(UPSERT);
                            put_record(&mut body, binding);
                        }
                        Replicated::Removed(home_address) => {
                            body.push(REMOVAL);
                            body.extend_from_slice(&home_address.octets());
                        }
                    }
                }
                Kind::Batch
            }
            Frame::Ack { id } => {
                body.extend_from_slice(&id.to_be_bytes());
                Kind::Ack
            }
        };
        let mut frame = Vec::with_capacity(5 + body.len());
        frame.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
        frame.push(kind as u8);
        frame.extend_from_slice(&body);
        frame
    }

    /// Decodes one frame's kind and body.
    pub fn decode(frame: &[u8]) -> Result<Frame, WireError> {
        let mut reader = Reader {
            bytes: frame,
            at: 0,
        };
        let kind = match reader.u8()? {
            CLEAR_TOKEN_HELLO => return Err(WireError::Malformed(
                "a hello with the token in clear (a nemo-ha before the pair's handshake): upgrade that member",
            )),
            octet => Kind::of(octet).ok_or(WireError::Malformed("unknown frame kind"))?,
        };
        let frame = match kind {
            Kind::Hello => Frame::Hello {
                nonce: reader.array()?,
            },
            Kind::Challenge => Frame::Challenge {
                nonce: reader.array()?,
                proof: reader.array()?,
            },
            Kind::Proof => Frame::Proof {
                in_step_until: std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(reader.u64()?),
                proof: reader.array()?,
            },
            Kind::Snapshot | Kind::Offer => {
                let last = reader.u8()? != 0;
                let count = reader.u32()?;
                let mut bindings = Vec::new();
                for _ in 0..count {
                    bindings.push(reader.record()?);
                }
                if kind == Kind::Snapshot {
                    Frame::Snapshot { bindings, last }
                } else {
                    Frame::Offer { bindings, last }
                }
            }
            Kind::Batch => {
                let id = reader.u64()?;
                let count = reader.u32()?;
                let mut changes = Vec::new();
                for _ in 0..count {
                    changes.push(match reader.u8()? {
                        UPSERT => Replicated::Upsert(Arc::new(reader.record()?)),
                        REMOVAL => Replicated::Removed(reader.address()?),
                        _ => return Err(WireError::Malformed("unknown change")),
                    });
                }
                Frame::Batch { id, changes }
            }
            Kind::Ack => Frame::Ack { id: reader.u64()? },
        };
        if reader.at != frame_len(&reader) {
            return Err(WireError::Malformed("trailing octets"));
        }
        Ok(frame)
    }

    /// Writes the frame.
    pub async fn write(&self, stream: &mut (impl AsyncWriteExt + Unpin)) -> Result<(), WireError> {
        stream.write_all(&self.encode()).await?;
        Ok(())
    }

    /// Reads one frame of the handshake (plain, at most [`MAX_HANDSHAKE_FRAME`]
    /// octets: nothing large is read before the peer is authenticated).
    pub async fn read_handshake(
        stream: &mut (impl AsyncReadExt + Unpin),
    ) -> Result<Frame, WireError> {
        Frame::decode(&read_frame(stream, MAX_HANDSHAKE_FRAME).await?)
    }
}

/// Largest handshake frame: a kind, a time and two nonces' worth.
pub const MAX_HANDSHAKE_FRAME: usize = 1 + 8 + 2 * NONCE_LEN;

/// Reads one frame's octets after its length (kind, body and any mac),
/// refusing a length over `max` before reading it.
pub async fn read_frame(
    stream: &mut (impl AsyncReadExt + Unpin),
    max: usize,
) -> Result<Vec<u8>, WireError> {
    let len = stream.read_u32().await? as usize;
    if len > max {
        return Err(WireError::TooLarge(len));
    }
    if len == 0 {
        return Err(WireError::Malformed("empty frame"));
    }
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

fn frame_len(reader: &Reader<'_>) -> usize {
    reader.bytes.len()
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let slice = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or(WireError::Malformed("truncated"))?;
        self.at += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.take(N)?
            .try_into()
            .map_err(|_| WireError::Malformed("truncated"))
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn address(&mut self) -> Result<Ipv6Addr, WireError> {
        Ok(Ipv6Addr::from(self.array::<16>()?))
    }

    fn record(&mut self) -> Result<Binding, WireError> {
        let key = self.take(16)?;
        let len = usize::from(self.u16()?);
        let value = self.take(len)?;
        Ok(store::decode(key, value)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn binding(last: u8) -> Binding {
        Binding {
            home_address: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(last)),
            care_of: nemo::ha::CareOf::Ipv6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10)),
            prefixes: vec!["2001:db8:100::/56".parse().unwrap_or_default()].into(),
            mobile_router: true,
            sequence: nemo::wire::SequenceNumber(7),
            spi: 0x1000,
            timestamp: Some(nemo::wire::NtpTimestamp(42 << 32)),
            lifetime: nemo::wire::Lifetime(100),
            registered_at: UNIX_EPOCH + Duration::from_millis(1_800_000_000_000),
            expires_at: UNIX_EPOCH + Duration::from_millis(1_800_000_400_000),
        }
    }

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Hello { nonce: [3; 32] },
            Frame::Challenge {
                nonce: [4; 32],
                proof: [5; 32],
            },
            Frame::Proof {
                in_step_until: UNIX_EPOCH + Duration::from_millis(1_800_000_000_123),
                proof: [6; 32],
            },
            Frame::Snapshot {
                bindings: vec![binding(1), binding(2)],
                last: true,
            },
            Frame::Batch {
                id: 9,
                changes: vec![
                    Replicated::Upsert(binding(3).into()),
                    Replicated::Removed(binding(4).home_address),
                ],
            },
            Frame::Ack { id: 9 },
            Frame::Offer {
                bindings: vec![binding(5)],
                last: false,
            },
        ];
        for frame in frames {
            let bytes = frame.encode();
            assert_eq!(
                u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
                bytes.len() - 4
            );
            assert_eq!(Frame::decode(&bytes[4..]).ok(), Some(frame));
        }
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let good = Frame::Batch {
            id: 1,
            changes: vec![Replicated::Upsert(binding(1).into())],
        }
        .encode();
        for cut in 0..good.len() - 4 {
            assert!(Frame::decode(&good[4..4 + cut]).is_err(), "cut at {cut}");
        }
        let mut tailed = good[4..].to_vec();
        tailed.push(0);
        assert!(Frame::decode(&tailed).is_err());
        assert!(Frame::decode(&[9]).is_err());
        // The hello of a nemo-ha before the handshake is named.
        assert!(matches!(
            Frame::decode(&[1, 0, 6, b's', b'e', b'c', b'r', b'e', b't']),
            Err(WireError::Malformed(why)) if why.contains("upgrade")
        ));
        // A change tag that is neither an upsert nor a removal: kind 1,
        // id 8, count 4, then the tag.
        let mut unknown_change = good[4..].to_vec();
        unknown_change[1 + 8 + 4] = 3;
        assert!(matches!(
            Frame::decode(&unknown_change),
            Err(WireError::Malformed("unknown change"))
        ));
    }

    /// Encoders never make a frame the other side refuses: bindings with
    /// the most prefixes are split by octets, not only by count.
    #[test]
    fn large_bindings_are_split_into_frames_the_reader_takes() {
        let mut big = binding(1);
        big.prefixes = (0..nemo::ha::MAX_PREFIXES)
            .map(|n| {
                ipnet::Ipv6Net::new(
                    Ipv6Addr::new(0x2001, 0xdb8, 0x100, n as u16, 0, 0, 0, 0),
                    64,
                )
                .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .into();
        let bindings: Vec<Binding> = (0..SNAPSHOT_CHUNK).map(|_| big.clone()).collect();
        let parts = runs(bindings, SNAPSHOT_CHUNK, binding_octets);
        assert!(
            parts.len() > 1,
            "one frame of {} octets",
            SNAPSHOT_CHUNK * 4400
        );
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), SNAPSHOT_CHUNK);
        for part in parts {
            let frame = Frame::Snapshot {
                bindings: part,
                last: false,
            }
            .encode();
            assert!(frame.len() - 4 <= MAX_FRAME, "{}", frame.len());
        }
        assert_eq!(runs(Vec::<Binding>::new(), 8, binding_octets).len(), 1);
    }

    #[test]
    fn every_one_octet_corruption_decodes_or_fails_without_panic() {
        let good = Frame::Snapshot {
            bindings: vec![binding(1), binding(2)],
            last: true,
        }
        .encode();
        let body = &good[4..];
        for at in 0..body.len() {
            for value in [0u8, 1, 0x7f, 0xff] {
                let mut corrupted = body.to_vec();
                corrupted[at] = value;
                // Either a frame or an error; never a panic, never an
                // allocation beyond the frame's own length.
                let _ = Frame::decode(&corrupted);
            }
        }
    }
}
