//! nemo's BPF programs run on crafted packets with BPF_PROG_TEST_RUN: no
//! interface, no namespace, each test its own maps. Needs root (CAP_BPF);
//! skips loudly without it unless NEMO_REQUIRE_BPF is set (deploy/test.sh
//! sets it).
//!
//! The encapsulation itself is not run here: `bpf_lwt_push_encap` reads
//! the packet's route (`skb_dst(skb)->dev`), which a test run does not
//! set, and kernels before upstream commit 972787479ee7 dereference it
//! and crash. The programs' encapsulation paths are run by
//! tests/bpf_forwarding.rs on real routes in namespaces instead; here the
//! encapsulation programs run only where they drop before encapsulating.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

use ipnet::Ipv6Net;
use libbpf_rs::{MapCore, MapFlags};
use nemo_dataplane::bpf::maps::{self, Counter};
use nemo_dataplane::bpf::{Program, Programs};
use nemo_dataplane::Peer;
use nemo_testkit::{addr, net, require};

const TC_ACT_OK: u32 = 0;
/// TC_ACT_UNSPEC: a packet taken out of its tunnel goes on to the next
/// filter (the translator's at arrival), or into the stack.
const DECAPSULATED: u32 = u32::MAX;
const TC_ACT_SHOT: u32 = 2;
const BPF_DROP: u32 = 2;
const ETHERNET: usize = 14;

fn programs() -> Option<Programs> {
    if !require(
        nemo_testkit::is_root(),
        "not root: loading BPF programs needs CAP_BPF",
        "NEMO_REQUIRE_BPF",
    ) {
        return None;
    }
    Some(Programs::load(None).unwrap())
}

/// An IPv6 header: payload length, next header, source, destination.
fn ipv6(payload: usize, next_header: u8, source: Ipv6Addr, destination: Ipv6Addr) -> Vec<u8> {
    let mut header = vec![0x60, 0, 0, 0];
    header.extend_from_slice(&(payload as u16).to_be_bytes());
    header.push(next_header);
    header.push(64);
    header.extend_from_slice(&source.octets());
    header.extend_from_slice(&destination.octets());
    header
}

/// An IPv6 UDP packet (checksum left zero: nothing here checks it).
fn udp(source: Ipv6Addr, destination: Ipv6Addr) -> Vec<u8> {
    let payload = b"nemo";
    let mut packet = ipv6(8 + payload.len(), 17, source, destination);
    packet.extend_from_slice(&[0x12, 0x34, 0x12, 0x35]);
    packet.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    packet
}

/// `inner` IPv6-in-IPv6 (RFC 2473) from `outer_source` to `outer_destination`.
fn tunnelled(inner: &[u8], outer_source: Ipv6Addr, outer_destination: Ipv6Addr) -> Vec<u8> {
    let mut packet = ipv6(inner.len(), 41, outer_source, outer_destination);
    packet.extend_from_slice(inner);
    packet
}

/// An Ethernet frame around an IPv6 packet.
fn frame(packet: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
    frame.extend_from_slice(packet);
    frame
}

/// Binds `prefix` to `peer` (its care-of address on a home agent, its home
/// agent on a mobile router).
fn bind(programs: &Programs, prefix: Ipv6Net, peer: Ipv6Addr) {
    programs
        .bindings
        .update(
            &maps::prefix_key(prefix),
            &maps::address_value(peer),
            MapFlags::ANY,
        )
        .unwrap();
}

const HA: &str = "2001:db8:1::1";
const CARE_OF: &str = "2001:db8:2::10";
const MNP: &str = "2001:db8:100::/56";
const VM: &str = "2001:db8:100::2";
const CN: &str = "2001:db8:f::2";

/// A home agent's maps: its address, one binding (MNP via CARE_OF).
fn home_agent() -> Option<Programs> {
    let programs = programs()?;
    programs.set_local(addr(HA)).unwrap();
    bind(&programs, net(MNP), addr(CARE_OF));
    Some(programs)
}

