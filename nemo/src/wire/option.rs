//! Mobility options (RFC 6275 §6.2) and the ones NEMO, RFC 4285 and
//! DSMIPv6 (RFC 5555, values in [`super::dsmip`]) add.
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
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;

use super::dsmip::{self, Ipv4AddressAck, Ipv4HomeAddress, NatDetection};
use super::fields::{Lifetime, NtpTimestamp};
use super::options_area::RawOption;
use super::{addr_at, be16, DecodeError};

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
    /// IPv4 Home Address (RFC 5555 §3.1.1).
    pub const IPV4_HOME_ADDRESS: OptionType = OptionType(29);
    /// IPv4 Address Acknowledgement (RFC 5555 §3.2.1; IANA's value).
    pub const IPV4_ADDRESS_ACK: OptionType = OptionType(30);
    /// NAT Detection (RFC 5555 §3.2.2).
    pub const NAT_DETECTION: OptionType = OptionType(31);
    /// IPv4 Care-of Address (RFC 5555 §3.1.2).
    pub const IPV4_CARE_OF_ADDRESS: OptionType = OptionType(32);
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
    /// IPv4 Home Address (RFC 5555 §3.1.1; diagram at [`Ipv4HomeAddress`]).
    /// Alignment 4n.
    Ipv4HomeAddress(Ipv4HomeAddress),
    /// IPv4 Address Acknowledgement (RFC 5555 §3.2.1; diagram at
    /// [`Ipv4AddressAck`]). Alignment 4n.
    Ipv4AddressAck(Ipv4AddressAck),
    /// NAT Detection (RFC 5555 §3.2.2; diagram at [`NatDetection`]).
    /// Alignment 4n.
    NatDetection(NatDetection),
    /// IPv4 Care-of Address (RFC 5555 §3.1.2): the mobile router's address
    /// in an IPv4-only network. Alignment 4n.
    ///
    /// ```text
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |   Type = 32   |  Length = 6   |         Reserved              |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                     IPv4 Care-of address                      |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    Ipv4CareOfAddress(Ipv4Addr),
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
            MobilityOption::Ipv4HomeAddress(_) => OptionType::IPV4_HOME_ADDRESS,
            MobilityOption::Ipv4AddressAck(_) => OptionType::IPV4_ADDRESS_ACK,
            MobilityOption::NatDetection(_) => OptionType::NAT_DETECTION,
            MobilityOption::Ipv4CareOfAddress(_) => OptionType::IPV4_CARE_OF_ADDRESS,
        }
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            MobilityOption::BindingRefreshAdvice { .. } => "Binding Refresh Advice",
            MobilityOption::AlternateCareOfAddress(_) => "Alternate Care-of Address",
            MobilityOption::NonceIndices { .. } => "Nonce Indices",
            MobilityOption::BindingAuthorizationData(_) => "Binding Authorization Data",
            MobilityOption::MobileNetworkPrefix(_) => "Mobile Network Prefix",
            MobilityOption::MobileNodeIdentifier { .. } => "Mobile Node Identifier",
            MobilityOption::Authentication { .. } => "Mobility Message Authentication",
            MobilityOption::ReplayProtection(_) => "Mobility Message Replay Protection",
            MobilityOption::Ipv4HomeAddress(_) => "IPv4 Home Address",
            MobilityOption::Ipv4AddressAck(_) => "IPv4 Address Acknowledgement",
            MobilityOption::NatDetection(_) => "NAT Detection",
            MobilityOption::Ipv4CareOfAddress(_) => "IPv4 Care-of Address",
        }
    }

    /// Alignment of the Option Type octet as (modulus, remainder): the option
    /// starts at an offset `modulus * n + remainder` from the start of the
    /// Mobility Header.
    pub(super) fn alignment(&self) -> (usize, usize) {
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
            // RFC 5555 §3.1.1, §3.1.2, §3.2.1, §3.2.2: 4n.
            MobilityOption::Ipv4HomeAddress(_)
            | MobilityOption::Ipv4AddressAck(_)
            | MobilityOption::NatDetection(_)
            | MobilityOption::Ipv4CareOfAddress(_) => (4, 0),
        }
    }

    /// Options that must be the last in the message, with no padding after
    /// them (RFC 6275 §6.2, RFC 4285 §5.1).
    pub(super) fn ends_message(&self) -> bool {
        matches!(
            self,
            MobilityOption::BindingAuthorizationData(_) | MobilityOption::Authentication { .. }
        )
    }

    /// Length of the Option Data, the value of the Option Length field.
    pub(super) fn data_len(&self) -> usize {
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
            MobilityOption::Ipv4HomeAddress(_) => dsmip::field::ipv4_home_address::LEN,
            MobilityOption::Ipv4AddressAck(_) => dsmip::field::ipv4_address_ack::LEN,
            MobilityOption::NatDetection(_) => dsmip::field::nat_detection::LEN,
            MobilityOption::Ipv4CareOfAddress(_) => dsmip::field::ipv4_care_of::LEN,
        }
    }

    /// Appends the Option Data, each field where [`field`] puts it.
    pub(super) fn write_data(&self, out: &mut Vec<u8>) {
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
            MobilityOption::Ipv4HomeAddress(option) => option.write(data),
            MobilityOption::Ipv4AddressAck(option) => option.write(data),
            MobilityOption::NatDetection(option) => option.write(data),
            MobilityOption::Ipv4CareOfAddress(address) => dsmip::write_ipv4_care_of(*address, data),
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
            OptionType::IPV4_HOME_ADDRESS => {
                MobilityOption::Ipv4HomeAddress(Ipv4HomeAddress::decode(data)?)
            }
            OptionType::IPV4_ADDRESS_ACK => {
                MobilityOption::Ipv4AddressAck(Ipv4AddressAck::decode(data)?)
            }
            OptionType::NAT_DETECTION => MobilityOption::NatDetection(NatDetection::decode(data)?),
            OptionType::IPV4_CARE_OF_ADDRESS => {
                MobilityOption::Ipv4CareOfAddress(dsmip::decode_ipv4_care_of(data)?)
            }
            OptionType(_) => return Ok(None),
        };
        Ok(Some(option))
    }
}
