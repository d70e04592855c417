//! The Rust side of nemo's BPF map layouts. The layouts themselves live in
//! one place, `dataplane/bpf/nemo_maps.h`; this module mirrors them as
//! byte encodings, and [`super::Programs::load`] checks every map's key
//! and value size against these before it uses a map, so a header changed
//! without this file is refused at load with the map's name.

use std::net::{Ipv6Addr, SocketAddrV4};

use ipnet::Ipv6Net;

use crate::Peer;

/// `struct nemo_prefix`: the LPM tries' key (length in bits, then the
/// address in network order).
pub const PREFIX_SIZE: usize = 4 + 16;
/// `struct nemo_peer`: a binding's tunnel peer.
pub const PEER_SIZE: usize = 16;
/// `struct nemo_second`: a moving tenant's second peer, and when it was
/// last heard from.
pub const SECOND_SIZE: usize = 16 + 8;
/// Most prefixes of a tenant the kernel releases itself
/// (`NEMO_MAX_HELD_PREFIXES`).
pub const MAX_HELD_PREFIXES: usize = 8;
/// `struct nemo_hold`: a held tenant's home agent and prefixes.
pub const HOLD_SIZE: usize = 16 + 4 + 4 + MAX_HELD_PREFIXES * PREFIX_SIZE;
/// `struct nemo_local`: the address tunnelled packets must be sent to.
pub const LOCAL_SIZE: usize = 16;

/// The maps, by their names in the object: a prefix (home address, Mobile
/// Network Prefix) to its binding's tunnel peer, for both directions.
pub const BINDINGS: &str = "nemo_bindings";
/// A destination's second tunnel peer while its tenant moves (home agent).
pub const ALSO: &str = "nemo_also";
/// This host's tunnel address.
pub const LOCAL: &str = "nemo_local";
/// This host's IPv4 tunnel address and UDP port (RFC 5555).
pub const LOCAL4: &str = "nemo_local4";
/// A held tenant's port (ifindex) to what its VM's first frame releases
/// (mobile router).
pub const HOLDS: &str = "nemo_holds";
/// Per-CPU counters, one slot per [`Counter`].
pub const COUNTERS: &str = "nemo_counters";

/// `enum nemo_counter`: what the programs count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// Packets put into a tunnel.
    Encapsulated = 0,
    /// Packets whose destination (home agent) or source (mobile router)
    /// no binding holds: dropped.
    EncapNoTunnel = 1,
    /// Packets the kernel would not encapsulate (`bpf_lwt_push_encap`).
    EncapFailed = 2,
    /// Packets taken out of a tunnel.
    Decapsulated = 3,
    /// Tunnelled packets from a peer other than the one their inner
    /// source is bound to (RFC 3963 §6.4): dropped.
    DecapSpoofed = 4,
    /// Tunnelled packets to us whose inner packet is truncated or not
    /// IPv6: dropped.
    DecapMalformed = 5,
    /// Packets the kernel would not shrink (`bpf_skb_adjust_room`).
    DecapFailed = 6,
    /// Packets routed into the tunnel that are not IPv6: dropped.
    Malformed = 7,
    /// Copies sent to a moving tenant's second care-of address.
    BicastCopied = 8,
    /// Copies not sent: no route or no neighbour entry towards the second
    /// care-of address.
    BicastNoRoute = 9,
    /// Copies the kernel would not send (`bpf_clone_redirect`).
    BicastFailed = 10,
    /// Mobile router: packets of a tenant held until its VM announces
    /// itself here: dropped.
    Held = 11,
    /// Mobile router: held tenants the kernel released on their VM's first
    /// frame.
    Released = 12,
}

impl Counter {
    /// Its name in metrics (`dataplane_packets{counter=...}`).
    pub fn name(self) -> &'static str {
        match self {
            Counter::Encapsulated => "encapsulated",
            Counter::EncapNoTunnel => "encap_no_tunnel",
            Counter::EncapFailed => "encap_failed",
            Counter::Decapsulated => "decapsulated",
            Counter::DecapSpoofed => "decap_spoofed",
            Counter::DecapMalformed => "decap_malformed",
            Counter::DecapFailed => "decap_failed",
            Counter::Malformed => "malformed",
            Counter::BicastCopied => "bicast_copied",
            Counter::BicastNoRoute => "bicast_no_route",
            Counter::BicastFailed => "bicast_failed",
            Counter::Held => "held",
            Counter::Released => "released",
        }
    }

    /// Every counter, in slot order.
    pub const ALL: [Counter; 13] = [
        Counter::Encapsulated,
        Counter::EncapNoTunnel,
        Counter::EncapFailed,
        Counter::Decapsulated,
        Counter::DecapSpoofed,
        Counter::DecapMalformed,
        Counter::DecapFailed,
        Counter::Malformed,
        Counter::BicastCopied,
        Counter::BicastNoRoute,
        Counter::BicastFailed,
        Counter::Held,
        Counter::Released,
    ];
}

/// The key of `prefix` in an LPM trie.
pub fn prefix_key(prefix: Ipv6Net) -> [u8; PREFIX_SIZE] {
    let mut key = [0u8; PREFIX_SIZE];
    // The trie compares prefixlen as a host-order u32.
    key[..4].copy_from_slice(&u32::from(prefix.prefix_len()).to_ne_bytes());
    key[4..].copy_from_slice(&prefix.trunc().network().octets());
    key
}