#[test]
fn decapsulation_takes_a_packet_from_the_bound_care_of_address() {
    let Some(programs) = home_agent() else { return };
    let inner = udp(addr(VM), addr(CN));
    let packet = frame(&tunnelled(&inner, addr(CARE_OF), addr(HA)));
    let (verdict, out) = programs.test_run(Program::DecapBySource, &packet).unwrap();
    assert_eq!(verdict, DECAPSULATED);
    // The outer header is gone: Ethernet, then the inner packet as sent.
    assert_eq!(&out[..ETHERNET], &packet[..ETHERNET]);
    assert_eq!(&out[ETHERNET..], &inner[..]);
    assert_eq!(programs.counter(Counter::Decapsulated), 1);
    assert_eq!(programs.counter(Counter::DecapSpoofed), 0);
}

#[test]
fn a_spoofed_reverse_tunnel_is_dropped_and_counted() {
    let Some(programs) = home_agent() else { return };
    // The tenant's source, tunnelled from an address that is not its
    // care-of address (RFC 3963 §6.4).
    let inner = udp(addr(VM), addr(CN));
    let packet = frame(&tunnelled(&inner, addr("2001:db8:66::66"), addr(HA)));
    let (verdict, _) = programs.test_run(Program::DecapBySource, &packet).unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
    // From the right care-of address, but an inner source no binding holds.
    let foreign = udp(addr("2001:db8:999::1"), addr(CN));
    let packet = frame(&tunnelled(&foreign, addr(CARE_OF), addr(HA)));
    let (verdict, _) = programs.test_run(Program::DecapBySource, &packet).unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(programs.counter(Counter::DecapSpoofed), 2);
    assert_eq!(programs.counter(Counter::Decapsulated), 0);
}

#[test]
fn packets_not_tunnelled_to_us_pass_untouched() {
    let Some(programs) = home_agent() else { return };
    for packet in [
        // Plain traffic.
        frame(&udp(addr(CN), addr(VM))),
        // Tunnelled, but to another address (a router on the path).
        frame(&tunnelled(
            &udp(addr(VM), addr(CN)),
            addr(CARE_OF),
            addr("2001:db8:1::9"),
        )),
    ] {
        let (verdict, out) = programs.test_run(Program::DecapBySource, &packet).unwrap();
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(out, packet);
    }
    assert_eq!(programs.counter(Counter::Decapsulated), 0);
    assert_eq!(programs.counter(Counter::DecapSpoofed), 0);
}

#[test]
fn a_truncated_inner_packet_is_dropped_and_counted() {
    let Some(programs) = home_agent() else { return };
    let inner = udp(addr(VM), addr(CN));
    let mut packet = frame(&tunnelled(&inner, addr(CARE_OF), addr(HA)));
    packet.truncate(ETHERNET + 40 + 20);
    let (verdict, _) = programs.test_run(Program::DecapBySource, &packet).unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
    // Not IPv6 inside (version 4 in the first nibble).
    let mut packet = frame(&tunnelled(&inner, addr(CARE_OF), addr(HA)));
    packet[ETHERNET + 40] = 0x45;
    let (verdict, _) = programs.test_run(Program::DecapBySource, &packet).unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(programs.counter(Counter::DecapMalformed), 2);
}

#[test]
fn a_mobile_router_takes_its_tenants_packets_only_from_their_home_agent() {
    let Some(programs) = programs() else { return };
    programs.set_local(addr(CARE_OF)).unwrap();
    // Keyed by the inner destination: the tenant's prefix, whose home
    // agent is HA.
    bind(&programs, net(MNP), addr(HA));
    let inner = udp(addr(CN), addr(VM));
    let packet = frame(&tunnelled(&inner, addr(HA), addr(CARE_OF)));
    let (verdict, out) = programs
        .test_run(Program::DecapByDestination, &packet)
        .unwrap();
    assert_eq!(verdict, DECAPSULATED);
    assert_eq!(&out[ETHERNET..], &inner[..]);
    let spoofed = frame(&tunnelled(&inner, addr("2001:db8:1::2"), addr(CARE_OF)));
    let (verdict, _) = programs
        .test_run(Program::DecapByDestination, &spoofed)
        .unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(programs.counter(Counter::Decapsulated), 1);
    assert_eq!(programs.counter(Counter::DecapSpoofed), 1);
}

