//! The translator in network namespaces, carrying real traffic: an IPv4
//! host on one side of a home agent, a tenant's IPv6-only VM on the other,
//! the home agent translating (RFC 7915) through its device `nemo-xlat`
//! with the tenant's address mapped (RFC 7757) and peers seen in an
//! operator's /96 (RFC 6052).
//!
//! Checked: ping both ways, TCP both ways, a DF packet bigger than the
//! pool route's MTU (RFC 7915 §4.1's lowest-ipv6-mtu less 28) answered with
//! Fragmentation Needed and one that fits passing, a mapping removed
//! leaving its address unreachable, the counters.
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

fn mapping() -> Mapping {
    Mapping::new(
        format!("{TENANT_IPV4}/32").parse().unwrap(),
        format!("{TENANT}/128").parse().unwrap(),
        PREFIX.parse().unwrap(),
    )
    .unwrap()
}

#[test]
fn an_ipv4_host_and_an_ipv6_only_tenant_talk_through_the_translator() {
    if !netns_available(MUST_RUN)
        || !require(runs("ping", &["-V"]), "ping missing", MUST_RUN)
        || !require(runs("iperf3", &["-v"]), "iperf3 missing", MUST_RUN)
    {
        return;
    }
    let peer = Netns::new("x4peer");
    let ha = Netns::new("x4ha");
    let tenant = Netns::new("x4vm");
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
    let running = translator(&ha, POOL, PREFIX, vec![mapping()], None);
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

    // TCP both ways: the tenant serving the IPv4 host, and the reverse.
    let to_tenant = tcp(&tenant, TENANT_IPV4, &peer);
    assert!(to_tenant > 1e6, "{to_tenant} bit/s to the tenant");
    let to_peer = tcp(&peer, PEER_IN_PREFIX, &tenant);
    assert!(to_peer > 1e6, "{to_peer} bit/s to the peer");

    assert!(ask(Order::Count(XlatCounter::Translated4to6)) > 0);
    assert!(ask(Order::Count(XlatCounter::Translated6to4)) > 0);
    assert_eq!(ask(Order::Count(XlatCounter::Failed)), 0);

    // Unmapped: its IPv4 address reaches nobody, counted.
    ask(Order::Unmap(mapping()));
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
