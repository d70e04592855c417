//! The translator in network namespaces, carrying real traffic: an IPv4
//! host on one side of a home agent, a tenant's IPv6-only VM on the other,
//! the home agent translating (RFC 7915) through its device `nemo-xlat`
//! with the tenant's address mapped (RFC 7757) and peers seen in an
//! operator's /96 (RFC 6052).
//!
//! Checked: ping both ways, TCP both ways, a DF packet bigger than the
//! pool route's MTU (RFC 7915 §4.1's lowest-ipv6-mtu less 28) answered with
//! Fragmentation Needed and one that fits passing, a DF-clear one bigger
//! than that fragmented by the kernel and its fragments translated (the
//! reply, bigger than the tenant's link MTU, fragmented by the tenant with
//! a Fragment header and translated back), a mapping removed leaving its
//! address unreachable, the counters. All of it twice: through the device
//! alone, and with the common case translated at arrival (tc ingress of
//! both sides' interfaces: the rest still goes through the device).
//!
//! Needs root, iproute2, ping and iperf3: skips loudly without them unless
//! NEMO_REQUIRE_NETNS is set (deploy/test.sh sets it). Only 192.0.2.0/24
//! and 2001:db8::/32. The namespaces, and with them the device and the
//! programs, go when the test ends, failed or not.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use nemo_dataplane::bpf::translator::{Mapping, XlatCounter};
use nemo_testkit::{link, netns_available, require, runs, veth, Netns};

mod common;
use common::xlat::{translator, Order};
use common::{ping, pings, tcp, text};

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";
const PEER: &str = "192.0.2.1";
const POOL: &str = "192.0.2.128/25";
const TENANT_IPV4: &str = "192.0.2.130";
const TENANT: &str = "2001:db8:100::10";
const PREFIX: &str = "2001:db8:64::/96";
/// The peer 192.0.2.1 as the tenant sees it.
const PEER_IN_PREFIX: &str = "2001:db8:64::c000:201";

/// A second address of the tenant's, mapped to another IPv4 address: the
/// tenant reaching it through its IPv4 address is hairpinned.
const OTHER: &str = "2001:db8:100::11";
const OTHER_IPV4: &str = "192.0.2.131";
/// 192.0.2.131 as the tenant sees it.
const OTHER_IN_PREFIX: &str = "2001:db8:64::c000:283";

/// One IPv4 address mapped to one IPv6 address, peers in PREFIX.
fn mapping(ipv4: &str, ipv6: &str) -> Mapping {
    Mapping::new(
        format!("{ipv4}/32").parse().unwrap(),
        format!("{ipv6}/128").parse().unwrap(),
        PREFIX.parse().unwrap(),
    )
    .unwrap()
}

#[test]
fn an_ipv4_host_and_an_ipv6_only_tenant_talk_through_the_translator() {
    talk("x4", &[]);
}

#[test]
fn the_common_case_is_translated_where_it_arrives_the_rest_at_the_device() {
    talk("x5", &["h4", "h6"]);
}

