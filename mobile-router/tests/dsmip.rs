//! `nemo-mr` and `nemo-ha`, both on the BPF data plane, across an IPv4-only
//! site behind a NAT (Dual-Stack Mobile IPv6, RFC 5555), in network
//! namespaces: the hypervisor's uplink loses its IPv6 address and has an
//! IPv4 one behind a NAT (nftables masquerade changing ports), as after a
//! move to such a site, then IPv6 again. One registration follows it each
//! way; the tenant's VM reaches the correspondent through each (IPv6 in
//! UDP to the NAT's mapping on the IPv4 site). Behind the NAT, the NAT
//! forgets its mappings (conntrack flushed): the correspondent reaches the
//! VM again within one keepalive interval (the router's refresh makes the
//! mapping anew, and the home agent follows it: RFC 5555 §4.3).
//!
//! Needs root, iproute2, ping, nft, conntrack and a kernel running the BPF
//! data plane;
//! skips loudly without them unless NEMO_REQUIRE_NETNS is set (CI sets it).
//! Only 2001:db8::/32 and 192.0.2.0/24 (the home side 192.0.2.0/25, the
//! NAT's inside 192.0.2.128/25).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;

use nemo_testkit::{netns_available, require, runs, veth, workspace_binary, BpfFs, Netns, Process};

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";
const KEY: &str = "6d6f62696c652d726f757465722d64736d69702d6b65792d33322d6f63746574";
const HA: &str = "2001:db8:1::1";
const HOA: &str = "2001:db8:1::100";
const CN: &str = "2001:db8:f::2";
const VM: &str = "2001:db8:100::2";
/// The router's IPv6 care-of address, on the site's IPv6 link.
const COA6: &str = "2001:db8:2::10";
/// Its IPv4 care-of address behind the NAT, and the home agent's.
const COA4: &str = "192.0.2.130";
const HA4: &str = "192.0.2.1";
/// The home agent's NAT keepalive here: short, for the flush below.
const KEEPALIVE_SECS: u64 = 3;

struct Sites {
    cn: Netns,
    ha: Netns,
    site: Netns,
    mr: Netns,
    vm: Netns,
}

/// The correspondent behind the home agent; the home agent reaching the
/// router's site through the site's router (`site`: IPv6 routed, IPv4
/// masqueraded); the router's tenant VM behind it.
fn sites() -> Sites {
    let ns = |name: &str| Netns::new(&format!("dsmipmr-{name}"));
    let (cn, ha, site, mr, vm) = (ns("cn"), ns("ha"), ns("site"), ns("mr"), ns("vm"));
    veth(
        &cn,
        "c0",
        &format!("{CN}/64"),
        &ha,
        "h0",
        "2001:db8:f::1/64",
    );
    cn.ip(&["-6", "route", "add", "default", "via", "2001:db8:f::1"]);
    veth(
        &ha,
        "h1",
        &format!("{HA}/64"),
        &site,
        "o0",
        "2001:db8:1::2/64",
    );
    ha.ip(&["addr", "add", &format!("{HA4}/25"), "dev", "h1"]);
    site.ip(&["addr", "add", "192.0.2.99/25", "dev", "o0"]);
    ha.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:2::/64",
        "via",
        "2001:db8:1::2",
    ]);
    veth(
        &site,
        "i0",
        "2001:db8:2::1/64",
        &mr,
        "u0",
        &format!("{COA6}/64"),
    );
    site.ip(&["addr", "add", "192.0.2.129/25", "dev", "i0"]);
    mr.ip(&["-6", "route", "add", "default", "via", "2001:db8:2::1"]);
    nemo_testkit::masquerade(&site, "o0");
    veth(
        &mr,
        "t-acme",
        "2001:db8:100::1/64",
        &vm,
        "v0",
        &format!("{VM}/64"),
    );
    vm.ip(&["-6", "route", "add", "default", "via", "2001:db8:100::1"]);
    for (host, sysctl) in [
        (&ha, "net.ipv6.conf.all.forwarding=1"),
        (&site, "net.ipv6.conf.all.forwarding=1"),
        (&site, "net.ipv4.ip_forward=1"),
        (&mr, "net.ipv6.conf.all.forwarding=1"),
    ] {
        host.command("sysctl")
            .args(["-qw", sysctl])
            .status()
            .unwrap();
    }
    Sites {
        cn,
        ha,
        site,
        mr,
        vm,
    }
}

fn start(ns: &Netns, program: &Path, config: &Path, log: std::path::PathBuf) -> Process {
    let mut command = ns.command(program.to_str().unwrap());
    command.arg("--config").arg(config);
    Process::start(command, log)
}

fn pings(from: &Netns, to: &str) -> bool {
    from.command("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", to])
        .status()
        .unwrap()
        .success()
}

