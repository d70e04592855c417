//! `nemo-mr` in network namespaces: the hypervisor's uplink address
//! changes (it moved to another datacenter) and the binding on `nemo-ha`
//! follows within milliseconds; a relay that loses the first answers shows
//! retransmission recovering.
//!
//! Needs root and iproute2; skips loudly without them unless
//! NEMO_REQUIRE_NETNS is set (CI sets it).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;

use nemo_testkit::{netns_available, veth, workspace_binary, Netns, Process};

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";
const KEY: &str = "6d6f62696c652d726f757465722d746573742d6b65792d33322d6f6374657473";
const HA: &str = "2001:db8:1::1";
const HOA: &str = "2001:db8:1::100";

/// How Binding Updates travel between the two daemons.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// Over UDP (the default deployment).
    Udp,
    /// As RFC 6275 puts them on the wire: raw IPv6, Home Address option,
    /// type 2 routing header.
    Native,
}

/// A home agent (HA on h1) and a mobile router (care-of 2001:db8:2::10 on
/// u0) in namespaces of their own on one link, both started (memory data
/// plane), the router's first registration done. Routes for the care-of
/// prefixes 2001:db8:2::/64 and 2001:db8:3::/64 (where a move goes) are in
/// place on the home agent.
struct Pair {
    ha: Netns,
    mr: Netns,
    ha_process: Process,
    mr_process: Process,
    _dir: tempfile::TempDir,
}

impl Pair {
    fn start(tag: &str, transport: Transport) -> Pair {
        let ha = Netns::new(&format!("{tag}-ha"));
        let mr = Netns::new(&format!("{tag}-mr"));
        veth(
            &ha,
            "h1",
            &format!("{HA}/64"),
            &mr,
            "u0",
            "2001:db8:2::10/64",
        );
        ha.ip(&["-6", "route", "add", "2001:db8:2::/64", "dev", "h1"]);
        ha.ip(&["-6", "route", "add", "2001:db8:3::/64", "dev", "h1"]);
        mr.ip(&["-6", "route", "add", "2001:db8:1::/64", "dev", "u0"]);

        let dir = tempfile::tempdir().unwrap();
        let (ha_transport, mr_transport) = match transport {
            Transport::Udp => (
                format!("[udp]\nlisten = [\"[{HA}]:4191\"]"),
                format!("[transport]\nhome_agent_udp = \"[{HA}]:4191\""),
            ),
            Transport::Native => (
                format!("[native]\ninterfaces = [\"h1\"]\naddresses = [\"{HA}\"]"),
                "[transport]\nkind = \"native\"".to_owned(),
            ),
        };
        let ha_config = dir.path().join("ha.toml");
        std::fs::write(
            &ha_config,
            format!(
                "[home_agent]\nhome_prefixes = [\"2001:db8:1::/64\"]\n\n[store]\npath = \"{}\"\n\n\
                 [dataplane]\nbackend = \"memory\"\n\n{ha_transport}\n\n\
                 [[mobile_router]]\nhome_address = \"{HOA}\"\nspi = 4096\nkey = \"{KEY}\"\n\
                 prefixes = [\"2001:db8:100::/56\"]\n",
                dir.path().join("store").display()
            ),
        )
        .unwrap();
        let ha_process = start(
            &ha,
            &workspace_binary("nemo-ha"),
            &ha_config,
            dir.path().join("ha.log"),
        );
        let mr_config = dir.path().join("mr.toml");
        std::fs::write(
            &mr_config,
            format!(
                "[mobile_router]\nuplink = \"u0\"\n\n[dataplane]\nbackend = \"memory\"\n\n{mr_transport}\n\n\
                 [[instance]]\nname = \"acme\"\nhome_address = \"{HOA}\"\nhome_agent = \"{HA}\"\n\
                 spi = 4096\nkey = \"{KEY}\"\nprefixes = [\"2001:db8:100::/56\"]\n\
                 tenant_interface = \"t-acme\"\ntable = 100\n"
            ),
        )
        .unwrap();
        let mr_process = start(
            &mr,
            Path::new(env!("CARGO_BIN_EXE_nemo-mr")),
            &mr_config,
            dir.path().join("mr.log"),
        );
        let log = mr_process.wait_for("registered", 1);
        assert!(log.contains("care_of=2001:db8:2::10"), "{log}");
        Pair {
            ha,
            mr,
            ha_process,
            mr_process,
            _dir: dir,
        }
    }

    /// The hypervisor moved: a new uplink address, the old one gone; the
    /// mobile router's log from its second registration on.
    fn move_uplink(&self) -> String {
        self.mr
            .ip(&["addr", "add", "2001:db8:3::10/64", "dev", "u0", "nodad"]);
        self.mr
            .ip(&["addr", "del", "2001:db8:2::10/64", "dev", "u0"]);
        let log = self.mr_process.wait_for("registered", 2);
        assert!(log.contains("care_of=2001:db8:3::10"), "{log}");
        // The home agent logs a move (a new binding only at debug) with
        // the status it answered.
        let ha_log = self.ha_process.wait_for("care_of=2001:db8:3::10", 1);
        assert!(
            ha_log.contains("care_of=2001:db8:3::10 status=0"),
            "{ha_log}"
        );
        log
    }
}

fn start(ns: &Netns, program: &Path, config: &Path, log: std::path::PathBuf) -> Process {
    let mut command = ns.command(program.to_str().unwrap());
    command.arg("--config").arg(config);
    Process::start(command, log)
}

#[test]
fn binding_follows_a_new_uplink_address_within_milliseconds() {
    if !netns_available(MUST_RUN) {
        return;
    }
    let pair = Pair::start("mr-move", Transport::Udp);
    let log = pair.move_uplink();
    let line = log
        .lines()
        .rfind(|l| l.contains("registered") && l.contains("care_of=2001:db8:3::10"))
        .unwrap_or_else(|| panic!("no registration at the new address: {log}"));
    let took_ms: f64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("took_ms="))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("address change to Binding Acknowledgement: {took_ms:.3} ms");
    // Within milliseconds (a round trip on a veth is a fraction of one);
    // generous, since CI machines are busy: this is not a benchmark.
    assert!(took_ms < 500.0, "took {took_ms} ms: {line}");
}

/// ICMPv6 Parameter Problems the namespace's kernel has sent.
fn parameter_problems_sent(ns: &Netns) -> u64 {
    let output = ns
        .command("nstat")
        .args(["-az", "Icmp6OutParmProblems"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|l| l.starts_with("Icmp6OutParmProblems"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn native_transport_end_to_end_as_rfc_6275_puts_it_on_the_wire() {
    if !netns_available(MUST_RUN) {
        return;
    }
    let pair = Pair::start("mr-native", Transport::Native);
    // A move, over the same transport.
    pair.move_uplink();

    // Neither kernel answered the Home Address option or the type 2
    // routing header with a Parameter Problem.
    assert_eq!(parameter_problems_sent(&pair.ha), 0, "home agent's kernel");
    assert_eq!(
        parameter_problems_sent(&pair.mr),
        0,
        "mobile router's kernel"
    );
}
