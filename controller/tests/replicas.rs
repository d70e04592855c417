//! Controller replicas: two `nemo-controller` processes on one
//! three-member etcd serve at once. Clients allocate through both; one
//! replica is killed with SIGKILL mid-burst and its clients carry on
//! through the other; nothing acknowledged is lost, no prefix is given
//! twice, a watcher on the surviving replica hears every change once;
//! one etcd member of three down, service goes on; nemoctl given both
//! endpoints passes over the dead one.
//!
//! Needs `etcd` (CI installs it; NEMO_REQUIRE_ETCD makes a missing one a
//! failure).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use nemo_testkit::daemons::{self, authed};
use nemo_testkit::etcd::{self, Etcd};
use nemo_testkit::{require, workspace_binary, Process};
use tonic::transport::Channel;

fn replica(dir: &Path, etcd: &Etcd) -> Process {
    let process = daemons::controller_with_tables(
        dir,
        "quarantine_secs = 3600\n",
        &format!(
            "[etcd]\nendpoints = {:?}\nprefix = \"/nemo-replicas/\"\ntimeout_ms = 2000\n",
            etcd.endpoints()
        ),
    );
    assert!(process.log().contains("store=etcd"), "{}", process.log());
    process
}

fn endpoint(process: &Process) -> String {
    format!("http://{}", process.field("grpc"))
}

async fn connect(endpoint: &str) -> Option<ControllerClient<Channel>> {
    ControllerClient::connect(endpoint.to_owned()).await.ok()
}

fn allocate() -> tonic::Request<pb::AllocatePrefixRequest> {
    authed(pb::AllocatePrefixRequest {
        tenant: "acme".into(),
        pool: "core".into(),
        length: 0,
        prefix: String::new(),
    })
}

