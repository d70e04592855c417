//! Where the host stands: its care-of address, and the home agent's IPv4
//! UDP address when IPv4 care-of addresses register (RFC 5555). Together
//! they say which peer a tenant's tunnel goes to.

use std::net::{IpAddr, Ipv6Addr, SocketAddrV4};

use nemo::registration::Encapsulation;
use nemo_dataplane::Peer;

/// The host's care-of address and the home agent's IPv4 UDP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Uplink {
    /// The care-of address (`None`: none usable now).
    pub care_of: Option<IpAddr>,
    /// The home agent's IPv4 UDP address (`[transport]
    /// home_agent_udp_ipv4`).
    pub ipv4_home_agent: Option<SocketAddrV4>,
}

impl Uplink {
    /// The tunnel peer of a tenant whose home agent is `home_agent`, as
    /// its last acknowledgement at this care-of address set it
    /// (`encapsulation`; `None` before it registered here):
    /// - from an IPv6 care-of address, the home agent's IPv6 address;
    /// - from an IPv4 one, its IPv4 address in UDP (RFC 5555 §4.2: behind a
    ///   NAT, or until the acknowledgement says there is none), or IPv6 in
    ///   IPv4 when the acknowledgement says so.
    pub fn peer(&self, home_agent: Ipv6Addr, encapsulation: Option<Encapsulation>) -> Peer {
        match (self.care_of, self.ipv4_home_agent, encapsulation) {
            (Some(IpAddr::V4(_)), Some(home_agent4), Some(Encapsulation::Ipv4)) => {
                Peer::Ipv4(*home_agent4.ip())
            }
            (Some(IpAddr::V4(_)), Some(home_agent4), _) => Peer::Udp(home_agent4),
            _ => Peer::Ipv6(home_agent),
        }
    }

    /// The IPv4 tunnel's local end: the IPv4 care-of address and the IPv4
    /// socket's port; `None` from an IPv6 care-of address.
    pub fn ipv4_local(&self, port: Option<u16>) -> Option<SocketAddrV4> {
        match (self.care_of, port) {
            (Some(IpAddr::V4(address)), Some(port)) => Some(SocketAddrV4::new(address, port)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_tunnel_follows_the_care_of_address_family_and_the_nat() {
        let home_agent: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let home_agent4: SocketAddrV4 = "192.0.2.1:4191".parse().unwrap();
        let ipv6 = Uplink {
            care_of: Some("2001:db8:2::10".parse().unwrap()),
            ipv4_home_agent: Some(home_agent4),
        };
        assert_eq!(
            ipv6.peer(home_agent, Some(Encapsulation::Ipv6)),
            Peer::Ipv6(home_agent)
        );
        assert_eq!(ipv6.ipv4_local(Some(4191)), None);
        let ipv4 = Uplink {
            care_of: Some("192.0.2.130".parse().unwrap()),
            ..ipv6
        };
        // UDP until the home agent says there is no NAT.
        assert_eq!(ipv4.peer(home_agent, None), Peer::Udp(home_agent4));
        let behind_nat = Encapsulation::Udp {
            keepalive: Some(Duration::from_secs(110)),
        };
        assert_eq!(
            ipv4.peer(home_agent, Some(behind_nat)),
            Peer::Udp(home_agent4)
        );
        assert_eq!(
            ipv4.peer(home_agent, Some(Encapsulation::Ipv4)),
            Peer::Ipv4(*home_agent4.ip())
        );
        assert_eq!(
            ipv4.ipv4_local(Some(4191)),
            Some("192.0.2.130:4191".parse().unwrap())
        );
        // No care-of address: the IPv6 peer stands (nothing is sent).
        assert_eq!(
            Uplink::default().peer(home_agent, None),
            Peer::Ipv6(home_agent)
        );
    }
}
