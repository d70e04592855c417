//! nemo's translator against an independent one: the same Scapy-built
//! packets (tests/xcheck/xlat_cases.py: UDP, TCP, ICMP Echo and Echo Reply
//! both ways, DF set and clear, a large one; ICMP errors both ways with the
//! packet in error quoted: Port Unreachable, Fragmentation Needed and
//! Packet Too Big, Time Exceeded; a UDP datagram in two fragments both
//! ways; IPv4 options; IPv6 Hop-by-Hop and Destination Options headers;
//! IPv4 UDP without a checksum; SCTP both ways) sent through a host running
//! nemo's translator and through one running TAYGA (Debian's `tayga`, RFC
//! 7915, the same Explicit Address Mapping and /96), each output dissected
//! by Scapy and compared field by field. Where they differ, the difference
//! must be one this file names, with what RFC 7915 says of it.
//!
//! Topology, twice (one per translator): a sender namespace whose Scapy
//! sends and captures on its veth, and the translator's host, which routes
//! the peer 192.0.2.1 and the tenant's prefix back to the sender (static
//! neighbours). Needs root, python3-scapy and tayga: skips loudly without
//! them unless NEMO_REQUIRE_XCHECK is set (CI sets it). Only 192.0.2.0/24
//! and 2001:db8::/32.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nemo_dataplane::bpf::translator::{Mapping, XlatCounter};
use nemo_testkit::{link, netns_available, require, runs, Netns, Process};
use serde_json::Value;

mod common;
use common::xlat::{translator, Order};

const MUST_RUN: &str = "NEMO_REQUIRE_XCHECK";
const SENDER_MAC: &str = "02:00:00:00:00:05";
const HOST_MAC: &str = "02:00:00:00:00:06";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/xcheck/xlat_cases.py")
}

/// The sender and the translator's host, linked, the host routing the
/// peer and the tenant's prefix back to the sender.
fn pair(tag: &str) -> (Netns, Netns) {
    let sender = Netns::new(&format!("{tag}-s"));
    let host = Netns::new(&format!("{tag}-t"));
    link(&sender, "s0", &host, "in0");
    sender.ip(&["link", "set", "s0", "address", SENDER_MAC]);
    host.ip(&["link", "set", "in0", "address", HOST_MAC]);
    host.ip(&["addr", "add", "192.0.2.2/30", "dev", "in0"]);
    host.ip(&["addr", "add", "2001:db8:ff::1/64", "dev", "in0", "nodad"]);
    host.ip(&["route", "add", "192.0.2.1/32", "dev", "in0"]);
    host.ip(&["-6", "route", "add", "2001:db8:100::/64", "dev", "in0"]);
    host.ip(&[
        "neigh",
        "add",
        "192.0.2.1",
        "lladdr",
        SENDER_MAC,
        "dev",
        "in0",
        "nud",
        "permanent",
    ]);
    host.ip(&[
        "-6",
        "neigh",
        "add",
        "2001:db8:100::10",
        "lladdr",
        SENDER_MAC,
        "dev",
        "in0",
        "nud",
        "permanent",
    ]);
    for setting in [
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv4.conf.all.rp_filter=0",
        "net.ipv4.conf.in0.rp_filter=0",
    ] {
        assert!(host
            .command("sysctl")
            .args(["-qw", setting])
            .status()
            .unwrap()
            .success());
    }
    (sender, host)
}

