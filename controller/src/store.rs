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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::Ipv6Addr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv6Net;
use nemo_daemon::disk::{Disk, DiskError, Write};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Mutex};

/// A prefix pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// The prefix carved up.
    pub prefix: Ipv6Net,
    /// Length of the prefixes handed out.
    pub tenant_length: u8,
}

impl Pool {
    /// Tenant-length prefixes in the pool.
    pub fn capacity(&self) -> u64 {
        1u64.checked_shl(u32::from(self.tenant_length - self.prefix.prefix_len()))
            .unwrap_or(u64::MAX)
    }

    fn slot_prefix(&self, slot: u64, length: u8) -> Ipv6Net {
        let base = u128::from(self.prefix.network());
        let shift = 128 - u32::from(self.tenant_length);
        let address = base + (u128::from(slot) << shift);
        Ipv6Net::new(Ipv6Addr::from(address), length).unwrap_or(self.prefix)
    }

    fn slot_of(&self, prefix: &Ipv6Net) -> u64 {
        let offset = u128::from(prefix.network()) - u128::from(self.prefix.network());
        (offset >> (128 - u32::from(self.tenant_length))) as u64
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Its name.
    pub name: String,
    /// When it was created, ms since the Unix epoch.
    pub created_at_unix_ms: i64,
}

/// A prefix allocated to a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The prefix.
    pub prefix: Ipv6Net,
    /// The tenant.
    pub tenant: String,
    /// The pool.
    pub pool: String,
    /// When, ms since the Unix epoch.
    pub allocated_at_unix_ms: i64,
    /// The revision that made it.
    pub revision: u64,
}

/// A home agent mobile routers register with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeAgent {
    /// Its name.
    pub name: String,
    /// The address Binding Updates go to.
    pub address: Ipv6Addr,
    /// The home prefix home addresses come from.
    pub home_prefix: Ipv6Net,
    /// Its UDP transport, if any ("[address]:port").
    pub udp_endpoint: String,
}

/// A hypervisor tenants are placed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hypervisor {
    /// Its name.
    pub name: String,
}

/// A tenant's mobile-router identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MobileRouter {
    /// The tenant.
    pub tenant: String,
    /// Its home agent.
    pub home_agent: String,
    /// Its home address.
    pub home_address: Ipv6Addr,
    /// Its SPI.
    pub spi: u32,
    /// `hmac-sha256` or `hmac-sha1-96`.
    pub algorithm: String,
    /// The key, hex. Empty in the history (never logged).
    pub key: String,
    /// Explicit mode: prefixes in the Binding Updates.
    pub explicit_mode: bool,
}

impl MobileRouter {
    fn redacted(&self) -> MobileRouter {
        MobileRouter {
            key: String::new(),
            ..self.clone()
        }
    }
}

/// Where a tenant runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The tenant.
    pub tenant: String,
    /// The hypervisor.
    pub hypervisor: String,
    /// Since when, ms since the Unix epoch.
    pub since_unix_ms: i64,
    /// Why (the orchestrator's words).
    pub reason: String,
}

/// A change, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its revision: 1, 2, 3, ...
    pub revision: u64,
    /// When, ms since the Unix epoch.
    pub at_unix_ms: i64,
    /// What happened.
    pub change: Change,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A pool was created.
    PoolCreated(Pool),
    /// A pool was deleted.
    PoolDeleted(Pool),
    /// A tenant was created.
    TenantCreated(Tenant),
    /// A tenant was deleted.
    TenantDeleted(Tenant),
    /// A prefix was allocated.
    PrefixAllocated(Allocation),
    /// A prefix was released (and quarantined until the time given).
    PrefixReleased {
        /// The allocation that ended.
        allocation: Allocation,
        /// Until when it is held back, ms since the Unix epoch.
        quarantined_until_unix_ms: i64,
    },
    /// A home agent registered (or changed).
    HomeAgentRegistered(HomeAgent),
    /// A hypervisor registered.
    HypervisorRegistered(Hypervisor),
    /// A mobile-router identity was created (key not logged).
    MobileRouterCreated(MobileRouter),
    /// Its key was rotated (key not logged).
    KeyRotated(MobileRouter),
    /// It was deleted.
    MobileRouterDeleted(MobileRouter),
    /// A tenant was placed (or moved: `from` says where it was).
    TenantPlaced {
        /// The placement now.
        placement: Placement,
        /// The hypervisor it left, if it moved.
        from: Option<String>,
    },
    /// A home agent reported a binding change.
    BindingReported {
        /// The home agent.
        home_agent: String,
        /// The home address.
        home_address: Ipv6Addr,
        /// The care-of address.
        care_of: Ipv6Addr,
        /// The prefixes forwarded.
        prefixes: Vec<Ipv6Net>,
        /// The binding ended.
        removed: bool,
        /// Why.
        reason: String,
        /// The binding's last accepted sequence number (absent in reports
        /// of earlier versions).
        #[serde(default)]
        sequence: Option<u16>,
    },
    /// A tenant was taken off its hypervisor.
    TenantUnplaced {
        /// The placement that ended.
        placement: Placement,
        /// Why.
        reason: String,
    },
}

