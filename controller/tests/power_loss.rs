//! Every acknowledged change of the controller survives a power loss: its
//! store on an ext4 disk (loop device), 8 clients allocating prefixes,
//! nemo-controller killed mid-run, the disk copied at that instant without
//! `sync` (`nemo_testkit::power_loss`), the controller restarted on the
//! copy: every acknowledged allocation is there, and its history too.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ipnet::Ipv6Net;
use nemo_testkit::daemons;
use nemo_testkit::power_loss::{self, LoopDisk};
use nemo_testkit::{require, Process};

fn start(scratch: &Path, store: &Path, name: &str) -> Process {
    let token = daemons::token_file(scratch);
    let config = daemons::write(
        scratch,
        &format!("{name}.toml"),
        format!(
            "listen = \"[::1]:0\"\nstore = \"{}\"\ntoken_file = \"{}\"\n",
            store.display(),
            token.display()
        ),
    );
    daemons::start(
        "nemo-controller",
        &config,
        scratch.join(format!("{name}.log")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_allocations_survive_a_power_loss() {
    if !require(
        power_loss::available(),
        "the power-loss test needs root, losetup and mkfs.ext4",
        "NEMO_REQUIRE_NETNS",
    ) {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new("controller-power", 256);
    let store = disk.path().join("controller");
    let mut controller = start(scratch.path(), &store, "before");
    let acknowledged_file = scratch.path().join("acknowledged");
    let mut load = Command::new(env!("CARGO_BIN_EXE_controller-loadgen"))
        .args([
            "--endpoint",
            &format!("http://{}", controller.field("grpc")),
        ])
        .args(["--clients", "8", "--seconds", "2", "--acknowledged"])
        .arg(&acknowledged_file)
        .arg("--token-file")
        .arg(scratch.path().join("token"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Mid-run: the power goes.
    tokio::time::sleep(Duration::from_millis(800)).await;
    controller.kill();
    let after = disk.crash_copy();
    assert!(load.wait().unwrap().success(), "controller-loadgen failed");
    let acknowledged: BTreeSet<Ipv6Net> = power_loss::acknowledged(&acknowledged_file);
    assert!(
        acknowledged.len() >= 50,
        "only {} allocations acknowledged before the power loss: the test did not load the controller",
        acknowledged.len()
    );

    // The store on the copy, read as the restarted controller reads it.
    let (held, revision) = {
        let reopened = nemo_controller::store::Store::open(
            &after.path().join("controller"),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
        let held: BTreeSet<Ipv6Net> = allocated_prefixes(&reopened).await;
        let (history, _) = reopened.events_after(0).await.unwrap();
        assert_eq!(
            history.len() as u64,
            reopened.revision().await,
            "the history has a gap"
        );
        (held, reopened.revision().await)
    };
    let lost: Vec<_> = acknowledged.difference(&held).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged allocations lost in the power loss, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        lost.first()
    );

    // And nemo-controller itself starts on the copy.
    let mut restarted = start(scratch.path(), &after.path().join("controller"), "after");
    assert!(restarted.terminate().success(), "{}", restarted.log());
    eprintln!(
        "power loss: {} acknowledged, {} held at revision {revision}, none lost",
        acknowledged.len(),
        held.len()
    );
}

/// Issue 33, item 4: the file store on a disk that fills up. The commit
/// that fails is answered "outcome unknown" (it may or may not be on the
/// file), every change after it "not made" (nothing more is written), and
/// on restart every acknowledged allocation is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_is_answered_unknown_and_nothing_after_it_is_made() {
    use nemo_controller::store::{Store, StoreError};
    if !require(
        power_loss::available(),
        "the full-disk test needs root, losetup and mkfs.ext4",
        "NEMO_REQUIRE_NETNS",
    ) {
        return;
    }
    let disk = LoopDisk::new("controller-full", 16);
    let dir = disk.path().join("controller");
    let quarantine = Duration::from_secs(3600);
    let mut acknowledged = BTreeSet::new();
    let failure = {
        let store = Store::open(&dir, quarantine).await.unwrap();
        store
            .create_pool("p", "2001:db8:100::/40", 64)
            .await
            .unwrap();
        store.create_tenant("acme").await.unwrap();
        // Fill the file system, leaving the store only what it has.
        let filler = disk.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0xa5u8; 64 << 10];
        while std::io::Write::write_all(&mut file, &block).is_ok() {}
        let _ = file.sync_all();
        let mut failure = None;
        for _ in 0..100_000 {
            match store.allocate("acme", "p", 0).await {
                Ok(allocation) => {
                    acknowledged.insert(allocation.prefix);
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let failure = failure.expect("a full disk never failed a commit");
        let after = store.create_tenant("later").await;
        assert!(
            matches!(&after, Err(StoreError::Storage(why)) if why.starts_with("not made")),
            "{after:?}"
        );
        std::fs::remove_file(&filler).unwrap();
        failure
    };
    assert!(
        matches!(failure, StoreError::OutcomeUnknown(_)),
        "{failure:?}"
    );
    // The restart reads what the file holds: every acknowledged
    // allocation, and not the change refused as not made.
    let store = Store::open(&dir, quarantine).await.unwrap();
    let held: BTreeSet<Ipv6Net> = allocated_prefixes(&store).await;
    assert!(
        acknowledged.is_subset(&held),
        "acknowledged allocations lost"
    );
    assert!(
        held.len() <= acknowledged.len() + 1,
        "more than the one of unknown outcome"
    );
    assert!(!store.tenant_names().await.contains(&"later".to_owned()));
    eprintln!(
        "a full disk: {} allocations acknowledged, then {failure}",
        acknowledged.len()
    );
}

/// The prefixes a store lists as allocated.
async fn allocated_prefixes(store: &nemo_controller::store::Store) -> BTreeSet<Ipv6Net> {
    store
        .allocations(None)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.prefix)
        .collect()
}