/// The prefixes acme holds, as a replica lists them.
async fn held_prefixes(client: &mut ControllerClient<Channel>) -> BTreeSet<String> {
    client
        .list_prefixes(authed(pb::ListPrefixesRequest {
            tenant: "acme".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .allocations
        .into_iter()
        .map(|a| a.prefix)
        .collect()
}

/// A client as an orchestrator runs one: `count` allocations, through the
/// first endpoint until it stops answering, then through the next. With
/// `ids`, allocation `k` carries the request id `{ids}{k}` and a failed one
/// is sent again under it until answered (issue 33); without, a failed call
/// is simply not counted (its outcome is unknown). Returns (id or "",
/// prefix) of what was acknowledged, and how many calls failed.
async fn orchestrator(
    endpoints: Vec<String>,
    count: usize,
    ids: Option<String>,
) -> (Vec<(String, String)>, usize) {
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    let mut current = 0;
    let mut client = connect(&endpoints[current]).await;
    let mut k = 0;
    while acknowledged.len() < count {
        let id = ids.as_ref().map(|prefix| format!("{prefix}{k}"));
        let mut call = allocate();
        if let Some(id) = &id {
            call.metadata_mut()
                .insert(nemo_controller::api::REQUEST_ID, id.parse().unwrap());
        }
        let answer = match client.as_mut() {
            Some(c) => c.allocate_prefix(call).await,
            None => Err(tonic::Status::unavailable("not connected")),
        };
        match answer {
            Ok(response) => {
                acknowledged.push((id.unwrap_or_default(), response.into_inner().prefix));
                k += 1;
            }
            Err(status) => {
                // A replica killed under a call: its outcome unknown
                // (UNKNOWN, CANCELLED when the stream was reset), or it was
                // not made: what the daemons send again with the same id.
                assert!(
                    nemo_daemon::worth_sending_again(&status),
                    "{id:?}: {status:?}"
                );
                failed += 1;
                assert!(failed < 200, "no replica answers");
                current = (current + 1) % endpoints.len();
                client = connect(&endpoints[current]).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (acknowledged, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_at_once_and_survive_one_killed_mid_burst() {
    if !require(
        etcd::available(),
        "etcd missing (etcd-server)",
        "NEMO_REQUIRE_ETCD",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(3);
    let mut a = replica(dir.path(), &etcd);
    let b = replica(dir.path(), &etcd);
    let (a_endpoint, b_endpoint) = (endpoint(&a), endpoint(&b));
    let mut to_a = connect(&a_endpoint).await.unwrap();
    to_a.create_pool(authed(pb::CreatePoolRequest {
        name: "core".into(),
        prefix: "2001:db8:100::/40".into(),
        tenant_length: 56,
        translation_prefix: String::new(),
    }))
    .await
    .unwrap();
    // Made on a, read on b: b follows.
    let mut to_b = connect(&b_endpoint).await.unwrap();
    to_b.create_tenant(authed(pb::CreateTenantRequest {
        name: "acme".into(),
    }))
    .await
    .unwrap();
    let mut events = to_b
        .watch_events(authed(pb::WatchEventsRequest {
            from_revision: 2,
            history_only: false,
        }))
        .await
        .unwrap()
        .into_inner();

    // Four orchestrators on each replica; a is killed while they run.
    let mut tasks = Vec::new();
    for first in [&a_endpoint, &b_endpoint] {
        for _ in 0..4 {
            let endpoints = vec![
                first.clone(),
                [&a_endpoint, &b_endpoint]
                    .into_iter()
                    .find(|e| *e != first)
                    .unwrap()
                    .clone(),
            ];
            tasks.push(tokio::spawn(orchestrator(endpoints, 100, None)));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill();
    let mut acknowledged = BTreeSet::new();
    let mut failed = 0;
    for task in tasks {
        let (prefixes, failures) = task.await.unwrap();
        failed += failures;
        for (_, prefix) in prefixes {
            assert!(acknowledged.insert(prefix.clone()), "{prefix} given twice");
        }
    }
    assert_eq!(acknowledged.len(), 800);
    assert!(
        failed > 0,
        "a was killed after the burst: the test proves nothing"
    );

    // Everything acknowledged is held; what failed mid-kill is whole or
    // absent.
    let held = held_prefixes(&mut to_b).await;
    assert!(
        acknowledged.is_subset(&held),
        "lost: {:?}",
        acknowledged.difference(&held).collect::<Vec<_>>()
    );
    let total = 2 + held.len() as u64;
    // b's watcher heard every change, a's and its own, once, in order.
    let mut revisions = Vec::new();
    while revisions.last().copied().unwrap_or(2) < total {
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        revisions.push(event.revision);
    }
    assert_eq!(revisions, (3..=total).collect::<Vec<_>>());

    // One etcd member of three down: the survivor still changes things.
    etcd.kill(0);
    to_b.create_tenant(authed(pb::CreateTenantRequest {
        name: "one-member-down".into(),
    }))
    .await
    .unwrap();

    // nemoctl given both endpoints passes over the dead one.
    let output = std::process::Command::new(workspace_binary("nemoctl"))
        .args([
            "--endpoint",
            &format!("{a_endpoint},{b_endpoint}"),
            "--token",
            daemons::TOKEN,
            "tenant",
            "list",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("one-member-down"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Reads are as new as what any replica acknowledged before they were
/// asked: what one orchestrator makes through the first replica, another
/// reads at once through the second (each read waits until the replica's
/// memory holds etcd's revision of the moment; without that wait this
/// failed 2 runs in 3 on a 3-member etcd). Without a quorum, reads are
/// answered from memory and marked as possibly stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_one_replica_sees_what_another_acknowledged() {
    if !require(
        etcd::available(),
        "etcd missing (etcd-server)",
        "NEMO_REQUIRE_ETCD",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(3);
    let (first, second) = (replica(dir.path(), &etcd), replica(dir.path(), &etcd));
    let mut writer = connect(&endpoint(&first)).await.unwrap();
    let mut reader = connect(&endpoint(&second)).await.unwrap();
    for n in 0..100 {
        let name = format!("t{n}");
        writer
            .create_tenant(authed(pb::CreateTenantRequest { name: name.clone() }))
            .await
            .unwrap();
        let read = reader
            .get_tenant(authed(pb::GetTenantRequest { name: name.clone() }))
            .await;
        assert!(read.is_ok(), "{name} made on the first replica: {read:?}");
        let listed = reader
            .list_tenants(authed(pb::ListTenantsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .tenants
            .len();
        assert_eq!(listed, n + 1);
    }
    // Two etcd members of three gone: changes are refused, reads are
    // answered from memory and say they may be stale.
    let mut etcd = etcd;
    etcd.kill(1);
    etcd.kill(2);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let read = reader
            .get_tenant(authed(pb::GetTenantRequest { name: "t7".into() }))
            .await
            .unwrap();
        if let Some(why) = read.metadata().get(nemo_controller::api::MAY_BE_STALE) {
            assert!(!why.is_empty());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reads never said they may be stale"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = writer
        .create_tenant(authed(pb::CreateTenantRequest {
            name: "late".into(),
        }))
        .await
        .unwrap_err();
    // Not made (UNAVAILABLE), or sent while the quorum went and not known
    // to be made (UNKNOWN, when an attempt timed out inside etcd): never OK.
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown
        ),
        "{refused:?}"
    );
}

/// Issue 33: replica A is killed with SIGKILL mid-burst, again and again,
/// while its clients allocate with request ids and send every failed call
/// again, same id, through replica B. Each id ends with exactly one
/// allocation (the killed replica's transactions in flight were made or
/// not, never both), no prefix serves two ids, and the history tells every
/// allocation once. NEMO_KILL_CYCLES sets the cycles (default 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_burst_again_and_again_makes_each_request_once() {
    if !require(
        etcd::available(),
        "etcd missing (etcd-server)",
        "NEMO_REQUIRE_ETCD",
    ) {
        return;
    }
    let cycles: usize = std::env::var("NEMO_KILL_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(3);
    let b = replica(dir.path(), &etcd);
    let b_endpoint = endpoint(&b);
    let mut to_b = connect(&b_endpoint).await.unwrap();
    to_b.create_pool(authed(pb::CreatePoolRequest {
        name: "core".into(),
        prefix: "2001:db8:100::/40".into(),
        tenant_length: 56,
        translation_prefix: String::new(),
    }))
    .await
    .unwrap();
    to_b.create_tenant(authed(pb::CreateTenantRequest {
        name: "acme".into(),
    }))
    .await
    .unwrap();
    let mut issued = 0;
    let mut by_id = std::collections::BTreeMap::new();
    let mut failed = 0;
    for cycle in 0..cycles {
        let mut a = replica(dir.path(), &etcd);
        let a_endpoint = endpoint(&a);
        let mut tasks = Vec::new();
        for n in 0..4 {
            tasks.push(tokio::spawn(orchestrator(
                vec![a_endpoint.clone(), b_endpoint.clone()],
                100,
                Some(format!("c{cycle}-o{n}-")),
            )));
            issued += 100;
        }
        // Mid-burst (a burst lasts some 200 ms here), at a different point
        // each cycle.
        tokio::time::sleep(Duration::from_millis(20 + 25 * (cycle % 6) as u64)).await;
        a.kill();
        for task in tasks {
            let (answered, failures) = task.await.unwrap();
            failed += failures;
            for (id, prefix) in answered {
                assert!(
                    by_id.insert(id.clone(), prefix).is_none(),
                    "{id} answered twice"
                );
            }
        }
    }
    assert!(
        failed > 0,
        "A was killed after the bursts: the test proves nothing"
    );
    assert_eq!(by_id.len(), issued);
    let answered: BTreeSet<&String> = by_id.values().collect();
    assert_eq!(answered.len(), issued, "one prefix answered for two ids");
    // What the store holds: exactly one allocation per id, those answered.
    let held = held_prefixes(&mut to_b).await;
    assert_eq!(
        held.iter().collect::<BTreeSet<_>>(),
        answered,
        "the allocations held are not those answered, one per id"
    );
    // The history tells each allocation once, every revision in order.
    let mut history = to_b
        .watch_events(authed(pb::WatchEventsRequest {
            from_revision: 0,
            history_only: true,
        }))
        .await
        .unwrap()
        .into_inner();
    let mut revisions = Vec::new();
    let mut allocated = 0;
    while let Some(event) = history.message().await.unwrap() {
        revisions.push(event.revision);
        allocated += usize::from(event.kind == "prefix_allocated");
    }
    assert_eq!(revisions, (1..=revisions.len() as u64).collect::<Vec<_>>());
    assert_eq!(allocated, issued);
    eprintln!("{cycles} kills, {issued} requests, each made once; {failed} calls sent again");
}
