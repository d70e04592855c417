//! The mobility options of Dual-Stack Mobile IPv6 (RFC 5555 §3.1, §3.2):
//! what a mobile router in an IPv4-only network (or behind a NAT) puts in
//! its Binding Update, and what the home agent answers.
//!
//! Each is 6 octets of Option Data with alignment 4n. RFC 5555 §8 gives the
//! IPv4 Address Acknowledgement the type 29 in one sentence and 30 in
//! another; IANA registered 30 (29 is the IPv4 Home Address), as Wireshark
//! decodes it.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::DecodeError;

/// Where each option's fields lie, in octets from the start of its Option
/// Data (after type and length).
pub mod field {
    /// IPv4 Home Address (RFC 5555 §3.1.1).
    pub mod ipv4_home_address {
        use std::ops::Range;
        /// Prefix-len (6 bits) and P (1 bit), then a reserved bit.
        pub const PREFIX_LEN_P: usize = 0;
        /// IPv4 home address.
        pub const ADDRESS: Range<usize> = 2..6;
        /// Option Data length.
        pub const LEN: usize = 6;
    }
    /// IPv4 Address Acknowledgement (RFC 5555 §3.2.1).
    pub mod ipv4_address_ack {
        use std::ops::Range;
        /// Status.
        pub const STATUS: usize = 0;
        /// Pref-len (6 bits), then 2 reserved bits.
        pub const PREFIX_LEN: usize = 1;
        /// IPv4 home address.
        pub const ADDRESS: Range<usize> = 2..6;
        /// Option Data length.
        pub const LEN: usize = 6;
    }
    /// NAT Detection (RFC 5555 §3.2.2).
    pub mod nat_detection {
        use std::ops::Range;
        /// F (the top bit), then 15 reserved bits.
        pub const FLAGS: usize = 0;
        /// Refresh time, in seconds.
        pub const REFRESH: Range<usize> = 2..6;
        /// Option Data length.
        pub const LEN: usize = 6;
    }
    /// IPv4 Care-of Address (RFC 5555 §3.1.2).
    pub mod ipv4_care_of {
        use std::ops::Range;
        /// IPv4 care-of address, after 2 reserved octets.
        pub const ADDRESS: Range<usize> = 2..6;
        /// Option Data length.
        pub const LEN: usize = 6;
    }
}

/// The F flag of the NAT Detection option (RFC 5555 §3.2.2).
const NAT_DETECTION_F: u8 = 0x80;
/// The P flag of the IPv4 Home Address option (RFC 5555 §3.1.1), after
/// the six bits of Prefix-len.
const IPV4_HOME_ADDRESS_P: u8 = 0x02;

/// NATKATIMEOUT (RFC 5555 §6): the NAT keepalive interval a mobile node
/// uses when the home agent suggests none.
pub const NATKATIMEOUT: Duration = Duration::from_secs(110);

/// IPv4 Home Address option (RFC 5555 §3.1.1): an IPv4 home address (or
/// prefix) the mobile node asks the home agent to defend for it.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Type = 29   |  Length = 6   |Prefix-len |P|    Reserved     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                     IPv4 home address                         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// Kept as received: a Prefix-len of zero (an error, §3.1.1) or above 32
/// reaches the home agent, which answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4HomeAddress {
    /// Prefix-len: 32 for a single address.
    pub prefix_len: u8,
    /// P: a mobile network prefix is requested.
    pub request_prefix: bool,
    /// The address; 0.0.0.0 asks the home agent for one.
    pub address: Ipv4Addr,
}

impl Ipv4HomeAddress {
    pub(super) fn write(&self, data: &mut [u8]) {
        use field::ipv4_home_address as f;
        data[f::PREFIX_LEN_P] = (self.prefix_len << 2)
            | if self.request_prefix {
                IPV4_HOME_ADDRESS_P
            } else {
                0
            };
        data[f::ADDRESS].copy_from_slice(&self.address.octets());
    }

    pub(super) fn decode(data: &[u8]) -> Result<Ipv4HomeAddress, DecodeError> {
        use field::ipv4_home_address as f;
        exact("IPv4 Home Address", data, f::LEN)?;
        Ok(Ipv4HomeAddress {
            prefix_len: data[f::PREFIX_LEN_P] >> 2,
            request_prefix: data[f::PREFIX_LEN_P] & IPV4_HOME_ADDRESS_P != 0,
            address: ipv4_at(data, f::ADDRESS.start),
        })
    }
}

