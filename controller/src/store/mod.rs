//! The controller's state: pools, tenants, allocations, quarantine, and a
//! history of changes, on disk (`nemo_daemon::disk`, one redb file).
//!
//! Every change writes the entities and an event at the next revision, and
//! every batch of changes is one transaction, so a crash never leaves half a
//! change and a watcher resumed from a revision sees every later change
//! exactly once. A change is acknowledged only after the commit that covers
//! it returned, which is after fdatasync: it survives a power loss.
//!
//! Allocation keeps, per pool, the set of used tenant-length slots in memory
//! (rebuilt at start from the allocations on disk): finding a free block is
//! a scan from a moving cursor, a million allocations in a pool cost a few
//! MiB and no database reads.
//!
//! Every change goes one way, `Store::change` (in `log`): its writes and
//! event queued, memory mirrored under the state lock, the lock released,
//! the caller held until a group commit has it on disk. The modules:
//! `model` (what is kept, events, errors), `log` (the revision log, group
//! commit, the history for resuming watchers), `pools`, `tenants`,
//! `allocator` (the free-block search, pure), `allocations` (allocating
//! and releasing through it, quarantine), `identities` (home
//! agents, hypervisors, mobile routers), `placements` (and the per-tenant
//! view the watch streams send), `bindings` (home agents' reports). The
//! disk behind it is `nemo_daemon::disk`; a second backend replaces `log`'s
//! commit and `open`'s load.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;
use std::path::Path;
use std::time::Duration;

use nemo_daemon::disk::{Disk, Write};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Mutex};

mod allocation_table;
mod allocations;
mod allocator;
mod backend;
mod bindings;
mod blocks;
mod copy;
pub mod credentials;
pub mod etcd;
mod follow;
mod identities;
mod log;
mod mapping_table;
mod mappings;
mod model;
mod placements;
mod pools;
mod records;
pub mod requests;
mod tenants;
mod upkeep;

use allocator::Slots;
pub use copy::{copy, Copied, Location};
use log::DurableLog;
pub use mappings::Ipv4Wanted;
pub use model::*;
pub use placements::{Placing, TenantView};
pub use pools::WELL_KNOWN_PREFIX;
pub use upkeep::{Trimmed, Upkeep};

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Storage(e.to_string()))
}

fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Storage(format!("corrupt record: {e}")))
}

/// Longest free text (a placement's or a report's reason), in octets.
pub const MAX_REASON: usize = 256;
/// Longest text of an address or prefix a request may give (an IPv6
/// prefix at its longest is 43 characters).
pub const MAX_ADDRESS_TEXT: usize = 64;
/// Most prefixes one binding report may carry.
pub const MAX_REPORTED_PREFIXES: usize = 64;

/// Free text: at most [`MAX_REASON`] octets, no control characters (it is
/// stored, replayed to every watcher and logged).
fn check_reason(field: &'static str, text: &str) -> Result<(), StoreError> {
    if text.len() > MAX_REASON {
        return Err(StoreError::Invalid {
            field,
            reason: format!("{} octets; at most {MAX_REASON}", text.len()),
        });
    }
    if text.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            field,
            reason: "control characters are not allowed".into(),
        });
    }
    Ok(())
}

/// Names: letters, digits, '-', '_' and '.', 1 to 63 characters.
fn check_name(field: &'static str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            field,
            reason: format!("{name:?} is not a name (1-63 of letters, digits, '-', '_', '.')"),
        })
    }
}

#[derive(Debug)]
struct State {
    pools: BTreeMap<String, Pool>,
    tenants: BTreeMap<String, Tenant>,
    allocations: allocation_table::AllocationTable,
    mappings: mapping_table::MappingTable,
    slots: HashMap<String, Slots>,
    home_agents: BTreeMap<String, HomeAgentRecord>,
    hypervisors: BTreeMap<String, Hypervisor>,
    mobile_routers: BTreeMap<String, MobileRouter>,
    placements: BTreeMap<String, Placement>,
    /// Credentials by id and token hash (credentials.rs).
    credentials: credentials::CredentialTable,
    /// Per home address, the last sequence number its home agent reported
    /// accepting: where a new mobile-router instance starts.
    last_sequence: HashMap<Ipv6Addr, u16>,
    /// The request ids of recent changes (requests.rs).
    requests: requests::SeenRequests,
    revision: u64,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    backend: backend::Backend,
    state: Mutex<State>,
    quarantine_time: Duration,
    /// Changes as they become durable.
    pub changes: broadcast::Sender<Event>,
    /// Group commit: how far the history is applied and how far it is on
    /// disk.
    log: DurableLog,
    /// Its tasks (following the other replicas, upkeep), ended with it.
    tasks: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
    /// Whether the follower follows the other replicas now.
    following: std::sync::atomic::AtomicBool,
    /// Whether this replica keeps the history now (`upkeep`).
    maintainer: std::sync::atomic::AtomicBool,
}

