//! A home-agent pair on one home link: two nemo-ha in their own namespaces
//! bridged to a third, where mobile routers (ha-loadgen) register with the
//! home-agent address 2001:db8:1::1. The active is killed mid-load, with
//! its home-link port down at the same instant (the machine dies): the
//! standby takes the address over, every registration the active
//! acknowledged is in the standby's store (synchronous replication), and
//! the load goes on being answered by the standby.
//!
//! Needs root and iproute2 (CI: NEMO_REQUIRE_NETNS).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nemo_testkit::{netns_available, workspace_binary, Netns, Process};

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";
const ROUTERS: &str = "400";
const TOKEN: &str = "pair-token-0123456789abcdef";

/// One member: its namespace's side of the home link, its config.
fn member(
    dir: &Path,
    netns: &Netns,
    name: &str,
    priority: u8,
    peer: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let store = dir.join(format!("{name}-store"));
    let made = Command::new(workspace_binary("ha-loadgen"))
        .args([
            "config",
            "--routers",
            ROUTERS,
            "--listen",
            "[2001:db8:1::1]:4191",
        ])
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let mut config = String::from_utf8(made.stdout).unwrap();
    config.push_str(&format!(
        "\n[pair]\ninterface = \"home\"\nlink_local = \"fe80::{name}\"\nvrid = 12\n\
         priority = {priority}\nadvert_interval_ms = 50\naddresses = [\"2001:db8:1::1\"]\n\
         replication_listen = \"[2001:db8:1::{name}]:4192\"\npeer = \"[{peer}]:4192\"\n\
         token_file = \"{}\"\n\n[admin]\nlisten = \"[::1]:50051\"\n",
        dir.join("token").display()
    ));
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let _ = netns;
    (path, store)
}

fn start(netns: &Netns, config: &Path, log: std::path::PathBuf) -> Process {
    let mut command = netns.command(workspace_binary("nemo-ha").to_str().unwrap());
    command.arg("--config").arg(config);
    Process::start(command, log)
}

/// The home link: a bridge in `link` with one port per member.
fn home_link(link: &Netns, members: &[(&Netns, &str)]) {
    link.ip(&[
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ]);
    for (netns, port) in members {
        nemo_testkit::ip(&[
            "link",
            "add",
            port,
            "netns",
            link.name(),
            "type",
            "veth",
            "peer",
            "name",
            "home",
            "netns",
            netns.name(),
        ]);
        link.ip(&["link", "set", port, "master", "br0", "up"]);
        netns.ip(&["link", "set", "home", "up"]);
    }
    link.ip(&["link", "set", "br0", "up"]);
    link.ip(&["addr", "add", "2001:db8:1::50/64", "dev", "br0", "nodad"]);
}

fn holds(netns: &Netns, address: &str) -> bool {
    let output = netns.ip(&["-6", "addr", "show", "dev", "home"]);
    String::from_utf8_lossy(&output.stdout).contains(address)
}

fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
fn the_standby_takes_over_with_every_acknowledged_binding() {
    if !netns_available(MUST_RUN) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let link = Netns::new("pair-l");
    let a = Netns::new("pair-a");
    let b = Netns::new("pair-b");
    home_link(&link, &[(&a, "pa"), (&b, "pb")]);
    for (netns, name) in [(&a, "a"), (&b, "b")] {
        netns.ip(&[
            "addr",
            "add",
            &format!("fe80::{name}/64"),
            "dev",
            "home",
            "nodad",
        ]);
        netns.ip(&[
            "addr",
            "add",
            &format!("2001:db8:1::{name}/64"),
            "dev",
            "home",
            "nodad",
        ]);
    }
    let (config_a, _) = member(dir.path(), &a, "a", 200, "2001:db8:1::b");
    let (config_b, store_b) = member(dir.path(), &b, "b", 100, "2001:db8:1::a");
    let mut active = start(&a, &config_a, dir.path().join("a.log"));
    let mut standby = start(&b, &config_b, dir.path().join("b.log"));
    let log = active.wait_for("election: active", 1);
    assert!(
        log.contains("election: active"),
        "a never became active: {log}"
    );
    let log = active.wait_for("standby attached and in sync", 1);
    assert!(
        log.contains("standby attached and in sync"),
        "b never attached: {log}\nb: {}",
        standby.log()
    );
    assert!(holds(&a, "2001:db8:1::1") && !holds(&b, "2001:db8:1::1"));

    // Mobile routers register through the home-agent address; the active
    // dies right after its last acknowledgement.
    let acknowledged_file = dir.path().join("acknowledged");
    let load = link
        .command(workspace_binary("ha-loadgen").to_str().unwrap())
        .args([
            "run",
            "--target",
            "[2001:db8:1::1]:4191",
            "--routers",
            ROUTERS,
        ])
        .args(["--rate", "1000", "--seconds", "1", "--acknowledged"])
        .arg(&acknowledged_file)
        .output()
        .unwrap();
    assert!(load.status.success(), "{load:?}");
    // The machine dies: its process and its home-link port at once.
    active.kill();
    a.ip(&["link", "set", "home", "down"]);
    let died = Instant::now();
    let took_over = within(Duration::from_secs(3), || holds(&b, "2001:db8:1::1"));
    assert!(
        took_over.is_some(),
        "b never took the address over: {}",
        standby.log()
    );
    eprintln!("address moved {:?} after the active died", died.elapsed());

    // Every registration the active acknowledged is on the standby.
    let acknowledged: BTreeSet<Ipv6Addr> = std::fs::read_to_string(&acknowledged_file)
        .unwrap()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    assert!(
        acknowledged.len() >= 200,
        "only {} routers registered: the test did not load the pair",
        acknowledged.len()
    );
    let held = bindings_of(&b);
    let missing: Vec<_> = acknowledged.difference(&held).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged registrations missing on the new active: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );

    // The new active answers every router, from the state it was given:
    // the next Binding Updates are accepted as they come.
    let after = link
        .command(workspace_binary("ha-loadgen").to_str().unwrap())
        .args([
            "run",
            "--target",
            "[2001:db8:1::1]:4191",
            "--routers",
            ROUTERS,
        ])
        .args([
            "--rate",
            "1000",
            "--seconds",
            "2",
            "--first-sequence",
            "100",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&after.stdout).to_string();
    let count = |name: &str| -> u64 { nemo_testkit::field(&report, name).parse().unwrap() };
    assert!(after.status.success(), "{report}");
    assert_eq!(count("rejected"), 0, "{report}");
    assert!(count("acknowledged") >= 1500, "{report}\n{}", standby.log());

    // And on its disk.
    assert_eq!(standby.terminate().code(), Some(0), "{}", standby.log());
    let on_disk: BTreeSet<Ipv6Addr> = nemo_ha::store::Store::open(&store_b)
        .unwrap()
        .load()
        .unwrap()
        .into_iter()
        .map(|binding| binding.home_address)
        .collect();
    assert!(acknowledged.is_subset(&on_disk));
    let b_log = standby.log();
    assert!(b_log.contains("election: active"), "{b_log}");
}

/// The bindings a member's admin API lists (from inside its namespace).
fn bindings_of(netns: &Netns) -> BTreeSet<Ipv6Addr> {
    netns
        .spawn_in(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut admin =
                    nemo_proto::v1::home_agent_admin_client::HomeAgentAdminClient::connect(
                        "http://[::1]:50051",
                    )
                    .await
                    .unwrap();
                admin
                    .list_bindings(nemo_proto::v1::ListBindingsRequest {})
                    .await
                    .unwrap()
                    .into_inner()
                    .bindings
                    .into_iter()
                    .map(|binding| binding.home_address.parse().unwrap())
                    .collect()
            })
        })
        .join()
        .unwrap()
}