/// Status of an IPv4 Address Acknowledgement (RFC 5555 §3.2.1): below 128
/// is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4AckStatus(pub u8);

impl Ipv4AckStatus {
    /// 0 Success.
    pub const SUCCESS: Ipv4AckStatus = Ipv4AckStatus(0);
    /// 128 Failure, reason unspecified.
    pub const FAILURE: Ipv4AckStatus = Ipv4AckStatus(128);
    /// 129 Administratively prohibited.
    pub const ADMINISTRATIVELY_PROHIBITED: Ipv4AckStatus = Ipv4AckStatus(129);
    /// 130 Incorrect IPv4 home address.
    pub const INCORRECT_HOME_ADDRESS: Ipv4AckStatus = Ipv4AckStatus(130);
    /// 131 Invalid IPv4 address.
    pub const INVALID_ADDRESS: Ipv4AckStatus = Ipv4AckStatus(131);
    /// 132 Dynamic IPv4 home address assignment not available.
    pub const DYNAMIC_NOT_AVAILABLE: Ipv4AckStatus = Ipv4AckStatus(132);
    /// 133 Prefix allocation unauthorized.
    pub const PREFIX_UNAUTHORIZED: Ipv4AckStatus = Ipv4AckStatus(133);

    /// True for the success values (0 to 127).
    pub fn is_success(self) -> bool {
        self.0 < 128
    }
}

/// IPv4 Address Acknowledgement option (RFC 5555 §3.2.1): whether the home
/// agent bound the IPv4 home address the Binding Update asked for.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Type = 30   |  Length = 6   |   Status      |Pref-len   |Res|
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      IPv4 home address                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4AddressAck {
    /// Status.
    pub status: Ipv4AckStatus,
    /// Pref-len of the address bound; zero on failure (§3.2.1).
    pub prefix_len: u8,
    /// The IPv4 home address in the binding cache.
    pub address: Ipv4Addr,
}

impl Ipv4AddressAck {
    pub(super) fn write(&self, data: &mut [u8]) {
        use field::ipv4_address_ack as f;
        data[f::STATUS] = self.status.0;
        data[f::PREFIX_LEN] = self.prefix_len << 2;
        data[f::ADDRESS].copy_from_slice(&self.address.octets());
    }

    pub(super) fn decode(data: &[u8]) -> Result<Ipv4AddressAck, DecodeError> {
        use field::ipv4_address_ack as f;
        exact("IPv4 Address Acknowledgement", data, f::LEN)?;
        Ok(Ipv4AddressAck {
            status: Ipv4AckStatus(data[f::STATUS]),
            prefix_len: data[f::PREFIX_LEN] >> 2,
            address: ipv4_at(data, f::ADDRESS.start),
        })
    }
}

/// The Refresh time of a NAT Detection option (RFC 5555 §3.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatRefresh {
    /// Zero: no suggestion; the mobile node uses [`NATKATIMEOUT`].
    Unspecified,
    /// Refresh the NAT's mapping at least this often, in seconds.
    Every(u32),
    /// All ones: no NAT was detected, no keepalives are needed.
    NotNeeded,
}

impl NatRefresh {
    fn from_wire(seconds: u32) -> NatRefresh {
        match seconds {
            0 => NatRefresh::Unspecified,
            u32::MAX => NatRefresh::NotNeeded,
            seconds => NatRefresh::Every(seconds),
        }
    }

    fn to_wire(self) -> u32 {
        match self {
            NatRefresh::Unspecified => 0,
            NatRefresh::Every(seconds) => seconds,
            NatRefresh::NotNeeded => u32::MAX,
        }
    }

    /// How often the mobile node must send to keep the NAT's mapping
    /// (RFC 5555 §4.3: the home agent's suggestion, else NATKATIMEOUT);
    /// `None` when no keepalive is needed.
    pub fn interval(self) -> Option<Duration> {
        match self {
            NatRefresh::Unspecified => Some(NATKATIMEOUT),
            NatRefresh::Every(seconds) => Some(Duration::from_secs(u64::from(seconds))),
            NatRefresh::NotNeeded => None,
        }
    }
}

/// NAT Detection option (RFC 5555 §3.2.2): the home agent saw a NAT on the
/// path (or wants UDP encapsulation anyway), and how often to refresh.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Type = 31   |  Length = 6   |F|          Reserved           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      Refresh time                             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatDetection {
    /// F: the mobile node must use UDP encapsulation even without a NAT.
    pub udp_required: bool,
    /// Refresh time.
    pub refresh: NatRefresh,
}