#[test]
fn a_held_tenant_is_dropped_both_ways_and_counted_until_passed() {
    let Some(programs) = programs() else { return };
    programs.set_local(addr(CARE_OF)).unwrap();
    // Held (issue 29): the tenant's prefix bound to `::` until its VM
    // announces itself here.
    bind(&programs, net(MNP), std::net::Ipv6Addr::UNSPECIFIED);
    let inner = udp(addr(CN), addr(VM));
    let arriving = frame(&tunnelled(&inner, addr(HA), addr(CARE_OF)));
    let (verdict, _) = programs
        .test_run(Program::DecapByDestination, &arriving)
        .unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
    let leaving = frame(&udp(addr(VM), addr(CN)));
    let (verdict, _) = programs.test_run(Program::EncapBySource, &leaving).unwrap();
    assert_eq!(verdict, BPF_DROP);
    assert_eq!(programs.counter(Counter::Held), 2);
    assert_eq!(programs.counter(Counter::DecapSpoofed), 0);
    assert_eq!(programs.counter(Counter::Decapsulated), 0);
    // Passed: the same packet goes through.
    bind(&programs, net(MNP), addr(HA));
    let (verdict, out) = programs
        .test_run(Program::DecapByDestination, &arriving)
        .unwrap();
    assert_eq!(verdict, DECAPSULATED);
    assert_eq!(&out[ETHERNET..], &inner[..]);
    assert_eq!(programs.counter(Counter::Held), 2);
}

#[test]
fn while_a_tenant_moves_its_reverse_tunnel_is_taken_from_both_care_of_addresses() {
    let Some(programs) = home_agent() else { return };
    // The binding moved to 2001:db8:3::10; CARE_OF, the address it left,
    // gets copies (nemo_also) and its reverse tunnel is taken meanwhile.
    let new_care_of = addr("2001:db8:3::10");
    bind(&programs, net(MNP), new_care_of);
    let inner = udp(addr(VM), addr(CN));
    let from_old = frame(&tunnelled(&inner, addr(CARE_OF), addr(HA)));
    let from_new = frame(&tunnelled(&inner, new_care_of, addr(HA)));
    let verdict = |packet: &[u8]| programs.test_run(Program::DecapBySource, packet).unwrap().0;
    assert_eq!(verdict(&from_old), TC_ACT_SHOT, "before the copies start");
    programs
        .also
        .update(
            &maps::prefix_key(net(MNP)),
            &maps::second_value(addr(CARE_OF).into()),
            MapFlags::ANY,
        )
        .unwrap();
    let heard = || {
        let value = programs
            .also
            .lookup(&maps::prefix_key(net(MNP)), MapFlags::ANY)
            .unwrap()
            .unwrap();
        maps::second_heard_ns(&value)
    };
    assert_eq!(verdict(&from_new), DECAPSULATED);
    assert_eq!(heard(), None, "the new address is no sign of the old one");
    let before = monotonic_ns();
    assert_eq!(verdict(&from_old), DECAPSULATED);
    // Heard from: the home agent copies on while the VM runs there.
    let stamped = heard().expect("a packet from the old address is stamped");
    assert!(
        (before..=monotonic_ns()).contains(&stamped),
        "{before} {stamped}"
    );
    // Any other address still is not.
    let spoofed = frame(&tunnelled(&inner, addr("2001:db8:66::66"), addr(HA)));
    assert_eq!(verdict(&spoofed), TC_ACT_SHOT);
    programs.clear_also();
    assert_eq!(verdict(&from_old), TC_ACT_SHOT, "after the copies end");
    assert_eq!(programs.counter(Counter::Decapsulated), 2);
    assert_eq!(programs.counter(Counter::DecapSpoofed), 3);
}

#[test]
fn encapsulation_drops_what_no_binding_holds_and_what_is_not_ipv6() {
    let Some(programs) = home_agent() else { return };
    // A destination outside every binding (an aggregate's route led here).
    let packet = frame(&udp(addr(CN), addr("2001:db8:200::1")));
    let (verdict, _) = programs
        .test_run(Program::EncapByDestination, &packet)
        .unwrap();
    assert_eq!(verdict, BPF_DROP);
    assert_eq!(programs.counter(Counter::EncapNoTunnel), 1);
    // A mobile router: a source outside its tenants' prefixes.
    let packet = frame(&udp(addr("2001:db8:200::1"), addr(CN)));
    let (verdict, _) = programs.test_run(Program::EncapBySource, &packet).unwrap();
    assert_eq!(verdict, BPF_DROP);
    assert_eq!(programs.counter(Counter::EncapNoTunnel), 2);
    // Not an IPv6 packet (version 4 in the first nibble; a test run
    // refuses packets shorter than an IPv6 header itself, with EINVAL).
    let mut packet = frame(&udp(addr(CN), addr(VM)));
    packet[ETHERNET] = 0x45;
    let (verdict, _) = programs
        .test_run(Program::EncapByDestination, &packet)
        .unwrap();
    assert_eq!(verdict, BPF_DROP);
    assert_eq!(programs.counter(Counter::Malformed), 1);
    assert_eq!(programs.counter(Counter::Encapsulated), 0);
}

