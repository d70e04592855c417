//! An acknowledgement is a promise that survives a power loss, not only a
//! `kill -9`: nemo-ha's store on an ext4 disk (loop device), 2000 mobile
//! routers registering at 3000/s, nemo-ha killed mid-run, the disk copied at
//! that instant without `sync` (`nemo_testkit::power_loss`), nemo-ha
//! restarted on the copy: every router that got an accepting Binding
//! Acknowledgement must be in its cache. With sled's store (flush without
//! fsync) this lost every binding in 3 of 6 runs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::process::Command;
use std::time::Duration;

use nemo_testkit::power_loss::{self, LoopDisk};
use nemo_testkit::{require, workspace_binary, Process};

const ROUTERS: &str = "2000";

fn start_ha(config: &std::path::Path, log: std::path::PathBuf) -> Process {
    let mut command = Command::new(workspace_binary("nemo-ha"));
    command.arg("--config").arg(config);
    Process::start(command, log)
}

#[test]
fn acknowledged_bindings_survive_a_power_loss() {
    if !require(
        power_loss::available(),
        "the power-loss test needs root, losetup and mkfs.ext4",
        "NEMO_REQUIRE_NETNS",
    ) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new("ha-power", 256);
    let config_for = |store: &std::path::Path, name: &str| {
        let made = Command::new(workspace_binary("ha-loadgen"))
            .args(["config", "--routers", ROUTERS, "--listen", "[::1]:0"])
            .arg("--store")
            .arg(store)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let path = scratch.path().join(name);
        std::fs::write(&path, made.stdout).unwrap();
        path
    };

    let config = config_for(&disk.path().join("ha"), "ha.toml");
    let mut ha = start_ha(&config, scratch.path().join("ha.log"));
    let acknowledged_file = scratch.path().join("acknowledged");
    let mut load = Command::new(workspace_binary("ha-loadgen"))
        .args(["run", "--target", &ha.field("udp"), "--routers", ROUTERS])
        .args(["--rate", "3000", "--seconds", "2", "--acknowledged"])
        .arg(&acknowledged_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Mid-run, while new bindings are still being written: the power goes.
    std::thread::sleep(Duration::from_millis(450));
    ha.kill();
    let after = disk.crash_copy();
    assert!(load.wait().unwrap().success(), "ha-loadgen failed");
    let acknowledged: BTreeSet<Ipv6Addr> = power_loss::acknowledged(&acknowledged_file);
    assert!(
        acknowledged.len() >= 100,
        "only {} registrations acknowledged before the power loss: the test did not load the home agent",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() < 2000,
        "every router registered before the power loss: the test missed the window it is about"
    );

    // What the store on the copy holds.
    let on_disk: BTreeSet<Ipv6Addr> = nemo_ha::store::Store::open(&after.path().join("ha"))
        .unwrap()
        .load()
        .unwrap()
        .into_iter()
        .map(|b| b.home_address)
        .collect();
    let lost: Vec<_> = acknowledged.difference(&on_disk).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged bindings lost in the power loss, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        lost.first()
    );

    // And nemo-ha itself starts on the copy and serves them.
    let restarted_config = config_for(&after.path().join("ha"), "after.toml");
    let mut restarted = start_ha(&restarted_config, scratch.path().join("after.log"));
    let log = restarted.wait_for("binding cache loaded", 1);
    let loaded: usize = log
        .lines()
        .find(|l| l.contains("binding cache loaded"))
        .map(|l| nemo_testkit::field(l, "bindings").parse().unwrap())
        .unwrap_or_else(|| panic!("no load line in {log}"));
    assert_eq!(loaded, on_disk.len(), "{log}");
    let status = restarted.terminate();
    assert!(status.success(), "{status:?}: {}", restarted.log());
    eprintln!(
        "power loss: {} acknowledged, {} on the copy, none lost",
        acknowledged.len(),
        on_disk.len()
    );
}
