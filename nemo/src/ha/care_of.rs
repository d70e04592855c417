//! Where a binding's packets go: the care-of address and the tunnel that
//! reaches it (IPv6 in IPv6, RFC 6275 §10.4.1; IPv6 in IPv4 or in UDP in
//! IPv4, Dual-Stack Mobile IPv6, RFC 5555 §4.1, §4.2), and how a Binding
//! Update arrived, from which the home agent detects a NAT (RFC 5555 §4.2).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};

use crate::auth::authenticated_care_of;

/// A binding's care-of address and the tunnel to it.
///
/// 18 octets: a binding stays 112 (an `Arc<Binding>` 128, its allocator
/// size class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CareOf {
    /// An IPv6 care-of address: IPv6 in IPv6 (RFC 6275 §10.4.1, RFC 3963
    /// §6.7).
    Ipv6(Ipv6Addr),
    /// An IPv4 care-of address with no NAT on the path: IPv6 in IPv4 to it
    /// (RFC 5555 §4.2, §4.5.1).
    Ipv4(Ipv4Addr),
    /// An IPv4 care-of address behind a NAT, or with UDP encapsulation
    /// forced: IPv6 in UDP in IPv4 to the address and port its Binding
    /// Update came from (RFC 5555 §4.2: "the home agent stores the port
    /// numbers").
    Udp {
        /// The address the mobile router has (the IPv4 Care-of Address
        /// option's; a private address behind a NAT).
        care_of: Ipv4Addr,
        /// Where its Binding Update came from: the NAT's mapping.
        outer: SocketAddrV4,
    },
}

impl CareOf {
    /// The care-of address the mobile router registered.
    pub fn address(&self) -> IpAddr {
        match *self {
            CareOf::Ipv6(address) => IpAddr::V6(address),
            CareOf::Ipv4(address)
            | CareOf::Udp {
                care_of: address, ..
            } => IpAddr::V4(address),
        }
    }

    /// The IPv6 care-of address; `None` for an IPv4 one.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        match *self {
            CareOf::Ipv6(address) => Some(address),
            CareOf::Ipv4(_) | CareOf::Udp { .. } => None,
        }
    }

    /// The care-of address as RFC 4285 §5.1's authenticator covers it.
    pub fn authenticated(&self) -> Ipv6Addr {
        authenticated_care_of(self.address())
    }
}

impl fmt::Display for CareOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CareOf::Ipv6(address) => address.fmt(f),
            CareOf::Ipv4(address) => address.fmt(f),
            CareOf::Udp { care_of, outer } if care_of == outer.ip() => {
                write!(f, "{care_of} (udp port {})", outer.port())
            }
            CareOf::Udp { care_of, outer } => write!(f, "{care_of} (nat {outer})"),
        }
    }
}

/// Whether a home agent takes IPv4 care-of addresses (RFC 5555), and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ipv4CareOfs {
    /// Refused: a Binding Update with an IPv4 care-of address is answered
    /// 129 (Administratively prohibited). What a home agent whose data
    /// plane has no IPv4 tunnels must say.
    #[default]
    Refused,
    /// Accepted, tunnelled as RFC 5555 §4.2 says.
    Accepted {
        /// The Refresh time suggested to a mobile router behind a NAT
        /// (RFC 5555 §3.2.2, §4.3): how often it must send to keep the
        /// NAT's mapping open. NATKATIMEOUT (110 s) unless configured.
        nat_keepalive: std::time::Duration,
        /// When to encapsulate in UDP.
        udp: UdpEncapsulation,
    },
}

/// When a home agent encapsulates in UDP (RFC 5555 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpEncapsulation {
    /// Behind a NAT, or when the mobile router sets F; IPv6 in IPv4
    /// otherwise.
    WhenNeeded,
    /// Always (the NAT Detection option's F): for paths whose firewalls
    /// drop IP protocol 41.
    Always,
}

/// How a Binding Update reached the home agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arrival {
    /// In IPv6: natively or in UDP over IPv6.
    Ipv6,
    /// In UDP over IPv4, from this address and port (RFC 5555 §4.2): the
    /// mobile router's IPv4 care-of address, or its NAT's mapping.
    UdpIpv4(SocketAddrV4),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_care_of_address_stays_small_enough_for_a_binding_size_class() {
        assert!(std::mem::size_of::<CareOf>() <= 18);
    }

    #[test]
    fn the_authenticator_covers_the_care_of_address_not_the_nats_mapping() {
        let behind = CareOf::Udp {
            care_of: Ipv4Addr::new(192, 0, 2, 10),
            outer: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 99), 40000),
        };
        assert_eq!(behind.address(), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!(
            behind.authenticated(),
            "::ffff:192.0.2.10".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(behind.to_string(), "192.0.2.10 (nat 192.0.2.99:40000)");
        let direct = CareOf::Ipv4(Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(direct.address(), behind.address());
        assert_eq!(direct.ipv6(), None);
    }
}