/// Sends the cases from `sender` and returns what came back translated.
fn run_cases(sender: &Netns) -> Value {
    let output = sender
        .command("/usr/bin/python3")
        .arg(script())
        .args(["run", "--iface", "s0", "--to-mac", HOST_MAC])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// TAYGA on its tun device in `host`, with the same mapping and prefix.
fn tayga(host: &Netns, dir: &std::path::Path) -> Process {
    let config = dir.join("tayga.conf");
    std::fs::write(
        &config,
        format!(
            "tun-device nat64\nipv4-addr 192.0.2.254\nprefix 2001:db8:64::/96\n\
             map 192.0.2.10 2001:db8:100::10\ndata-dir {}\n",
            dir.display()
        ),
    )
    .unwrap();
    let made = host
        .command("tayga")
        .args(["--mktun", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    host.ip(&["link", "set", "nat64", "up"]);
    host.ip(&["route", "add", "192.0.2.8/29", "dev", "nat64"]);
    host.ip(&["-6", "route", "add", "2001:db8:64::/96", "dev", "nat64"]);
    // TAYGA prints no ready line: a shell prints one once it runs it.
    let mut command = host.command("sh");
    command
        .args(["-c", "echo tayga ready; exec tayga -d -c \"$0\""])
        .arg(&config);
    let process = Process::start(command, dir.join("tayga.log"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    process
}

/// Differences between the two a translator may have, and why each is
/// allowed.
fn allowed(case: &str, field: &str, nemo: &Value, tayga: &Value) -> Option<&'static str> {
    let sent_hops = 57;
    match field {
        // RFC 7915 §4.1, §5.1: the translator, a router, decrements once.
        // nemo's host: once in all (the kernel forwards the packet into its
        // device and out again, the program gives one back). TAYGA's: three
        // times (the kernel into its tun, TAYGA, the kernel out of it).
        "ttl" | "hlim" if nemo[field] == sent_hops - 1 && tayga[field] == sent_hops - 3 => {
            Some("RFC 7915 §4.1/§5.1: one decrement; TAYGA's path takes three")
        }
        // RFC 7915 §5.1: "If the size of the translated IPv4 packet is less
        // than or equal to 1260 bytes, [DF] is set to zero; otherwise, it is
        // set to one." TAYGA 0.9.2 sets it on every packet (RFC 6145's
        // rule before RFC 7915).
        "flags"
            if nemo["flags"] == ""
                && tayga["flags"] == "DF"
                && nemo["length"].as_u64() <= Some(1260) =>
        {
            Some("RFC 7915 §5.1: DF clear at or below 1260 octets")
        }
        // RFC 7915 §5.1: "Identification: all zero" unless the translator
        // generates one for packets that may be fragmented (its "MAY"
        // function, RFC 6864 §4.1: a non-atomic datagram needs a unique
        // one). nemo does for DF-clear packets, TAYGA leaves 0 or its own.
        "id" if nemo["flags"] != "DF" => Some("RFC 7915 §5.1 MAY generate an Identification"),
        _ => {
            let _ = (case, tayga);
            None
        }
    }
}

#[test]
fn nemo_and_tayga_translate_the_same_packets_alike() {
    if !netns_available(MUST_RUN)
        || !require(
            runs("tayga", &["--help"]) || runs("sh", &["-c", "command -v tayga"]),
            "tayga missing",
            MUST_RUN,
        )
        || !require(
            runs("/usr/bin/python3", &["-c", "import scapy.layers.inet6"]),
            "python3-scapy missing",
            MUST_RUN,
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (tayga_sender, tayga_host) = pair("xl-tayga");
    let _tayga = tayga(&tayga_host, dir.path());
    let through_tayga = run_cases(&tayga_sender);

    // nemo twice: every packet through the device, then the common case
    // translated where it arrives (tc ingress of in0) and the rest
    // through the device: both must say what TAYGA says.
    let mut unexplained = Vec::new();
    for (tag, arrival) in [("xl-nemo", &[][..]), ("xl-fast", &["in0"][..])] {
        let (nemo_sender, nemo_host) = pair(tag);
        let mapping = Mapping::new(
            "192.0.2.10/32".parse().unwrap(),
            "2001:db8:100::10/128".parse().unwrap(),
            "2001:db8:64::/96".parse().unwrap(),
        )
        .unwrap();
        // ICMPv6 errors from no mapping leave from TAYGA's own address
        // (RFC 6791), so that both say the same.
        let nemo = translator(
            &nemo_host,
            "192.0.2.8/29",
            "2001:db8:64::/96",
            vec![mapping],
            Some("192.0.2.254".parse().unwrap()),
            arrival,
        );
        let through_nemo = run_cases(&nemo_sender);
        let at_arrival = nemo.ask(Order::Count(XlatCounter::AtArrival));
        assert_eq!(
            at_arrival > 0,
            !arrival.is_empty(),
            "{tag}: {at_arrival} translated at arrival"
        );
        unexplained.extend(
            differences(&through_nemo, &through_tayga)
                .into_iter()
                .map(|d| format!("{tag}: {d}")),
        );
    }
    assert!(
        unexplained.is_empty(),
        "unexplained differences:\n{}",
        unexplained.join("\n")
    );
}

/// What differs between nemo's outputs and TAYGA's and is not allowed.
fn differences(through_nemo: &Value, through_tayga: &Value) -> Vec<String> {
    let mut compare = Command::new("/usr/bin/python3")
        .arg(script())
        .arg("compare")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    compare
        .stdin
        .take()
        .unwrap()
        .write_all(
            serde_json::json!({"nemo": through_nemo, "tayga": through_tayga})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let output = compare.wait_with_output().unwrap();
    assert!(output.status.success());
    let report: serde_json::Map<String, Value> = serde_json::from_slice(&output.stdout).unwrap();
    let mut unexplained = Vec::new();
    for (case, result) in &report {
        let (nemo, tayga) = (&result["nemo"], &result["tayga"]);
        // Cases TAYGA 0.9.2 drops and nemo translates, and why nemo may:
        // - RFC 6791 §4: a stateless translator sends ICMPv6 errors from
        //   an address it cannot translate (a router on the IPv6 side)
        //   from an IPv4 address of its own, so that traceroute works.
        //   TAYGA does so only for Destination Unreachable (codes 0, 2) and
        //   Packet Too Big (nat64.c, `allow_fake_source`).
        // - RFC 7915 §4.5: IPv4 UDP without a checksum is either dropped
        //   (option 1, TAYGA) or given one (option 2, nemo's default).
        let tayga_drops = matches!(
            case.as_str(),
            "time exceeded 6to4" | "udp 4to6 zero checksum"
        );
        if nemo.is_null() || (tayga.is_null() != tayga_drops) {
            unexplained.push(format!(
                "{case}: translated by nemo {nemo}, by TAYGA {tayga}"
            ));
            continue;
        }
        for ok in [
            "checksum_ok",
            "header_checksum_ok",
            "inner_header_checksum_ok",
        ] {
            if nemo.get(ok).is_some() {
                assert_eq!(nemo[ok], true, "{case}: nemo's {ok}: {nemo}");
            }
        }
        if case == "time exceeded 6to4" {
            assert_eq!(
                nemo["src"], "192.0.2.254",
                "{case}: from the RFC 6791 address"
            );
        }
        if tayga_drops {
            continue;
        }
        let differences: BTreeSet<&str> = result["differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        for field in differences {
            if allowed(case, field, nemo, tayga).is_none() {
                unexplained.push(format!(
                    "{case}: {field}: nemo {} TAYGA {}",
                    nemo[field], tayga[field]
                ));
            }
        }
    }
    unexplained
}
