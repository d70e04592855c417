//! Memory as a function of the records: the state in memory is what the
//! tables hold, record by record. Loading applies every record; a replica
//! following another (etcd) applies each record the other wrote, and one
//! whose own changes were refused puts back the records they touched. One
//! function, so the three cannot disagree.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::model::Family;
use super::{
    decode, Allocation, Event, HomeAgentRecord, Hypervisor, Ipv4Mapping, MobileRouter, Placement,
    Pool, State, StoreError, Tenant, REVISION_KEY, TABLES,
};

/// The tables whose records make the state, in the order a load applies
/// them: pools before the allocations and quarantine that fill their slots.
/// The event history is not state (read on demand, for watchers).
pub(super) const STATE_TABLES: &[&str] = &[
    "pools",
    "tenants",
    "allocations",
    "mappings",
    "quarantine",
    "meta",
    "home_agents",
    "hypervisors",
    "mobile_routers",
    "placements",
    "sequences",
    "credentials",
];

/// The name of a table as the store spells it (`Write` holds `'static`
/// names), or `None` for a name that is no table of ours.
pub(super) fn table_named(name: &str) -> Option<&'static str> {
    TABLES.iter().copied().find(|table| *table == name)
}

impl State {
    /// No pools, no tenants, revision 0.
    pub(super) fn empty() -> State {
        State {
            pools: BTreeMap::new(),
            tenants: BTreeMap::new(),
            allocations: Default::default(),
            mappings: Default::default(),
            slots: HashMap::new(),
            home_agents: BTreeMap::new(),
            hypervisors: BTreeMap::new(),
            mobile_routers: BTreeMap::new(),
            placements: BTreeMap::new(),
            credentials: Default::default(),
            last_sequence: HashMap::new(),
            requests: super::requests::SeenRequests::default(),
            revision: 0,
        }
    }

