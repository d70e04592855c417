//! nemo's BPF data plane, programmed through the crate's API in network
//! namespaces, carrying real traffic: a home agent (`BpfHomeAgent`) and two
//! mobile routers (`BpfMobileRouter`), a correspondent and the same tenant
//! VM address behind each router; 1500-byte links.
//!
//! Checked: ping and TCP both ways with full-size packets, an ICMPv6
//! Packet Too Big for a packet too large for the tunnel, both ways; the
//! binding moved to the other care-of address; a reverse-tunnelled packet
//! from the old care-of address dropped and counted as spoofed; copies to
//! the old care-of address and its reverse tunnel taken while a move's
//! window is open (make-before-break); a restart
//! over the pinned maps that keeps forwarding; reconcile; teardown leaving
//! nothing behind.
//!
//! Needs root, iproute2, ping and iperf3: skips loudly without them unless
//! NEMO_REQUIRE_NETNS is set (deploy/test.sh sets it).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use nemo_dataplane::bpf::maps::Counter;
use nemo_dataplane::bpf::{BpfMobileRouter, BpfMobileRouterConfig};
use nemo_dataplane::{
    BindingRoutes, MobileRouterDataPlane, Peer, ReconcileReport, TenantRoutes, Traffic,
};
use nemo_testkit::{addr, net, netns_available, require, runs, BpfFs, Netns};

mod common;
use common::planes::{count, data_plane, step, Answer, Role, Step, Steps};
use common::{ping, pings, sites, tcp, text, Sites, CN, COA_A, COA_B, HA, HOA, MNP, VM};

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";

fn binding(care_of: &str) -> BindingRoutes {
    BindingRoutes {
        home_address: addr(HOA),
        care_of: nemo_dataplane::Peer::Ipv6(addr(care_of)),
        prefixes: vec![net(MNP)],
    }
}

fn tenant() -> TenantRoutes {
    TenantRoutes {
        interface: "t0".into(),
        prefixes: vec![net(MNP)],
        home_agent: nemo_dataplane::Peer::Ipv6(addr(HA)),
        table: 100,
    }
}

