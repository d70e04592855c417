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
use super::option::MobilityOption;
use super::options_area::{decode_options, encode_options};
use super::status::{BaStatus, BeStatus};
use super::{addr_at, be16, DecodeError, EncodeError, IPPROTO_NONE};

/// The longest Mobility Header: Header Len 255 means (255 + 1) * 8 octets.
pub const MH_MAX_LEN: usize = 2048;

/// Where each field lies, in octets from the start of the Mobility Header:
/// the one place encode and decode (and the checksum and the
/// authenticator) take them from (RFC 6275 §6.1.1 - §6.1.9).
pub mod field {
    use std::ops::Range;

    /// The common header (diagram above).
    pub const PAYLOAD_PROTO: usize = 0;
    /// Header Len: 8-octet units after the first 8.
    pub const HEADER_LEN: usize = 1;
    /// MH Type.
    pub const MH_TYPE: usize = 2;
    /// Checksum (RFC 6275 §6.1.1).
    pub const CHECKSUM: Range<usize> = 4..6;
    /// Where every message's data starts.
    pub const MESSAGE: usize = 6;

    /// Binding Refresh Request (RFC 6275 §6.1.2): 2 reserved octets, then
    /// options.
    pub mod brr {
        /// The options.
        pub const OPTIONS: usize = 8;
    }

    /// Binding Update (RFC 6275 §6.1.7, RFC 3963 §4.1).
    pub mod bu {
        use std::ops::Range;
        /// Sequence #.
        pub const SEQUENCE: Range<usize> = 6..8;
        /// A|H|L|K|M|R|... and reserved bits.
        pub const FLAGS: Range<usize> = 8..10;
        /// Lifetime, in units of 4 seconds.
        pub const LIFETIME: Range<usize> = 10..12;
        /// The options.
        pub const OPTIONS: usize = 12;
    }

    /// Binding Acknowledgement (RFC 6275 §6.1.8, RFC 3963 §4.2).
    pub mod ba {
        use std::ops::Range;
        /// Status.
        pub const STATUS: usize = 6;
        /// K|R and reserved bits.
        pub const FLAGS: usize = 7;
        /// Sequence #.
        pub const SEQUENCE: Range<usize> = 8..10;
        /// Lifetime.
        pub const LIFETIME: Range<usize> = 10..12;
        /// The options.
        pub const OPTIONS: usize = 12;
    }

    /// Binding Error (RFC 6275 §6.1.9).
    pub mod be {
        use std::ops::Range;
        /// Status.
        pub const STATUS: usize = 6;
        /// Home Address.
        pub const HOME_ADDRESS: Range<usize> = 8..24;
        /// The options.
        pub const OPTIONS: usize = 24;
    }

    /// The shortest Mobility Header: Header Len counts from 8.
    pub const MIN_LEN: usize = 8;
}

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

/// Binding Update flags (RFC 6275 §6.1.7, RFC 3963 §4.1; M from RFC 5380,
/// P from RFC 5213 §8.1, F from RFC 5555 §3.1.3).
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
    /// P: a proxy registration (Proxy Mobile IPv6, RFC 5213 §8.1); a
    /// home agent refuses it as a registration it does not serve.
    pub proxy_registration: bool,
    /// F: the mobile node asks for UDP encapsulation whether or not a NAT
    /// is on the path (RFC 5555 §3.1.3).
    pub force_udp: bool,
}

impl BuFlags {
    const A: u16 = 0x8000;
    const H: u16 = 0x4000;
    const L: u16 = 0x2000;
    const K: u16 = 0x1000;
    const M: u16 = 0x0800;
    const R: u16 = 0x0400;
    const P: u16 = 0x0200;
    const F: u16 = 0x0100;

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
            proxy_registration: bits & Self::P != 0,
            force_udp: bits & Self::F != 0,
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
            (self.proxy_registration, Self::P),
            (self.force_udp, Self::F),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .fold(0, |bits, (_, bit)| bits | bit)
    }
}