impl Change {
    /// The kind's name, as the API shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::PoolCreated(_) => "pool_created",
            Change::PoolDeleted(_) => "pool_deleted",
            Change::TenantCreated(_) => "tenant_created",
            Change::TenantDeleted(_) => "tenant_deleted",
            Change::PrefixAllocated(_) => "prefix_allocated",
            Change::PrefixReleased { .. } => "prefix_released",
            Change::HomeAgentRegistered(_) => "home_agent_registered",
            Change::HypervisorRegistered(_) => "hypervisor_registered",
            Change::MobileRouterCreated(_) => "mobile_router_created",
            Change::KeyRotated(_) => "key_rotated",
            Change::MobileRouterDeleted(_) => "mobile_router_deleted",
            Change::TenantPlaced { .. } => "tenant_placed",
            Change::TenantUnplaced { .. } => "tenant_unplaced",
            Change::BindingReported { .. } => "binding_reported",
        }
    }

    /// The pool, tenant or prefix concerned.
    pub fn subject(&self) -> String {
        match self {
            Change::PoolCreated(pool) | Change::PoolDeleted(pool) => pool.name.clone(),
            Change::TenantCreated(tenant) | Change::TenantDeleted(tenant) => tenant.name.clone(),
            Change::PrefixAllocated(allocation) => allocation.prefix.to_string(),
            Change::PrefixReleased { allocation, .. } => allocation.prefix.to_string(),
            Change::HomeAgentRegistered(home_agent) => home_agent.name.clone(),
            Change::HypervisorRegistered(hypervisor) => hypervisor.name.clone(),
            Change::MobileRouterCreated(mr)
            | Change::KeyRotated(mr)
            | Change::MobileRouterDeleted(mr) => mr.tenant.clone(),
            Change::TenantPlaced { placement, .. } | Change::TenantUnplaced { placement, .. } => {
                placement.tenant.clone()
            }
            Change::BindingReported { home_address, .. } => home_address.to_string(),
        }
    }

    /// The tenant a change concerns, if one.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Change::TenantCreated(t) | Change::TenantDeleted(t) => Some(&t.name),
            Change::PrefixAllocated(a) => Some(&a.tenant),
            Change::PrefixReleased { allocation, .. } => Some(&allocation.tenant),
            Change::MobileRouterCreated(mr)
            | Change::KeyRotated(mr)
            | Change::MobileRouterDeleted(mr) => Some(&mr.tenant),
            Change::TenantPlaced { placement, .. } | Change::TenantUnplaced { placement, .. } => {
                Some(&placement.tenant)
            }
            _ => None,
        }
    }
}

/// Why a request is refused: each maps to a gRPC status and names the
/// field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A field's value is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Something named does not exist.
    #[error("{what} {name:?} does not exist")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// Something of that name exists already.
    #[error("{what} {name:?} exists already")]
    Exists {
        /// What kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The state forbids it (not empty, overlapping, ...).
    #[error("{0}")]
    Precondition(String),
    /// The pool has no room.
    #[error("pool {pool:?} has no free /{length} left")]
    Exhausted {
        /// The pool.
        pool: String,
        /// The length asked for.
        length: u8,
    },
    /// The database failed.
    #[error("store: {0}")]
    Storage(String),
}

impl From<DiskError> for StoreError {
    fn from(error: DiskError) -> StoreError {
        StoreError::Storage(error.to_string())
    }
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Storage(e.to_string()))
}

fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Storage(format!("corrupt record: {e}")))
}

/// Per-pool allocation state in memory.
#[derive(Debug, Default)]
struct Slots {
    used: BTreeSet<u64>,
    /// Slot -> until (unix ms): released, not yet reusable.
    quarantine: BTreeMap<u64, i64>,
    /// Where the search for a free block starts: after the last allocation.
    cursor: u64,
    /// The revision of the allocation that set the cursor at load.
    cursor_revision: u64,
}

/// Longest free text (a placement's or a report's reason), in octets.
pub const MAX_REASON: usize = 256;
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
    allocations: BTreeMap<Ipv6Net, Allocation>,
    slots: HashMap<String, Slots>,
    home_agents: BTreeMap<String, HomeAgent>,
    hypervisors: BTreeMap<String, Hypervisor>,
    mobile_routers: BTreeMap<String, MobileRouter>,
    placements: BTreeMap<String, Placement>,
    /// Per home address, the last sequence number its home agent reported
    /// accepting: where a new mobile-router instance starts.
    last_sequence: HashMap<Ipv6Addr, u16>,
    revision: u64,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    disk: Disk,
    state: Mutex<State>,
    quarantine_time: Duration,
    /// Changes as they become durable.
    pub changes: broadcast::Sender<Event>,
    /// Group commit: how far the history is applied and how far it is on
    /// disk.
    log: DurableLog,
}

/// Group commit. A change is applied (memory, and its writes queued) under
/// the state lock, which is then released; the caller waits in `durable`
/// until a commit covers its revision. While one commit runs, the changes of
/// other callers are queued, and the next commit writes them all: one
/// fdatasync for many acknowledgements, none before its change is on disk.
#[derive(Debug)]
struct DurableLog {
    /// One commit at a time.
    flushing: Mutex<()>,
    /// Writes applied in memory, not yet committed, in revision order, and
    /// the newest revision among them: taken together, so that a commit
    /// knows exactly which revisions it covers.
    unwritten: std::sync::Mutex<(Vec<Write>, u64)>,
    /// Set when a commit failed: memory is then ahead of the disk, and no
    /// change may be acknowledged any more (restart to recover from disk).
    failed: std::sync::atomic::AtomicBool,
    /// The newest revision on disk.
    flushed: AtomicU64,
    /// Applied events not yet announced, in revision order. Also the lock
    /// under which `flushed` moves and events are announced, so that a
    /// watcher subscribing under it misses nothing and sees nothing twice.
    pending: std::sync::Mutex<VecDeque<Event>>,
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
];
/// Bound of redb's page cache: the controller keeps its state in memory,
/// the cache serves the event history of resuming watchers.
const CACHE_BYTES: usize = 64 << 20;

/// Decodes every record of a table.
fn load_all<T: for<'a> Deserialize<'a>>(disk: &Disk, table: &str) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    disk.for_each(table, None, None, |_, value| {
        out.push(decode(value)?);
        Ok::<_, StoreError>(())
    })?;
    Ok(out)
}