    /// The state these records make (a snapshot, in [`STATE_TABLES`]
    /// order).
    pub(super) fn loaded(
        records: Vec<(&'static str, Vec<u8>, Vec<u8>)>,
    ) -> Result<State, StoreError> {
        let mut state = State::empty();
        for (table, key, value) in records {
            state.apply(table, &key, Some(&value))?;
        }
        Ok(state)
    }

    /// Applies one record: `Some(value)` written, `None` deleted. An event
    /// record is history, not state: it is decoded and returned (for the
    /// caller to announce), nothing else changes.
    pub(super) fn apply(
        &mut self,
        table: &str,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Option<Event>, StoreError> {
        let name = || String::from_utf8_lossy(key).into_owned();
        match (table, value) {
            ("events", Some(value)) => {
                let event: Event = decode(value)?;
                self.requests.record(&event);
                return Ok(Some(event));
            }
            ("events", None) => {
                // A change put back, or trimmed: its request id goes too.
                if let Ok(revision) = <[u8; 8]>::try_from(key) {
                    self.requests.forget(u64::from_be_bytes(revision));
                }
            }
            ("meta", Some(value)) if key == REVISION_KEY => self.revision = decode(value)?,
            ("meta", _) => {}
            ("pools", Some(value)) => {
                let pool: Pool = decode(value)?;
                self.slots.entry(pool.name.clone()).or_default();
                self.pools.insert(pool.name.clone(), pool);
            }
            ("pools", None) => {
                self.pools.remove(&name());
                self.slots.remove(&name());
            }
            ("tenants", Some(value)) => {
                let tenant: Tenant = decode(value)?;
                self.tenants.insert(tenant.name.clone(), tenant);
            }
            ("tenants", None) => {
                self.tenants.remove(&name());
            }
            ("allocations", Some(value)) => {
                let allocation: Allocation = decode(value)?;
                if let Some((range, capacity)) =
                    self.slots_of(&allocation.pool, IpNet::V6(allocation.prefix))
                {
                    if let Some(pool_slots) = self.slots.get_mut(&allocation.pool) {
                        pool_slots.load_allocation(range, allocation.revision, capacity);
                    }
                }
                self.allocations.insert(allocation);
            }
            ("allocations", None) => {
                let prefix: Ipv6Net = decode(key)?;
                if let Some(allocation) = self.allocations.remove(&prefix) {
                    if let Some((range, _)) =
                        self.slots_of(&allocation.pool, IpNet::V6(allocation.prefix))
                    {
                        if let Some(pool_slots) = self.slots.get_mut(&allocation.pool) {
                            pool_slots.forget_allocation(range);
                        }
                    }
                }
            }
            ("mappings", Some(value)) => {
                let mapping: Ipv4Mapping = decode(value)?;
                if let Some((range, capacity)) =
                    self.slots_of(&mapping.pool, IpNet::V4(mapping.ipv4))
                {
                    if let Some(pool_slots) = self.slots.get_mut(&mapping.pool) {
                        pool_slots.load_allocation(range, mapping.revision, capacity);
                    }
                }
                self.mappings.insert(mapping);
            }
            ("mappings", None) => {
                let ipv4: Ipv4Net = decode(key)?;
                if let Some(mapping) = self.mappings.remove(&ipv4) {
                    if let Some((range, _)) = self.slots_of(&mapping.pool, IpNet::V4(mapping.ipv4))
                    {
                        if let Some(pool_slots) = self.slots.get_mut(&mapping.pool) {
                            pool_slots.forget_allocation(range);
                        }
                    }
                }
            }
            ("quarantine", value) => {
                let (pool, slot): (String, u64) = decode(key)?;
                let until: Option<i64> = value.map(decode).transpose()?;
                if let Some(slots) = self.slots.get_mut(&pool) {
                    match until {
                        Some(until) => slots.load_quarantine(slot, until),
                        None => slots.forget_quarantine(slot),
                    }
                }
            }
            ("home_agents", Some(value)) => {
                let home_agent: HomeAgentRecord = decode(value)?;
                self.home_agents.insert(home_agent.name.clone(), home_agent);
            }
            ("home_agents", None) => {
                self.home_agents.remove(&name());
            }
            ("hypervisors", Some(value)) => {
                let hypervisor: Hypervisor = decode(value)?;
                self.hypervisors.insert(hypervisor.name.clone(), hypervisor);
            }
            ("hypervisors", None) => {
                self.hypervisors.remove(&name());
            }
            ("mobile_routers", Some(value)) => {
                let mobile_router: MobileRouter = decode(value)?;
                self.mobile_routers
                    .insert(mobile_router.tenant.clone(), mobile_router);
            }
            ("mobile_routers", None) => {
                self.mobile_routers.remove(&name());
            }
            ("placements", Some(value)) => {
                let placement: Placement = decode(value)?;
                self.placements.insert(placement.tenant.clone(), placement);
            }
            ("placements", None) => {
                self.placements.remove(&name());
            }
            ("credentials", Some(value)) => {
                let credential: super::credentials::Credential = decode(value)?;
                self.credentials.insert(credential);
            }
            ("credentials", None) => {
                self.credentials.remove(&name());
            }
            ("sequences", value) => {
                let octets = <[u8; 16]>::try_from(key).map_err(|_| {
                    StoreError::Storage("corrupt record: a sequence key is not an address".into())
                })?;
                let address = Ipv6Addr::from(octets);
                match value.map(decode::<u16>).transpose()? {
                    Some(sequence) => self.last_sequence.insert(address, sequence),
                    None => self.last_sequence.remove(&address),
                };
            }
            (other, _) => {
                return Err(StoreError::Storage(format!(
                    "corrupt record: no table {other:?}"
                )))
            }
        }
        Ok(None)
    }

    /// The slots an allocation covers in its pool, and the pool's capacity
    /// (`None` if the pool is not known).
    fn slots_of(&self, pool: &str, block: IpNet) -> Option<(std::ops::Range<u64>, u64)> {
        let pool = self.pools.get(pool)?;
        if pool.tenant_length < block.prefix_len() || pool.family() != family_of(&block) {
            return None;
        }
        Some((pool.slots(&block), pool.capacity()))
    }
}

/// The family of a block.
fn family_of(block: &IpNet) -> Family {
    match block {
        IpNet::V4(_) => Family::Ipv4,
        IpNet::V6(_) => Family::Ipv6,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::Store;

    /// A state changed by the store's own operations, and one rebuilt by
    /// applying the records those operations wrote, agree.
    #[tokio::test]
    async fn records_rebuild_what_the_operations_built() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Duration::from_secs(60))
            .await
            .unwrap();
        store
            .create_pool("p", "2001:db8:100::/48", 56)
            .await
            .unwrap();
        store.create_tenant("acme").await.unwrap();
        let first = store.allocate("acme", "p", 0).await.unwrap().prefix;
        store.allocate("acme", "p", 52).await.unwrap();
        store.release(&first.to_string()).await.unwrap();
        store.create_pool("v4", "192.0.2.0/24", 0).await.unwrap();
        let mapped = store.allocations(Some("acme")).await.unwrap()[0].prefix;
        let wanted = crate::store::Ipv4Wanted::Any { length: 0 };
        for host in 1..=3u128 {
            let ipv6 = std::net::Ipv6Addr::from(u128::from(mapped.network()) + host);
            store
                .allocate_ipv4("acme", "v4", wanted, &ipv6.to_string())
                .await
                .unwrap();
        }
        store.release_ipv4("192.0.2.1").await.unwrap();
        store.register_hypervisor("hv1").await.unwrap();
        store
            .place("acme", "hv1", "test", crate::store::Delivery::Now)
            .await
            .unwrap();
        let mut rebuilt = State::empty();
        for table in STATE_TABLES {
            for (key, value) in store.backend.scan(table, None, None).await.unwrap() {
                rebuilt.apply(table, &key, Some(&value)).unwrap();
            }
        }
        let state = store.state.lock().await;
        assert_eq!(rebuilt.revision, state.revision);
        assert_eq!(rebuilt.pools, state.pools);
        assert_eq!(rebuilt.allocations, state.allocations);
        assert_eq!(rebuilt.placements, state.placements);
        assert_eq!(rebuilt.mappings, state.mappings);
        assert_eq!(
            rebuilt.slots["v4"].find_free(1, 256, 0).map(|f| f.slots),
            state.slots["v4"].find_free(1, 256, 0).map(|f| f.slots)
        );
        assert_eq!(rebuilt.slots["v4"].quarantined(), 1);
        let (built, loaded) = (&state.slots["p"], &rebuilt.slots["p"]);
        assert_eq!(built.quarantined(), loaded.quarantined());
        assert_eq!(
            built.find_free(16, 256, 0).map(|f| f.slots),
            loaded.find_free(16, 256, 0).map(|f| f.slots)
        );
        // Deleting the records takes it all away again.
        drop(state);
        for table in STATE_TABLES {
            for (key, _) in store.backend.scan(table, None, None).await.unwrap() {
                rebuilt.apply(table, &key, None).unwrap();
            }
        }
        assert!(rebuilt.pools.is_empty() && rebuilt.allocations.is_empty());
        assert_eq!(rebuilt.mappings, Default::default());
        assert!(rebuilt.tenants.is_empty() && rebuilt.placements.is_empty());
    }
}
