//! The controller's store on real etcd servers (Debian's `etcd-server`,
//! started here on loopback ports): what it acknowledges is in etcd and
//! comes back on reopen with its history; a burst of concurrent changes
//! larger than one etcd transaction may hold is written whole; two and
//! three replicas on one prefix write at once, allocations stay disjoint,
//! names unique, every replica's memory and watchers see every change
//! once, and a watch resumes on another replica without gap or repeat; a
//! cluster that lost one member of three carries on, one that lost two
//! refuses changes as unavailable and loses nothing; one replica at a time
//! trims the history and compacts etcd, another takes over when it dies.
//!
//! Needs `etcd` (CI installs it; NEMO_REQUIRE_ETCD makes a missing one a
//! failure).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv6Net;
use nemo_controller::store::etcd::EtcdSettings;
use nemo_controller::store::requests::{as_request, RequestId};
use nemo_controller::store::{Store, StoreError, Upkeep};
use nemo_testkit::etcd::{self, Etcd};
use nemo_testkit::require;

const MUST_RUN: &str = "NEMO_REQUIRE_ETCD";
const QUARANTINE: Duration = Duration::from_secs(3600);

fn etcd_here() -> bool {
    require(etcd::available(), "etcd missing (etcd-server)", MUST_RUN)
}