#[test]
fn bpf_tunnels_carry_full_size_traffic_follow_the_binding_and_survive_a_restart() {
    if !netns_available(MUST_RUN)
        || !common::backend_here(
            nemo_dataplane::KernelBackend::Bpf,
            "bpf tunnels carry full-size traffic",
        )
        || !require(
            runs("ping", &["-V"]),
            "ping missing (iputils-ping)",
            MUST_RUN,
        )
        || !require(runs("iperf3", &["--version"]), "iperf3 missing", MUST_RUN)
    {
        return;
    }
    let bpffs = BpfFs::mount();
    let Sites {
        cn,
        ha,
        wan: _wan,
        mr_a,
        mr_b,
        vm_a,
        vm_b,
    } = sites("bpf");
    let mut mobile_routers = Vec::new();
    for (mr, care_of, name) in [(&mr_a, COA_A, "mr-a"), (&mr_b, COA_B, "mr-b")] {
        let (steps, thread) = data_plane(mr, Role::MobileRouter, care_of, None, bpffs.path(name));
        step(&steps, Step::Attach(tenant()));
        mobile_routers.push((steps, thread));
    }
    let (plane, thread) = data_plane(&ha, Role::HomeAgent, HA, None, bpffs.path("ha"));
    step(&plane, Step::Set(binding(COA_A), None));

    // Both directions, full-size packets: 1412 octets of ICMP payload make
    // a 1460-octet packet, which fits the tunnel on 1500-octet links.
    let routes = || text(&ha.ip(&["-6", "route", "show", "table", "all"]));
    assert!(
        pings(&cn, VM, 56),
        "small ping correspondent -> VM\n{}",
        routes()
    );
    assert!(
        pings(&cn, VM, 1412),
        "1460-byte packets correspondent -> VM"
    );
    assert!(
        pings(&vm_a, CN, 1412),
        "1460-byte packets VM -> correspondent"
    );
    // One octet more: a Packet Too Big from the encapsulating side, each way.
    for (from, to) in [(&cn, VM), (&vm_a, CN)] {
        let answer = text(&ping(from, to, 1413));
        assert!(
            answer.contains("mtu") && answer.contains("1460"),
            "{} -> {to}: no Packet Too Big with mtu 1460: {answer}",
            from.name()
        );
    }
    let down = tcp(&vm_a, VM, &cn);
    let up = tcp(&cn, CN, &vm_a);
    assert!(
        down > 1e6 && up > 1e6,
        "TCP through the tunnel: {down} and {up} bit/s"
    );
    let (mr_a_plane, _) = &mobile_routers[0];
    assert!(count(&plane, Counter::Encapsulated) > 0);
    assert!(count(&plane, Counter::Decapsulated) > 0);
    assert!(count(mr_a_plane, Counter::Decapsulated) > 0);

    // The binding moves to B: the VM there answers; what A's router still
    // tunnels is refused by the home agent as spoofed.
    step(&plane, Step::Set(binding(COA_B), Some(binding(COA_A))));
    let (mr_b_plane, _) = &mobile_routers[1];
    let before = count(mr_b_plane, Counter::Decapsulated);
    assert!(pings(&cn, VM, 1412), "correspondent -> VM behind B");
    assert!(pings(&vm_b, CN, 1412), "reverse tunnel from B");
    assert!(
        count(mr_b_plane, Counter::Decapsulated) > before,
        "B's router took the tunnel"
    );
    let spoofed = count(&plane, Counter::DecapSpoofed);
    assert!(
        !pings(&vm_a, CN, 56),
        "A's VM still reached the correspondent"
    );
    assert!(
        count(&plane, Counter::DecapSpoofed) > spoofed,
        "spoofed packets not counted"
    );

    // Make-before-break (issue 29): with the binding at B, the care-of
    // address it left gets a copy of each packet, full-size ones too (both
    // VMs answer: ping sees duplicates), and A's reverse tunnel is taken
    // again, until the copies end.
    step(&plane, Step::Bicast(binding(COA_A)));
    let heard = |plane: &Steps| match step(plane, Step::BicastHeard(binding(COA_A))) {
        Answer::Heard(heard) => heard,
        _ => unreachable!(),
    };
    assert_eq!(heard(&plane), None, "A heard from before it sent");
    let (a_before, b_before) = (
        count(mr_a_plane, Counter::Decapsulated),
        count(mr_b_plane, Counter::Decapsulated),
    );
    let copied = count(&plane, Counter::BicastCopied);
    let answer = text(&ping(&cn, VM, 1412));
    assert!(answer.contains("duplicates"), "no copy reached A: {answer}");
    assert!(count(&plane, Counter::BicastCopied) >= copied + 3);
    assert!(count(mr_a_plane, Counter::Decapsulated) >= a_before + 3);
    assert!(count(mr_b_plane, Counter::Decapsulated) >= b_before + 3);
    assert_eq!(count(&plane, Counter::BicastNoRoute), 0);
    assert_eq!(count(&plane, Counter::BicastFailed), 0);
    assert!(pings(&vm_a, CN, 1412), "A's VM not taken while copied to");
    // Its packets say the VM still runs at A: the home agent's window
    // goes on while they come.
    let ago = heard(&plane).expect("A's reverse tunnel not heard from");
    assert!(ago < std::time::Duration::from_secs(5), "{ago:?}");
    assert!(
        pings(&vm_b, CN, 56),
        "B's VM not taken while A is copied to"
    );
    step(&plane, Step::EndBicast(binding(COA_A)));
    let a_before = count(mr_a_plane, Counter::Decapsulated);
    let answer = text(&ping(&cn, VM, 56));
    assert!(
        answer.contains(" 0% packet loss") && !answer.contains("duplicates"),
        "after the copies end: {answer}"
    );
    assert_eq!(count(mr_a_plane, Counter::Decapsulated), a_before);
    assert!(
        !pings(&vm_a, CN, 56),
        "A's VM still taken after the copies end"
    );

    // Held at B (placed on its VM's announcement, issue 29): nothing
    // passes, until the VM's first frame on its port, which the kernel
    // itself releases it on (nemo_release at tc ingress; no daemon thread
    // here): the VM's own first packet already passes.
    let (mr_b_plane, _) = &mobile_routers[1];
    // B's VM stands for one paused there: it sends nothing meanwhile (its
    // link down, addresses kept); the hypervisor knows its VM's address,
    // as the lab's does.
    let vm_mac = vm_b
        .command("cat")
        .arg("/sys/class/net/v0/address")
        .output()
        .unwrap();
    let vm_mac = String::from_utf8(vm_mac.stdout).unwrap();
    mr_b.ip(&[
        "-6",
        "neigh",
        "replace",
        VM,
        "lladdr",
        vm_mac.trim(),
        "dev",
        "t0",
        "nud",
        "permanent",
    ]);
    vm_b.command("sysctl")
        .args(["-qw", "net.ipv6.conf.v0.keep_addr_on_down=1"])
        .status()
        .unwrap();
    vm_b.ip(&["link", "set", "v0", "down"]);
    step(mr_b_plane, Step::Deliver(tenant(), Traffic::Hold));
    let release_filter = || {
        text(
            &mr_b
                .command("tc")
                .args(["filter", "show", "dev", "t0", "ingress"])
                .output()
                .unwrap(),
        )
        .contains("nemo_release")
    };
    assert!(release_filter(), "no release program on the held port");
    let held = count(mr_b_plane, Counter::Held);
    assert!(!pings(&cn, VM, 56), "a held tenant reached");
    assert!(
        count(mr_b_plane, Counter::Held) > held,
        "held drops not counted"
    );
    assert_eq!(count(mr_b_plane, Counter::Released), 0);
    // It resumes: its first frames (Multicast Listener Reports, a Router
    // Solicitation) are QEMU's RARP here.
    vm_b.ip(&["link", "set", "v0", "up"]);
    vm_b.ip(&[
        "-6",
        "route",
        "replace",
        "default",
        "via",
        "2001:db8:100::1",
    ]);
    assert!(
        pings(&vm_b, CN, 56),
        "the VM's first frame did not release it"
    );
    assert_eq!(count(mr_b_plane, Counter::Released), 1);
    assert!(pings(&cn, VM, 56), "released, yet not reached");
    // Passing again (the daemon, after its thread read the same frame)
    // changes nothing.
    step(mr_b_plane, Step::Deliver(tenant(), Traffic::Pass));
    assert!(pings(&cn, VM, 56));
    // Off the VM's path once it passes.
    assert!(!release_filter(), "the release program stays on the port");

    // A restart (the process gone without a teardown, as after kill -9):
    // routes, filter and pinned maps stay, and forwarding goes on.
    drop(plane);
    thread.join().unwrap();
    assert!(
        pings(&cn, VM, 56),
        "forwarding stopped with the home agent's process"
    );
    let (plane, thread) = data_plane(&ha, Role::HomeAgent, HA, None, bpffs.path("ha"));
    assert!(pings(&cn, VM, 56), "forwarding stopped with the restart");
    let Answer::Report(report) = step(&plane, Step::Reconcile(vec![binding(COA_B)])) else {
        unreachable!()
    };
    assert_eq!(
        report,
        ReconcileReport {
            installed: 0,
            kept: 2,
            removed: 0
        },
        "the pinned maps held the binding"
    );
    // A reconcile against an empty store removes it.
    let Answer::Report(report) = step(&plane, Step::Reconcile(Vec::new())) else {
        unreachable!()
    };
    assert_eq!(report.removed, 2);
    assert!(!pings(&cn, VM, 56), "a removed binding still forwards");
    step(&plane, Step::Set(binding(COA_B), None));
    assert!(pings(&cn, VM, 56), "a binding set again does not forward");

    // Teardown leaves nothing: no route in nemo's table, no rule, no tc
    // filter, no pins.
    step(&plane, Step::RemoveAll);
    drop(plane);
    thread.join().unwrap();
    for (steps, thread) in mobile_routers {
        step(&steps, Step::RemoveAll);
        drop(steps);
        thread.join().unwrap();
    }
    assert_eq!(
        text(&ha.ip(&["-6", "route", "show", "table", "4191"])).trim(),
        ""
    );
    assert!(!text(&ha.ip(&["-6", "rule"])).contains("4191"));
    for (hook, program) in [("ingress", "nemo_decap"), ("egress", "nemo_bicast")] {
        let filters = text(
            &ha.command("tc")
                .args(["filter", "show", "dev", "h1", hook])
                .output()
                .unwrap(),
        );
        assert!(!filters.contains(program), "{hook}: {filters}");
    }
    for name in ["ha", "mr-a", "mr-b"] {
        assert!(!bpffs.path(name).exists(), "{name}'s pins are left");
    }
    for mr in [&mr_a, &mr_b] {
        assert!(!text(&mr.ip(&["-6", "rule"])).contains("lookup 100"));
    }
}