impl Store {
    /// Opens (or creates) the store and loads it into memory.
    pub fn open(path: &Path, quarantine_time: Duration) -> Result<Store, StoreError> {
        let disk = Disk::open(path, FILE, TABLES, CACHE_BYTES)?;
        let mut state = State {
            pools: BTreeMap::new(),
            tenants: BTreeMap::new(),
            allocations: BTreeMap::new(),
            slots: HashMap::new(),
            home_agents: BTreeMap::new(),
            hypervisors: BTreeMap::new(),
            mobile_routers: BTreeMap::new(),
            placements: BTreeMap::new(),
            last_sequence: HashMap::new(),
            revision: 0,
        };
        for home_agent in load_all::<HomeAgent>(&disk, "home_agents")? {
            state
                .home_agents
                .insert(home_agent.name.clone(), home_agent);
        }
        for hypervisor in load_all::<Hypervisor>(&disk, "hypervisors")? {
            state
                .hypervisors
                .insert(hypervisor.name.clone(), hypervisor);
        }
        for mr in load_all::<MobileRouter>(&disk, "mobile_routers")? {
            state.mobile_routers.insert(mr.tenant.clone(), mr);
        }
        for placement in load_all::<Placement>(&disk, "placements")? {
            state.placements.insert(placement.tenant.clone(), placement);
        }
        for pool in load_all::<Pool>(&disk, "pools")? {
            state.slots.insert(pool.name.clone(), Slots::default());
            state.pools.insert(pool.name.clone(), pool);
        }
        for tenant in load_all::<Tenant>(&disk, "tenants")? {
            state.tenants.insert(tenant.name.clone(), tenant);
        }
        for allocation in load_all::<Allocation>(&disk, "allocations")? {
            if let (Some(pool), Some(slots)) = (
                state.pools.get(&allocation.pool),
                state.slots.get_mut(&allocation.pool),
            ) {
                let first = pool.slot_of(&allocation.prefix);
                let count = 1u64 << (pool.tenant_length - allocation.prefix.prefix_len());
                slots.used.extend(first..first + count);
                // The cursor resumes after the newest allocation, as if the
                // daemon had never stopped (not from slot 0, which would
                // scan every used slot on the first allocation).
                if allocation.revision >= slots.cursor_revision {
                    slots.cursor_revision = allocation.revision;
                    slots.cursor = (first + count) % pool.capacity();
                }
            }
            state.allocations.insert(allocation.prefix, allocation);
        }
        disk.for_each("sequences", None, None, |key, value| {
            if let Ok(octets) = <[u8; 16]>::try_from(key) {
                state
                    .last_sequence
                    .insert(Ipv6Addr::from(octets), decode(value)?);
            }
            Ok::<_, StoreError>(())
        })?;
        disk.for_each("quarantine", None, None, |key, value| {
            let (pool_name, slot): (String, u64) = decode(key)?;
            let until: i64 = decode(value)?;
            if let Some(slots) = state.slots.get_mut(&pool_name) {
                slots.quarantine.insert(slot, until);
            }
            Ok::<_, StoreError>(())
        })?;
        state.revision = match disk.get("meta", REVISION_KEY)? {
            Some(bytes) => decode(&bytes)?,
            None => 0,
        };
        let (changes, _) = broadcast::channel(4096);
        let log = DurableLog {
            flushing: Mutex::new(()),
            unwritten: std::sync::Mutex::new((Vec::new(), state.revision)),
            failed: std::sync::atomic::AtomicBool::new(false),
            flushed: AtomicU64::new(state.revision),
            pending: std::sync::Mutex::new(VecDeque::new()),
        };
        Ok(Store {
            disk,
            state: Mutex::new(state),
            quarantine_time,
            changes,
            log,
        })
    }

    /// Waits until `revision` is on disk, flushing if nobody else is; then
    /// announces every event the flush covered.
    async fn durable(&self, revision: u64) -> Result<(), StoreError> {
        if self.log.flushed.load(Ordering::Acquire) >= revision {
            return Ok(());
        }
        let _flushing = self.log.flushing.lock().await;
        if self.log.flushed.load(Ordering::Acquire) >= revision {
            // The flush we waited for covered it.
            return Ok(());
        }
        // Every change up to `through` is queued: this commit covers it.
        let (batch, through) = {
            let mut unwritten = self
                .log
                .unwritten
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (std::mem::take(&mut unwritten.0), unwritten.1)
        };
        if let Err(error) = self.disk.write_async(batch).await {
            self.log.failed.store(true, Ordering::Release);
            tracing::error!(%error, "store commit failed; no change is acknowledged any more, restart to recover from disk");
            return Err(error.into());
        }
        let mut pending = self
            .log
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.log.flushed.store(through, Ordering::Release);
        while pending.front().is_some_and(|e| e.revision <= through) {
            if let Some(event) = pending.pop_front() {
                let _ = self.changes.send(event);
            }
        }
        Ok(())
    }

