//! The live-migration lab (`deploy/lab/migrate.sh`) and the home-agent
//! failover lab (`deploy/lab/failover.sh`) as tests, with the binaries of
//! this build. It asserts itself (the VM answers before and
//! after, the TCP connection survives, loss within its bound, the binding
//! moved) and exits non-zero otherwise, also when a process outlived its
//! clean-up (it lists what still runs in its namespaces before deleting
//! them); this test also checks that it left no namespace behind.
//!
//! Needs root, iproute2, ping, iperf3 and nft, and for the real VM
//! qemu-system-x86, busybox-static, cpio and python3 (its kernel is fetched
//! once with apt-get download); skips loudly without them unless
//! NEMO_REQUIRE_NETNS is set (CI sets it).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::Command;

use nemo_testkit::{netns_available, require, runs, workspace_binary};

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";

/// Namespaces whose names start with `prefix`.
fn namespaces(prefix: &str) -> usize {
    let output = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

/// Runs the lab in `mode`, the control traffic delayed by `wan_delay_ms`
/// each way, and checks its verdict and its cleanup.
fn lab(mode: &str, order: &str, wan_delay_ms: u32) {
    run(
        "migrate.sh",
        &format!("{mode}-{order}"),
        &[
            ("MODE", mode.to_owned()),
            ("ORDER", order.to_owned()),
            ("WAN_DELAY_MS", wan_delay_ms.to_string()),
        ],
    );
}

/// How a VM lab's migration ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// On the destination, hvb.
    Migrated,
    /// Back on the source, hva: the destination died after the switch-over
    /// and the source resumed (FAILBACK=1).
    FailedBack,
    /// Never migrated: the destination's QEMU ended before `migrate`
    /// (ABANDON=1).
    Abandoned,
}

/// What datacenter B is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SiteB {
    /// An IPv6 site.
    Ipv6,
    /// An IPv4-only site behind a NAT (SITE_B=nat, issue 30).
    BehindNat,
}

/// Runs the lab with a real QEMU guest, nemo told by `hook`, and checks
/// what it reports of QEMU besides the verdict.
fn vm_lab(hook: &str, wan_delay_ms: u32) {
    vm_lab_ending(hook, wan_delay_ms, Ending::Migrated, SiteB::Ipv6);
}

