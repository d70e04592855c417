//! The Mobility Header and its messages (RFC 6275 §6.1, RFC 3963 §4).
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Payload Proto |  Header Len   |   MH Type     |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Checksum            |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               |
//! .                       Message Data                            .
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::fmt;
use std::net::Ipv6Addr;

use super::fields::{Lifetime, SequenceNumber};
use super::option::{decode_options, encode_options, MobilityOption};
use super::status::{BaStatus, BeStatus};
use super::{addr_at, be16, DecodeError, EncodeError, IPPROTO_NONE};

/// The longest Mobility Header: Header Len 255 means (255 + 1) * 8 octets.
pub const MH_MAX_LEN: usize = 2048;

/// Length of the common header (Payload Proto to Checksum).
const COMMON_LEN: usize = 6;

/// An MH Type value (IANA "Mobility Header Types" registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MhType(pub u8);

impl MhType {
    /// Binding Refresh Request (RFC 6275 §6.1.2).
    pub const BINDING_REFRESH_REQUEST: MhType = MhType(0);
    /// Home Test Init (RFC 6275 §6.1.3).
    pub const HOME_TEST_INIT: MhType = MhType(1);
    /// Care-of Test Init (RFC 6275 §6.1.4).
    pub const CARE_OF_TEST_INIT: MhType = MhType(2);
    /// Home Test (RFC 6275 §6.1.5).
    pub const HOME_TEST: MhType = MhType(3);
    /// Care-of Test (RFC 6275 §6.1.6).
    pub const CARE_OF_TEST: MhType = MhType(4);
    /// Binding Update (RFC 6275 §6.1.7).
    pub const BINDING_UPDATE: MhType = MhType(5);
    /// Binding Acknowledgement (RFC 6275 §6.1.8).
    pub const BINDING_ACK: MhType = MhType(6);
    /// Binding Error (RFC 6275 §6.1.9).
    pub const BINDING_ERROR: MhType = MhType(7);

    /// The message's name, `None` for a type RFC 6275 does not define.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "Binding Refresh Request",
            1 => "Home Test Init",
            2 => "Care-of Test Init",
            3 => "Home Test",
            4 => "Care-of Test",
            5 => "Binding Update",
            6 => "Binding Acknowledgement",
            7 => "Binding Error",
            _ => return None,
        })
    }
}

impl fmt::Display for MhType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{} (unknown)", self.0),
        }
    }
}

/// A decoded Mobility Header. The checksum is not part of the value: it
/// depends on the addresses around the header, so it is written with
/// [`super::set_mh_checksum`] and checked with [`super::verify_mh_checksum`]
/// on the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MobilityHeader {
    /// Payload Proto; RFC 6275 §6.1.1 says senders SHOULD use 59 (none).
    pub payload_proto: u8,
    /// The message.
    pub message: Message,
}

/// The messages of the Mobility Header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Binding Refresh Request, type 0.
    BindingRefreshRequest(BindingRefreshRequest),
    /// Binding Update, type 5.
    BindingUpdate(BindingUpdate),
    /// Binding Acknowledgement, type 6.
    BindingAck(BindingAck),
    /// Binding Error, type 7.
    BindingError(BindingError),
    /// Any other type: the return-routability messages (HoTI, CoTI, HoT,
    /// CoT), which a home agent does not process, and unknown types. A home
    /// agent answers these with a Binding Error, status 2 (RFC 6275 §9.2).
    Other {
        /// The MH Type.
        mh_type: MhType,
        /// The message data after the checksum, unparsed.
        data: Vec<u8>,
    },
}

impl Message {
    /// The MH Type of this message.
    pub fn mh_type(&self) -> MhType {
        match self {
            Message::BindingRefreshRequest(_) => MhType::BINDING_REFRESH_REQUEST,
            Message::BindingUpdate(_) => MhType::BINDING_UPDATE,
            Message::BindingAck(_) => MhType::BINDING_ACK,
            Message::BindingError(_) => MhType::BINDING_ERROR,
            Message::Other { mh_type, .. } => *mh_type,
        }
    }
}

/// Binding Refresh Request (RFC 6275 §6.1.2).
///
/// ```text
///                                 +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///                                 |          Reserved             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// .                        Mobility Options                       .
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindingRefreshRequest {
    /// Mobility options (the home agent adds authentication here).
    pub options: Vec<MobilityOption>,
}