/// The prefix an LPM key holds (`None`: a length over 128).
pub fn key_prefix(key: &[u8]) -> Option<Ipv6Net> {
    let length = u32::from_ne_bytes(key.get(..4)?.try_into().ok()?);
    let octets: [u8; 16] = key.get(4..PREFIX_SIZE)?.try_into().ok()?;
    Ipv6Net::new(Ipv6Addr::from(octets), u8::try_from(length).ok()?).ok()
}

/// `struct nemo_local`: one address.
pub fn address_value(address: Ipv6Addr) -> [u8; 16] {
    address.octets()
}

/// The address of a `struct nemo_local`.
pub fn value_address(value: &[u8]) -> Option<Ipv6Addr> {
    let octets: [u8; 16] = value.get(..16)?.try_into().ok()?;
    Some(Ipv6Addr::from(octets))
}

/// `struct nemo_peer`: a tunnel's far end ([`Peer::octets`]).
pub fn peer_value(peer: Peer) -> [u8; 16] {
    peer.octets()
}

/// The peer of a `struct nemo_peer` (or the first octets of a
/// `struct nemo_second` or `struct nemo_hold`).
pub fn value_peer(value: &[u8]) -> Option<Peer> {
    Some(Peer::from_octets(value.get(..16)?.try_into().ok()?))
}

/// `struct nemo_local` of `nemo_local4`: this host's IPv4 tunnel address
/// and UDP port, written as an IPv4 peer is.
pub fn local4_value(local: SocketAddrV4) -> [u8; 16] {
    Peer::Udp(local).octets()
}

/// `struct nemo_second` for `peer`, not heard from yet.
pub fn second_value(peer: Peer) -> [u8; SECOND_SIZE] {
    let mut value = [0u8; SECOND_SIZE];
    value[..16].copy_from_slice(&peer.octets());
    value
}

/// `struct nemo_hold`: once released, `prefixes` point at `peer`; `None`
/// for more prefixes than the kernel releases (the daemon does it then).
pub fn hold_value(peer: Peer, prefixes: &[Ipv6Net]) -> Option<[u8; HOLD_SIZE]> {
    if prefixes.len() > MAX_HELD_PREFIXES {
        return None;
    }
    let mut value = [0u8; HOLD_SIZE];
    value[..16].copy_from_slice(&peer.octets());
    value[16..20].copy_from_slice(&u32::try_from(prefixes.len()).ok()?.to_ne_bytes());
    for (slot, prefix) in prefixes.iter().enumerate() {
        let at = 24 + slot * PREFIX_SIZE;
        value[at..at + PREFIX_SIZE].copy_from_slice(&prefix_key(*prefix));
    }
    Some(value)
}

/// When a `struct nemo_second`'s peer was last heard from
/// (`bpf_ktime_get_ns`: CLOCK_MONOTONIC nanoseconds); `None` for never.
pub fn second_heard_ns(value: &[u8]) -> Option<u64> {
    let heard = u64::from_ne_bytes(value.get(16..SECOND_SIZE)?.try_into().ok()?);
    (heard != 0).then_some(heard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let prefix: Ipv6Net = "2001:db8:100::/56".parse().unwrap();
        assert_eq!(key_prefix(&prefix_key(prefix)), Some(prefix));
        // Host bits are not part of a key.
        let sloppy: Ipv6Net = "2001:db8:100::1/56".parse().unwrap();
        assert_eq!(prefix_key(sloppy), prefix_key(prefix));
        let a: Ipv6Addr = "2001:db8:2::10".parse().unwrap();
        assert_eq!(value_address(&address_value(a)), Some(a));
        assert_eq!(key_prefix(&[0xff; PREFIX_SIZE]), None);
        let second = second_value(a.into());
        assert_eq!(value_peer(&second), Some(Peer::Ipv6(a)));
        assert_eq!(second_heard_ns(&second), None);
        let mut heard = second;
        heard[16..].copy_from_slice(&7u64.to_ne_bytes());
        assert_eq!(second_heard_ns(&heard), Some(7));
        let prefixes: Vec<Ipv6Net> = vec![prefix, "2001:db8:200::/48".parse().unwrap()];
        let hold = hold_value(a.into(), &prefixes).unwrap();
        assert_eq!(value_peer(&hold), Some(Peer::Ipv6(a)));
        assert_eq!(u32::from_ne_bytes(hold[16..20].try_into().unwrap()), 2);
        assert_eq!(key_prefix(&hold[24..44]), Some(prefixes[0]));
        assert_eq!(key_prefix(&hold[44..64]), Some(prefixes[1]));
        assert!(hold[64..].iter().all(|o| *o == 0));
        assert!(hold_value(a.into(), &[prefix; MAX_HELD_PREFIXES + 1]).is_none());
        let udp: SocketAddrV4 = "192.0.2.10:4191".parse().unwrap();
        assert_eq!(value_peer(&local4_value(udp)), Some(Peer::Udp(udp)));
        assert_eq!(value_address(&[0; 15]), None);
    }

    #[test]
    fn counters_are_in_slot_order() {
        for (slot, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, slot);
        }
    }
}