fn vm_lab_ending(hook: &str, wan_delay_ms: u32, ending: Ending, site_b: SiteB) {
    if !require(
        runs("qemu-system-x86_64", &["--version"]),
        "qemu-system-x86_64 missing (qemu-system-x86)",
        MUST_RUN,
    ) || !require(
        runs("busybox", &["true"]),
        "busybox missing (busybox-static)",
        MUST_RUN,
    ) {
        return;
    }
    // The results folder outlives the lab by design; this test's goes
    // with the test.
    let results = tempfile::tempdir().unwrap();
    let Some(text) = run(
        "migrate.sh",
        // Unique per test: the namespaces' prefix is made of it.
        &format!(
            "vm-{hook}-{wan_delay_ms}{}{}",
            match ending {
                Ending::Migrated => "",
                Ending::FailedBack => "-back",
                Ending::Abandoned => "-abandoned",
            },
            match site_b {
                SiteB::Ipv6 => "",
                SiteB::BehindNat => "-nat",
            }
        ),
        &[
            ("MODE", "vm".to_owned()),
            (
                "SITE_B",
                match site_b {
                    SiteB::Ipv6 => "ipv6",
                    SiteB::BehindNat => "nat",
                }
                .to_owned(),
            ),
            ("HOOK", hook.to_owned()),
            // The make-before-break runs count the probes lost while the
            // VM ran (below) against one probe stream; the IPv4 client's
            // second stream doubles what the TCG guest answers, and with
            // it 5 were lost where 4 are allowed (CI, once). The other
            // runs carry the IPv4 client (issue 31).
            (
                "IPV4_CLIENT",
                if hook == "early" || (hook == "none" && ending == Ending::Migrated) {
                    "0"
                } else {
                    "1"
                }
                .to_owned(),
            ),
            ("WAN_DELAY_MS", wan_delay_ms.to_string()),
            ("RESULTS_DIR", results.path().display().to_string()),
            (
                "FAILBACK",
                if ending == Ending::FailedBack {
                    "1"
                } else {
                    "0"
                }
                .to_owned(),
            ),
            (
                "ABANDON",
                if ending == Ending::Abandoned {
                    "1"
                } else {
                    "0"
                }
                .to_owned(),
            ),
            // The VM never stops when the migration is abandoned: the
            // probes see no silence beyond a few of their 2 ms intervals.
            (
                "MAX_OUTAGE_MS",
                if ending == Ending::Abandoned {
                    "20"
                } else {
                    "1000"
                }
                .to_owned(),
            ),
        ],
    ) else {
        return;
    };
    if ending == Ending::Abandoned {
        assert!(text.contains("went back to datacenter A"), "{text}");
        assert!(text.contains("probes lost 0,"), "{text}");
        return;
    }
    assert!(text.contains("migration completed"), "{text}");
    assert!(text.contains("network's share:"), "{text}");
    let folder = std::fs::read_dir(results.path())
        .unwrap()
        .next()
        .expect("no results folder")
        .unwrap()
        .path();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["qemu"]["status"], "completed", "{summary}");
    assert!(
        summary["qemu"]["downtime_ms"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert_eq!(summary["tcp"]["survived"], true, "{summary}");
    let care_of_after = match (ending, site_b) {
        (Ending::Migrated, SiteB::Ipv6) => "2001:db8:3::10",
        // Its IPv4 care-of address, through the NAT's mapping (RFC 5555
        // §4.2: the home agent saw the NAT).
        (Ending::Migrated, SiteB::BehindNat) => "192.0.2.130 (nat 192.0.2.99:",
        (Ending::FailedBack | Ending::Abandoned, _) => "2001:db8:2::10",
    };
    let after = summary["binding_after"][0]["care_of_address"]
        .as_str()
        .unwrap_or_default();
    assert!(after.starts_with(care_of_after), "{summary}");
    if ending == Ending::FailedBack {
        // Issue 29, item 4: back on the source's frames, nobody telling.
        assert!(
            summary["failback"]["first_frame_at_a_to_first_answer_ms"]
                .as_f64()
                .is_some(),
            "{summary}"
        );
    }
    // Issue 29, item 1: the network's share measured at the VM: its first
    // frame at the destination (QEMU announces it as it resumes), and the
    // probes lost while it ran on either side.
    assert_eq!(
        summary["vm_first_frame_at_destination"]["kind"], "RARP",
        "{summary}"
    );
    assert!(summary["network_share_ms"].as_f64().is_some(), "{summary}");
    assert!(
        summary["probes_lost_while_vm_ran"]["destination"].is_u64(),
        "{summary}"
    );
    if hook == "early" || (hook == "none" && ending == Ending::Migrated) {
        // Issue 29, item 3: make-before-break across the 40 ms WAN. The
        // home agent copies to A while the VM still runs there (without
        // the copies A's VM would lose everything from the placement on:
        // a hundred probes and more), hvb passes nothing before the VM's
        // RARP (no stale packet answered twice), and from RESUME on the
        // packets are there already: only those reaching hvb between
        // RESUME and the RARP's release (a fraction of a millisecond; a
        // few under CI's load) are lost, where placing at the source's
        // STOP loses 8-11 (docs/BENCHMARKS.md). At the source, at most
        // the probe the VM took in and paused before answering. With no
        // hook the same: QEMU attaching the destination's port is the
        // placement (reporting the RARP instead lost 14 across 40 ms).
        let lost = &summary["probes_lost_while_vm_ran"];
        // At the source: the probes that reached the VM after the last
        // frame it sent before QEMU paused it (one every 2 ms), which the
        // guest had not answered yet: its slowness, not the network's (a
        // TCG guest under CI's load went 5.3 ms silent before the pause
        // and lost 2). One when it answered up to the pause.
        let silent_before_pause = summary["vm_last_frame_at_source_before_pause_ms"]
            .as_f64()
            .unwrap_or(0.0);
        let unanswered_by_the_guest = 1 + (silent_before_pause / 2.0).ceil() as u64;
        assert!(
            lost["source"].as_u64().unwrap() <= unanswered_by_the_guest,
            "{summary}"
        );
        assert!(lost["destination"].as_u64().unwrap() <= 4, "{summary}");
        assert_eq!(summary["probes"]["duplicates"], 0, "{summary}");
    }
    let picture = std::fs::read_to_string(folder.join("timeline.svg")).unwrap();
    for moment in [
        "VM paused",
        "VM resumed",
        "VM's first frame at B",
        "Binding Ack received",
        "first reply",
    ] {
        assert!(picture.contains(moment), "{moment} not in the picture");
    }
}

/// Runs a lab script with these settings and checks its verdict and its
/// cleanup; returns what it printed (`None` when skipped).
fn run(script: &str, tag: &str, settings: &[(&str, String)]) -> Option<String> {
    if !netns_available(MUST_RUN)
        || !nemo_testkit::require_backend(
            nemo_dataplane::KernelBackend::choose().map(drop),
            Err("no other backend".into()),
            &format!("lab {script} ({tag}) forwards (bpf or seg6)"),
            "NEMO_REQUIRE_DATAPLANE",
        )
        || !require(
            runs("ping", &["-V"]),
            "ping missing (iputils-ping)",
            MUST_RUN,
        )
        || !require(runs("iperf3", &["--version"]), "iperf3 missing", MUST_RUN)
    {
        return None;
    }
    let binaries = workspace_binary("nemo-controller")
        .parent()
        .unwrap()
        .to_owned();
    for binary in [
        "nemo-ha",
        "nemoctl",
        "nemo-mr",
        "nemo-probe",
        "nemo-delay-relay",
        "nemo-timeline",
    ] {
        workspace_binary(binary);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/lab")
        .join(script);
    // Its own prefix, so that runs side by side do not see each other.
    let prefix = format!("nemo-labtest-{}-{tag}-", std::process::id());
    let output = Command::new("bash")
        .arg(&script)
        .env("NEMO_BIN", &binaries)
        .envs(settings.iter().map(|(key, value)| (*key, value.as_str())))
        .env("NEMO_LAB_PREFIX", &prefix)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{text}");
    assert!(
        !text.contains("CLEANUP FAILED"),
        "the lab left processes behind:\n{text}"
    );
    assert!(output.status.success(), "the lab failed:\n{text}");
    assert!(text.contains("PASS"), "{text}");
    assert!(text.contains("TCP connection:  survived"), "{text}");
    assert_eq!(namespaces(&prefix), 0, "the lab left namespaces behind");
    Some(text)
}

#[test]
fn live_migration_lab_a_real_vm() {
    // A QEMU guest migrated over QMP; nemo told when it resumes.
    vm_lab("resume", 0);
}

#[test]
fn live_migration_lab_a_real_vm_nobody_tells_nemo_over_a_40_ms_wan() {
    // Issue 29, items 2 and 3: a plain migration with no hook, over the
    // seed's 40 ms WAN; the controller follows arrivals: nemo-mr on the
    // destination reports QEMU attaching the VM's port (the migration
    // starting), the tenant is placed there on its VM's announcement, and
    // the move is made before the VM pauses, as with the `early` hook.
    vm_lab("none", 20);
}

#[test]
fn live_migration_lab_a_real_vm_fails_back() {
    // Issue 29, item 4: the destination dies after the switch-over and the
    // source resumes; the tenant moves back on its VM's frames there.
    vm_lab_ending("none", 0, Ending::FailedBack, SiteB::Ipv6);
}

#[test]
fn live_migration_lab_a_real_vm_whose_migration_is_abandoned() {
    // Issue 29, item 4: the destination's QEMU, whose port moved the
    // tenant there on its VM's announcement, ends before the migration:
    // back to the source, where the VM ran throughout: nothing lost.
    vm_lab_ending("none", 0, Ending::Abandoned, SiteB::Ipv6);
}

#[test]
fn live_migration_lab_a_real_vm_to_an_ipv4_site_behind_a_nat() {
    // Issue 30: datacenter B has only IPv4, behind a NAT that changes
    // ports; nemo-mr there registers its IPv4 care-of address (RFC 5555)
    // and the tenant's traffic crosses the NAT IPv6-in-UDP.
    vm_lab_ending("resume", 0, Ending::Migrated, SiteB::BehindNat);
}

#[test]
fn live_migration_lab_a_real_vm_to_an_ipv4_site_behind_a_nat_and_back() {
    // Issue 30, A -> C -> A: nobody tells nemo (datacenter B, IPv4 behind
    // a NAT, registers at the VM's announcement: no copies reach the
    // source across families), then the migration fails after the
    // switch-over and the tenant moves back to the IPv6 site on its VM's
    // frames there.
    vm_lab_ending("none", 0, Ending::FailedBack, SiteB::BehindNat);
}

#[test]
fn live_migration_lab_a_real_vm_over_a_40_ms_wan() {
    vm_lab("resume", 20);
}

#[test]
fn live_migration_lab_a_real_vm_placed_as_the_migration_starts() {
    // Issue 29, item 3: placed on the VM's announcement as `migrate`
    // starts, over the seed's 40 ms WAN: make-before-break.
    vm_lab("early", 20);
}

#[test]
fn live_migration_lab_orchestrated() {
    lab("veth", "port-first", 0);
}

#[test]
fn live_migration_lab_placement_before_the_port_exists() {
    // The orchestrator tells the controller before the VM's port exists on
    // the new hypervisor: nemo-mr must not register a binding it cannot
    // decapsulate for, and must register as soon as the port appears.
    lab("orchestrated", "place-first", 0);
}

#[test]
fn live_migration_lab_seed_variant_over_a_40_ms_wan() {
    // The seed's WAN: 40 ms round trip for the Binding Update and its answer.
    lab("seed", "port-first", 20);
}

#[test]
fn failover_lab_the_active_home_agents_machine_dies() {
    // kill -9 and its home-link port down at once: the standby takes the
    // address within the VRRP timers; the tenant's traffic and TCP stream
    // come through, and the mobile router does nothing special.
    run("failover.sh", "machine", &[("DEATH", "machine".to_owned())]);
}

#[test]
fn failover_lab_the_active_home_agents_process_dies() {
    // kill -9 alone: its kernel keeps forwarding until the address lapses.
    run("failover.sh", "process", &[("DEATH", "process".to_owned())]);
}

#[test]
fn failover_lab_a_migration_meets_the_takeover() {
    // The VM moves to the other hypervisor as the active home agent dies:
    // the new hypervisor's first Binding Update may be lost in the takeover
    // window and is sent again after InitialBindackTimeoutFirstReg (300 ms
    // here, a configuration variable of RFC 6275 §13); the new active
    // accepts it, the tenant comes through. The limit allows a second lost
    // retransmission on a loaded machine.
    run(
        "failover.sh",
        "migration",
        &[
            ("DURING", "migration".to_owned()),
            ("FIRST_REG_MS", "300".to_owned()),
            ("MAX_OUTAGE_MS", "1500".to_owned()),
        ],
    );
}