#[test]
fn one_registration_follows_the_router_to_an_ipv4_site_behind_a_nat_and_back() {
    if !netns_available(MUST_RUN)
        || !require(
            runs("ping", &["-V"]),
            "ping missing (iputils-ping)",
            MUST_RUN,
        )
        || !require(
            runs("nft", &["--version"]),
            "nft missing (nftables)",
            MUST_RUN,
        )
        || !require(
            runs("conntrack", &["--version"]),
            "conntrack missing",
            MUST_RUN,
        )
        || !nemo_testkit::require_backend(
            nemo_dataplane::KernelBackend::Bpf.probe(),
            nemo_dataplane::KernelBackend::Seg6.probe(),
            "nemo-mr across an IPv4 site behind a NAT",
            "NEMO_REQUIRE_DATAPLANE",
        )
    {
        return;
    }
    let bpffs = BpfFs::mount();
    let sites = sites();
    let dir = tempfile::tempdir().unwrap();
    let ha_config = dir.path().join("ha.toml");
    std::fs::write(
        &ha_config,
        format!(
            "[home_agent]\nhome_prefixes = [\"2001:db8:1::/64\"]\n\n\
             [store]\npath = \"{}\"\n\n\
             [udp]\nlisten = [\"[{HA}]:4191\", \"{HA4}:4191\"]\n\n\
             [dataplane]\nbackend = \"bpf\"\nuplink = \"h1\"\nlocal_address = \"{HA}\"\n\
             pin_dir = \"{}\"\naggregates = [\"2001:db8:100::/40\"]\nbicast_ms = 0\n\n\
             [ipv4]\naddress = \"{HA4}\"\nnat_keepalive_secs = {KEEPALIVE_SECS}\n\n\
             [[mobile_router]]\nhome_address = \"{HOA}\"\nspi = 4096\nkey = \"{KEY}\"\n\
             prefixes = [\"2001:db8:100::/56\"]\n",
            dir.path().join("store").display(),
            bpffs.path("ha").display()
        ),
    )
    .unwrap();
    let ha = start(
        &sites.ha,
        &workspace_binary("nemo-ha"),
        &ha_config,
        dir.path().join("ha.log"),
    );
    let mr_config = dir.path().join("mr.toml");
    std::fs::write(
        &mr_config,
        format!(
            "[mobile_router]\nuplink = \"u0\"\n\n\
             [dataplane]\nbackend = \"bpf\"\npin_dir = \"{}\"\n\n\
             [transport]\nhome_agent_udp = \"[{HA}]:4191\"\nhome_agent_udp_ipv4 = \"{HA4}:4191\"\n\n\
             [[instance]]\nname = \"acme\"\nhome_address = \"{HOA}\"\nhome_agent = \"{HA}\"\n\
             spi = 4096\nkey = \"{KEY}\"\nprefixes = [\"2001:db8:100::/56\"]\n\
             tenant_interface = \"t-acme\"\ntable = 100\n",
            bpffs.path("mr").display()
        ),
    )
    .unwrap();
    let mr = start(
        &sites.mr,
        Path::new(env!("CARGO_BIN_EXE_nemo-mr")),
        &mr_config,
        dir.path().join("mr.log"),
    );
    let log = mr.wait_for("registered", 1);
    assert!(log.contains(&format!("care_of={COA6}")), "{log}");
    assert!(pings(&sites.vm, CN), "VM -> correspondent over IPv6\n{log}");

    // The move to an IPv4-only site behind a NAT: no IPv6 address on the
    // uplink, an IPv4 one.
    sites
        .mr
        .ip(&["addr", "add", &format!("{COA4}/25"), "dev", "u0"]);
    sites
        .mr
        .ip(&["route", "add", "default", "via", "192.0.2.129"]);
    sites
        .mr
        .ip(&["addr", "del", &format!("{COA6}/64"), "dev", "u0"]);
    let log = mr.wait_for("registered", 2);
    assert!(log.contains(&format!("care_of={COA4}")), "{log}");
    assert!(
        log.contains(&format!(
            "encapsulation=Udp {{ keepalive: Some({KEEPALIVE_SECS}s) }}"
        )),
        "no NAT seen: {log}"
    );
    let ha_log = ha.wait_for("192.0.2.99:", 1);
    assert!(
        ha_log.contains(&format!("{COA4} (nat 192.0.2.99:")),
        "{ha_log}"
    );
    assert!(
        pings(&sites.vm, CN),
        "VM -> correspondent through the NAT\n{}\n{}",
        mr.log(),
        ha.log()
    );
    assert!(pings(&sites.cn, VM), "correspondent -> VM through the NAT");

    // The NAT forgets its mappings. The correspondent's packets reach the
    // old mapping, which is gone, until the router's next refresh (at most
    // one keepalive interval) makes one anew; the home agent follows a
    // new mapping only from that authenticated Binding Update.
    let flushed = sites
        .site
        .command("conntrack")
        .args(["-F"])
        .output()
        .unwrap();
    assert!(flushed.status.success(), "{flushed:?}");
    let forgot = std::time::Instant::now();
    let answered = |from: &Netns| {
        from.command("ping")
            .args(["-c", "1", "-W", "1", VM])
            .status()
            .unwrap()
            .success()
    };
    // One keepalive interval, and the probe's own wait (up to a second
    // for a ping sent just before the mapping came back).
    let limit = std::time::Duration::from_secs(KEEPALIVE_SECS + 2);
    while !answered(&sites.cn) {
        assert!(
            forgot.elapsed() < limit,
            "not reached again within one keepalive interval ({KEEPALIVE_SECS} s) and a second\n{}",
            ha.log()
        );
    }
    let recovered = forgot.elapsed();
    eprintln!(
        "reached again {} ms after the NAT forgot",
        recovered.as_millis()
    );

    // Back on an IPv6 site: IPv6 preferred again (RFC 5555 §4.4.1).
    sites
        .mr
        .ip(&["addr", "add", &format!("{COA6}/64"), "dev", "u0", "nodad"]);
    sites
        .mr
        .ip(&["-6", "route", "replace", "default", "via", "2001:db8:2::1"]);
    let log = mr.wait_for("registered", 3);
    assert!(
        log.matches(&format!("care_of={COA6}")).count() >= 2,
        "{log}"
    );
    assert!(pings(&sites.vm, CN), "VM -> correspondent over IPv6 again");
    let _ = &sites.site;
}
