//! The home agent's seg6 data plane, programmed through the crate's API in a
//! network namespace, carrying real traffic: ping and TCP in both directions
//! with full-size packets on 1500-byte links, a binding re-pointed to another
//! care-of address, reconciliation, and teardown leaving nothing behind.
//!
//! Both ends through the crate: the home agent with `Seg6HomeAgent`, two
//! mobile routers with `Seg6MobileRouter` (the recipe is
//! deploy/lab/dataplane-recipe.sh).
//!
//! Needs root, iproute2, ping and iperf3; skips loudly without them unless
//! NEMO_REQUIRE_NETNS is set (CI sets it).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::Ipv6Addr;
use std::process::Output;
use std::sync::mpsc;

use nemo_dataplane::linux::{Seg6Config, Seg6HomeAgent, Seg6MobileRouter};
use nemo_dataplane::tunsrc;
use nemo_dataplane::KernelBackend;
use nemo_dataplane::{
    BindingRoutes, HomeAgentDataPlane, MobileRouterDataPlane, ReconcileReport, TenantRoutes,
};
use nemo_testkit::addr;
use nemo_testkit::{netns_available, require, runs, Netns};

mod common;
use common::{pings, sites, tcp, Sites, CN, COA_A, COA_B, HA, HOA, MNP, VM};

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";
/// Second uplink addresses, preferred by source selection towards the peer.
const HA_SECOND: &str = "2001:db8:2:ffff::1";
const COA_A_SECOND: &str = "2001:db8:1:ffff::1";
/// A care-of address an earlier version's rule named.
const OLD_PEER: &str = "2001:db8:2::77";

fn routes(care_of: &str, prefixes: &[&str]) -> BindingRoutes {
    BindingRoutes {
        home_address: addr(HOA),
        care_of: nemo_dataplane::Peer::Ipv6(addr(care_of)),
        prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
    }
}

/// Work for a thread that owns a data plane inside a namespace.
enum Step {
    Set(BindingRoutes, Option<BindingRoutes>),
    Clear(BindingRoutes),
    Reconcile(Vec<BindingRoutes>),
    Settle(
        Vec<BindingRoutes>,
        Vec<BindingRoutes>,
        Vec<(Ipv6Addr, usize)>,
    ),
    Attach(TenantRoutes),
    Detach(TenantRoutes),
    RemoveAll,
}

type Reply = Result<Option<ReconcileReport>, String>;
type Steps = mpsc::Sender<(Step, mpsc::Sender<Reply>)>;

enum Plane {
    HomeAgent(Seg6HomeAgent),
    MobileRouter(Seg6MobileRouter),
}

/// Starts a data plane in `ns` (a home agent's when `home_agent`, else a
/// mobile router's) and returns a channel of steps for it.
fn data_plane(ns: &Netns, home_agent: bool, local: &str) -> (Steps, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<(Step, mpsc::Sender<Reply>)>();
    let local = addr(local);
    let thread = ns.spawn_in(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (connection, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(connection);
            let uplink = if home_agent { "h1" } else { "u0" };
            let config = Seg6Config::new(uplink, local);
            let plane = if home_agent {
                Plane::HomeAgent(Seg6HomeAgent::new(handle, config).await.unwrap())
            } else {
                Plane::MobileRouter(Seg6MobileRouter::new(handle, config).await.unwrap())
            };
            while let Ok((step, reply)) = rx.recv() {
                let result = match (&plane, step) {
                    (Plane::HomeAgent(p), Step::Set(routes, previous)) => {
                        p.set(&routes, previous.as_ref()).await.map(|()| None)
                    }
                    (Plane::HomeAgent(p), Step::Clear(routes)) => {
                        p.clear(&routes).await.map(|()| None)
                    }
                    (Plane::HomeAgent(p), Step::Reconcile(all)) => {
                        p.reconcile(&all).await.map(Some)
                    }
                    (Plane::HomeAgent(p), Step::Settle(now, gone, users)) => p
                        .settle(&now, &gone, users.into_iter().collect())
                        .await
                        .map(|()| None),
                    (Plane::HomeAgent(p), Step::RemoveAll) => p.teardown().await.map(|()| None),
                    (Plane::MobileRouter(p), Step::Attach(tenant)) => {
                        p.attach(&tenant, None).await.map(|()| None)
                    }
                    (Plane::MobileRouter(p), Step::Detach(tenant)) => {
                        p.detach(&tenant).await.map(|()| None)
                    }
                    (Plane::MobileRouter(p), Step::RemoveAll) => {
                        MobileRouterDataPlane::remove_all(p).await.map(|()| None)
                    }
                    _ => panic!("step not for this data plane"),
                };
                reply.send(result.map_err(|e| e.to_string())).unwrap();
            }
        });
    });
    (tx, thread)
}