    /// Applies a change: its entity writes and the event are queued to be
    /// committed together. The caller mirrors it in memory, releases the
    /// state and waits in `durable` for the commit before it answers.
    fn commit(
        &self,
        state: &mut State,
        change: Change,
        writes: impl Fn(&Trees<'_>) -> Result<(), StoreError>,
    ) -> Result<Event, StoreError> {
        if self.log.failed.load(Ordering::Acquire) {
            return Err(StoreError::Storage(
                "an earlier commit failed; restart the controller".into(),
            ));
        }
        let event = Event {
            revision: state.revision + 1,
            at_unix_ms: unix_ms(SystemTime::now()),
            change,
        };
        let queued = std::cell::RefCell::new(Vec::new());
        let table = |name| Table {
            name,
            queued: &queued,
        };
        writes(&Trees {
            pools: table("pools"),
            tenants: table("tenants"),
            allocations: table("allocations"),
            quarantine: table("quarantine"),
            home_agents: table("home_agents"),
            hypervisors: table("hypervisors"),
            mobile_routers: table("mobile_routers"),
            placements: table("placements"),
            sequences: table("sequences"),
        })?;
        table("events").insert(&event.revision.to_be_bytes(), encode(&event)?)?;
        table("meta").insert(REVISION_KEY, encode(&event.revision)?)?;
        state.revision = event.revision;
        self.log
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(event.clone());
        let mut unwritten = self
            .log
            .unwritten
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        unwritten.0.extend(queued.into_inner());
        unwritten.1 = event.revision;
        Ok(event)
    }

    /// Creates a pool.
    pub async fn create_pool(
        &self,
        name: &str,
        prefix: &str,
        tenant_length: u32,
    ) -> Result<Pool, StoreError> {
        check_name("name", name)?;
        let prefix: Ipv6Net = prefix.parse().map_err(|_| StoreError::Invalid {
            field: "prefix",
            reason: format!("{prefix:?} is not an IPv6 prefix"),
        })?;
        if prefix.network() != prefix.addr() {
            return Err(StoreError::Invalid {
                field: "prefix",
                reason: format!(
                    "{prefix} has host bits set; did you mean {}?",
                    prefix.trunc()
                ),
            });
        }
        let tenant_length = u8::try_from(tenant_length)
            .ok()
            .filter(|l| *l > prefix.prefix_len() && *l <= 64 && *l - prefix.prefix_len() <= 32)
            .ok_or_else(|| StoreError::Invalid {
                field: "tenant_length",
                reason: format!(
                    "{tenant_length} must be longer than /{}, at most 64, and carve at most 2^32 prefixes",
                    prefix.prefix_len()
                ),
            })?;
        let mut state = self.state.lock().await;
        if state.pools.contains_key(name) {
            return Err(StoreError::Exists {
                what: "pool",
                name: name.to_owned(),
            });
        }
        if let Some(other) = state
            .pools
            .values()
            .find(|p| p.prefix.contains(&prefix.network()) || prefix.contains(&p.prefix.network()))
        {
            return Err(StoreError::Precondition(format!(
                "prefix: {prefix} overlaps pool {:?} ({})",
                other.name, other.prefix
            )));
        }
        let pool = Pool {
            name: name.to_owned(),
            prefix,
            tenant_length,
        };
        let record = encode(&pool)?;
        let event = self.commit(&mut state, Change::PoolCreated(pool.clone()), |t| {
            t.pools.insert(pool.name.as_bytes(), record.clone())?;
            Ok(())
        })?;
        state.slots.insert(pool.name.clone(), Slots::default());
        state.pools.insert(pool.name.clone(), pool.clone());
        drop(state);
        self.durable(event.revision).await?;
        Ok(pool)
    }

    /// A pool and its usage: (pool, allocated prefixes, quarantined slots).
    pub async fn pool(&self, name: &str) -> Result<(Pool, u64, u64), StoreError> {
        let state = self.state.lock().await;
        let pool = state
            .pools
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                what: "pool",
                name: name.to_owned(),
            })?;
        let allocated = state
            .allocations
            .values()
            .filter(|a| a.pool == name)
            .count() as u64;
        let quarantined = state
            .slots
            .get(name)
            .map_or(0, |s| s.quarantine.len() as u64);
        Ok((pool, allocated, quarantined))
    }

    /// Every pool's name.
    pub async fn pool_names(&self) -> Vec<String> {
        self.state.lock().await.pools.keys().cloned().collect()
    }

    /// Deletes an empty pool.
    pub async fn delete_pool(&self, name: &str) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let pool = state
            .pools
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                what: "pool",
                name: name.to_owned(),
            })?;
        let in_use = state
            .allocations
            .values()
            .filter(|a| a.pool == name)
            .count();
        if in_use > 0 {
            return Err(StoreError::Precondition(format!(
                "name: pool {name:?} still has {in_use} prefixes allocated"
            )));
        }
        let quarantined: Vec<u64> = state
            .slots
            .get(name)
            .map(|s| s.quarantine.keys().copied().collect())
            .unwrap_or_default();
        let keys: Vec<Vec<u8>> = quarantined
            .iter()
            .map(|slot| encode(&(name, *slot)))
            .collect::<Result<_, _>>()?;
        let event = self.commit(&mut state, Change::PoolDeleted(pool), |t| {
            t.pools.remove(name.as_bytes())?;
            for key in &keys {
                t.quarantine.remove(key.as_slice())?;
            }
            Ok(())
        })?;
        state.pools.remove(name);
        state.slots.remove(name);
        drop(state);
        self.durable(event.revision).await?;
        Ok(())
    }

    /// Creates a tenant.
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        check_name("name", name)?;
        let mut state = self.state.lock().await;
        if state.tenants.contains_key(name) {
            return Err(StoreError::Exists {
                what: "tenant",
                name: name.to_owned(),
            });
        }
        let tenant = Tenant {
            name: name.to_owned(),
            created_at_unix_ms: unix_ms(SystemTime::now()),
        };
        let record = encode(&tenant)?;
        let event = self.commit(&mut state, Change::TenantCreated(tenant.clone()), |t| {
            t.tenants.insert(tenant.name.as_bytes(), record.clone())?;
            Ok(())
        })?;
        state.tenants.insert(tenant.name.clone(), tenant.clone());
        drop(state);
        self.durable(event.revision).await?;
        Ok(tenant)
    }

    /// A tenant and its prefixes.
    pub async fn tenant(&self, name: &str) -> Result<(Tenant, Vec<Ipv6Net>), StoreError> {
        let state = self.state.lock().await;
        let tenant = state
            .tenants
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                what: "tenant",
                name: name.to_owned(),
            })?;
        let prefixes = state
            .allocations
            .values()
            .filter(|a| a.tenant == name)
            .map(|a| a.prefix)
            .collect();
        Ok((tenant, prefixes))
    }

    /// Every tenant's name.
    pub async fn tenant_names(&self) -> Vec<String> {
        self.state.lock().await.tenants.keys().cloned().collect()
    }

    /// Deletes a tenant; with `cascade` its prefixes are released first.
    pub async fn delete_tenant(
        &self,
        name: &str,
        cascade: bool,
    ) -> Result<Vec<Ipv6Net>, StoreError> {
        let (tenant, prefixes) = self.tenant(name).await?;
        if !prefixes.is_empty() && !cascade {
            return Err(StoreError::Precondition(format!(
                "name: tenant {name:?} still has {} prefixes (release them or use cascade)",
                prefixes.len()
            )));
        }
        for prefix in &prefixes {
            self.release(&prefix.to_string()).await?;
        }
        let mut state = self.state.lock().await;
        if state.mobile_routers.contains_key(name) || state.placements.contains_key(name) {
            return Err(StoreError::Precondition(format!(
                "name: tenant {name:?} still has a mobile router or a placement"
            )));
        }
        if state.allocations.values().any(|a| a.tenant == name) {
            return Err(StoreError::Precondition(format!(
                "name: tenant {name:?} was given a prefix meanwhile"
            )));
        }
        let event = self.commit(&mut state, Change::TenantDeleted(tenant), |t| {
            t.tenants.remove(name.as_bytes())?;
            Ok(())
        })?;
        state.tenants.remove(name);
        drop(state);
        self.durable(event.revision).await?;
        Ok(prefixes)
    }

    /// Allocates a prefix for a tenant from a pool: `length` 0 for the
    /// pool's tenant length, or a shorter (larger, aligned) block.
    pub async fn allocate(
        &self,
        tenant: &str,
        pool: &str,
        length: u32,
    ) -> Result<Allocation, StoreError> {
        let mut state = self.state.lock().await;
        if !state.tenants.contains_key(tenant) {
            return Err(StoreError::NotFound {
                what: "tenant",
                name: tenant.to_owned(),
            });
        }
        let pool_record = state
            .pools
            .get(pool)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                what: "pool",
                name: pool.to_owned(),
            })?;
        let length = if length == 0 {
            pool_record.tenant_length
        } else {
            u8::try_from(length)
                .ok()
                .filter(|l| {
                    *l <= pool_record.tenant_length && *l >= pool_record.prefix.prefix_len()
                })
                .ok_or_else(|| StoreError::Invalid {
                    field: "length",
                    reason: format!(
                        "{length} must be between /{} and the pool's tenant length /{}",
                        pool_record.prefix.prefix_len(),
                        pool_record.tenant_length
                    ),
                })?
        };
        let now = unix_ms(SystemTime::now());
        let block = 1u64 << (pool_record.tenant_length - length);
        let capacity = pool_record.capacity();
        let slots = state.slots.entry(pool.to_owned()).or_default();
        // Quarantine that has run out frees its slots.
        let expired: Vec<u64> = slots
            .quarantine
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(slot, _)| *slot)
            .collect();
        let mut first = None;
        let start = (slots.cursor / block) * block;
        let blocks = capacity / block;
        for step in 0..blocks {
            let candidate = (start + step * block) % capacity;
            let busy = slots
                .used
                .range(candidate..candidate + block)
                .next()
                .is_some()
                || slots
                    .quarantine
                    .range(candidate..candidate + block)
                    .any(|(_, until)| *until > now);
            if !busy {
                first = Some(candidate);
                break;
            }
        }
        let Some(first) = first else {
            return Err(StoreError::Exhausted {
                pool: pool.to_owned(),
                length,
            });
        };
        let allocation = Allocation {
            prefix: pool_record.slot_prefix(first, length),
            tenant: tenant.to_owned(),
            pool: pool.to_owned(),
            allocated_at_unix_ms: now,
            revision: state.revision + 1,
        };
        let record = encode(&allocation)?;
        let key = encode(&allocation.prefix)?;
        let released: Vec<Vec<u8>> = expired
            .iter()
            .chain((first..first + block).collect::<Vec<_>>().iter())
            .map(|slot| encode(&(pool, *slot)))
            .collect::<Result<_, _>>()?;
        let event = self.commit(
            &mut state,
            Change::PrefixAllocated(allocation.clone()),
            |t| {
                t.allocations.insert(key.as_slice(), record.clone())?;
                for slot_key in &released {
                    t.quarantine.remove(slot_key.as_slice())?;
                }
                Ok(())
            },
        )?;
        let slots = state.slots.entry(pool.to_owned()).or_default();
        for slot in expired {
            slots.quarantine.remove(&slot);
        }
        for slot in first..first + block {
            slots.quarantine.remove(&slot);
            slots.used.insert(slot);
        }
        slots.cursor = (first + block) % capacity;
        state
            .allocations
            .insert(allocation.prefix, allocation.clone());
        drop(state);
        self.durable(event.revision).await?;
        Ok(allocation)
    }

    /// Releases a prefix into quarantine.
    pub async fn release(&self, prefix: &str) -> Result<Allocation, StoreError> {
        let parsed: Ipv6Net = prefix.parse().map_err(|_| StoreError::Invalid {
            field: "prefix",
            reason: format!("{prefix:?} is not an IPv6 prefix"),
        })?;
        let mut state = self.state.lock().await;
        let allocation =
            state
                .allocations
                .get(&parsed)
                .cloned()
                .ok_or_else(|| StoreError::NotFound {
                    what: "allocation",
                    name: parsed.to_string(),
                })?;
        let pool =
            state
                .pools
                .get(&allocation.pool)
                .cloned()
                .ok_or_else(|| StoreError::NotFound {
                    what: "pool",
                    name: allocation.pool.clone(),
                })?;
        let until = unix_ms(SystemTime::now() + self.quarantine_time);
        let first = pool.slot_of(&allocation.prefix);
        let block = 1u64 << (pool.tenant_length - allocation.prefix.prefix_len());
        let key = encode(&allocation.prefix)?;
        let held: Vec<(Vec<u8>, Vec<u8>)> = (first..first + block)
            .map(|slot| Ok((encode(&(pool.name.as_str(), slot))?, encode(&until)?)))
            .collect::<Result<_, StoreError>>()?;
        let change = Change::PrefixReleased {
            allocation: allocation.clone(),
            quarantined_until_unix_ms: until,
        };
        let event = self.commit(&mut state, change, |t| {
            t.allocations.remove(key.as_slice())?;
            for (slot_key, until) in &held {
                t.quarantine.insert(slot_key.as_slice(), until.clone())?;
            }
            Ok(())
        })?;
        state.allocations.remove(&parsed);
        let slots = state.slots.entry(pool.name.clone()).or_default();
        for slot in first..first + block {
            slots.used.remove(&slot);
            slots.quarantine.insert(slot, until);
        }
        drop(state);
        self.durable(event.revision).await?;
        Ok(allocation)
    }

    /// Allocations, of one tenant or all.
    pub async fn allocations(&self, tenant: Option<&str>) -> Result<Vec<Allocation>, StoreError> {
        let state = self.state.lock().await;
        if let Some(tenant) = tenant {
            if !state.tenants.contains_key(tenant) {
                return Err(StoreError::NotFound {
                    what: "tenant",
                    name: tenant.to_owned(),
                });
            }
        }
        Ok(state
            .allocations
            .values()
            .filter(|a| tenant.is_none_or(|t| a.tenant == t))
            .cloned()
            .collect())
    }

    /// Events after `revision`, from the history, and a receiver for later
    /// ones that starts exactly after the last returned.
    pub async fn events_after(
        &self,
        revision: u64,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>), StoreError> {
        // Under the announcement lock: every event up to `flushed` has been
        // announced (before this subscription), every later one will be
        // (after it). The history is read up to `flushed` only: an event
        // applied but not yet on disk is not told to anyone.
        let (receiver, flushed) = {
            let _announcing = self
                .log
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                self.changes.subscribe(),
                self.log.flushed.load(Ordering::Acquire),
            )
        };
        let mut events = Vec::new();
        if flushed > revision {
            self.disk.for_each(
                "events",
                Some(&(revision + 1).to_be_bytes()),
                Some(&flushed.to_be_bytes()),
                |_, value| {
                    events.push(decode(value)?);
                    Ok::<_, StoreError>(())
                },
            )?;
        }
        Ok((events, receiver))
    }

    /// Registers (or updates) a home agent.
    pub async fn register_home_agent(
        &self,
        home_agent: HomeAgent,
    ) -> Result<HomeAgent, StoreError> {
        check_name("home_agent.name", &home_agent.name)?;
        // Empty: the home agent serves the native transport only.
        if !home_agent.udp_endpoint.is_empty()
            && home_agent
                .udp_endpoint
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(StoreError::Invalid {
                field: "home_agent.udp_endpoint",
                reason: format!(
                    "{:?} is not an address and port like [2001:db8:1::1]:4191",
                    home_agent.udp_endpoint
                ),
            });
        }
        if !home_agent.home_prefix.contains(&home_agent.address) {
            return Err(StoreError::Invalid {
                field: "home_agent.address",
                reason: format!(
                    "{} is outside the home prefix {}",
                    home_agent.address, home_agent.home_prefix
                ),
            });
        }
        if home_agent.home_prefix.prefix_len() > 120 {
            return Err(StoreError::Invalid {
                field: "home_agent.home_prefix",
                reason: "too small for home addresses (at most /120)".into(),
            });
        }
        let mut state = self.state.lock().await;
        if let Some(other) = state.home_agents.values().find(|h| {
            h.name != home_agent.name
                && (h.home_prefix.contains(&home_agent.home_prefix.network())
                    || home_agent.home_prefix.contains(&h.home_prefix.network()))
        }) {
            return Err(StoreError::Precondition(format!(
                "home_agent.home_prefix: overlaps that of home agent {:?}",
                other.name
            )));
        }
        let record = encode(&home_agent)?;
        let event = self.commit(
            &mut state,
            Change::HomeAgentRegistered(home_agent.clone()),
            |t| {
                t.home_agents
                    .insert(home_agent.name.as_bytes(), record.clone())?;
                Ok(())
            },
        )?;
        state
            .home_agents
            .insert(home_agent.name.clone(), home_agent.clone());
        drop(state);
        self.durable(event.revision).await?;
        Ok(home_agent)
    }

    /// Every home agent.
    pub async fn home_agents(&self) -> Vec<HomeAgent> {
        self.state
            .lock()
            .await
            .home_agents
            .values()
            .cloned()
            .collect()
    }

    /// Registers a hypervisor (registering again is fine).
    pub async fn register_hypervisor(&self, name: &str) -> Result<Hypervisor, StoreError> {
        check_name("name", name)?;
        let mut state = self.state.lock().await;
        if let Some(existing) = state.hypervisors.get(name).cloned() {
            // Registered by a change that may still wait for its flush: the
            // answer waits too.
            let revision = state.revision;
            drop(state);
            self.durable(revision).await?;
            return Ok(existing);
        }
        let hypervisor = Hypervisor {
            name: name.to_owned(),
        };
        let record = encode(&hypervisor)?;
        let event = self.commit(
            &mut state,
            Change::HypervisorRegistered(hypervisor.clone()),
            |t| {
                t.hypervisors.insert(name.as_bytes(), record.clone())?;
                Ok(())
            },
        )?;
        state
            .hypervisors
            .insert(name.to_owned(), hypervisor.clone());
        drop(state);
        self.durable(event.revision).await?;
        Ok(hypervisor)
    }

    /// Every hypervisor.
    pub async fn hypervisors(&self) -> Vec<Hypervisor> {
        self.state
            .lock()
            .await
            .hypervisors
            .values()
            .cloned()
            .collect()
    }

    /// Creates a tenant's mobile-router identity: the next free home address
    /// of the home agent's home prefix (from ::100), the next SPI, a fresh
    /// key.
    pub async fn create_mobile_router(
        &self,
        tenant: &str,
        home_agent: &str,
        algorithm: &str,
        explicit_mode: bool,
    ) -> Result<MobileRouter, StoreError> {
        let algorithm = match algorithm {
            "" | "hmac-sha256" => "hmac-sha256",
            "hmac-sha1-96" => "hmac-sha1-96",
            other => {
                return Err(StoreError::Invalid {
                    field: "algorithm",
                    reason: format!("{other:?}: hmac-sha256 or hmac-sha1-96"),
                })
            }
        };
        let mut state = self.state.lock().await;
        if !state.tenants.contains_key(tenant) {
            return Err(StoreError::NotFound {
                what: "tenant",
                name: tenant.to_owned(),
            });
        }
        if state.mobile_routers.contains_key(tenant) {
            return Err(StoreError::Exists {
                what: "mobile router of tenant",
                name: tenant.to_owned(),
            });
        }
        let ha =
            state
                .home_agents
                .get(home_agent)
                .cloned()
                .ok_or_else(|| StoreError::NotFound {
                    what: "home agent",
                    name: home_agent.to_owned(),
                })?;
        let used: BTreeSet<Ipv6Addr> = state
            .mobile_routers
            .values()
            .map(|m| m.home_address)
            .collect();
        let base = u128::from(ha.home_prefix.network());
        let size = 1u128 << (128 - u32::from(ha.home_prefix.prefix_len()));
        let home_address = (0x100..size.saturating_sub(1))
            .map(|offset| Ipv6Addr::from(base + offset))
            .find(|a| !used.contains(a) && *a != ha.address)
            .ok_or_else(|| StoreError::Exhausted {
                pool: format!("home prefix of {home_agent}"),
                length: 128,
            })?;
        let spi = state
            .mobile_routers
            .values()
            .map(|m| m.spi)
            .max()
            .unwrap_or(0x0fff)
            .saturating_add(1)
            .max(0x1000);
        let mobile_router = MobileRouter {
            tenant: tenant.to_owned(),
            home_agent: home_agent.to_owned(),
            home_address,
            spi,
            algorithm: algorithm.to_owned(),
            key: fresh_key()?,
            explicit_mode,
        };
        let record = encode(&mobile_router)?;
        let event = self.commit(
            &mut state,
            Change::MobileRouterCreated(mobile_router.redacted()),
            |t| {
                t.mobile_routers.insert(tenant.as_bytes(), record.clone())?;
                Ok(())
            },
        )?;
        state
            .mobile_routers
            .insert(tenant.to_owned(), mobile_router.clone());
        drop(state);
        self.durable(event.revision).await?;
        Ok(mobile_router)
    }

    /// A tenant's mobile router, key included (for the watch streams) or
    /// redacted.
    pub async fn mobile_router(
        &self,
        tenant: &str,
        with_key: bool,
    ) -> Result<MobileRouter, StoreError> {
        let state = self.state.lock().await;
        let mr = state
            .mobile_routers
            .get(tenant)
            .ok_or_else(|| StoreError::NotFound {
                what: "mobile router of tenant",
                name: tenant.to_owned(),
            })?;
        Ok(if with_key { mr.clone() } else { mr.redacted() })
    }

    /// Gives a tenant's mobile router a new key.
    pub async fn rotate_key(&self, tenant: &str) -> Result<MobileRouter, StoreError> {
        let mut state = self.state.lock().await;
        let mut mr =
            state
                .mobile_routers
                .get(tenant)
                .cloned()
                .ok_or_else(|| StoreError::NotFound {
                    what: "mobile router of tenant",
                    name: tenant.to_owned(),
                })?;
        mr.key = fresh_key()?;
        let record = encode(&mr)?;
        let event = self.commit(&mut state, Change::KeyRotated(mr.redacted()), |t| {
            t.mobile_routers.insert(tenant.as_bytes(), record.clone())?;
            Ok(())
        })?;
        state.mobile_routers.insert(tenant.to_owned(), mr.clone());
        drop(state);
        self.durable(event.revision).await?;
        Ok(mr)
    }

    /// Deletes a tenant's mobile router (not while it is placed).
    pub async fn delete_mobile_router(&self, tenant: &str) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let mr = state
            .mobile_routers
            .get(tenant)
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                what: "mobile router of tenant",
                name: tenant.to_owned(),
            })?;
        if state.placements.contains_key(tenant) {
            return Err(StoreError::Precondition(format!(
                "tenant: {tenant:?} is placed; unplace it first"
            )));
        }
        let event = self.commit(
            &mut state,
            Change::MobileRouterDeleted(mr.redacted()),
            |t| {
                t.mobile_routers.remove(tenant.as_bytes())?;
                Ok(())
            },
        )?;
        state.mobile_routers.remove(tenant);
        drop(state);
        self.durable(event.revision).await?;
        Ok(())
    }

    /// Places a tenant on a hypervisor (moving it if it was elsewhere).
    pub async fn place(
        &self,
        tenant: &str,
        hypervisor: &str,
        reason: &str,
    ) -> Result<Placement, StoreError> {
        check_reason("reason", reason)?;
        let mut state = self.state.lock().await;
        if !state.tenants.contains_key(tenant) {
            return Err(StoreError::NotFound {
                what: "tenant",
                name: tenant.to_owned(),
            });
        }
        if !state.hypervisors.contains_key(hypervisor) {
            return Err(StoreError::NotFound {
                what: "hypervisor",
                name: hypervisor.to_owned(),
            });
        }
        let from = state.placements.get(tenant).map(|p| p.hypervisor.clone());
        if from.as_deref() == Some(hypervisor) {
            return Err(StoreError::Precondition(format!(
                "hypervisor: {tenant:?} is already on {hypervisor:?}"
            )));
        }
        let placement = Placement {
            tenant: tenant.to_owned(),
            hypervisor: hypervisor.to_owned(),
            since_unix_ms: unix_ms(SystemTime::now()),
            reason: reason.to_owned(),
        };
        let record = encode(&placement)?;
        let event = self.commit(
            &mut state,
            Change::TenantPlaced {
                placement: placement.clone(),
                from,
            },
            |t| {
                t.placements.insert(tenant.as_bytes(), record.clone())?;
                Ok(())
            },
        )?;
        state
            .placements
            .insert(tenant.to_owned(), placement.clone());
        drop(state);
        self.durable(event.revision).await?;
        Ok(placement)
    }

    /// Takes a tenant off its hypervisor.
    pub async fn unplace(&self, tenant: &str, reason: &str) -> Result<(), StoreError> {
        check_reason("reason", reason)?;
        let mut state = self.state.lock().await;
        let placement =
            state
                .placements
                .get(tenant)
                .cloned()
                .ok_or_else(|| StoreError::NotFound {
                    what: "placement of tenant",
                    name: tenant.to_owned(),
                })?;
        let event = self.commit(
            &mut state,
            Change::TenantUnplaced {
                placement,
                reason: reason.to_owned(),
            },
            |t| {
                t.placements.remove(tenant.as_bytes())?;
                Ok(())
            },
        )?;
        state.placements.remove(tenant);
        drop(state);
        self.durable(event.revision).await?;
        Ok(())
    }

    /// Every placement.
    pub async fn placements(&self) -> Vec<Placement> {
        self.state
            .lock()
            .await
            .placements
            .values()
            .cloned()
            .collect()
    }

    /// The current view of one tenant for the watch streams: its mobile
    /// router (with key), its prefixes, its home agent and its placement.
    pub async fn tenant_view(&self, tenant: &str) -> TenantView {
        let state = self.state.lock().await;
        let mobile_router = state.mobile_routers.get(tenant).cloned();
        TenantView {
            home_agent: mobile_router
                .as_ref()
                .and_then(|m| state.home_agents.get(&m.home_agent).cloned()),
            prefixes: state
                .allocations
                .values()
                .filter(|a| a.tenant == tenant)
                .map(|a| a.prefix)
                .collect(),
            placement: state.placements.get(tenant).cloned(),
            last_sequence: mobile_router
                .as_ref()
                .and_then(|m| state.last_sequence.get(&m.home_address).copied()),
            mobile_router,
        }
    }

    /// Tenants whose mobile router registers with `home_agent`, and tenants
    /// placed on `hypervisor`, as of now.
    pub async fn tenants_of(
        &self,
        home_agent: Option<&str>,
        hypervisor: Option<&str>,
    ) -> Vec<String> {
        let state = self.state.lock().await;
        state
            .tenants
            .keys()
            .filter(|t| {
                home_agent.is_none_or(|h| {
                    state
                        .mobile_routers
                        .get(*t)
                        .is_some_and(|m| m.home_agent == h)
                }) && hypervisor
                    .is_none_or(|v| state.placements.get(*t).is_some_and(|p| p.hypervisor == v))
            })
            .cloned()
            .collect()
    }

    /// Records a binding change a home agent reported (history only).
    pub async fn report_binding(&self, change: Change) -> Result<u64, StoreError> {
        let Change::BindingReported {
            home_agent,
            home_address,
            sequence,
            ..
        } = &change
        else {
            return Err(StoreError::Invalid {
                field: "change",
                reason: "not a binding report".into(),
            });
        };
        let (home_address, sequence) = (*home_address, *sequence);
        check_name("home_agent", home_agent)?;
        if let Change::BindingReported {
            prefixes, reason, ..
        } = &change
        {
            check_reason("reason", reason)?;
            if prefixes.len() > MAX_REPORTED_PREFIXES {
                return Err(StoreError::Invalid {
                    field: "prefixes",
                    reason: format!(
                        "{} prefixes; at most {MAX_REPORTED_PREFIXES}",
                        prefixes.len()
                    ),
                });
            }
        }
        let mut state = self.state.lock().await;
        if !state.home_agents.contains_key(home_agent) {
            return Err(StoreError::NotFound {
                what: "home agent",
                name: home_agent.clone(),
            });
        }
        let record = sequence.map(|s| encode(&s)).transpose()?;
        let event = self.commit(&mut state, change, |t| {
            if let Some(record) = &record {
                t.sequences.insert(&home_address.octets(), record.clone())?;
            }
            Ok(())
        })?;
        if let Some(sequence) = sequence {
            state.last_sequence.insert(home_address, sequence);
        }
        drop(state);
        self.durable(event.revision).await?;
        Ok(event.revision)
    }

    /// The newest revision on disk.
    pub async fn revision(&self) -> u64 {
        self.log.flushed.load(Ordering::Acquire)
    }
}

