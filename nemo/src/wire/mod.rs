//! Wire format of what a NEMO home agent and mobile router exchange.
//!
//! Decoding is total: whatever the bytes, a decoder returns a value or a
//! [`DecodeError`] that says what was wrong, never panics and never reads past
//! its input. Encoding produces messages that other implementations accept
//! (checked against Scapy and Wireshark in the tests).

mod checksum;
mod dsmip;
mod fields;
mod ipv6;
mod mh;
mod option;
mod options_area;
mod status;

pub use checksum::{
    mh_checksum, set_mh_checksum, upper_layer_checksum, verify_mh_checksum,
    verify_upper_layer_checksum,
};
pub use dsmip::{
    field as dsmip_field, Ipv4AckStatus, Ipv4AddressAck, Ipv4HomeAddress, NatDetection, NatRefresh,
    NATKATIMEOUT,
};
pub use fields::{Lifetime, NtpTimestamp, SequenceNumber};
pub use ipv6::{
    build_packet, parse_packet, HomeAddressOption, PacketRepr, ParsedPacket, Type2RoutingHeader,
    IPPROTO_DSTOPTS, IPPROTO_HOPOPTS, IPPROTO_MH, IPPROTO_NONE, IPPROTO_ROUTING,
};
pub use mh::{
    field as mh_field, BaFlags, BindingAck, BindingError, BindingRefreshRequest, BindingUpdate,
    BuFlags, Message, MhType, MobilityHeader, MH_MAX_LEN,
};
pub use option::{
    field as option_field, AuthSubtype, MobileNetworkPrefix, MobilityOption, OptionType,
    MN_ID_SUBTYPE_NAI,
};
pub use options_area::{RawOption, RawOptions};
pub use status::{BaStatus, BeStatus};

/// Why a sequence of bytes is not a valid message, header or option.
///
/// Each variant names the part that was wrong, so that a daemon can count it
/// and log it without guessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    #[error("{what} truncated: needs {needed} octets, has {available}")]
    Truncated {
        /// The structure being decoded.
        what: &'static str,
        /// Octets it needs.
        needed: usize,
        /// Octets available.
        available: usize,
    },
    /// Bytes after the end the IPv6 Payload Length declares (RFC 8200
    /// §3), beyond what link padding can explain: a Mobility Header packet
    /// is never short enough to be padded.
    #[error("{extra} octets after the {declared}-octet IPv6 packet")]
    TrailingBytes {
        /// Length of the packet by its header, in octets.
        declared: usize,
        /// Octets after it.
        extra: usize,
    },
    /// The Mobility Header's Header Len does not match the bytes received
    /// (RFC 6275 §6.1.1: the length is in 8-octet units after the first 8).
    #[error("Mobility Header length field says {declared} octets, packet has {available}")]
    LengthMismatch {
        /// Length the header declares, in octets.
        declared: usize,
        /// Octets actually present.
        available: usize,
    },
    /// The Header Len is smaller than the fixed part of the message type
    /// requires (RFC 6275 §9.2: such a message is silently discarded).
    #[error("{message} needs at least {needed} octets, Header Len allows {declared}")]
    MessageTooShort {
        /// The message type.
        message: &'static str,
        /// Minimum length of that message.
        needed: usize,
        /// Length the header declares.
        declared: usize,
    },
    /// An option's length runs past the end of the options area
    /// (RFC 6275 §6.2.1).
    #[error("mobility option type {option_type} at offset {offset} runs past the message end")]
    OptionOverrun {
        /// The option's type.
        option_type: u8,
        /// Offset of the option inside the Mobility Header.
        offset: usize,
    },
    /// A known option with a length its definition does not allow.
    #[error("{option} option has length {length}, expected {expected}")]
    BadOptionLength {
        /// Name of the option.
        option: &'static str,
        /// Length found.
        length: usize,
        /// What the definition allows.
        expected: &'static str,
    },
    /// An IPv6 packet that is not a Mobility Header packet this library
    /// frames (for example a next header it does not walk through).
    #[error("IPv6 packet does not carry a Mobility Header: {0}")]
    NotMobility(&'static str),
    /// An extension header that breaks its own rules.
    #[error("malformed {header}: {reason}")]
    BadExtensionHeader {
        /// The header.
        header: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
}

impl DecodeError {
    /// A short name for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::LengthMismatch { .. } => "length_mismatch",
            DecodeError::MessageTooShort { .. } => "message_too_short",
            DecodeError::OptionOverrun { .. } => "option_overrun",
            DecodeError::BadOptionLength { .. } => "bad_option_length",
            DecodeError::NotMobility(_) => "not_mobility",
            DecodeError::BadExtensionHeader { .. } => "bad_extension_header",
        }
    }
}

/// Why a value cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// An option whose data is longer than the 255 octets its length field
    /// can express (RFC 6275 §6.2.1).
    #[error("{option} option data is {length} octets, at most 255 fit")]
    OptionTooLong {
        /// Name of the option.
        option: &'static str,
        /// Length of its data.
        length: usize,
    },
    /// A message longer than Header Len can express (2048 octets).
    #[error("Mobility Header would be {length} octets, at most {MH_MAX_LEN} fit")]
    MessageTooLong {
        /// The length it would have had.
        length: usize,
    },
    /// A message kept as raw data whose length does not make the Mobility
    /// Header a multiple of 8 octets (RFC 6275 §6.1.1).
    #[error("Mobility Header with raw data would be {length} octets, not a multiple of 8")]
    UnalignedData {
        /// The length it would have had.
        length: usize,
    },
}

/// Reads a big-endian `u16` at `at`; the caller has checked the bounds.
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Reads an IPv6 address at `at`; the caller has checked the bounds.
fn addr_at(bytes: &[u8], at: usize) -> std::net::Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[at..at + 16]);
    std::net::Ipv6Addr::from(octets)
}