#[test]
fn the_lpm_trie_finds_the_longest_prefix() {
    let Some(programs) = home_agent() else { return };
    // A longer prefix inside MNP bound elsewhere: a packet from it comes
    // only from there.
    bind(
        &programs,
        net("2001:db8:100:1::/64"),
        addr("2001:db8:3::10"),
    );
    let inner = udp(addr("2001:db8:100:1::5"), addr(CN));
    let from_old = frame(&tunnelled(&inner, addr(CARE_OF), addr(HA)));
    let from_new = frame(&tunnelled(&inner, addr("2001:db8:3::10"), addr(HA)));
    assert_eq!(
        programs
            .test_run(Program::DecapBySource, &from_old)
            .unwrap()
            .0,
        TC_ACT_SHOT
    );
    assert_eq!(
        programs
            .test_run(Program::DecapBySource, &from_new)
            .unwrap()
            .0,
        DECAPSULATED
    );
}

#[test]
fn a_program_the_verifier_refuses_is_reported_with_the_verifiers_words() {
    if !require(
        nemo_testkit::is_root(),
        "not root: loading BPF programs needs CAP_BPF",
        "NEMO_REQUIRE_BPF",
    ) {
        return;
    }
    // dataplane/bpf/rejected.bpf.c reads the packet without a bounds check.
    let object = include_bytes!(concat!(env!("OUT_DIR"), "/rejected.bpf.o"));
    let error = Programs::load_object(object, None).unwrap_err().to_string();
    assert!(error.contains("loading the BPF programs"), "{error}");
    // The verifier's own log, not only libbpf's summary.
    assert!(error.contains("invalid access to packet"), "{error}");
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock of `bpf_ktime_get_ns`).
fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    u64::try_from(std::time::Duration::from(now).as_nanos()).unwrap()
}

/// An upgrade: pins left by a version whose copying windows (nemo_also)
/// and counters had another layout are replaced at load (the load would
/// otherwise refuse to reuse them, and the daemon would not start); the
/// bindings' pin is reused.
#[test]
fn pins_of_another_layout_are_replaced_and_the_bindings_kept() {
    if programs().is_none() {
        return;
    }
    let bpffs = nemo_testkit::BpfFs::mount();
    let dir = bpffs.path("upgrade");
    std::fs::create_dir_all(&dir).unwrap();
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        map_flags: libbpf_rs::libbpf_sys::BPF_F_NO_PREALLOC,
        ..Default::default()
    };
    // The layout before: a second peer of 16 octets, 12 counters.
    let mut also = libbpf_rs::MapHandle::create(
        libbpf_rs::MapType::LpmTrie,
        Some("nemo_also"),
        maps::PREFIX_SIZE as u32,
        16,
        65536,
        &opts,
    )
    .unwrap();
    also.pin(dir.join(maps::ALSO)).unwrap();
    let plain = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut counters = libbpf_rs::MapHandle::create(
        libbpf_rs::MapType::PercpuArray,
        Some("nemo_counters"),
        4,
        8,
        12,
        &plain,
    )
    .unwrap();
    counters.pin(dir.join(maps::COUNTERS)).unwrap();
    let programs = Programs::load(Some(&dir)).unwrap();
    assert_eq!(
        libbpf_rs::MapHandle::from_pinned_path(dir.join(maps::ALSO))
            .unwrap()
            .value_size() as usize,
        maps::SECOND_SIZE
    );
    // The bindings' pin is reused as it is: a binding survives the next
    // start.
    bind(&programs, net(MNP), addr(CARE_OF));
    drop(programs);
    let again = Programs::load(Some(&dir)).unwrap();
    assert_eq!(
        again.listed_bindings().get(&net(MNP)),
        Some(&addr(CARE_OF).into()),
        "the bindings' pin was not kept"
    );
    again.unpin().unwrap();
}

