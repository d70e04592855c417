//! The home agent's seg6 data plane, programmed through the crate's API in a
//! network namespace, carrying real traffic: ping and TCP in both directions
//! with full-size packets on 1500-byte links, a binding re-pointed to another
//! care-of address, reconciliation, and teardown leaving nothing behind.
//!
//! The mobile-router side is set up with `ip` (its netlink backend is still
//! to come), following deploy/lab/dataplane-recipe.sh.
//!
//! Needs root, iproute2, ping and iperf3; skips loudly without them unless
//! NEMO_REQUIRE_NETNS is set (CI sets it).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::Ipv6Addr;
use std::process::Output;
use std::sync::mpsc;

use nemo_dataplane::linux::{Seg6Config, Seg6HomeAgent};
use nemo_dataplane::{BindingRoutes, HomeAgentDataPlane, ReconcileReport};
use nemo_testkit::{netns_available, require, runs, Netns};

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";
const HA: &str = "2001:db8:1::1";
const COA_A: &str = "2001:db8:2::10";
const COA_B: &str = "2001:db8:3::10";
const HOA: &str = "2001:db8:1::100";
const MNP: &str = "2001:db8:100::/64";
const VM: &str = "2001:db8:100::2";
const CN: &str = "2001:db8:f::2";

fn addr(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

fn routes(care_of: &str, prefixes: &[&str]) -> BindingRoutes {
    BindingRoutes {
        home_address: addr(HOA),
        care_of: addr(care_of),
        prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
    }
}

/// Work for the thread that owns the data plane inside the home agent's
/// namespace.
enum Step {
    Set(BindingRoutes, Option<BindingRoutes>),
    Clear(BindingRoutes),
    Reconcile(Vec<BindingRoutes>),
    Teardown,
}

type Reply = Result<Option<ReconcileReport>, String>;

/// Starts the data plane in `ha`, returning a channel of steps.
fn data_plane(
    ha: &Netns,
) -> (
    mpsc::Sender<(Step, mpsc::Sender<Reply>)>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel::<(Step, mpsc::Sender<Reply>)>();
    let thread = ha.spawn_in(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (connection, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(connection);
            let mut plane = Some(
                Seg6HomeAgent::new(handle, Seg6Config::new("h1", addr(HA)))
                    .await
                    .unwrap(),
            );
            while let Ok((step, reply)) = rx.recv() {
                let Some(current) = plane.as_ref() else { break };
                let result = match step {
                    Step::Set(routes, previous) => {
                        current.set(&routes, previous.as_ref()).await.map(|()| None)
                    }
                    Step::Clear(routes) => current.clear(&routes).await.map(|()| None),
                    Step::Reconcile(all) => current.reconcile(&all).await.map(Some),
                    Step::Teardown => plane.take().unwrap().remove_all().await.map(|()| None),
                };
                reply.send(result.map_err(|e| e.to_string())).unwrap();
            }
        });
    });
    (tx, thread)
}

fn step(plane: &mpsc::Sender<(Step, mpsc::Sender<Reply>)>, step: Step) -> Option<ReconcileReport> {
    let (tx, rx) = mpsc::channel();
    plane.send((step, tx)).unwrap();
    rx.recv().unwrap().unwrap()
}