/// Binding Update (RFC 6275 §6.1.7, with the R flag of RFC 3963 §4.1 and the F
/// flag of RFC 5555 §3.1.3).
///
/// ```text
///                                 +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///                                 |          Sequence #           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |A|H|L|K|M|R|P|F|  Reserved     |           Lifetime            |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// .                        Mobility Options                       .
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindingUpdate {
    /// Sequence #.
    pub sequence: SequenceNumber,
    /// A, H, L, K, M, R, P and F.
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
            MhType::BINDING_REFRESH_REQUEST => Some(field::brr::OPTIONS),
            MhType::BINDING_UPDATE => Some(field::bu::OPTIONS),
            MhType::BINDING_ACK => Some(field::ba::OPTIONS),
            MhType::BINDING_ERROR => Some(field::be::OPTIONS),
            _ => None,
        }
    }

    /// Decodes a Mobility Header that fills `bytes` exactly (the upper-layer
    /// payload of the IPv6 packet). The checksum is not checked here.
    pub fn decode(bytes: &[u8]) -> Result<MobilityHeader, DecodeError> {
        if bytes.len() < field::MIN_LEN {
            return Err(DecodeError::Truncated {
                what: "Mobility Header",
                needed: field::MIN_LEN,
                available: bytes.len(),
            });
        }
        // RFC 6275 §6.1.1: Header Len counts 8-octet units after the first 8.
        let declared = (usize::from(bytes[field::HEADER_LEN]) + 1) * 8;
        if declared != bytes.len() {
            return Err(DecodeError::LengthMismatch {
                declared,
                available: bytes.len(),
            });
        }
        let payload_proto = bytes[field::PAYLOAD_PROTO];
        let mh_type = MhType(bytes[field::MH_TYPE]);
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
                    options: decode_options(bytes, field::brr::OPTIONS)?,
                })
            }
            MhType::BINDING_UPDATE => Message::BindingUpdate(BindingUpdate {
                sequence: SequenceNumber(be16(bytes, field::bu::SEQUENCE.start)),
                flags: BuFlags::from_bits(be16(bytes, field::bu::FLAGS.start)),
                lifetime: Lifetime(be16(bytes, field::bu::LIFETIME.start)),
                options: decode_options(bytes, field::bu::OPTIONS)?,
            }),
            MhType::BINDING_ACK => Message::BindingAck(BindingAck {
                status: BaStatus(bytes[field::ba::STATUS]),
                flags: BaFlags::from_bits(bytes[field::ba::FLAGS]),
                sequence: SequenceNumber(be16(bytes, field::ba::SEQUENCE.start)),
                lifetime: Lifetime(be16(bytes, field::ba::LIFETIME.start)),
                options: decode_options(bytes, field::ba::OPTIONS)?,
            }),
            MhType::BINDING_ERROR => Message::BindingError(BindingError {
                status: BeStatus(bytes[field::be::STATUS]),
                home_address: addr_at(bytes, field::be::HOME_ADDRESS.start),
                options: decode_options(bytes, field::be::OPTIONS)?,
            }),
            other => Message::Other {
                mh_type: other,
                data: bytes[field::MESSAGE..].to_vec(),
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
        // The fixed part of each message, its fields written where `field`
        // puts them (reserved octets and the checksum left zero), then the
        // options.
        let fixed = Self::options_offset(self.message.mh_type()).unwrap_or(field::MESSAGE);
        let mut out = vec![0u8; fixed];
        out[field::PAYLOAD_PROTO] = self.payload_proto;
        out[field::MH_TYPE] = self.message.mh_type().0;
        match &self.message {
            Message::BindingRefreshRequest(brr) => encode_options(&mut out, &brr.options)?,
            Message::BindingUpdate(bu) => {
                out[field::bu::SEQUENCE].copy_from_slice(&bu.sequence.0.to_be_bytes());
                out[field::bu::FLAGS].copy_from_slice(&bu.flags.bits().to_be_bytes());
                out[field::bu::LIFETIME].copy_from_slice(&bu.lifetime.0.to_be_bytes());
                encode_options(&mut out, &bu.options)?;
            }
            Message::BindingAck(ba) => {
                out[field::ba::STATUS] = ba.status.0;
                out[field::ba::FLAGS] = ba.flags.bits();
                out[field::ba::SEQUENCE].copy_from_slice(&ba.sequence.0.to_be_bytes());
                out[field::ba::LIFETIME].copy_from_slice(&ba.lifetime.0.to_be_bytes());
                encode_options(&mut out, &ba.options)?;
            }
            Message::BindingError(be) => {
                out[field::be::STATUS] = be.status.0;
                out[field::be::HOME_ADDRESS].copy_from_slice(&be.home_address.octets());
                encode_options(&mut out, &be.options)?;
            }
            Message::Other { data, .. } => {
                out.extend_from_slice(data);
                if !out.len().is_multiple_of(8) || out.len() < 8 {
                    return Err(EncodeError::UnalignedData { length: out.len() });
                }
            }
        }
        if out.len() > MH_MAX_LEN {
            return Err(EncodeError::MessageTooLong { length: out.len() });
        }
        // The length is a multiple of 8 between 8 and 2048 here.
        out[field::HEADER_LEN] = (out.len() / 8 - 1) as u8;
        Ok(out)
    }
}