#[test]
fn a_tenant_attaches_only_once_its_gateway_address_is_live() {
    // A port that is up but does not yet hold the tenant's gateway address
    // (inside its prefix), or holds it before the kernel receives for it,
    // cannot answer for the tenant: attaching (and so registering) waits.
    // Then the mobile router moves: its tunnels' source and the address
    // decapsulation accepts follow the new care-of address.
    if !netns_available(MUST_RUN)
        || !common::backend_here(
            nemo_dataplane::KernelBackend::Bpf,
            "bpf tenant attaches once its gateway is live",
        )
    {
        return;
    }
    let bpffs = BpfFs::mount();
    let mr = Netns::new("bpf-gw-mr");
    let wan = Netns::new("bpf-gw-wan");
    let vm = Netns::new("bpf-gw-vm");
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
    mr.command("sysctl")
        .args(["-qw", "net.ipv6.conf.all.forwarding=1"])
        .status()
        .unwrap();
    let pin_dir = bpffs.path("mr");
    let (without, with, locals) = mr.block_on(move || async move {
        let (connection, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(connection);
        let plane = BpfMobileRouter::new(
            handle,
            BpfMobileRouterConfig {
                uplink: "u0".into(),
                local_address: addr(COA_A),
                pin_dir: Some(pin_dir),
            },
        )
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
        let local = |plane: &BpfMobileRouter| plane.programs().local_address();
        let before = local(&plane);
        plane.set_care_of(addr(COA_B)).await.unwrap();
        let after = local(&plane);
        let bound = plane.programs().listed_bindings();
        MobileRouterDataPlane::remove_all(&plane).await.unwrap();
        (without, with, (before, after, bound))
    });
    let (before, after, bound) = locals;
    assert_eq!(before, Some(addr(COA_A)));
    assert_eq!(after, Some(addr(COA_B)));
    // The tenant's prefix stays bound to its home agent through the move.
    assert_eq!(bound.get(&net(MNP)), Some(&Peer::Ipv6(addr(HA))));
    assert!(
        without
            .as_ref()
            .is_err_and(|e| e.contains("no gateway address")),
        "{without:?}"
    );
    assert_eq!(with, Ok(()));
    assert!(!bpffs.path("mr").exists(), "the pins are left");
}