fn ok(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ping(from: &Netns, to: &str, size: u32) -> bool {
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
        .status
        .success()
}

/// Moves `bytes` over TCP with iperf3 from `client` to `server_address` in
/// `server`; returns the receiver's bits per second.
fn tcp(server: &Netns, server_address: &str, client: &Netns) -> f64 {
    let mut daemon = server.command("iperf3").args(["-s", "-1"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let output = client
        .command("iperf3")
        .args(["-c", server_address, "-t", "2", "-J"])
        .output()
        .unwrap();
    let _ = daemon.wait();
    assert!(output.status.success(), "iperf3 failed: {}", ok(&output));
    let json = ok(&output);
    let key = "\"bits_per_second\":";
    // The receiver summary is the last "bits_per_second" in the report.
    let value = json.rsplit(key).next().unwrap();
    value
        .trim_start()
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn mobile_router(mr: &Netns, care_of: &str) {
    // Tenant link, gate, encapsulation to the home agent, decapsulation:
    // deploy/lab/dataplane-recipe.sh, mobile-router half.
    mr.ip(&["addr", "add", "2001:db8:100::1/64", "dev", "t0", "nodad"]);
    mr.ip(&[
        "link", "add", "g0", "mtu", "1460", "type", "veth", "peer", "name", "g1", "mtu", "1460",
    ]);
    mr.ip(&["link", "set", "g0", "up"]);
    mr.ip(&["link", "set", "g1", "up"]);
    mr.ip(&["addr", "add", "fe80::1/64", "dev", "g0", "nodad"]);
    mr.ip(&["addr", "add", "fe80::2/64", "dev", "g1", "nodad"]);
    mr.ip(&["-6", "rule", "add", "pref", "1000", "lookup", "local"]);
    mr.ip(&["-6", "rule", "del", "pref", "0", "lookup", "local"]);
    mr.ip(&[
        "-6", "rule", "add", "iif", "t0", "from", MNP, "lookup", "201", "pref", "800",
    ]);
    mr.ip(&[
        "-6", "route", "add", "default", "via", "fe80::2", "dev", "g0", "table", "201",
    ]);
    mr.ip(&[
        "-6", "rule", "add", "iif", "g1", "lookup", "200", "pref", "900",
    ]);
    mr.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "encap",
        "seg6",
        "mode",
        "encap.red",
        "segs",
        HA,
        "dev",
        "u0",
        "table",
        "200",
    ]);
    mr.ip(&[
        "-6",
        "route",
        "add",
        "throw",
        &format!("{HA}/128"),
        "table",
        "200",
    ]);
    mr.ip(&[
        "-6", "rule", "add", "from", HA, "ipproto", "41", "lookup", "202", "pref", "500",
    ]);
    mr.ip(&[
        "-6",
        "route",
        "add",
        &format!("{care_of}/128"),
        "encap",
        "seg6local",
        "action",
        "End.DT6",
        "table",
        "main",
        "dev",
        "u0",
        "table",
        "202",
    ]);
    let _ = mr
        .command("sysctl")
        .args(["-qw", "net.ipv6.conf.all.forwarding=1"])
        .status();
}

#[test]
fn tunnel_carries_full_size_traffic_and_follows_the_binding() {
    if !netns_available(MUST_RUN)
        || !require(
            runs("ping", &["-V"]),
            "ping missing (iputils-ping)",
            MUST_RUN,
        )
        || !require(runs("iperf3", &["--version"]), "iperf3 missing", MUST_RUN)
    {
        return;
    }
    let cn = Netns::new("dp-cn");
    let ha = Netns::new("dp-ha");
    let wan = Netns::new("dp-wan");
    let mr_a = Netns::new("dp-mra");
    let mr_b = Netns::new("dp-mrb");
    let vm_a = Netns::new("dp-vma");
    let vm_b = Netns::new("dp-vmb");

    // Correspondent -- home agent.
    nemo_testkit::veth(
        &cn,
        "c0",
        &format!("{CN}/64"),
        &ha,
        "h0",
        "2001:db8:f::1/64",
    );
    cn.ip(&["-6", "route", "add", "default", "via", "2001:db8:f::1"]);
    // The WAN: a bridge joining the home agent and both mobile routers,
    // 1500-byte links.
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
    // The same tenant VM address behind each mobile router.
    for (mr, vm) in [(&mr_a, &vm_a), (&mr_b, &vm_b)] {
        nemo_testkit::ip(&[
            "link",
            "add",
            "t0",
            "netns",
            mr.name(),
            "type",
            "veth",
            "peer",
            "name",
            "v0",
            "netns",
            vm.name(),
        ]);
        mr.ip(&["link", "set", "t0", "up"]);
        vm.ip(&["link", "set", "v0", "up"]);
        vm.ip(&["addr", "add", &format!("{VM}/64"), "dev", "v0", "nodad"]);
        vm.ip(&["-6", "route", "add", "default", "via", "2001:db8:100::1"]);
    }
    mobile_router(&mr_a, COA_A);
    mobile_router(&mr_b, COA_B);
    let _ = ha
        .command("sysctl")
        .args(["-qw", "net.ipv6.conf.all.forwarding=1"])
        .status();

    let (plane, thread) = data_plane(&ha);
    let at_a = routes(COA_A, &[MNP]);
    step(&plane, Step::Set(at_a.clone(), None));

    // Both directions, full-size packets on 1500-byte links: the largest
    // that fits the tunnel passes, a larger one gets a Packet Too Big.
    assert!(
        ping(&cn, VM, 56),
        "small ping correspondent -> VM\nrules:\n{}\nroutes:\n{}\nlinks:\n{}",
        ok(&ha.ip(&["-6", "rule"])),
        ok(&ha.ip(&["-6", "route", "show", "table", "all"])),
        ok(&ha.ip(&["-br", "addr"]))
    );
    assert!(ping(&cn, VM, 1412), "1460-byte packets correspondent -> VM");
    assert!(
        ping(&vm_a, CN, 1412),
        "1460-byte packets VM -> correspondent"
    );
    let too_big = cn
        .command("ping")
        .args(["-c", "2", "-W", "1", "-M", "do", "-s", "1452", VM])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        ok(&too_big),
        String::from_utf8_lossy(&too_big.stderr)
    );
    assert!(
        text.contains("mtu") && text.contains("1460"),
        "no Packet Too Big: {text}"
    );
    let down = tcp(&vm_a, VM, &cn);
    let up = tcp(&cn, CN, &vm_a);
    eprintln!(
        "tunnelled TCP: correspondent -> VM {:.2} Gbit/s, VM -> correspondent {:.2} Gbit/s",
        down / 1e9,
        up / 1e9
    );
    assert!(
        down > 1e8 && up > 1e8,
        "TCP through the tunnel: {down} / {up} bit/s"
    );

    // The tenant moves: re-point the binding to mobile router B. Without
    // the VM behind A, only B can answer.
    let at_b = routes(COA_B, &[MNP]);
    step(&plane, Step::Set(at_b.clone(), Some(at_a)));
    drop(vm_a);
    assert!(ping(&cn, VM, 1412), "traffic follows the binding to B");
    assert!(ping(&vm_b, CN, 1412), "reverse tunnel from B");
    let rules = ok(&ha.ip(&["-6", "rule"]));
    assert!(
        rules.contains(COA_B) && !rules.contains(COA_A),
        "decap rules: {rules}"
    );

    // Reconciliation: a stale binding the daemon no longer has goes, the
    // right one stays.
    let stale = BindingRoutes {
        home_address: addr("2001:db8:1::900"),
        care_of: addr(COA_A),
        prefixes: vec!["2001:db8:900::/64".parse().unwrap()],
    };
    step(&plane, Step::Set(stale.clone(), None));
    let report = step(&plane, Step::Reconcile(vec![at_b.clone()])).unwrap();
    assert_eq!(report.kept, 2, "{report:?}");
    assert_eq!(report.installed, 0, "{report:?}");
    assert!(report.removed >= 2, "{report:?}");
    let tables = ok(&ha.ip(&["-6", "route", "show", "table", "all"]));
    assert!(!tables.contains("2001:db8:900::"), "{tables}");
    assert!(ping(&cn, VM, 56), "reconcile kept the live binding");

    // Clearing the binding stops the traffic.
    step(&plane, Step::Clear(at_b));
    assert!(!ping(&cn, VM, 56), "traffic must stop after clear");

    // Teardown leaves nothing of nemo's behind and the local rule at 0.
    step(&plane, Step::Teardown);
    drop(plane);
    thread.join().unwrap();
    let tables = ok(&ha.ip(&["-6", "route", "show", "table", "all"]));
    for table in ["table 4191", "table 4192", "table 4193", "proto 78"] {
        assert!(!tables.contains(table), "{table} left: {tables}");
    }
    let rules = ok(&ha.ip(&["-6", "rule"]));
    assert!(rules.starts_with("0:\tfrom all lookup local"), "{rules}");
    assert!(
        !rules.contains("proto 78") && !rules.contains("1000:"),
        "{rules}"
    );
    let links = ok(&ha.ip(&["link"]));
    assert!(!links.contains("nemo-g"), "{links}");
}