/// Binding Update flags (RFC 6275 §6.1.7, RFC 3963 §4.1; M from RFC 5380).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BuFlags {
    /// A: a Binding Acknowledgement is requested.
    pub acknowledge: bool,
    /// H: home registration.
    pub home_registration: bool,
    /// L: link-local address compatibility.
    pub link_local_compat: bool,
    /// K: key management mobility capability.
    pub key_management: bool,
    /// M: MAP registration (Hierarchical Mobile IPv6, RFC 5380).
    pub map_registration: bool,
    /// R: the sender is a mobile router (RFC 3963 §4.1).
    pub mobile_router: bool,
}

impl BuFlags {
    const A: u16 = 0x8000;
    const H: u16 = 0x4000;
    const L: u16 = 0x2000;
    const K: u16 = 0x1000;
    const M: u16 = 0x0800;
    const R: u16 = 0x0400;

    /// The flags of a NEMO home registration: A, H and R.
    pub fn mobile_router_home_registration() -> BuFlags {
        BuFlags {
            acknowledge: true,
            home_registration: true,
            mobile_router: true,
            ..BuFlags::default()
        }
    }

    fn from_bits(bits: u16) -> BuFlags {
        BuFlags {
            acknowledge: bits & Self::A != 0,
            home_registration: bits & Self::H != 0,
            link_local_compat: bits & Self::L != 0,
            key_management: bits & Self::K != 0,
            map_registration: bits & Self::M != 0,
            mobile_router: bits & Self::R != 0,
        }
    }

    fn bits(self) -> u16 {
        [
            (self.acknowledge, Self::A),
            (self.home_registration, Self::H),
            (self.link_local_compat, Self::L),
            (self.key_management, Self::K),
            (self.map_registration, Self::M),
            (self.mobile_router, Self::R),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .fold(0, |bits, (_, bit)| bits | bit)
    }
}

/// Binding Update (RFC 6275 §6.1.7, with the R flag of RFC 3963 §4.1).
///
/// ```text
///                                 +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///                                 |          Sequence #           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |A|H|L|K|M|R|      Reserved     |           Lifetime            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// .                        Mobility Options                       .
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindingUpdate {
    /// Sequence #.
    pub sequence: SequenceNumber,
    /// A, H, L, K, M and R.
    pub flags: BuFlags,
    /// Requested lifetime; zero deregisters.
    pub lifetime: Lifetime,
    /// Mobility options (Mobile Network Prefixes, identifier, timestamp,
    /// authentication, ...).
    pub options: Vec<MobilityOption>,
}

/// Binding Acknowledgement flags (RFC 6275 §6.1.8, RFC 3963 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BaFlags {
    /// K: key management mobility capability.
    pub key_management: bool,
    /// R: the home agent accepted mobile-router operation (RFC 3963 §4.2).
    pub mobile_router: bool,
}

impl BaFlags {
    const K: u8 = 0x80;
    const R: u8 = 0x40;

    fn from_bits(bits: u8) -> BaFlags {
        BaFlags {
            key_management: bits & Self::K != 0,
            mobile_router: bits & Self::R != 0,
        }
    }

    fn bits(self) -> u8 {
        (if self.key_management { Self::K } else { 0 })
            | (if self.mobile_router { Self::R } else { 0 })
    }
}

/// Binding Acknowledgement (RFC 6275 §6.1.8, with the R flag of RFC 3963
/// §4.2).
///
/// ```text
///                                 +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///                                 |   Status      |K|R|  Reserved |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |         Sequence #            |           Lifetime            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// .                        Mobility Options                       .
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingAck {
    /// Status: below 128 accepted.
    pub status: BaStatus,
    /// K and R.
    pub flags: BaFlags,
    /// Sequence # copied from the Binding Update, or the last accepted one
    /// with status 135 (RFC 6275 §9.5.1).
    pub sequence: SequenceNumber,
    /// Granted lifetime; undefined when rejected.
    pub lifetime: Lifetime,
    /// Mobility options (Binding Refresh Advice, timestamp, authentication).
    pub options: Vec<MobilityOption>,
}

/// Binding Error (RFC 6275 §6.1.9).
///
/// ```text
///                                 +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///                                 |     Status    |   Reserved    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                     Home Address (128 bits)                   |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// .                        Mobility Options                       .
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingError {
    /// Why.
    pub status: BeStatus,
    /// The home address of the offending packet (unspecified when there was
    /// none).
    pub home_address: Ipv6Addr,
    /// Mobility options (none are defined).
    pub options: Vec<MobilityOption>,
}

impl MobilityHeader {
    /// A header carrying `message` with Payload Proto 59, as RFC 6275 §6.1.1
    /// asks of senders.
    pub fn new(message: Message) -> MobilityHeader {
        MobilityHeader {
            payload_proto: IPPROTO_NONE,
            message,
        }
    }

