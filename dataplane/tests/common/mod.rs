//! What the data plane tests in namespaces share: the topology of a
//! correspondent, a home agent, a WAN bridge and two mobile routers each
//! with the tenant's VM (the same address behind both), and the traffic
//! they send. Only 2001:db8::/32.

#![allow(dead_code)] // each test file uses its part
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

pub mod packets;
pub mod planes;
pub mod xlat;

use std::process::Output;

use nemo_dataplane::KernelBackend;
use nemo_testkit::Netns;

pub const HA: &str = "2001:db8:1::1";
pub const COA_A: &str = "2001:db8:2::10";
pub const COA_B: &str = "2001:db8:3::10";
pub const HOA: &str = "2001:db8:1::100";
pub const MNP: &str = "2001:db8:100::/64";
pub const VM: &str = "2001:db8:100::2";
pub const CN: &str = "2001:db8:f::2";

/// Whether this kernel runs `backend`: a loud skip when not, a failure
/// when it runs neither backend and NEMO_REQUIRE_DATAPLANE is set
/// ([`nemo_testkit::require_backend`]).
pub fn backend_here(backend: KernelBackend, test: &str) -> bool {
    nemo_testkit::require_backend(
        backend.probe(),
        backend.other().probe(),
        test,
        "NEMO_REQUIRE_DATAPLANE",
    )
}

/// The namespaces of one test.
pub struct Sites {
    pub cn: Netns,
    pub ha: Netns,
    pub wan: Netns,
    pub mr_a: Netns,
    pub mr_b: Netns,
    pub vm_a: Netns,
    pub vm_b: Netns,
}

/// Builds the topology, namespaces named `{tag}-cn` and so on: the
/// correspondent behind the home agent (h0), the home agent (h1) and both
/// mobile routers (u0) on a WAN bridge, 1500-octet links, each mobile
/// router's tenant link t0 holding the tenant's gateway 2001:db8:100::1 and
/// its VM behind, forwarding on.
pub fn sites(tag: &str) -> Sites {
    let cn = Netns::new(&format!("{tag}-cn"));
    let ha = Netns::new(&format!("{tag}-ha"));
    let wan = Netns::new(&format!("{tag}-wan"));
    let mr_a = Netns::new(&format!("{tag}-mra"));
    let mr_b = Netns::new(&format!("{tag}-mrb"));
    let vm_a = Netns::new(&format!("{tag}-vma"));
    let vm_b = Netns::new(&format!("{tag}-vmb"));
    nemo_testkit::veth(
        &cn,
        "c0",
        &format!("{CN}/64"),
        &ha,
        "h0",
        "2001:db8:f::1/64",
    );
    cn.ip(&["-6", "route", "add", "default", "via", "2001:db8:f::1"]);
    // The WAN: a bridge joining the home agent and both mobile routers.
    wan.ip(&["link", "add", "br0", "type", "bridge"]);
    wan.ip(&["link", "set", "br0", "up"]);
    for (ns, inside, outside, address) in [
        (&ha, "h1", "w0", format!("{HA}/64")),
        (&mr_a, "u0", "w1", format!("{COA_A}/64")),
        (&mr_b, "u0", "w2", format!("{COA_B}/64")),
    ] {
        nemo_testkit::ip(&[
            "link",
            "add",
            outside,
            "netns",
            wan.name(),
            "type",
            "veth",
            "peer",
            "name",
            inside,
            "netns",
            ns.name(),
        ]);
        wan.ip(&["link", "set", outside, "master", "br0"]);
        wan.ip(&["link", "set", outside, "up"]);
        ns.ip(&["link", "set", inside, "up"]);
        ns.ip(&["addr", "add", &address, "dev", inside, "nodad"]);
    }
    for prefix in ["2001:db8:2::/64", "2001:db8:3::/64"] {
        ha.ip(&["-6", "route", "add", prefix, "dev", "h1"]);
    }
    for mr in [&mr_a, &mr_b] {
        mr.ip(&["-6", "route", "add", "2001:db8:1::/64", "dev", "u0"]);
    }
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
    for ns in [&ha, &mr_a, &mr_b] {
        ns.command("sysctl")
            .args(["-qw", "net.ipv6.conf.all.forwarding=1"])
            .status()
            .unwrap();
    }
    Sites {
        cn,
        ha,
        wan,
        mr_a,
        mr_b,
        vm_a,
        vm_b,
    }
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Pings with `size` octets of payload, fragmentation forbidden.
pub fn ping(from: &Netns, to: &str, size: u32) -> Output {
    from.command("ping")
        .args([
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            &size.to_string(),
            to,
        ])
        .output()
        .unwrap()
}

pub fn pings(from: &Netns, to: &str, size: u32) -> bool {
    ping(from, to, size).status.success()
}

/// TCP with iperf3 from `client` to `server_address` in `server` for a
/// second; the receiver's bits per second.
pub fn tcp(server: &Netns, server_address: &str, client: &Netns) -> f64 {
    let mut daemon = server
        .command("iperf3")
        .args(["-s", "-1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let output = client
        .command("iperf3")
        .args(["-c", server_address, "-t", "1", "-J"])
        .output()
        .unwrap();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(output.status.success(), "iperf3 failed: {}", text(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap()
}
