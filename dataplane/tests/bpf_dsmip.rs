//! nemo's BPF data plane over IPv4 (Dual-Stack Mobile IPv6, RFC 5555
//! §4.1), in network namespaces, carrying real traffic: a home agent with
//! an IPv4 address, one mobile router behind a NAT (nftables masquerade
//! that also changes the source port) whose tunnel is IPv6 in UDP to the
//! NAT's mapping, another on the IPv4 WAN itself whose tunnel is IPv6 in
//! IPv4; the tenant's VM behind each, a correspondent behind the home
//! agent.
//!
//! Checked: ping both ways with full-size packets through the NAT, a
//! Packet Too Big for one octet more, TCP both ways; a binding with another
//! port of the NAT refused as spoofed; the binding moved to the router
//! without a NAT; teardown.
//!
//! Needs root, iproute2, ping, iperf3 and nft: skips loudly without them
//! unless NEMO_REQUIRE_NETNS is set (deploy/test.sh sets it). Only
//! 2001:db8::/32 and 192.0.2.0/24 (its halves: the WAN 192.0.2.0/25, the
//! NAT's inside 192.0.2.128/25).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::{SocketAddrV4, UdpSocket};
use std::time::Duration;

use nemo_dataplane::bpf::maps::Counter;
use nemo_dataplane::{BindingRoutes, Peer, TenantRoutes};
use nemo_testkit::{addr, net, netns_available, require, runs, BpfFs, Netns};

mod common;
use common::planes::{count, data_plane, step, Role, Step};
use common::{ping, pings, tcp, text, CN, COA_A, COA_B, HA, HOA, MNP, VM};

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";
/// The home agent's IPv4 address and DSMIPv6 port.
const HA4: &str = "192.0.2.1:4191";
/// The NAT's outside address; it maps UDP to ports 40000-40099.
const NAT_OUTSIDE: &str = "192.0.2.99";
/// The router behind the NAT: its private care-of address and port.
const MR_A4: &str = "192.0.2.130:4191";
/// The router on the WAN, no NAT.
const MR_B4: &str = "192.0.2.10";

fn socket(text: &str) -> SocketAddrV4 {
    text.parse().unwrap()
}

fn binding(care_of: Peer) -> BindingRoutes {
    BindingRoutes {
        home_address: addr(HOA),
        care_of,
        prefixes: vec![net(MNP)],
    }
}

fn tenant(home_agent: Peer) -> TenantRoutes {
    TenantRoutes {
        interface: "t0".into(),
        prefixes: vec![net(MNP)],
        home_agent,
        table: 100,
    }
}

/// The namespaces: correspondent, home agent, the WAN bridge, the NAT, the
/// two routers and their VMs.
struct Sites {
    cn: Netns,
    ha: Netns,
    _wan: Netns,
    nat: Netns,
    mr_a: Netns,
    mr_b: Netns,
    vm_a: Netns,
    vm_b: Netns,
}