    /// Offset of the options area for a message type: the length of its
    /// fixed part (RFC 6275 §6.1.2 - §6.1.9), `None` for types without one.
    pub fn options_offset(mh_type: MhType) -> Option<usize> {
        match mh_type {
            MhType::BINDING_REFRESH_REQUEST => Some(8),
            MhType::BINDING_UPDATE | MhType::BINDING_ACK => Some(12),
            MhType::BINDING_ERROR => Some(24),
            _ => None,
        }
    }

    /// Decodes a Mobility Header that fills `bytes` exactly (the upper-layer
    /// payload of the IPv6 packet). The checksum is not checked here.
    pub fn decode(bytes: &[u8]) -> Result<MobilityHeader, DecodeError> {
        if bytes.len() < 8 {
            return Err(DecodeError::Truncated {
                what: "Mobility Header",
                needed: 8,
                available: bytes.len(),
            });
        }
        // RFC 6275 §6.1.1: Header Len counts 8-octet units after the first 8.
        let declared = (usize::from(bytes[1]) + 1) * 8;
        if declared != bytes.len() {
            return Err(DecodeError::LengthMismatch {
                declared,
                available: bytes.len(),
            });
        }
        let payload_proto = bytes[0];
        let mh_type = MhType(bytes[2]);
        // RFC 6275 §9.2: a Header Len below the message's fixed length is
        // discarded.
        if let Some(needed) = Self::options_offset(mh_type) {
            if declared < needed {
                return Err(DecodeError::MessageTooShort {
                    message: mh_type.name().unwrap_or("message"),
                    needed,
                    declared,
                });
            }
        }
        let message = match mh_type {
            MhType::BINDING_REFRESH_REQUEST => {
                Message::BindingRefreshRequest(BindingRefreshRequest {
                    options: decode_options(bytes, 8)?,
                })
            }
            MhType::BINDING_UPDATE => Message::BindingUpdate(BindingUpdate {
                sequence: SequenceNumber(be16(bytes, 6)),
                flags: BuFlags::from_bits(be16(bytes, 8)),
                lifetime: Lifetime(be16(bytes, 10)),
                options: decode_options(bytes, 12)?,
            }),
            MhType::BINDING_ACK => Message::BindingAck(BindingAck {
                status: BaStatus(bytes[6]),
                flags: BaFlags::from_bits(bytes[7]),
                sequence: SequenceNumber(be16(bytes, 8)),
                lifetime: Lifetime(be16(bytes, 10)),
                options: decode_options(bytes, 12)?,
            }),
            MhType::BINDING_ERROR => Message::BindingError(BindingError {
                status: BeStatus(bytes[6]),
                home_address: addr_at(bytes, 8),
                options: decode_options(bytes, 24)?,
            }),
            other => Message::Other {
                mh_type: other,
                data: bytes[COMMON_LEN..].to_vec(),
            },
        };
        Ok(MobilityHeader {
            payload_proto,
            message,
        })
    }

    /// Encodes the header with its checksum field zero: fill it in with
    /// [`super::set_mh_checksum`] once the addresses are known (and after
    /// [`crate::auth`] signed it, since the authenticator is computed with the
    /// checksum zero).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&[self.payload_proto, 0, self.message.mh_type().0, 0, 0, 0]);
        match &self.message {
            Message::BindingRefreshRequest(brr) => {
                out.extend_from_slice(&[0, 0]);
                encode_options(&mut out, &brr.options)?;
            }
            Message::BindingUpdate(bu) => {
                out.extend_from_slice(&bu.sequence.0.to_be_bytes());
                out.extend_from_slice(&bu.flags.bits().to_be_bytes());
                out.extend_from_slice(&bu.lifetime.0.to_be_bytes());
                encode_options(&mut out, &bu.options)?;
            }
            Message::BindingAck(ba) => {
                out.extend_from_slice(&[ba.status.0, ba.flags.bits()]);
                out.extend_from_slice(&ba.sequence.0.to_be_bytes());
                out.extend_from_slice(&ba.lifetime.0.to_be_bytes());
                encode_options(&mut out, &ba.options)?;
            }
            Message::BindingError(be) => {
                out.extend_from_slice(&[be.status.0, 0]);
                out.extend_from_slice(&be.home_address.octets());
                encode_options(&mut out, &be.options)?;
            }
            Message::Other { data, .. } => {
                out.extend_from_slice(data);
                if out.len() % 8 != 0 || out.len() < 8 {
                    return Err(EncodeError::UnalignedData { length: out.len() });
                }
            }
        }
        if out.len() > MH_MAX_LEN {
            return Err(EncodeError::MessageTooLong { length: out.len() });
        }
        // The length is a multiple of 8 between 8 and 2048 here.
        out[1] = (out.len() / 8 - 1) as u8;
        Ok(out)
    }
}
