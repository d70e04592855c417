//! The VRRPv3 ADVERTISEMENT for IPv6 (RFC 5798 §5).
//!
//! Carried directly in IPv6 (next header 112), from the sender's link-local
//! address to ff02::12 with hop limit 255 (§5.1.2); the checksum covers the
//! IPv6 pseudo-header (RFC 8200 §8.1) with that destination (§5.2.8).

use std::net::Ipv6Addr;
use std::time::Duration;

use crate::wire::{upper_layer_checksum, verify_upper_layer_checksum};

/// IP protocol number of VRRP (RFC 5798 §5.1.1.3).
pub const IPPROTO_VRRP: u8 = 112;
/// The all-VRRP-routers group ADVERTISEMENTs go to (RFC 5798 §5.1.2.2).
pub const ALL_VRRP_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The hop limit an ADVERTISEMENT is sent with and must arrive with
/// (RFC 5798 §5.1.2.3, §7.1).
pub const HOP_LIMIT: u8 = 255;
/// The protocol version this module speaks (RFC 5798 §5.2.1).
pub const VERSION: u8 = 3;
/// The only packet type (RFC 5798 §5.2.2).
pub const TYPE_ADVERTISEMENT: u8 = 1;

/// Octets before the addresses.
const FIXED_LEN: usize = 8;
/// Offset of the checksum.
const CHECKSUM_OFFSET: usize = 6;

/// An advertisement interval on the wire: 12 bits of centiseconds
/// (RFC 5798 §5.2.7), 10 ms to 40.95 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Centiseconds(u16);

impl Centiseconds {
    /// The largest interval the field holds.
    pub const MAX: Centiseconds = Centiseconds(0x0fff);

    /// An interval of `value` centiseconds; `None` outside 1..=4095 (zero
    /// would make every timer fire at once).
    pub fn new(value: u16) -> Option<Centiseconds> {
        (1..=0x0fff).contains(&value).then_some(Centiseconds(value))
    }

    /// The value in centiseconds.
    pub fn get(self) -> u16 {
        self.0
    }

    /// As a duration.
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(u64::from(self.0) * 10)
    }
}

/// A VRRPv3 ADVERTISEMENT (RFC 5798 §5.2):
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |(rsvd) |     Max Adver Int     |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                                                               |
/// +                                                               +
/// |                       IPvX Address(es)                        |
/// +                                                               +
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// The virtual router (RFC 5798 §5.2.3), 1-255.
    pub vrid: u8,
    /// The sender's priority (§5.2.4): 255 for the address owner, 0 for a
    /// master giving up.
    pub priority: u8,
    /// How often the sender advertises (§5.2.7).
    pub max_advert_interval: Centiseconds,
    /// The virtual router's addresses (§5.2.9).
    pub addresses: Vec<Ipv6Addr>,
}

/// Why bytes are not an ADVERTISEMENT this router takes (RFC 5798 §7.1:
/// every one of these is discarded, and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdvertisementError {
    /// Shorter than the fixed part and one address.
    #[error("{0} octets: shorter than an advertisement with one address")]
    TooShort(usize),
    /// Longer than 255 addresses can make it.
    #[error("{0} octets: longer than any advertisement")]
    TooLong(usize),
    /// Not version 3.
    #[error("version {0}, not 3")]
    Version(u8),
    /// Not an ADVERTISEMENT.
    #[error("type {0}, not ADVERTISEMENT")]
    Type(u8),
    /// Count IPvX Addr does not match the length.
    #[error("{count} addresses declared in {len} octets")]
    AddressCount {
        /// The count field.
        count: u8,
        /// The length received.
        len: usize,
    },
    /// The checksum is wrong for the sender and ff02::12.
    #[error("bad checksum")]
    Checksum,
    /// Virtual router 0 or an interval of 0.
    #[error("virtual router ID 0 or advertisement interval 0")]
    Zero,
    /// The hop limit is not 255: it came from off the link.
    #[error("hop limit {0}, not 255")]
    HopLimit(u8),
}

impl AdvertisementError {
    /// A short name for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AdvertisementError::TooShort(_) => "too_short",
            AdvertisementError::TooLong(_) => "too_long",
            AdvertisementError::Version(_) => "version",
            AdvertisementError::Type(_) => "type",
            AdvertisementError::AddressCount { .. } => "address_count",
            AdvertisementError::Checksum => "checksum",
            AdvertisementError::Zero => "zero",
            AdvertisementError::HopLimit(_) => "hop_limit",
        }
    }
}