fn sites() -> Sites {
    let tag = "dsmip";
    let ns = |name: &str| Netns::new(&format!("{tag}-{name}"));
    let (cn, ha, wan, nat) = (ns("cn"), ns("ha"), ns("wan"), ns("nat"));
    let (mr_a, mr_b, vm_a, vm_b) = (ns("mra"), ns("mrb"), ns("vma"), ns("vmb"));
    nemo_testkit::veth(
        &cn,
        "c0",
        &format!("{CN}/64"),
        &ha,
        "h0",
        "2001:db8:f::1/64",
    );
    cn.ip(&["-6", "route", "add", "default", "via", "2001:db8:f::1"]);
    // The IPv4 WAN: a bridge joining the home agent, the NAT's outside and
    // router B.
    wan.ip(&["link", "add", "br0", "type", "bridge"]);
    wan.ip(&["link", "set", "br0", "up"]);
    for (site, inside, outside, address) in [
        (&ha, "h1", "w0", "192.0.2.1/25"),
        (&nat, "o0", "w1", "192.0.2.99/25"),
        (&mr_b, "u0", "w2", "192.0.2.10/25"),
    ] {
        nemo_testkit::link(&wan, outside, site, inside);
        wan.ip(&["link", "set", outside, "master", "br0"]);
        site.ip(&["addr", "add", address, "dev", inside]);
    }
    // The home agent's IPv6 address stays: its IPv6 tunnels' source.
    ha.ip(&["addr", "add", &format!("{HA}/64"), "dev", "h1", "nodad"]);
    // Router A behind the NAT.
    nemo_testkit::link(&nat, "i0", &mr_a, "u0");
    nat.ip(&["addr", "add", "192.0.2.129/25", "dev", "i0"]);
    mr_a.ip(&["addr", "add", "192.0.2.130/25", "dev", "u0"]);
    mr_a.ip(&["route", "add", "default", "via", "192.0.2.129"]);
    nemo_testkit::masquerade(&nat, "o0");
    for (mr, vm) in [(&mr_a, &vm_a), (&mr_b, &vm_b)] {
        nemo_testkit::veth(
            mr,
            "t0",
            "2001:db8:100::1/64",
            vm,
            "v0",
            &format!("{VM}/64"),
        );
        vm.ip(&["-6", "route", "add", "default", "via", "2001:db8:100::1"]);
    }
    for (site, sysctl) in [
        (&ha, "net.ipv6.conf.all.forwarding=1"),
        (&mr_a, "net.ipv6.conf.all.forwarding=1"),
        (&mr_b, "net.ipv6.conf.all.forwarding=1"),
        (&nat, "net.ipv4.ip_forward=1"),
    ] {
        site.command("sysctl")
            .args(["-qw", sysctl])
            .status()
            .unwrap();
    }
    Sites {
        cn,
        ha,
        _wan: wan,
        nat,
        mr_a,
        mr_b,
        vm_a,
        vm_b,
    }
}

/// The NAT's mapping of router A's DSMIPv6 port, as the home agent sees
/// it: a datagram from A's socket (what its Binding Update would be)
/// read by a socket on the home agent's port.
fn nat_mapping(mr_a: &Netns, ha: &Netns) -> SocketAddrV4 {
    let receiver = ha.spawn_in(|| {
        let socket = UdpSocket::bind(HA4).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 64];
        let (_, from) = socket.recv_from(&mut buffer).unwrap();
        from
    });
    std::thread::sleep(Duration::from_millis(200));
    mr_a.spawn_in(|| {
        let socket = UdpSocket::bind(MR_A4).unwrap();
        socket.send_to(b"mapping", HA4).unwrap();
    })
    .join()
    .unwrap();
    match receiver.join().unwrap() {
        std::net::SocketAddr::V4(from) => from,
        other => panic!("{other}"),
    }
}

fn available() -> bool {
    netns_available(MUST_RUN)
        && common::backend_here(
            nemo_dataplane::KernelBackend::Bpf,
            "bpf tunnels over IPv4 and through a NAT",
        )
        && require(
            runs("ping", &["-V"]),
            "ping missing (iputils-ping)",
            MUST_RUN,
        )
        && require(runs("iperf3", &["--version"]), "iperf3 missing", MUST_RUN)
        && require(
            runs("nft", &["--version"]),
            "nft missing (nftables)",
            MUST_RUN,
        )
}