/// Sends one 2000-octet UDP datagram (DF clear) from `from` to `to`
/// (port 9000), where `receiver` listens on `bind`: the length received.
fn udp_datagram(from: &Netns, receiver: &Netns, to: &str, bind: &str) -> usize {
    let family = if bind.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let mut listen = receiver.command("python3");
    listen.args([
        "-c",
        &format!(
            "import socket\n\
             s = socket.socket(socket.{family}, socket.SOCK_DGRAM)\n\
             s.bind(('{bind}', 9000)); s.settimeout(5)\n\
             print(len(s.recv(4096)))"
        ),
    ]);
    let listener = listen.stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sent = from
        .command("python3")
        .args([
            "-c",
            &format!(
                "import socket\n\
                 family = socket.AF_INET6 if ':' in '{to}' else socket.AF_INET\n\
                 s = socket.socket(family, socket.SOCK_DGRAM)\n\
                 if family == socket.AF_INET:\n\
                 \x20   s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER: IP_PMTUDISC_DONT\n\
                 s.sendto(b'x' * 2000, ('{to}', 9000))"
            ),
        ])
        .output()
        .unwrap();
    assert!(sent.status.success(), "{}", text(&sent));
    let received = listener.wait_with_output().unwrap();
    String::from_utf8_lossy(&received.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn talk(tag: &str, arrival: &[&'static str]) {
    if !netns_available(MUST_RUN)
        || !require(runs("ping", &["-V"]), "ping missing", MUST_RUN)
        || !require(runs("iperf3", &["-v"]), "iperf3 missing", MUST_RUN)
    {
        return;
    }
    let peer = Netns::new(&format!("{tag}peer"));
    let ha = Netns::new(&format!("{tag}ha"));
    let tenant = Netns::new(&format!("{tag}vm"));
    link(&peer, "p0", &ha, "h4");
    peer.ip(&["addr", "add", &format!("{PEER}/30"), "dev", "p0"]);
    ha.ip(&["addr", "add", "192.0.2.2/30", "dev", "h4"]);
    veth(
        &tenant,
        "t0",
        &format!("{TENANT}/64"),
        &ha,
        "h6",
        "2001:db8:100::1/64",
    );
    peer.ip(&["route", "add", POOL, "via", "192.0.2.2"]);
    tenant.ip(&["-6", "route", "add", "default", "via", "2001:db8:100::1"]);
    for setting in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        let output = ha
            .command("sysctl")
            .args(["-qw", setting])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output));
    }

    // The translator lives on a thread inside the home agent's namespace.
    tenant.ip(&["addr", "add", &format!("{OTHER}/64"), "dev", "t0", "nodad"]);
    let running = translator(
        &ha,
        POOL,
        PREFIX,
        vec![mapping(TENANT_IPV4, TENANT), mapping(OTHER_IPV4, OTHER)],
        None,
        arrival,
    );
    let ask = |order: Order| running.ask(order);

    // Ping both ways.
    assert!(
        pings(&peer, TENANT_IPV4, 56),
        "{}",
        text(&ping(&peer, TENANT_IPV4, 56))
    );
    assert!(
        pings(&tenant, PEER_IN_PREFIX, 56),
        "{}",
        text(&ping(&tenant, PEER_IN_PREFIX, 56))
    );
    // The pool route's MTU is 1280 - 28: 1224 octets of ICMP payload fit,
    // one more is refused with Fragmentation Needed, naming the MTU.
    assert!(
        pings(&peer, TENANT_IPV4, 1224),
        "{}",
        text(&ping(&peer, TENANT_IPV4, 1224))
    );
    let too_big = ping(&peer, TENANT_IPV4, 1225);
    assert!(!too_big.status.success());
    assert!(text(&too_big).contains("1252"), "{}", text(&too_big));
    // DF clear: a 2000-octet UDP datagram fragmented by the kernel at the
    // pool route's MTU, each fragment translated; and back, fragmented by
    // the tenant (a Fragment header) and translated into IPv4 fragments.
    // (ICMP fragments are not translated: ping cannot show this.)
    let fragments_before = ask(Order::Count(XlatCounter::Translated4to6));
    assert_eq!(
        udp_datagram(&peer, &tenant, TENANT_IPV4, "::"),
        2000,
        "the datagram reached the tenant whole"
    );
    assert!(
        ask(Order::Count(XlatCounter::Translated4to6)) >= fragments_before + 2,
        "two fragments or more translated"
    );
    assert_eq!(
        udp_datagram(&tenant, &peer, PEER_IN_PREFIX, "0.0.0.0"),
        2000,
        "the datagram reached the IPv4 host whole"
    );

    // TCP both ways: the tenant serving the IPv4 host, and the reverse.
    let to_tenant = tcp(&tenant, TENANT_IPV4, &peer);
    assert!(to_tenant > 1e6, "{to_tenant} bit/s to the tenant");
    let to_peer = tcp(&peer, PEER_IN_PREFIX, &tenant);
    assert!(to_peer > 1e6, "{to_peer} bit/s to the peer");

    let translated = ask(Order::Count(XlatCounter::Translated4to6))
        + ask(Order::Count(XlatCounter::Translated6to4));
    assert!(ask(Order::Count(XlatCounter::Translated4to6)) > 0);
    assert!(ask(Order::Count(XlatCounter::Translated6to4)) > 0);
    assert_eq!(ask(Order::Count(XlatCounter::Failed)), 0);
    let at_arrival = ask(Order::Count(XlatCounter::AtArrival));
    if arrival.is_empty() {
        assert_eq!(at_arrival, 0);
    } else {
        // The TCP streams' segments fit the route's MTU (the peer learned
        // 1252): nearly everything was translated where it arrived.
        assert!(
            at_arrival * 10 > translated * 9,
            "{at_arrival} of {translated} at arrival"
        );
        assert!(at_arrival < translated, "the fragments went to the device");
    }

    // Hairpinning (RFC 7757 §4): the tenant's address reaching another
    // mapped address through its IPv4 address goes out as IPv4 and comes
    // straight back in as IPv6, from the first address's IPv4 form (its
    // source was never translated by the mapping, §4.2.1), so that the
    // answer takes the same way back and comes from where it was sent.
    let hairpin = tenant
        .command("ping")
        .args(["-c", "1", "-W", "2", "-I", TENANT, OTHER_IN_PREFIX])
        .output()
        .unwrap();
    assert!(hairpin.status.success(), "{}", text(&hairpin));
    assert!(
        text(&hairpin).contains(&format!("from {OTHER_IN_PREFIX}")),
        "{}",
        text(&hairpin)
    );

    // Unmapped: its IPv4 address reaches nobody, counted.
    ask(Order::Unmap(mapping(TENANT_IPV4, TENANT)));
    assert!(!pings(&peer, TENANT_IPV4, 56));
    assert!(ask(Order::Count(XlatCounter::Unmapped)) > 0);
}

/// The translator loads with the capabilities nemo-ha's unit gives it
/// (CAP_BPF, CAP_NET_ADMIN), not CAP_PERFMON or CAP_SYS_ADMIN: without
/// them the verifier refuses a packet pointer moved by a variable offset
/// (the lab's daemons found one; the tests above run with every
/// capability).
#[test]
fn the_translator_loads_without_cap_perfmon() {
    if !netns_available(MUST_RUN)
        || !require(runs("setpriv", &["--version"]), "setpriv missing", MUST_RUN)
    {
        return;
    }
    let ns = Netns::new("x4caps");
    let bpffs = nemo_testkit::BpfFs::mount();
    let caps = "-all,+bpf,+net_admin";
    let output = ns
        .command("setpriv")
        .args([
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            &format!("--bounding-set={caps}"),
            "--",
            env!("CARGO_BIN_EXE_dataplane-set"),
            "xlat",
        ])
        .arg(bpffs.path("xlat"))
        .args(["192.0.2.8/29", PREFIX, "192.0.2.10", TENANT])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text(&output).contains("mapped 1"), "{}", text(&output));
}