// IPv4 care-of addresses (RFC 5555 §4.1): IPv6 in UDP in IPv4 through a
// NAT, IPv6 in IPv4 without one.

const HA4: &str = "192.0.2.1:4191";
const NAT4: &str = "192.0.2.99:40000";
const COA4: &str = "192.0.2.10";

/// An Ethernet frame around an IPv4 packet of `protocol` carrying `payload`
/// (header checksum computed, DF set as the tunnel sets it).
fn ipv4_frame(source: Ipv4Addr, destination: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut header = vec![0x45, 0];
    header.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    header.extend_from_slice(&[0, 0, 0x40, 0, 64, protocol, 0, 0]);
    header.extend_from_slice(&source.octets());
    header.extend_from_slice(&destination.octets());
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    header[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    frame.extend_from_slice(&header);
    frame.extend_from_slice(payload);
    frame
}

/// `inner` in UDP (checksum zero, as the tunnel sends it) in IPv4.
fn in_udp(inner: &[u8], source: SocketAddrV4, destination: SocketAddrV4) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&source.port().to_be_bytes());
    udp.extend_from_slice(&destination.port().to_be_bytes());
    udp.extend_from_slice(&((8 + inner.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(inner);
    ipv4_frame(*source.ip(), *destination.ip(), 17, &udp)
}

fn socket(text: &str) -> SocketAddrV4 {
    text.parse().unwrap()
}

/// A home agent with an IPv4 address and port, the MNP bound to `peer`.
fn ipv4_home_agent(peer: Peer) -> Option<Programs> {
    let programs = home_agent()?;
    programs.set_local4(Some(socket(HA4))).unwrap();
    assert_eq!(programs.local4(), Some(socket(HA4)));
    programs
        .bindings
        .update(
            &maps::prefix_key(net(MNP)),
            &maps::peer_value(peer),
            MapFlags::ANY,
        )
        .unwrap();
    Some(programs)
}

#[test]
fn a_packet_in_udp_from_the_nats_mapping_is_taken_out_and_becomes_ipv6() {
    let Some(programs) = ipv4_home_agent(Peer::Udp(socket(NAT4))) else {
        return;
    };
    let inner = udp(addr(VM), addr(CN));
    let packet = in_udp(&inner, socket(NAT4), socket(HA4));
    let (verdict, out) = programs.test_run(Program::DecapBySource, &packet).unwrap();
    assert_eq!(verdict, DECAPSULATED);
    // Ethernet now says IPv6, and the inner packet follows as it was sent.
    assert_eq!(&out[..12], &packet[..12]);
    assert_eq!(&out[12..ETHERNET], &[0x86, 0xdd]);
    assert_eq!(&out[ETHERNET..], &inner[..]);
    assert_eq!(programs.counter(Counter::Decapsulated), 1);
}

#[test]
fn only_the_bound_address_and_port_may_send_into_the_tunnel() {
    let Some(programs) = ipv4_home_agent(Peer::Udp(socket(NAT4))) else {
        return;
    };
    let inner = udp(addr(VM), addr(CN));
    for source in ["192.0.2.99:40001", "192.0.2.98:40000"] {
        let packet = in_udp(&inner, socket(source), socket(HA4));
        let (verdict, _) = programs.test_run(Program::DecapBySource, &packet).unwrap();
        assert_eq!(verdict, TC_ACT_SHOT, "{source}");
    }
    // IPv6 in IPv4 (no UDP) from the NAT's address is not its UDP mapping.
    let plain = ipv4_frame(*socket(NAT4).ip(), *socket(HA4).ip(), 41, &inner);
    let (verdict, _) = programs.test_run(Program::DecapBySource, &plain).unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(programs.counter(Counter::DecapSpoofed), 3);
    assert_eq!(programs.counter(Counter::Decapsulated), 0);
}

#[test]
fn ipv6_in_ipv4_from_a_care_of_address_without_a_nat_is_taken_out() {
    let coa: Ipv4Addr = COA4.parse().unwrap();
    let Some(programs) = ipv4_home_agent(Peer::Ipv4(coa)) else {
        return;
    };
    let inner = udp(addr(VM), addr(CN));
    let packet = ipv4_frame(coa, *socket(HA4).ip(), 41, &inner);
    let (verdict, out) = programs.test_run(Program::DecapBySource, &packet).unwrap();
    assert_eq!(verdict, DECAPSULATED);
    assert_eq!(&out[ETHERNET..], &inner[..]);
    // In UDP from the same address: another tunnel, refused.
    let udp_packet = in_udp(&inner, SocketAddrV4::new(coa, 4191), socket(HA4));
    let (verdict, _) = programs
        .test_run(Program::DecapBySource, &udp_packet)
        .unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn signalling_other_ports_fragments_and_other_addresses_pass_untouched() {
    let Some(programs) = ipv4_home_agent(Peer::Udp(socket(NAT4))) else {
        return;
    };
    // A Binding Update from a new NAT mapping: the daemon's socket reads
    // it (RFC 5555 §4.2), whatever port it comes from.
    let mut binding_update = ipv6(8, 135, addr(VM), addr(HA));
    binding_update.extend_from_slice(&[59, 0, 5, 0, 0, 0, 0, 0]);
    let inner = udp(addr(VM), addr(CN));
    let mut fragment = in_udp(&inner, socket(NAT4), socket(HA4));
    fragment[ETHERNET + 6] = 0x20; // More Fragments
    for packet in [
        in_udp(&binding_update, socket("192.0.2.99:40001"), socket(HA4)),
        in_udp(&inner, socket(NAT4), socket("192.0.2.1:53")),
        in_udp(&inner, socket(NAT4), socket("192.0.2.2:4191")),
        fragment,
    ] {
        let (verdict, out) = programs.test_run(Program::DecapBySource, &packet).unwrap();
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(out, packet);
    }
    // Without an IPv4 tunnel address nothing IPv4 is the tunnel's.
    programs.set_local4(None).unwrap();
    let packet = in_udp(&inner, socket(NAT4), socket(HA4));
    let (verdict, out) = programs.test_run(Program::DecapBySource, &packet).unwrap();
    assert_eq!((verdict, out), (TC_ACT_OK, packet));
    assert_eq!(programs.counter(Counter::Decapsulated), 0);
    assert_eq!(programs.counter(Counter::DecapSpoofed), 0);
}

#[test]
fn a_mobile_router_behind_a_nat_takes_its_tenants_packets_from_its_home_agents_port() {
    let Some(programs) = programs() else { return };
    programs.set_local(addr(CARE_OF)).unwrap();
    let mine = SocketAddrV4::new(COA4.parse().unwrap(), 4191);
    programs.set_local4(Some(mine)).unwrap();
    programs
        .bindings
        .update(
            &maps::prefix_key(net(MNP)),
            &maps::peer_value(Peer::Udp(socket(HA4))),
            MapFlags::ANY,
        )
        .unwrap();
    let inner = udp(addr(CN), addr(VM));
    let packet = in_udp(&inner, socket(HA4), mine);
    let (verdict, out) = programs
        .test_run(Program::DecapByDestination, &packet)
        .unwrap();
    assert_eq!(verdict, DECAPSULATED);
    assert_eq!(&out[ETHERNET..], &inner[..]);
    let spoofed = in_udp(&inner, socket("192.0.2.1:4192"), mine);
    let (verdict, _) = programs
        .test_run(Program::DecapByDestination, &spoofed)
        .unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn a_truncated_or_non_ipv6_packet_in_an_ipv4_tunnel_is_dropped_and_counted() {
    let Some(programs) = ipv4_home_agent(Peer::Udp(socket(NAT4))) else {
        return;
    };
    let inner = udp(addr(VM), addr(CN));
    // In UDP to our port, the inner header cut short.
    let mut truncated = in_udp(&inner, socket(NAT4), socket(HA4));
    truncated.truncate(ETHERNET + 20 + 8 + 20);
    // In IPv4 (protocol 41) to our address, an IPv4 packet inside.
    let mut not_ipv6 = inner.clone();
    not_ipv6[0] = 0x45;
    let not_ipv6 = ipv4_frame(*socket(NAT4).ip(), *socket(HA4).ip(), 41, &not_ipv6);
    for packet in [truncated, not_ipv6] {
        let (verdict, _) = programs.test_run(Program::DecapBySource, &packet).unwrap();
        assert_eq!(verdict, TC_ACT_SHOT);
    }
    assert_eq!(programs.counter(Counter::DecapMalformed), 2);
    assert_eq!(programs.counter(Counter::Decapsulated), 0);
}