impl Drop for Store {
    fn drop(&mut self) {
        for task in log::lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

const REVISION_KEY: &[u8] = b"revision";

/// The store's file in its directory and its tables.
const FILE: &str = "controller.redb";
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
    "credentials",
    "mappings",
];
/// Bound of redb's page cache: the controller keeps its state in memory,
/// the cache serves the event history of resuming watchers.
const CACHE_BYTES: usize = 64 << 20;

impl Store {
    /// Opens (or creates) the store in a directory of this machine and
    /// loads it into memory.
    pub async fn open(path: &Path, quarantine_time: Duration) -> Result<Store, StoreError> {
        Store::load(backend::Backend::disk(path)?, quarantine_time).await
    }

    /// Opens the store kept in etcd, loads it into memory and follows
    /// what other controller replicas write to it.
    pub async fn open_etcd(
        settings: &etcd::EtcdSettings,
        quarantine_time: Duration,
    ) -> Result<std::sync::Arc<Store>, StoreError> {
        let store = std::sync::Arc::new(
            Store::load(backend::Backend::etcd(settings).await?, quarantine_time).await?,
        );
        if let Some(etcd) = store.backend.shared() {
            store.start_following(etcd.clone());
        }
        Ok(store)
    }

    /// Where the store is, for logs.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    async fn load(
        backend: backend::Backend,
        quarantine_time: Duration,
    ) -> Result<Store, StoreError> {
        let (records, etcd_revision) = backend.snapshot(records::STATE_TABLES).await?;
        let mut state = State::loaded(records)?;
        state.requests = requests::recorded(&backend, state.revision).await?;
        let (changes, _) = broadcast::channel(4096);
        Ok(Store {
            backend,
            log: DurableLog::new(state.revision, etcd_revision),
            state: Mutex::new(state),
            quarantine_time,
            changes,
            tasks: std::sync::Mutex::new(Vec::new()),
            following: std::sync::atomic::AtomicBool::new(false),
            maintainer: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use ipnet::Ipv6Net;

    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::from_secs(3600))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn allocations_are_disjoint_aligned_and_quarantined() {
        let (_dir, store) = store().await;
        store
            .create_pool("p", "2001:db8:100::/52", 56)
            .await
            .unwrap();
        store.create_tenant("acme").await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..16 {
            seen.push(store.allocate("acme", "p", 0).await.unwrap().prefix);
        }
        assert_eq!(seen[0], "2001:db8:100::/56".parse::<Ipv6Net>().unwrap());
        assert_eq!(
            seen[15],
            "2001:db8:100:f00::/56".parse::<Ipv6Net>().unwrap()
        );
        assert_eq!(
            store.allocate("acme", "p", 0).await,
            Err(StoreError::Exhausted {
                pool: "p".into(),
                length: 56
            })
        );
        // Released prefixes are held back: the pool stays full.
        store.release("2001:db8:100:300::/56").await.unwrap();
        assert!(matches!(
            store.allocate("acme", "p", 0).await,
            Err(StoreError::Exhausted { .. })
        ));
        let (_, allocated, quarantined) = store.pool("p").await.unwrap();
        assert_eq!((allocated, quarantined), (15, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_tells_each_event_once_in_order() {
        let (_dir, store) = store().await;
        let store = std::sync::Arc::new(store);
        store.create_pool("p", "2001:db8::/32", 56).await.unwrap();
        store.create_tenant("t").await.unwrap();
        let start = store.revision().await;
        // 16 clients, 25 allocations each, while watchers join mid-burst.
        let mut clients = Vec::new();
        for _ in 0..16 {
            let store = store.clone();
            clients.push(tokio::spawn(async move {
                let mut revisions = Vec::new();
                for _ in 0..25 {
                    revisions.push(store.allocate("t", "p", 0).await.unwrap().revision);
                }
                revisions
            }));
        }
        let mut watchers = Vec::new();
        for delay_ms in [0u64, 2, 5, 10] {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let (history, mut live) = store.events_after(start).await.unwrap();
            watchers.push(tokio::spawn(async move {
                let mut seen: Vec<u64> = history.iter().map(|e| e.revision).collect();
                while seen.last().copied().unwrap_or(start) < start + 400 {
                    seen.push(live.recv().await.unwrap().revision);
                }
                seen
            }));
        }
        let mut acknowledged = Vec::new();
        for client in clients {
            acknowledged.extend(client.await.unwrap());
        }
        // Every acknowledged allocation is on disk by the time it answered.
        assert!(store.revision().await >= start + 400);
        acknowledged.sort_unstable();
        assert_eq!(
            acknowledged,
            ((start + 1)..=(start + 400)).collect::<Vec<_>>()
        );
        for watcher in watchers {
            let seen = tokio::time::timeout(Duration::from_secs(10), watcher)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(seen, ((start + 1)..=(start + 400)).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn larger_blocks_are_aligned() {
        let (_dir, store) = store().await;
        store
            .create_pool("p", "2001:db8:100::/48", 64)
            .await
            .unwrap();
        store.create_tenant("acme").await.unwrap();
        let small = store.allocate("acme", "p", 0).await.unwrap().prefix;
        let block = store.allocate("acme", "p", 56).await.unwrap().prefix;
        assert_eq!(small, "2001:db8:100::/64".parse::<Ipv6Net>().unwrap());
        assert_eq!(block, "2001:db8:100:100::/56".parse::<Ipv6Net>().unwrap());
        assert!(matches!(
            store.allocate("acme", "p", 40).await,
            Err(StoreError::Invalid {
                field: "length",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn quarantine_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::ZERO).await.unwrap();
        store
            .create_pool("p", "2001:db8:100::/55", 56)
            .await
            .unwrap();
        store.create_tenant("acme").await.unwrap();
        let a = store.allocate("acme", "p", 0).await.unwrap().prefix;
        let _b = store.allocate("acme", "p", 0).await.unwrap();
        store.release(&a.to_string()).await.unwrap();
        assert_eq!(store.allocate("acme", "p", 0).await.unwrap().prefix, a);
    }

    #[tokio::test]
    async fn state_and_history_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), Duration::from_secs(60))
                .await
                .unwrap();
            store
                .create_pool("p", "2001:db8:100::/40", 56)
                .await
                .unwrap();
            store.create_tenant("acme").await.unwrap();
            store.allocate("acme", "p", 0).await.unwrap();
            let released = store.allocate("acme", "p", 0).await.unwrap().prefix;
            store.release(&released.to_string()).await.unwrap();
        }
        let store = Store::open(dir.path(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.revision().await, 5);
        let (_, allocated, quarantined) = store.pool("p").await.unwrap();
        assert_eq!((allocated, quarantined), (1, 1));
        // The next allocation skips both the used and the quarantined one.
        let next = store.allocate("acme", "p", 0).await.unwrap().prefix;
        assert_eq!(next, "2001:db8:100:200::/56".parse::<Ipv6Net>().unwrap());
        let (events, _) = store.events_after(3).await.unwrap();
        let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, vec![4, 5, 6]);
    }

    #[tokio::test]
    async fn after_reopen_allocation_resumes_after_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            // No quarantine: a released slot is free at once.
            let store = Store::open(dir.path(), Duration::ZERO).await.unwrap();
            store
                .create_pool("p", "2001:db8:100::/40", 56)
                .await
                .unwrap();
            store.create_tenant("acme").await.unwrap();
            let first = store.allocate("acme", "p", 0).await.unwrap().prefix;
            store.allocate("acme", "p", 0).await.unwrap();
            store.release(&first.to_string()).await.unwrap();
            first
        };
        let store = Store::open(dir.path(), Duration::ZERO).await.unwrap();
        // As without the restart: the cursor is past the second slot, so the
        // freed first one is not reused yet.
        let next = store.allocate("acme", "p", 0).await.unwrap().prefix;
        assert_ne!(next, first);
        assert_eq!(next, "2001:db8:100:200::/56".parse::<Ipv6Net>().unwrap());
    }

    #[tokio::test]
    async fn bad_requests_name_the_field() {
        let (_dir, store) = store().await;
        let error = |r: Result<Pool, StoreError>| r.unwrap_err().to_string();
        assert!(error(store.create_pool("p", "not a prefix", 56).await).starts_with("prefix:"));
        assert!(
            error(store.create_pool("p", "2001:db8:100::1/40", 56).await).contains("host bits")
        );
        assert!(error(store.create_pool("p", "2001:db8:100::/40", 30).await)
            .starts_with("tenant_length:"));
        assert!(
            error(store.create_pool("bad name", "2001:db8:100::/40", 56).await)
                .starts_with("name:")
        );
        store
            .create_pool("p", "2001:db8:100::/40", 56)
            .await
            .unwrap();
        assert!(matches!(
            store.create_pool("q", "2001:db8:100::/48", 56).await,
            Err(StoreError::Precondition(_))
        ));
        assert!(matches!(
            store.create_pool("p", "2001:db8:200::/40", 56).await,
            Err(StoreError::Exists { .. })
        ));
        assert!(matches!(
            store.allocate("nobody", "p", 0).await,
            Err(StoreError::NotFound { what: "tenant", .. })
        ));
        store.create_tenant("acme").await.unwrap();
        store.allocate("acme", "p", 0).await.unwrap();
        assert!(matches!(
            store.delete_pool("p").await,
            Err(StoreError::Precondition(_))
        ));
        assert!(matches!(
            store.delete_tenant("acme", false).await,
            Err(StoreError::Precondition(_))
        ));
        assert_eq!(store.delete_tenant("acme", true).await.unwrap().len(), 1);
        store.delete_pool("p").await.unwrap();
    }
}