impl NatDetection {
    pub(super) fn write(&self, data: &mut [u8]) {
        use field::nat_detection as f;
        data[f::FLAGS] = if self.udp_required {
            NAT_DETECTION_F
        } else {
            0
        };
        data[f::REFRESH].copy_from_slice(&self.refresh.to_wire().to_be_bytes());
    }

    pub(super) fn decode(data: &[u8]) -> Result<NatDetection, DecodeError> {
        use field::nat_detection as f;
        exact("NAT Detection", data, f::LEN)?;
        let mut seconds = [0u8; 4];
        seconds.copy_from_slice(&data[f::REFRESH]);
        Ok(NatDetection {
            udp_required: data[f::FLAGS] & NAT_DETECTION_F != 0,
            refresh: NatRefresh::from_wire(u32::from_be_bytes(seconds)),
        })
    }
}

impl fmt::Display for NatDetection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.refresh.interval() {
            Some(every) => write!(f, "refresh every {} s", every.as_secs())?,
            None => write!(f, "no keepalive needed")?,
        }
        if self.udp_required {
            write!(f, ", UDP required")?;
        }
        Ok(())
    }
}

/// Writes the IPv4 Care-of Address option's data (RFC 5555 §3.1.2).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |   Type = 32   |  Length = 6   |         Reserved              |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                     IPv4 Care-of address                      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
pub(super) fn write_ipv4_care_of(address: Ipv4Addr, data: &mut [u8]) {
    data[field::ipv4_care_of::ADDRESS].copy_from_slice(&address.octets());
}

/// Reads the IPv4 Care-of Address option's data (RFC 5555 §3.1.2; the
/// reserved octets are ignored).
pub(super) fn decode_ipv4_care_of(data: &[u8]) -> Result<Ipv4Addr, DecodeError> {
    exact("IPv4 Care-of Address", data, field::ipv4_care_of::LEN)?;
    Ok(ipv4_at(data, field::ipv4_care_of::ADDRESS.start))
}

/// Every option here has exactly 6 octets of data.
fn exact(option: &'static str, data: &[u8], len: usize) -> Result<(), DecodeError> {
    if data.len() == len {
        Ok(())
    } else {
        Err(DecodeError::BadOptionLength {
            option,
            length: data.len(),
            expected: "6",
        })
    }
}

/// Reads an IPv4 address at `at`; the caller has checked the bounds.
fn ipv4_at(bytes: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_times_of_zero_and_all_ones_mean_what_section_3_2_2_says() {
        assert_eq!(NatRefresh::from_wire(0).interval(), Some(NATKATIMEOUT));
        assert_eq!(NatRefresh::from_wire(u32::MAX).interval(), None);
        assert_eq!(
            NatRefresh::from_wire(25).interval(),
            Some(Duration::from_secs(25))
        );
        for refresh in [
            NatRefresh::Unspecified,
            NatRefresh::Every(30),
            NatRefresh::NotNeeded,
        ] {
            assert_eq!(NatRefresh::from_wire(refresh.to_wire()), refresh);
        }
    }

    #[test]
    fn prefix_length_and_flags_share_their_octet() {
        let option = Ipv4HomeAddress {
            prefix_len: 32,
            request_prefix: true,
            address: Ipv4Addr::new(192, 0, 2, 7),
        };
        let mut data = [0u8; 6];
        option.write(&mut data);
        assert_eq!(data, [0x82, 0, 192, 0, 2, 7]);
        assert_eq!(Ipv4HomeAddress::decode(&data), Ok(option));
        let ack = Ipv4AddressAck {
            status: Ipv4AckStatus::SUCCESS,
            prefix_len: 24,
            address: Ipv4Addr::new(192, 0, 2, 0),
        };
        ack.write(&mut data);
        assert_eq!(data, [0, 0x60, 192, 0, 2, 0]);
        assert_eq!(Ipv4AddressAck::decode(&data), Ok(ack));
        // Reserved bits set by a sender are ignored (RFC 5555 §3.2.1).
        data[1] |= 0x03;
        assert_eq!(Ipv4AddressAck::decode(&data), Ok(ack));
        assert!(matches!(
            NatDetection::decode(&data[..5]),
            Err(DecodeError::BadOptionLength { length: 5, .. })
        ));
    }
}