/// The decapsulation routes of a namespace, as "destination from source",
/// sorted.
fn decap_routes(ns: &Netns) -> Vec<String> {
    let mut routes: Vec<String> = ok(&ns.ip(&["-6", "route", "show", "table", "4193"]))
        .lines()
        .map(|line| {
            line.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    routes.sort();
    routes
}

fn step(plane: &Steps, step: Step) -> Option<ReconcileReport> {
    let (tx, rx) = mpsc::channel();
    plane.send((step, tx)).unwrap();
    rx.recv().unwrap().unwrap()
}

fn tenant() -> TenantRoutes {
    TenantRoutes {
        interface: "t0".into(),
        prefixes: vec![MNP.parse().unwrap()],
        home_agent: nemo_dataplane::Peer::Ipv6(addr(HA)),
        table: 100,
    }
}

fn ok(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn tunnel_carries_full_size_traffic_and_follows_the_binding() {
    if !netns_available(MUST_RUN)
        || !common::backend_here(KernelBackend::Seg6, "seg6 tunnel carries full-size traffic")
        || !require(
            runs("ping", &["-V"]),
            "ping missing (iputils-ping)",
            MUST_RUN,
        )
        || !require(runs("iperf3", &["--version"]), "iperf3 missing", MUST_RUN)
    {
        return;
    }
    let Sites {
        cn,
        ha,
        wan: _wan,
        mr_a,
        mr_b,
        vm_a,
        vm_b,
    } = sites("dp");
    // A second global address on each uplink, which the kernel's source
    // selection prefers towards the peer (longer common prefix, RFC 6724
    // rule 8): unless nemo pins the tunnel source, the outer packets leave
    // from it and the peer's decapsulation route never matches.
    for (ns, uplink, second) in [
        (&ha, "h1", HA_SECOND),
        (&mr_a, "u0", COA_A_SECOND),
        (&mr_b, "u0", "2001:db8:1:fffe::1"),
    ] {
        ns.ip(&[
            "addr",
            "add",
            &format!("{second}/128"),
            "dev",
            uplink,
            "nodad",
        ]);
    }
    // Each mobile router (the tenant's gateway address on its link): the
    // tenant attached through the crate's API.
    let mut mobile_routers = Vec::new();
    for (mr, care_of) in [(&mr_a, COA_A), (&mr_b, COA_B)] {
        let (steps, thread) = data_plane(mr, false, care_of);
        step(&steps, Step::Attach(tenant()));
        assert_eq!(
            decap_routes(mr),
            vec![format!("{care_of} from {HA}")],
            "the mobile router decapsulates from its home agent"
        );
        mobile_routers.push((steps, thread));
    }

    // What an earlier version left on the home agent: a decapsulation rule
    // per care-of address and a route that decapsulated from any source.
    // Starting takes the rule over as a source-specific route and drops
    // the catch-all.
    ha.ip(&[
        "-6", "rule", "add", "from", OLD_PEER, "ipproto", "ipv6", "lookup", "4193", "pref", "500",
        "proto", "78",
    ]);
    ha.ip(&[
        "-6",
        "route",
        "add",
        HA,
        "encap",
        "seg6local",
        "action",
        "End.DT6",
        "table",
        "main",
        "dev",
        "h1",
        "table",
        "4193",
        "proto",
        "78",
    ]);
    let (plane, thread) = data_plane(&ha, true, HA);
    let at_a = routes(COA_A, &[MNP]);
    step(&plane, Step::Set(at_a.clone(), None));
    let rules = ok(&ha.ip(&["-6", "rule"]));
    assert!(
        !rules.contains(OLD_PEER) && rules.contains("500:\tfrom all ipproto ipv6 lookup 4193"),
        "one decapsulation rule: {rules}"
    );
    let decap = decap_routes(&ha);
    assert_eq!(
        decap,
        vec![
            format!("{HA} from {COA_A}"),
            format!("{HA} from {OLD_PEER}")
        ],
        "the earlier rule as a route, the catch-all gone, A's care-of address added"
    );

    // Both directions, full-size packets on 1500-byte links: the largest
    // that fits the tunnel passes, a larger one gets a Packet Too Big.
    assert!(
        pings(&cn, VM, 56),
        "small ping correspondent -> VM\nrules:\n{}\nroutes:\n{}\nlinks:\n{}",
        ok(&ha.ip(&["-6", "rule"])),
        ok(&ha.ip(&["-6", "route", "show", "table", "all"])),
        ok(&ha.ip(&["-br", "addr"]))
    );
    assert!(
        pings(&cn, VM, 1412),
        "1460-byte packets correspondent -> VM"
    );
    assert!(
        pings(&vm_a, CN, 1412),
        "1460-byte packets VM -> correspondent"
    );
    for (ns, local) in [(&ha, HA), (&mr_a, COA_A), (&mr_b, COA_B)] {
        let pinned = ns.spawn_in(tunsrc::get).join().unwrap().unwrap();
        assert_eq!(pinned, addr(local), "{}: seg6 tunnel source", ns.name());
    }
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
    // The same from the tenant's side: the mobile router's gate answers.
    let too_big = vm_a
        .command("ping")
        .args(["-c", "2", "-W", "1", "-M", "do", "-s", "1452", CN])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        ok(&too_big),
        String::from_utf8_lossy(&too_big.stderr)
    );
    assert!(
        text.contains("mtu") && text.contains("1460"),
        "no Packet Too Big from the MR: {text}"
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

    // A peer that encapsulates from another address than the one its
    // binding names (the fault pinning prevents): its packets are dropped,
    // and the home agent's count of decapsulation misses says so.
    let misses = || {
        ha.spawn_in(tunsrc::decapsulation_misses)
            .join()
            .unwrap()
            .unwrap()
    };
    let before = misses();
    mr_a.ip(&["sr", "tunsrc", "set", COA_A_SECOND]);
    assert!(!pings(&vm_a, CN, 56), "a wrong outer source must not pass");
    let after = misses();
    assert!(
        after >= before + 3,
        "decapsulation misses {before} -> {after}"
    );
    mr_a.ip(&["sr", "tunsrc", "set", COA_A]);
    assert!(pings(&vm_a, CN, 56), "the pinned source again");

    // The tenant moves: re-point the binding to mobile router B. Without
    // the VM behind A, only B can answer.
    let at_b = routes(COA_B, &[MNP]);
    step(&plane, Step::Set(at_b.clone(), Some(at_a)));
    drop(vm_a);
    assert!(pings(&cn, VM, 1412), "traffic follows the binding to B");
    assert!(pings(&vm_b, CN, 1412), "reverse tunnel from B");
    assert_eq!(
        decap_routes(&ha),
        vec![format!("{HA} from {OLD_PEER}"), format!("{HA} from {COA_B}")],
        "decapsulation from B's care-of address only (and the unknown earlier peer until a reconcile)"
    );

    // Reconciliation: a stale binding the daemon no longer has goes, the
    // right one stays.
    let stale = BindingRoutes {
        home_address: addr("2001:db8:1::900"),
        care_of: nemo_dataplane::Peer::Ipv6(addr(COA_A)),
        prefixes: vec!["2001:db8:900::/64".parse().unwrap()],
    };
    step(&plane, Step::Set(stale.clone(), None));
    let report = step(&plane, Step::Reconcile(vec![at_b.clone()])).unwrap();
    assert_eq!(report.kept, 2, "{report:?}");
    assert_eq!(report.installed, 0, "{report:?}");
    assert!(report.removed >= 2, "{report:?}");
    let tables = ok(&ha.ip(&["-6", "route", "show", "table", "all"]));
    assert!(!tables.contains("2001:db8:900::"), "{tables}");
    assert!(pings(&cn, VM, 56), "reconcile kept the live binding");
    assert_eq!(
        decap_routes(&ha),
        vec![format!("{HA} from {COA_B}")],
        "reconciled decapsulation"
    );

    // A restart's reconcile works from a list made before the binding
    // moved (here to A's care-of address, as if it ran late): settling
    // makes it what it is now, and the decapsulation routes follow the
    // counts given, not what each call added.
    let stale_move = routes(COA_A, &[MNP]);
    step(&plane, Step::Reconcile(vec![stale_move.clone()]));
    assert!(
        decap_routes(&ha).contains(&format!("{HA} from {COA_A}")),
        "the stale list's decapsulation"
    );
    step(
        &plane,
        Step::Settle(vec![at_b.clone()], vec![stale_move], vec![(addr(COA_B), 1)]),
    );
    assert!(pings(&cn, VM, 1412), "settled: traffic back to B");
    assert_eq!(
        decap_routes(&ha),
        vec![format!("{HA} from {COA_B}")],
        "settled decapsulation"
    );

    // Clearing the binding stops the traffic.
    step(&plane, Step::Clear(at_b));
    assert!(!pings(&cn, VM, 56), "traffic must stop after clear");

    // Detaching the tenant on B takes its rules and table away.
    let (mr_b_steps, _) = &mobile_routers[1];
    step(mr_b_steps, Step::Detach(tenant()));
    let rules = ok(&mr_b.ip(&["-6", "rule"]));
    assert!(!rules.contains("2001:db8:100::/64"), "{rules}");
    assert!(ok(&mr_b.ip(&["-6", "route", "show", "table", "100"])).is_empty());

    // Teardown leaves nothing of nemo's behind and the local rule at 0, on
    // the home agent and on the mobile routers.
    step(&plane, Step::RemoveAll);
    drop(plane);
    thread.join().unwrap();
    for (steps, thread) in mobile_routers {
        step(&steps, Step::RemoveAll);
        drop(steps);
        thread.join().unwrap();
    }
    for ns in [&ha, &mr_a, &mr_b] {
        let tables = ok(&ns.ip(&["-6", "route", "show", "table", "all"]));
        for table in [
            "table 4191",
            "table 4192",
            "table 4193",
            "table 4194",
            "table 100",
            "proto 78",
        ] {
            assert!(
                !tables.contains(table),
                "{}: {table} left: {tables}",
                ns.name()
            );
        }
        let rules = ok(&ns.ip(&["-6", "rule"]));
        assert!(rules.starts_with("0:\tfrom all lookup local"), "{rules}");
        assert!(
            !rules.contains("proto 78") && !rules.contains("1000:"),
            "{rules}"
        );
        let links = ok(&ns.ip(&["link"]));
        assert!(!links.contains("nemo-g"), "{links}");
        let source = ns.spawn_in(tunsrc::get).join().unwrap().unwrap();
        assert_eq!(
            source,
            Ipv6Addr::UNSPECIFIED,
            "{}: tunnel source",
            ns.name()
        );
    }
}

#[test]
fn a_tenant_attaches_only_once_its_gateway_address_is_live() {
    // A port that is up but does not yet hold the tenant's gateway address
    // (inside its prefix), or holds it before the kernel receives for it,
    // cannot answer for the tenant: attaching (and so registering) waits.
    if !netns_available(MUST_RUN)
        || !common::backend_here(
            KernelBackend::Seg6,
            "seg6 tenant attaches once its gateway is live",
        )
    {
        return;
    }
    let mr = Netns::new("dp-gw-mr");
    let wan = Netns::new("dp-gw-wan");
    let vm = Netns::new("dp-gw-vm");
    nemo_testkit::veth(
        &mr,
        "u0",
        &format!("{COA_A}/64"),
        &wan,
        "w0",
        "2001:db8:2::fe/64",
    );
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
    let _ = mr
        .command("sysctl")
        .args(["-qw", "net.ipv6.conf.all.forwarding=1"])
        .status();
    let (without, with, moved) = mr.block_on(move || async move {
        let (connection, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(connection);
        let plane = Seg6MobileRouter::new(handle, Seg6Config::new("u0", addr(COA_A)))
            .await
            .unwrap();
        let without = plane
            .attach(&tenant(), None)
            .await
            .map_err(|e| e.to_string());
        let added = std::process::Command::new("ip")
            .args(["addr", "add", "2001:db8:100::1/64", "dev", "t0", "nodad"])
            .status()
            .unwrap();
        assert!(added.success());
        // The address is there; once the kernel receives for it (within
        // its address worker's delay), the tenant attaches.
        let mut with = Err(String::new());
        for _ in 0..100 {
            with = plane
                .attach(&tenant(), None)
                .await
                .map_err(|e| e.to_string());
            if with.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The mobile router moves: its decapsulation route follows its new
        // care-of address.
        let decap = || {
            let output = std::process::Command::new("ip")
                .args(["-6", "route", "show", "table", "4193"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let before = decap();
        plane.set_care_of(addr(COA_B)).await.unwrap();
        let after = decap();
        MobileRouterDataPlane::remove_all(&plane).await.unwrap();
        let removed = decap();
        (without, with, [before, after, removed])
    });
    let [before, after, removed] = moved;
    assert!(
        before.starts_with(&format!("{COA_A} from {HA} ")),
        "{before}"
    );
    assert!(
        after.starts_with(&format!("{COA_B} from {HA} ")) && after.lines().count() == 1,
        "{after}"
    );
    assert!(removed.is_empty(), "{removed}");
    assert!(
        without
            .as_ref()
            .is_err_and(|e| e.contains("no gateway address")),
        "{without:?}"
    );
    assert_eq!(with, Ok(()));
}