impl Advertisement {
    /// The VRRP payload (what follows the IPv6 header) as sent from
    /// `source`, checksum filled in. At most 255 addresses are encoded.
    pub fn encode(&self, source: Ipv6Addr) -> Vec<u8> {
        let addresses = &self.addresses[..self.addresses.len().min(255)];
        let mut bytes = Vec::with_capacity(FIXED_LEN + 16 * addresses.len());
        bytes.push((VERSION << 4) | TYPE_ADVERTISEMENT);
        bytes.push(self.vrid);
        bytes.push(self.priority);
        // At most 255 by the slice above.
        bytes.push(addresses.len() as u8);
        bytes.extend_from_slice(&(self.max_advert_interval.get() & 0x0fff).to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
        for address in addresses {
            bytes.extend_from_slice(&address.octets());
        }
        let checksum = upper_layer_checksum(
            source,
            ALL_VRRP_ROUTERS,
            IPPROTO_VRRP,
            &bytes,
            CHECKSUM_OFFSET,
        );
        bytes[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2].copy_from_slice(&checksum.to_be_bytes());
        bytes
    }

    /// Decodes the VRRP payload received from `source` with `hop_limit`,
    /// with the checks of RFC 5798 §7.1 that need no configuration.
    pub fn decode(
        bytes: &[u8],
        source: Ipv6Addr,
        hop_limit: u8,
    ) -> Result<Advertisement, AdvertisementError> {
        if hop_limit != HOP_LIMIT {
            return Err(AdvertisementError::HopLimit(hop_limit));
        }
        if bytes.len() < FIXED_LEN + 16 {
            return Err(AdvertisementError::TooShort(bytes.len()));
        }
        if bytes.len() > FIXED_LEN + 16 * 255 {
            return Err(AdvertisementError::TooLong(bytes.len()));
        }
        let version = bytes[0] >> 4;
        if version != VERSION {
            return Err(AdvertisementError::Version(version));
        }
        let kind = bytes[0] & 0x0f;
        if kind != TYPE_ADVERTISEMENT {
            return Err(AdvertisementError::Type(kind));
        }
        let count = bytes[3];
        if bytes.len() != FIXED_LEN + 16 * usize::from(count) {
            return Err(AdvertisementError::AddressCount {
                count,
                len: bytes.len(),
            });
        }
        if !verify_upper_layer_checksum(source, ALL_VRRP_ROUTERS, IPPROTO_VRRP, bytes) {
            return Err(AdvertisementError::Checksum);
        }
        let interval = u16::from_be_bytes([bytes[4], bytes[5]]) & 0x0fff;
        let (Some(max_advert_interval), vrid @ 1..) = (Centiseconds::new(interval), bytes[1])
        else {
            return Err(AdvertisementError::Zero);
        };
        let addresses = bytes[FIXED_LEN..]
            .chunks_exact(16)
            .map(|chunk| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(chunk);
                Ipv6Addr::from(octets)
            })
            .collect();
        Ok(Advertisement {
            vrid,
            priority: bytes[2],
            max_advert_interval,
            addresses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Advertisement {
        Advertisement {
            vrid: 7,
            priority: 200,
            max_advert_interval: Centiseconds::new(10).unwrap_or(Centiseconds::MAX),
            addresses: vec![
                "fe80::1".parse().unwrap_or(Ipv6Addr::LOCALHOST),
                "2001:db8:1::1".parse().unwrap_or(Ipv6Addr::LOCALHOST),
            ],
        }
    }

    const FROM: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xa);

    #[test]
    fn encodes_the_rfc_layout_and_round_trips() {
        let bytes = sample().encode(FROM);
        assert_eq!(bytes.len(), 8 + 32);
        assert_eq!(&bytes[..6], &[0x31, 7, 200, 2, 0, 10]);
        assert_eq!(Advertisement::decode(&bytes, FROM, 255), Ok(sample()));
    }

    #[test]
    fn refuses_what_rfc_5798_section_7_1_discards() {
        let good = sample().encode(FROM);
        assert_eq!(
            Advertisement::decode(&good, FROM, 64),
            Err(AdvertisementError::HopLimit(64))
        );
        // The checksum names the sender: another source does not verify.
        assert_eq!(
            Advertisement::decode(&good, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xb), 255),
            Err(AdvertisementError::Checksum)
        );
        let mut v2 = good.clone();
        v2[0] = 0x21;
        assert_eq!(
            Advertisement::decode(&v2, FROM, 255),
            Err(AdvertisementError::Version(2))
        );
        let mut miscounted = good.clone();
        miscounted[3] = 3;
        assert!(matches!(
            Advertisement::decode(&miscounted, FROM, 255),
            Err(AdvertisementError::AddressCount { count: 3, .. })
        ));
        assert_eq!(
            Advertisement::decode(&good[..20], FROM, 255),
            Err(AdvertisementError::TooShort(20))
        );
        let zero = Advertisement {
            vrid: 0,
            ..sample()
        }
        .encode(FROM);
        assert_eq!(
            Advertisement::decode(&zero, FROM, 255),
            Err(AdvertisementError::Zero)
        );
    }

    #[test]
    fn intervals_are_twelve_bits_of_centiseconds() {
        assert_eq!(Centiseconds::new(0), None);
        assert_eq!(Centiseconds::new(4096), None);
        assert_eq!(
            Centiseconds::MAX.as_duration(),
            Duration::from_millis(40_950)
        );
    }
}