#[test]
fn bpf_tunnels_over_ipv4_carry_full_size_traffic_through_a_nat_and_follow_the_binding() {
    if !available() {
        return;
    }
    let bpffs = BpfFs::mount();
    let sites = sites();
    let mapping = nat_mapping(&sites.mr_a, &sites.ha);
    assert_eq!(mapping.ip().to_string(), NAT_OUTSIDE, "the NAT did not map");
    assert!(
        (40000..40100).contains(&mapping.port()),
        "the NAT kept the port: {mapping}"
    );

    let (mr_a, mr_a_thread) = data_plane(
        &sites.mr_a,
        Role::MobileRouter,
        COA_A,
        Some(socket(MR_A4)),
        bpffs.path("mr-a"),
    );
    step(&mr_a, Step::Attach(tenant(Peer::Udp(socket(HA4)))));
    let (mr_b, mr_b_thread) = data_plane(
        &sites.mr_b,
        Role::MobileRouter,
        COA_B,
        Some(SocketAddrV4::new(MR_B4.parse().unwrap(), 4191)),
        bpffs.path("mr-b"),
    );
    step(&mr_b, Step::Attach(tenant(Peer::Ipv4(*socket(HA4).ip()))));
    let (ha, ha_thread) = data_plane(
        &sites.ha,
        Role::HomeAgent,
        HA,
        Some(socket(HA4)),
        bpffs.path("ha"),
    );
    let behind_nat = binding(Peer::Udp(mapping));
    step(&ha, Step::Set(behind_nat.clone(), None));

    // Through the NAT, both ways, full-size: 1412 octets of ICMP payload
    // make a 1460-octet IPv6 packet, 1488 in IPv4 and UDP.
    let state = || {
        format!(
            "{}\n{}",
            text(
                &sites
                    .nat
                    .command("nft")
                    .args(["list", "ruleset"])
                    .output()
                    .unwrap()
            ),
            text(&sites.ha.ip(&["-6", "route", "show", "table", "all"]))
        )
    };
    assert!(
        pings(&sites.cn, VM, 56),
        "correspondent -> VM behind the NAT\n{}",
        state()
    );
    assert!(pings(&sites.cn, VM, 1412), "1460-octet packets to the VM");
    assert!(
        pings(&sites.vm_a, CN, 1412),
        "1460-octet packets from the VM"
    );
    for (from, to) in [(&sites.cn, VM), (&sites.vm_a, CN)] {
        let answer = text(&ping(from, to, 1413));
        assert!(
            answer.contains("mtu") && answer.contains("1460"),
            "{} -> {to}: no Packet Too Big with mtu 1460: {answer}",
            from.name()
        );
    }
    let down = tcp(&sites.vm_a, VM, &sites.cn);
    let up = tcp(&sites.cn, CN, &sites.vm_a);
    assert!(
        down > 1e6 && up > 1e6,
        "TCP through the NAT: {down} and {up} bit/s"
    );
    assert!(count(&ha, Counter::Encapsulated) > 0);
    assert!(count(&ha, Counter::Decapsulated) > 0);
    assert!(count(&mr_a, Counter::Decapsulated) > 0);

    // Another port of the NAT is another mapping, not this router's: its
    // reverse tunnel is refused as spoofed (the binding's own port only,
    // RFC 5555 §4.2), and what goes to it never reaches A's port.
    let other = SocketAddrV4::new(*mapping.ip(), mapping.port() ^ 1);
    step(
        &ha,
        Step::Set(binding(Peer::Udp(other)), Some(behind_nat.clone())),
    );
    let spoofed = count(&ha, Counter::DecapSpoofed);
    assert!(!pings(&sites.vm_a, CN, 56), "taken from an unbound port");
    assert!(count(&ha, Counter::DecapSpoofed) > spoofed);
    step(
        &ha,
        Step::Set(behind_nat.clone(), Some(binding(Peer::Udp(other)))),
    );
    assert!(pings(&sites.vm_a, CN, 56), "the right mapping again");

    // The binding moves to router B on the WAN: IPv6 in IPv4, no UDP.
    let direct = binding(Peer::Ipv4(MR_B4.parse().unwrap()));
    step(&ha, Step::Set(direct.clone(), Some(behind_nat)));
    let before = count(&mr_b, Counter::Decapsulated);
    assert!(pings(&sites.cn, VM, 1412), "correspondent -> VM behind B");
    assert!(pings(&sites.vm_b, CN, 1412), "reverse tunnel from B");
    assert!(count(&mr_b, Counter::Decapsulated) > before);
    assert!(!pings(&sites.vm_a, CN, 56), "A still taken after the move");
    let down = tcp(&sites.vm_b, VM, &sites.cn);
    assert!(down > 1e6, "TCP in IPv6 in IPv4: {down} bit/s");

    for (plane, thread) in [(ha, ha_thread), (mr_a, mr_a_thread), (mr_b, mr_b_thread)] {
        step(&plane, Step::RemoveAll);
        drop(plane);
        thread.join().unwrap();
    }
    assert!(!pings(&sites.cn, VM, 56), "forwarding after the teardown");
    drop(sites);
}