/// A tenant as the watch streams see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantView {
    /// Its mobile router, key included.
    pub mobile_router: Option<MobileRouter>,
    /// Its home agent.
    pub home_agent: Option<HomeAgent>,
    /// Its prefixes.
    pub prefixes: Vec<Ipv6Net>,
    /// Its placement.
    pub placement: Option<Placement>,
    /// The last sequence number its home agent reported accepting.
    pub last_sequence: Option<u16>,
}

/// 32 random octets from the kernel, hex.
fn fresh_key() -> Result<String, StoreError> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| StoreError::Storage(format!("random key: {e}")))?;
    Ok(key.iter().map(|b| format!("{b:02x}")).collect())
}

/// The tables a change writes; each write is queued for the commit.
#[derive(Debug)]
pub struct Trees<'a> {
    pools: Table<'a>,
    tenants: Table<'a>,
    allocations: Table<'a>,
    quarantine: Table<'a>,
    home_agents: Table<'a>,
    hypervisors: Table<'a>,
    mobile_routers: Table<'a>,
    placements: Table<'a>,
    sequences: Table<'a>,
}

/// One table of a change.
#[derive(Debug)]
struct Table<'a> {
    name: &'static str,
    queued: &'a std::cell::RefCell<Vec<Write>>,
}

impl Table<'_> {
    fn insert(&self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.queued.borrow_mut().push(Write::Put {
            table: self.name,
            key: key.to_vec(),
            value,
        });
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.queued.borrow_mut().push(Write::Delete {
            table: self.name,
            key: key.to_vec(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::from_secs(3600)).unwrap();
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
        let store = Store::open(dir.path(), Duration::ZERO).unwrap();
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
            let store = Store::open(dir.path(), Duration::from_secs(60)).unwrap();
            store
                .create_pool("p", "2001:db8:100::/40", 56)
                .await
                .unwrap();
            store.create_tenant("acme").await.unwrap();
            store.allocate("acme", "p", 0).await.unwrap();
            let released = store.allocate("acme", "p", 0).await.unwrap().prefix;
            store.release(&released.to_string()).await.unwrap();
        }
        let store = Store::open(dir.path(), Duration::from_secs(60)).unwrap();
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
            let store = Store::open(dir.path(), Duration::ZERO).unwrap();
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
        let store = Store::open(dir.path(), Duration::ZERO).unwrap();
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
