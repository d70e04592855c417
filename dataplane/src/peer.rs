//! A tunnel's far end: an IPv6 address (RFC 2473), or an IPv4 one with or
//! without a UDP port (Dual-Stack Mobile IPv6, RFC 5555 §4.1), and the 16
//! octets the BPF maps hold it in (`dataplane/bpf/nemo_maps.h`).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

/// Where a tunnel goes, and the only source its packets are taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// IPv6 in IPv6.
    Ipv6(Ipv6Addr),
    /// IPv6 in IPv4 (protocol 41): an IPv4 care-of address with no NAT.
    Ipv4(Ipv4Addr),
    /// IPv6 in UDP in IPv4, to (and from) this address and port: a NAT's
    /// mapping, or a home agent's DSMIPv6 port.
    Udp(SocketAddrV4),
}

impl Peer {
    /// The 16 octets of `struct nemo_peer`: an IPv6 address as it is; an
    /// IPv4 peer as 8 zero octets, the UDP port (zero for none), 0xffff and
    /// the address.
    pub fn octets(&self) -> [u8; 16] {
        match *self {
            Peer::Ipv6(address) => address.octets(),
            Peer::Ipv4(address) => ipv4_octets(address, 0),
            Peer::Udp(socket) => ipv4_octets(*socket.ip(), socket.port()),
        }
    }

    /// The peer 16 octets of `struct nemo_peer` hold.
    pub fn from_octets(octets: [u8; 16]) -> Peer {
        let ipv4 = octets[..8].iter().all(|o| *o == 0) && octets[10..12] == [0xff, 0xff];
        if !ipv4 {
            return Peer::Ipv6(Ipv6Addr::from(octets));
        }
        let address = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
        match u16::from_be_bytes([octets[8], octets[9]]) {
            0 => Peer::Ipv4(address),
            port => Peer::Udp(SocketAddrV4::new(address, port)),
        }
    }

    /// The IPv6 address; `None` for an IPv4 peer.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        match *self {
            Peer::Ipv6(address) => Some(address),
            Peer::Ipv4(_) | Peer::Udp(_) => None,
        }
    }
}

fn ipv4_octets(address: Ipv4Addr, port: u16) -> [u8; 16] {
    let mut octets = [0u8; 16];
    octets[8..10].copy_from_slice(&port.to_be_bytes());
    octets[10..12].copy_from_slice(&[0xff, 0xff]);
    octets[12..].copy_from_slice(&address.octets());
    octets
}

impl From<Ipv6Addr> for Peer {
    fn from(address: Ipv6Addr) -> Peer {
        Peer::Ipv6(address)
    }
}

/// `2001:db8::10` (IPv6), `192.0.2.10` (IPv6 in IPv4) or `192.0.2.10:4191`
/// (UDP), as tools and tests write them.
impl std::str::FromStr for Peer {
    type Err = std::net::AddrParseError;

    fn from_str(text: &str) -> Result<Peer, Self::Err> {
        if let Ok(socket) = text.parse::<SocketAddrV4>() {
            return Ok(Peer::Udp(socket));
        }
        if let Ok(address) = text.parse::<Ipv4Addr>() {
            return Ok(Peer::Ipv4(address));
        }
        text.parse::<Ipv6Addr>().map(Peer::Ipv6)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ipv6(address) => address.fmt(f),
            Peer::Ipv4(address) => address.fmt(f),
            Peer::Udp(socket) => write!(f, "{socket} (udp)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_round_trip_through_their_map_octets() {
        for peer in [
            Peer::Ipv6("2001:db8:2::10".parse().unwrap()),
            Peer::Ipv4(Ipv4Addr::new(192, 0, 2, 10)),
            Peer::Udp(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 99), 40000)),
        ] {
            assert_eq!(Peer::from_octets(peer.octets()), peer, "{peer}");
        }
        // IPv6-in-IPv4 to 192.0.2.10 is its IPv4-mapped address.
        assert_eq!(
            Peer::Ipv4(Ipv4Addr::new(192, 0, 2, 10)).octets(),
            Ipv4Addr::new(192, 0, 2, 10).to_ipv6_mapped().octets()
        );
        for text in ["2001:db8::10", "192.0.2.10", "192.0.2.10:4191"] {
            let peer: Peer = text.parse().unwrap();
            assert_eq!(peer.to_string().trim_end_matches(" (udp)"), text);
        }
        let udp = Peer::Udp(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 99), 4191)).octets();
        assert_eq!(udp[8..10], [0x10, 0x5f]);
    }
}