fn settings(etcd: &Etcd, prefix: &str) -> EtcdSettings {
    EtcdSettings {
        endpoints: etcd.endpoints(),
        prefix: prefix.to_owned(),
        timeout_ms: 2000,
        ca_file: None,
        cert_file: None,
        key_file: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_acknowledged_is_in_etcd_and_comes_back() {
    if !etcd_here() {
        return;
    }
    let etcd = Etcd::start(1);
    let settings = settings(&etcd, "/nemo-test/");
    let store = Store::open_etcd(&settings, QUARANTINE).await.unwrap();
    store.create_pool("p", "2001:db8::/32", 56).await.unwrap();
    store.create_tenant("acme").await.unwrap();
    // 32 clients at once: group commit makes batches larger than one etcd
    // transaction may hold (120 operations), cut between changes.
    let mut clients = Vec::new();
    for _ in 0..32 {
        let store = store.clone();
        clients.push(tokio::spawn(async move {
            let mut prefixes = Vec::new();
            for _ in 0..20 {
                prefixes.push(store.allocate("acme", "p", 0).await.unwrap().prefix);
            }
            prefixes
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for client in clients {
        acknowledged.extend(client.await.unwrap());
    }
    assert_eq!(acknowledged.len(), 640, "allocations overlapped");
    let released: Ipv6Net = *acknowledged.iter().next().unwrap();
    store.release(&released.to_string()).await.unwrap();
    let revision = store.revision().await;
    drop(store);

    // Another controller process would read exactly this.
    let reopened = Store::open_etcd(&settings, QUARANTINE).await.unwrap();
    assert_eq!(reopened.revision().await, revision);
    let held: BTreeSet<Ipv6Net> = allocated_prefixes(&reopened).await;
    let mut expected = acknowledged.clone();
    expected.remove(&released);
    assert_eq!(held, expected);
    let (_, allocated, quarantined) = reopened.pool("p").await.unwrap();
    assert_eq!((allocated, quarantined), (639, 1));
    // The whole history, in order, each revision once.
    let (events, _) = reopened.events_after(0).await.unwrap();
    let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, (1..=revision).collect::<Vec<_>>());
    // The next allocation is none of the held or quarantined ones.
    let next = reopened.allocate("acme", "p", 0).await.unwrap().prefix;
    assert!(!acknowledged.contains(&next));
}

/// Waits until every store has reached `revision` (the followers brought
/// in what the others wrote).
async fn all_at(stores: &[Arc<Store>], revision: u64) {
    for store in stores {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.revision().await < revision {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a replica stayed at revision {} (wanted {revision})",
                store.revision().await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Appends the revisions `live` announces to `heard` until it reaches
/// `through`, skipping any at or before the last heard, as the API does (a
/// replica resumed from a revision it has not followed to yet announces
/// what it brings in up to there too).
async fn hear_through(
    heard: &mut Vec<u64>,
    live: &mut tokio::sync::broadcast::Receiver<nemo_controller::store::Event>,
    through: u64,
) {
    while heard.last().copied().unwrap_or(0) < through {
        let event = tokio::time::timeout(Duration::from_secs(10), live.recv())
            .await
            .unwrap()
            .unwrap();
        if event.revision > heard.last().copied().unwrap_or(0) {
            heard.push(event.revision);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_follows_the_first_and_both_write() {
    if !etcd_here() {
        return;
    }
    let etcd = Etcd::start(1);
    let settings = settings(&etcd, "/nemo-two/");
    let first = Store::open_etcd(&settings, QUARANTINE).await.unwrap();
    first.create_tenant("a").await.unwrap();
    // A second replica loads the same state, then writes.
    let second = Store::open_etcd(&settings, QUARANTINE).await.unwrap();
    second.create_tenant("b").await.unwrap();
    // The first replica either followed already or its change conflicts
    // and is made again on the newer state: either way it is made.
    first.create_tenant("c").await.unwrap();
    // A name is unique across replicas.
    let again = second.create_tenant("c").await;
    assert!(matches!(again, Err(StoreError::Exists { .. })), "{again:?}");
    all_at(&[first.clone(), second.clone()], 3).await;
    assert_eq!(first.tenant_names().await, second.tenant_names().await);
    // Made on one replica, used at once on the other: the other does not
    // answer "not found" from a memory that has not followed yet.
    first.create_pool("p", "2001:db8::/32", 56).await.unwrap();
    for n in 0..20 {
        let tenant = format!("t{n}");
        first.create_tenant(&tenant).await.unwrap();
        second.allocate(&tenant, "p", 0).await.unwrap();
    }
    // What etcd holds: the three, each with its event.
    let reopened = Store::open_etcd(&settings, QUARANTINE).await.unwrap();
    let names = reopened.tenant_names().await;
    assert_eq!(&names[..3], ["a", "b", "c"]);
    assert_eq!(reopened.revision().await, 3 + 1 + 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_allocate_at_once_disjoint_and_agree() {
    if !etcd_here() {
        return;
    }
    let etcd = Etcd::start(3);
    let settings = settings(&etcd, "/nemo-three/");
    let replicas = vec![
        Store::open_etcd(&settings, QUARANTINE).await.unwrap(),
        Store::open_etcd(&settings, QUARANTINE).await.unwrap(),
        Store::open_etcd(&settings, QUARANTINE).await.unwrap(),
    ];
    replicas[0]
        .create_pool("p", "2001:db8::/32", 56)
        .await
        .unwrap();
    replicas[1].create_tenant("acme").await.unwrap();
    all_at(&replicas, 2).await;
    // A watcher on the third replica from the start, while 8 clients on
    // each replica allocate at once.
    let (history, mut live) = replicas[2].events_after(0).await.unwrap();
    let mut clients = Vec::new();
    for (index, replica) in replicas.iter().enumerate() {
        for _ in 0..8 {
            let replica = replica.clone();
            clients.push(tokio::spawn(async move {
                let mut prefixes = Vec::new();
                for _ in 0..25 {
                    let allocation = replica.allocate("acme", "p", 0).await;
                    prefixes.push((index, allocation.unwrap().prefix));
                }
                prefixes
            }));
        }
    }
    let mut acknowledged = BTreeSet::new();
    let mut per_replica = [0usize; 3];
    for client in clients {
        for (index, prefix) in client.await.unwrap() {
            per_replica[index] += 1;
            assert!(acknowledged.insert(prefix), "{prefix} allocated twice");
        }
    }
    assert_eq!(acknowledged.len(), 600);
    assert_eq!(per_replica, [200, 200, 200]);
    let revision = 2 + 600;
    all_at(&replicas, revision).await;
    for replica in &replicas {
        let held: BTreeSet<Ipv6Net> = allocated_prefixes(replica).await;
        assert_eq!(held, acknowledged, "a replica's memory differs");
        assert_eq!(replica.pool("p").await.unwrap().1, 600);
    }
    // The watcher heard every revision once, in order, whichever replica
    // made it.
    let mut heard: Vec<u64> = history.iter().map(|e| e.revision).collect();
    hear_through(&mut heard, &mut live, revision).await;
    assert_eq!(heard, (1..=revision).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_on_another_replica_misses_nothing_and_repeats_nothing() {
    if !etcd_here() {
        return;
    }
    let etcd = Etcd::start(1);
    let settings = settings(&etcd, "/nemo-resume/");
    let (a, b) = (
        Store::open_etcd(&settings, QUARANTINE).await.unwrap(),
        Store::open_etcd(&settings, QUARANTINE).await.unwrap(),
    );
    a.create_pool("p", "2001:db8::/32", 56).await.unwrap();
    a.create_tenant("acme").await.unwrap();
    // Writers on both replicas all along.
    let writers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|replica| {
            tokio::spawn(async move {
                for _ in 0..100 {
                    replica.allocate("acme", "p", 0).await.unwrap();
                }
            })
        })
        .collect();
    // A client follows replica a for a while ...
    let (history, mut live) = a.events_after(0).await.unwrap();
    let mut heard: Vec<u64> = history.iter().map(|e| e.revision).collect();
    while heard.len() < 60 {
        heard.push(live.recv().await.unwrap().revision);
    }
    // ... then a goes away for it, and it resumes on b from the last
    // revision it heard.
    drop(live);
    let last = *heard.last().unwrap();
    let (history, mut live) = b.events_after(last).await.unwrap();
    heard.extend(history.iter().map(|e| e.revision));
    for writer in writers {
        writer.await.unwrap();
    }
    let total = 2 + 200;
    hear_through(&mut heard, &mut live, total).await;
    assert_eq!(heard, (1..=total).collect::<Vec<_>>());
}

/// The oldest event either replica's history holds.
async fn oldest_event(store: &Store) -> Option<u64> {
    store
        .events_after(0)
        .await
        .unwrap()
        .0
        .first()
        .map(|e| e.revision)
}

/// Waits until `store`'s history starts at `revision`.
async fn history_starts_at(store: &Store, revision: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while oldest_event(store).await != Some(revision) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the history starts at {:?}, not {revision}",
            oldest_event(store).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether etcd still answers a read at etcd revision `revision` (it does
/// not once compacted past it). Asked through the client crate the store
/// links, not `etcdctl`: one tool less for a machine to have.
async fn etcd_answers_at(etcd: &Etcd, revision: i64) -> Result<(), String> {
    let mut client = etcd_client::Client::connect([etcd.endpoint(0)], None)
        .await
        .map_err(|e| e.to_string())?;
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_revision(revision);
    client
        .get("/nemo-upkeep/", Some(options))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_at_a_time_keeps_the_history_and_another_takes_over() {
    if !etcd_here() {
        return;
    }
    let etcd = Etcd::start(1);
    let settings = settings(&etcd, "/nemo-upkeep/");
    let (a, b) = (
        Store::open_etcd(&settings, QUARANTINE).await.unwrap(),
        Store::open_etcd(&settings, QUARANTINE).await.unwrap(),
    );
    for (store, who) in [(&a, "a"), (&b, "b")] {
        store.start_upkeep(Upkeep {
            keep: 10,
            every: Duration::from_millis(200),
            who: who.into(),
        });
    }
    // Both replicas write while the history is trimmed under them.
    let writers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, replica)| {
            tokio::spawn(async move {
                for i in 0..50 {
                    replica.create_tenant(&format!("t{n}-{i}")).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    all_at(&[a.clone(), b.clone()], 100).await;
    history_starts_at(&a, 91).await;
    assert_eq!(oldest_event(&b).await, Some(91));
    assert!(
        a.is_maintainer() != b.is_maintainer(),
        "maintainers: a {}, b {}",
        a.is_maintainer(),
        b.is_maintainer()
    );
    // Trimming the history changed no state.
    assert_eq!(a.tenant_names().await.len(), 100);
    assert_eq!(a.tenant_names().await, b.tenant_names().await);
    // etcd's own history is compacted too (up to the trim before the last).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while etcd_answers_at(&etcd, 2).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "etcd never compacted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(etcd_answers_at(&etcd, 2)
        .await
        .unwrap_err()
        .contains("compacted"));

    // The maintainer goes away: the other takes over once its lease has
    // expired, and trims what is written since.
    let (gone, survivor) = if a.is_maintainer() { (a, b) } else { (b, a) };
    drop(gone);
    for i in 0..20 {
        survivor.create_tenant(&format!("late{i}")).await.unwrap();
    }
    history_starts_at(&survivor, 111).await;
    assert!(survivor.is_maintainer());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_lost_its_quorum_refuses_changes_and_loses_nothing() {
    if !etcd_here() {
        return;
    }
    let mut etcd = Etcd::start(3);
    let settings = settings(&etcd, "/nemo-quorum/");
    let store = Store::open_etcd(&settings, QUARANTINE).await.unwrap();
    store.create_tenant("before").await.unwrap();
    // One member of three down: the others are a quorum.
    etcd.kill(0);
    store.create_tenant("one-down").await.unwrap();
    // Two down: no quorum. The change is refused as not made, or, when
    // it was sent and etcd could not be asked since, its outcome is said
    // unknown.
    etcd.kill(1);
    let refused =
        tokio::time::timeout(Duration::from_secs(30), store.create_tenant("no-quorum")).await;
    let not_made = match refused {
        Ok(Err(StoreError::Unavailable(_))) => true,
        Ok(Err(StoreError::OutcomeUnknown(_))) => false,
        other => panic!("{other:?}"),
    };
    // Its reads may be stale now, and it says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !store.may_be_stale() {
        assert!(tokio::time::Instant::now() < deadline, "never said stale");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Back to a quorum: the same controller takes changes again by itself
    // (it reloads from etcd), and one that starts now reads every change
    // acknowledged, and nothing of the refused one.
    etcd.restart(0);
    etcd.restart(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match store.create_tenant("quorum-back").await {
            Ok(_) | Err(StoreError::Exists { .. }) => break,
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let reopened = Store::open_etcd(&settings, QUARANTINE).await.unwrap();
    let names: BTreeSet<String> = reopened.tenant_names().await.into_iter().collect();
    assert!(
        names.contains("before") && names.contains("one-down") && names.contains("quorum-back")
    );
    assert!(
        !(not_made && names.contains("no-quorum")),
        "refused as not made, and made"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.may_be_stale() {
        assert!(tokio::time::Instant::now() < deadline, "stale for good");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Whole changes only: every tenant has its event and the revision
    // counts them (one of unknown outcome is either all there or not at
    // all).
    let revision = reopened.revision().await;
    let (events, _) = reopened.events_after(0).await.unwrap();
    assert_eq!(names.len() as u64, revision, "{names:?}");
    assert_eq!(
        events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        (1..=revision).collect::<Vec<_>>()
    );
}

#[test]
fn a_config_names_what_is_wrong_with_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
    let top = format!(
        "listen = \"[::1]:0\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    for (body, expected) in [
        (
            format!("{top}store = \"/var/lib/x\"\n[etcd]\nendpoints = [\"http://[::1]:2379\"]\n"),
            "controller.toml:3: store and [etcd] exclude each other",
        ),
        (top.clone(), "store (a directory) or [etcd] is required"),
        (
            format!("{top}[etcd]\nendpoints = [\"[::1]:2379\"]\n"),
            "controller.toml:3: etcd.endpoints: \"[::1]:2379\" is not an http:// or https:// URL",
        ),
        (
            format!("{top}[etcd]\nendpoints = [\"http://[::1]:2379\"]\nprefix = \"nemo\"\n"),
            "etcd.prefix: \"nemo\" must start and end with '/'",
        ),
        (
            format!("{top}[etcd]\nendpoints = [\"http://[::1]:2379\"]\nprefixx = \"/n/\"\n"),
            "unknown field `prefixx`",
        ),
        (
            format!("{top}store = \"/var/lib/x\"\n[history]\nkeep = 0\n"),
            "controller.toml:5: history.keep must be above 0",
        ),
        (
            format!("{top}store = \"/var/lib/x\"\n[history]\ntrim_every_secs = 0\n"),
            "controller.toml:5: history.trim_every_secs must be above 0",
        ),
    ] {
        nemo_testkit::refused_at_check(
            std::path::Path::new(env!("CARGO_BIN_EXE_nemo-controller")),
            &dir.path().join("controller.toml"),
            &body,
            expected,
        );
    }
}

/// A store holding every kind of object: pools, tenants, allocations, a
/// quarantined prefix, a home agent, hypervisors, a mobile router, a
/// placement, a reported binding (its sequence).
async fn every_kind_of_object(store: &Store) {
    use nemo_controller::store::{HomeAgentRecord, StoreChange};
    store
        .create_pool("core", "2001:db8:100::/40", 56)
        .await
        .unwrap();
    store.create_tenant("acme").await.unwrap();
    store.create_tenant("umbrella").await.unwrap();
    let first = store.allocate("acme", "core", 0).await.unwrap().prefix;
    store.allocate("acme", "core", 0).await.unwrap();
    store.allocate("umbrella", "core", 52).await.unwrap();
    store.release(&first.to_string()).await.unwrap();
    store
        .register_home_agent(HomeAgentRecord {
            name: "ha1".into(),
            address: "2001:db8:1::1".parse().unwrap(),
            home_prefix: "2001:db8:1::/64".parse().unwrap(),
            udp_endpoint: "[2001:db8:1::1]:4191".into(),
        })
        .await
        .unwrap();
    store.register_hypervisor("hva").await.unwrap();
    store.register_hypervisor("hvb").await.unwrap();
    let router = store
        .create_mobile_router("acme", "ha1", nemo::auth::Algorithm::HmacSha256, true)
        .await
        .unwrap();
    store
        .place(
            "acme",
            "hva",
            "initial",
            nemo_controller::store::Delivery::Now,
        )
        .await
        .unwrap();
    store
        .report_binding(StoreChange::BindingReported {
            home_agent: "ha1".into(),
            home_address: router.home_address,
            // An IPv4 care-of address behind a NAT (RFC 5555), which both
            // stores keep as they keep an IPv6 one.
            care_of: "192.0.2.130".parse().unwrap(),
            outer: Some("192.0.2.99:40012".parse().unwrap()),
            prefixes: vec![],
            removed: false,
            reason: "registration".into(),
            sequence: Some(4242),
        })
        .await
        .unwrap();
}

/// What a controller serves from a store, for comparing two.
async fn contents(store: &Store) -> String {
    let (events, _) = store.events_after(0).await.unwrap();
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{}",
        store.allocations(None).await.unwrap(),
        store.pool("core").await.unwrap(),
        store.tenant_names().await,
        store.home_agents().await,
        store.hypervisors().await,
        store.placements().await,
        store.tenant_view("acme").await,
        events,
        store.revision().await,
    )
}

#[test]
fn a_store_moves_to_etcd_and_back_whole() {
    if !etcd_here() {
        return;
    }
    let etcd = Etcd::start(1);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
    let config = |name: &str, store: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "listen = \"[::1]:0\"\ntoken_file = \"{}\"\n{store}",
                token.display()
            ),
        )
        .unwrap();
        path
    };
    let on_disk = config(
        "disk.toml",
        &format!("store = \"{}\"\n", dir.path().join("disk").display()),
    );
    let in_etcd = config(
        "etcd.toml",
        &format!(
            "[etcd]\nendpoints = {:?}\nprefix = \"/moved/\"\n",
            etcd.endpoints()
        ),
    );
    let back = config(
        "back.toml",
        &format!("store = \"{}\"\n", dir.path().join("back").display()),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let original = runtime.block_on(async {
        let store = Store::open(&dir.path().join("disk"), QUARANTINE)
            .await
            .unwrap();
        every_kind_of_object(&store).await;
        contents(&store).await
    });
    let copy = |target: &std::path::Path, source: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nemo-controller"))
            .arg("--config")
            .arg(target)
            .arg("copy-from")
            .arg(source)
            .output()
            .unwrap()
    };
    let output = copy(&in_etcd, &on_disk);
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(said.contains("read back and equal"), "{said}");
    let in_etcd_contents = runtime.block_on(async {
        let settings = settings(&etcd, "/moved/");
        contents(&Store::open_etcd(&settings, QUARANTINE).await.unwrap()).await
    });
    assert_eq!(in_etcd_contents, original);
    // And back into a directory.
    assert!(copy(&back, &in_etcd).status.success());
    let back_contents = runtime.block_on(async {
        contents(
            &Store::open(&dir.path().join("back"), QUARANTINE)
                .await
                .unwrap(),
        )
        .await
    });
    assert_eq!(back_contents, original);
    // A target that holds anything is refused, and left as it was.
    let again = copy(&in_etcd, &on_disk);
    assert!(!again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("is not empty"), "{said}");
}

/// A store of an earlier nemo, on sled (the same tables, keys and values),
/// moves into etcd with `copy-from`: read back equal, loaded whole.
#[test]
fn a_sled_store_of_an_earlier_version_moves_into_etcd_whole() {
    if !etcd_here() {
        return;
    }
    const TABLES: &[&str] = &[
        "pools",
        "tenants",
        "allocations",
        "quarantine",
        "events",
        "meta",
        "home_agents",
        "hypervisors",
        "mobile_routers",
        "placements",
        "sequences",
    ];
    let etcd = Etcd::start(1);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let original = runtime.block_on(async {
        let store = Store::open(&dir.path().join("redb"), QUARANTINE)
            .await
            .unwrap();
        every_kind_of_object(&store).await;
        contents(&store).await
    });
    // The same records, as the earlier version kept them: a sled tree per
    // table.
    let disk =
        nemo_daemon::disk::Disk::open(&dir.path().join("redb"), "controller.redb", TABLES, 1 << 20)
            .unwrap();
    let sled_dir = dir.path().join("sled");
    {
        let db = sled::open(&sled_dir).unwrap();
        for table in TABLES {
            let tree = db.open_tree(table).unwrap();
            disk.for_each(table, None, None, |key, value| {
                tree.insert(key, value).unwrap();
                Ok::<_, nemo_daemon::disk::DiskError>(())
            })
            .unwrap();
        }
        db.flush().unwrap();
    }
    drop(disk);
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
    let top = format!(
        "listen = \"[::1]:0\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    let old = dir.path().join("old.toml");
    std::fs::write(&old, format!("{top}store = \"{}\"\n", sled_dir.display())).unwrap();
    let new = dir.path().join("new.toml");
    std::fs::write(
        &new,
        format!(
            "{top}[etcd]\nendpoints = {:?}\nprefix = \"/from-sled/\"\n",
            etcd.endpoints()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nemo-controller"))
        .arg("--config")
        .arg(&new)
        .arg("copy-from")
        .arg(&old)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("read back and equal"),
        "{output:?}"
    );
    let moved = runtime.block_on(async {
        contents(
            &Store::open_etcd(&settings(&etcd, "/from-sled/"), QUARANTINE)
                .await
                .unwrap(),
        )
        .await
    });
    assert_eq!(moved, original);
    // The sled directory itself is still refused as a store.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_nemo-controller"))
        .arg("--config")
        .arg(&old)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("holds a sled store"),
        "{refused:?}"
    );
}

/// Runs `openssl` with `args` in `dir`; panics with its stderr on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_speaks_tls_to_etcd_and_proves_who_it_is() {
    // etcd with TLS on its client port and client certificates required:
    // the store connects with the CA and its own certificate; without its
    // certificate, or with a CA that did not sign etcd's, it does not.
    if !etcd_here()
        || !require(
            nemo_testkit::runs("openssl", &["version"]),
            "openssl missing",
            MUST_RUN,
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, subject) in [("ca", "/CN=nemo test CA"), ("other-ca", "/CN=another CA")] {
        openssl(
            d,
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                    "-subj",
                    subject,
                    "-days",
                    "2",
                ],
            ]
            .concat(),
        );
    }
    for (name, extension) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth",
        ),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        openssl(
            d,
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat(),
        );
        std::fs::write(
            d.join(format!("{name}.ext")),
            extension.replace("\\n", "\n"),
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
    let etcd = Etcd::start_tls(
        1,
        nemo_testkit::etcd::EtcdTls {
            ca: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
        },
    );
    let mut with_tls = settings(&etcd, "/tls/");
    assert!(with_tls.endpoints[0].starts_with("https://"));
    with_tls.ca_file = Some(d.join("ca.pem"));
    with_tls.cert_file = Some(d.join("client.pem"));
    with_tls.key_file = Some(d.join("client.key"));
    assert_eq!(with_tls.problem(), None);
    // The member takes a moment to serve after its port opens.
    let mut opened = Err(StoreError::Unavailable(String::new()));
    for _ in 0..100 {
        opened = Store::open_etcd(&with_tls, QUARANTINE).await;
        if opened.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = opened.unwrap();
    store.create_tenant("over-tls").await.unwrap();
    drop(store);
    let reopened = Store::open_etcd(&with_tls, QUARANTINE).await.unwrap();
    assert_eq!(reopened.tenant_names().await, vec!["over-tls".to_owned()]);
    // Without a client certificate, etcd refuses the session.
    let mut anonymous = with_tls.clone();
    anonymous.cert_file = None;
    anonymous.key_file = None;
    assert!(Store::open_etcd(&anonymous, QUARANTINE).await.is_err());
    // Trusting another CA, the store refuses etcd's certificate.
    let mut wrong_ca = with_tls.clone();
    wrong_ca.ca_file = Some(d.join("other-ca.pem"));
    assert!(Store::open_etcd(&wrong_ca, QUARANTINE).await.is_err());
    // Half a TLS set-up is named before anything connects.
    let mut half = with_tls.clone();
    half.key_file = None;
    assert_eq!(half.problem().map(|(field, _)| field), Some("cert_file"));
    let mut no_ca = with_tls;
    no_ca.ca_file = None;
    assert_eq!(no_ca.problem().map(|(field, _)| field), Some("ca_file"));
}

/// What a change sent during an outage was answered, and so what must hold
/// once the quorum is back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Acknowledged: it is there.
    Made,
    /// `UNAVAILABLE`: not made, and it never appears.
    NotMade,
    /// `OUTCOME_UNKNOWN`: either.
    Unknown,
}

fn outcome<T: std::fmt::Debug>(answer: &Result<T, StoreError>) -> Outcome {
    match answer {
        Ok(_) => Outcome::Made,
        Err(StoreError::Unavailable(_)) => Outcome::NotMade,
        Err(StoreError::OutcomeUnknown(_)) => Outcome::Unknown,
        Err(other) => panic!("an outage answered {other:?}"),
    }
}

/// Waits until `store` is no longer stale and holds `revision`.
async fn caught_up(store: &Store, revision: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    while store.may_be_stale() || store.revision().await != revision {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never caught up with etcd (at {}, etcd {revision}, stale {})",
            store.revision().await,
            store.may_be_stale()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every listed allocation has its `PrefixAllocated` event, not followed by
/// its release, and the history counts every revision once.
async fn history_is_whole(store: &Store, what: &str) {
    use nemo_controller::store::StoreChange;
    let revision = store.revision().await;
    let (events, _) = store.events_after(0).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        (1..=revision).collect::<Vec<_>>(),
        "{what}: the history skips or repeats a revision"
    );
    let mut allocated = BTreeSet::new();
    for event in &events {
        match &event.change {
            StoreChange::PrefixAllocated(a) => {
                allocated.insert(a.prefix);
            }
            StoreChange::PrefixReleased { allocation, .. } => {
                allocated.remove(&allocation.prefix);
            }
            _ => {}
        }
    }
    let listed: BTreeSet<Ipv6Net> = allocated_prefixes(store).await;
    assert_eq!(
        listed, allocated,
        "{what}: the allocations listed and those the history tells differ"
    );
}

/// Issue 33: two replicas on a 3-member cluster; again and again two
/// members die (no quorum) while replica B is sent changes of every sort
/// at once, then come back. A change answered "not made" never appears,
/// one acknowledged is there, and on both replicas the objects listed and
/// the history agree (no object without its event). NEMO_OUTAGE_CYCLES
/// sets the number of cycles (default 3; the goal is 20).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_quorum_losses_refused_stays_refused_and_the_history_stays_whole() {
    if !etcd_here() {
        return;
    }
    let cycles: usize = std::env::var("NEMO_OUTAGE_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let mut etcd = Etcd::start(3);
    let settings = settings(&etcd, "/nemo-outage/");
    let a = Store::open_etcd(&settings, QUARANTINE).await.unwrap();
    let b = Store::open_etcd(&settings, QUARANTINE).await.unwrap();
    b.create_pool("p", "2001:db8:1000::/40", 56).await.unwrap();
    b.create_tenant("acme").await.unwrap();
    let mut held: Vec<Ipv6Net> = Vec::new();
    let mut tally = std::collections::BTreeMap::<Outcome, usize>::new();
    for cycle in 0..cycles {
        for _ in 0..3 {
            held.push(b.allocate("acme", "p", 0).await.unwrap().prefix);
        }
        // The quorum goes (members 1 and 2; 0 may have been the leader).
        etcd.kill(1);
        etcd.kill(2);
        let released = held.remove(0);
        let tenant = format!("t{cycle}");
        let pool = format!("p{cycle}");
        let pool_range = format!("2001:db8:{:x}::/48", 0x2000 + cycle);
        let released_text = released.to_string();
        // The allocations carry request ids, as an orchestrator's would.
        let ids = [format!("c{cycle}-first"), format!("c{cycle}-second")]
            .map(|id| RequestId::new(&id, "AllocatePrefix", b"acme p 0").unwrap());
        let (first, second, created, pooled, release) = tokio::join!(
            as_request(Some(ids[0].clone()), b.allocate("acme", "p", 0)),
            as_request(Some(ids[1].clone()), b.allocate("acme", "p", 0)),
            b.create_tenant(&tenant),
            b.create_pool(&pool, &pool_range, 56),
            b.release(&released_text),
        );
        let answers = [
            outcome(&first),
            outcome(&second),
            outcome(&created),
            outcome(&pooled),
            outcome(&release),
        ];
        for answer in answers {
            *tally.entry(answer).or_default() += 1;
        }
        etcd.restart(1);
        etcd.restart(2);
        // The truth: a replica opened now reads etcd.
        let truth = Store::open_etcd(&settings, QUARANTINE).await.unwrap();
        let revision = truth.revision().await;
        caught_up(&a, revision, "replica A").await;
        caught_up(&b, revision, "replica B").await;
        let what = format!("cycle {cycle} {answers:?}");
        eprintln!("{what}");
        let tenants = truth.tenant_names().await;
        let expect = |answer: Outcome, present: bool, change: &str| match answer {
            Outcome::Made => assert!(present, "{what}: {change} acknowledged, not there"),
            Outcome::NotMade => {
                assert!(!present, "{what}: {change} refused as not made, made")
            }
            Outcome::Unknown => {}
        };
        expect(answers[2], tenants.contains(&tenant), "the tenant");
        expect(answers[3], truth.pool(&pool).await.is_ok(), "the pool");
        let listed: BTreeSet<Ipv6Net> = allocated_prefixes(&truth).await;
        expect(answers[4], !listed.contains(&released), "the release");
        if listed.contains(&released) {
            held.push(released);
        }
        let certain: BTreeSet<Ipv6Net> = held
            .iter()
            .copied()
            .chain(first.iter().chain(second.iter()).map(|a| a.prefix))
            .collect();
        let unknown_allocations = answers[..2]
            .iter()
            .filter(|a| **a == Outcome::Unknown)
            .count();
        assert!(
            certain.is_subset(&listed) && listed.len() <= certain.len() + unknown_allocations,
            "{what}: allocations refused as not made were made: listed {listed:?}, acknowledged {certain:?}"
        );
        // Each allocation sent again with its id, on the other replica: the
        // first call's prefix where it was made, a new one where it was
        // not; one allocation per id either way.
        let before_retries: BTreeSet<Ipv6Net> = listed
            .iter()
            .copied()
            .filter(|p| !first.iter().chain(second.iter()).any(|a| a.prefix == *p))
            .collect();
        let mut retried = BTreeSet::new();
        for (id, answer) in ids.iter().zip([&first, &second]) {
            let prefix = allocate_once(&a, id).await;
            if let Ok(allocation) = answer {
                assert_eq!(
                    prefix, allocation.prefix,
                    "{what}: a retry got another prefix"
                );
            }
            assert!(retried.insert(prefix), "{what}: two ids, one prefix");
        }
        let truth = Store::open_etcd(&settings, QUARANTINE).await.unwrap();
        let listed: BTreeSet<Ipv6Net> = allocated_prefixes(&truth).await;
        let made_once: BTreeSet<Ipv6Net> = before_retries.union(&retried).copied().collect();
        assert!(
            listed == made_once,
            "{what}: retries with request ids made more than one allocation each: \
             listed {listed:?}, expected {made_once:?}"
        );
        let revision = truth.revision().await;
        caught_up(&a, revision, "replica A").await;
        caught_up(&b, revision, "replica B").await;
        held = listed.into_iter().collect();
        for (store, name) in [
            (&a, "replica A"),
            (&b, "replica B"),
            (&truth, "a fresh replica"),
        ] {
            history_is_whole(store, &format!("{what}, {name}")).await;
        }
        assert_eq!(
            contents_of(&a).await,
            contents_of(&truth).await,
            "{what}: replica A"
        );
        assert_eq!(
            contents_of(&b).await,
            contents_of(&truth).await,
            "{what}: replica B"
        );
    }
    eprintln!("outage answers over {cycles} cycles: {tally:?}");
}

/// An allocation as a client with request id `id` gets it: the change the
/// id made, if it made one, else made now under the id (what the API's
/// calls do, api/requests.rs).
async fn allocate_once(store: &Store, id: &RequestId) -> Ipv6Net {
    use nemo_controller::store::StoreChange;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // As a client does: a transient refusal of the question (the
        // replica putting memory back, etcd slow) is asked again.
        match store.made_by(id).await {
            Ok(Some(event)) => match event.change {
                StoreChange::PrefixAllocated(allocation) => return allocation.prefix,
                other => panic!("{} made {other:?}", id.id()),
            },
            Ok(None) => {}
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        match as_request(Some(id.clone()), store.allocate("acme", "p", 0)).await {
            Ok(allocation) => return allocation.prefix,
            Err(StoreError::AlreadyMade { .. }) => continue,
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a replica lists and tells, for comparing two replicas.
async fn contents_of(store: &Store) -> String {
    let (events, _) = store.events_after(0).await.unwrap();
    format!(
        "{:?}\n{:?}\n{:?}\n{}",
        store.allocations(None).await.unwrap(),
        store.tenant_names().await,
        events.len(),
        store.revision().await,
    )
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
