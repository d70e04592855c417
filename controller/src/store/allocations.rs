//! Prefix allocation: the pool's slots (`super::allocator`, rebuilt at
//! start) find a free block; the allocation and the quarantine it ends are
//! written in one change. Released prefixes are held in quarantine.

use std::time::SystemTime;

use ipnet::{IpNet, Ipv6Net};
use nemo_daemon::clock::unix_ms;

use super::blocks::{find_block, held_entries, unheld_keys, BlockUse};
use super::model::OrNotFound;
use super::{encode, Allocation, Store, StoreChange, StoreError};

/// A prefix in refusals.
const AS_PREFIX: BlockUse = BlockUse {
    field: "prefix",
    taken: "allocated",
};

/// What an allocation asks for.
#[derive(Debug, Clone, Copy)]
enum Wanted {
    /// Any free block of this length (0: the pool's tenant length).
    Any { length: u32 },
    /// This block.
    Exact(Ipv6Net),
}

impl Store {
    /// Allocates a prefix for a tenant from a pool: `length` 0 for the
    /// pool's tenant length, or a shorter (larger, aligned) block.
    pub async fn allocate(
        &self,
        tenant: &str,
        pool: &str,
        length: u32,
    ) -> Result<Allocation, StoreError> {
        self.allocate_block(tenant, pool, Wanted::Any { length })
            .await
    }

    /// Allocates this very prefix for a tenant (moving a tenant that has
    /// its addresses already): inside the pool, aligned, between the pool's
    /// length and its tenant length, free and out of quarantine.
    pub async fn allocate_exact(
        &self,
        tenant: &str,
        pool: &str,
        prefix: &str,
    ) -> Result<Allocation, StoreError> {
        let prefix: Ipv6Net = prefix.parse().map_err(|_| StoreError::Invalid {
            field: "prefix",
            reason: format!("{prefix:?} is not an IPv6 prefix"),
        })?;
        self.allocate_block(tenant, pool, Wanted::Exact(prefix))
            .await
    }

    async fn allocate_block(
        &self,
        tenant: &str,
        pool: &str,
        wanted: Wanted,
    ) -> Result<Allocation, StoreError> {
        self.retrying(|| self.allocate_block_once(tenant, pool, wanted))
            .await
    }

    async fn allocate_block_once(
        &self,
        tenant: &str,
        pool: &str,
        wanted: Wanted,
    ) -> Result<Allocation, StoreError> {
        let state = self.state.lock().await;
        state.tenants.get(tenant).or_not_found("tenant", tenant)?;
        // Every prefix of a tenant with a mobile router goes into its
        // binding, which holds at most so many (nemo-ha would refuse the
        // authorization, not cut it). A tenant without one (an address
        // plan, a load generator) is not bound by it.
        let held = state.allocations.of_tenant(tenant);
        if state.mobile_routers.contains_key(tenant) && held >= nemo::ha::MAX_PREFIXES as u64 {
            return Err(StoreError::Precondition(format!(
                "tenant: {tenant:?} holds {held} prefixes, the most its mobile router's binding carries"
            )));
        }
        let pool_record = state.pools.get(pool).cloned().or_not_found("pool", pool)?;
        let IpNet::V6(pool_prefix) = pool_record.prefix else {
            return Err(StoreError::Invalid {
                field: "pool",
                reason: format!(
                    "{pool:?} is an IPv4 pool: its addresses are mapped into a tenant's prefixes (AllocateIpv4), not allocated as prefixes"
                ),
            });
        };
        let length = match wanted {
            Wanted::Any { length: 0 } => pool_record.tenant_length,
            Wanted::Any { length } => u8::try_from(length)
                .ok()
                .filter(|l| *l <= pool_record.tenant_length && *l >= pool_prefix.prefix_len())
                .ok_or_else(|| StoreError::Invalid {
                    field: "length",
                    reason: format!(
                        "{length} must be between /{} and the pool's tenant length /{}",
                        pool_prefix.prefix_len(),
                        pool_record.tenant_length
                    ),
                })?,
            Wanted::Exact(prefix) => {
                if prefix != prefix.trunc() {
                    return Err(StoreError::Invalid {
                        field: "prefix",
                        reason: format!(
                            "{prefix} has host bits set (did you mean {}?)",
                            prefix.trunc()
                        ),
                    });
                }
                if !pool_prefix.contains(&prefix) || prefix.prefix_len() > pool_record.tenant_length
                {
                    return Err(StoreError::Invalid {
                        field: "prefix",
                        reason: format!(
                            "{prefix} is not a block of pool {pool:?} ({}, tenants /{})",
                            pool_record.prefix, pool_record.tenant_length
                        ),
                    });
                }
                prefix.prefix_len()
            }
        };
        let now = unix_ms(SystemTime::now());
        let exact = match wanted {
            Wanted::Any { .. } => None,
            Wanted::Exact(prefix) => Some(IpNet::V6(prefix)),
        };
        let found = find_block(&state, &pool_record, length, exact, now, AS_PREFIX)?;
        let IpNet::V6(prefix) = pool_record.slot_block(found.slots.start, length) else {
            return Err(StoreError::Storage(format!(
                "pool {pool:?} changed family under an allocation"
            )));
        };
        let allocation = Allocation {
            prefix,
            tenant: tenant.to_owned(),
            pool: pool.to_owned(),
            allocated_at_unix_ms: now,
            revision: state.revision + 1,
        };
        let record = encode(&allocation)?;
        let key = encode(&allocation.prefix)?;
        let released = unheld_keys(pool, &found)?;
        self.change(
            state,
            StoreChange::PrefixAllocated(allocation.clone()),
            |t| {
                t.allocations.insert(key.as_slice(), record.clone());
                for slot_key in &released {
                    t.quarantine.remove(slot_key.as_slice());
                }
                Ok(())
            },
            |state| {
                state.take_slots(&pool_record, &found);
                state.allocations.insert(allocation.clone());
            },
        )
        .await?;
        Ok(allocation)
    }

    /// Releases a prefix into quarantine.
    pub async fn release(&self, prefix: &str) -> Result<Allocation, StoreError> {
        self.retrying(|| self.release_once(prefix)).await
    }

    async fn release_once(&self, prefix: &str) -> Result<Allocation, StoreError> {
        let parsed: Ipv6Net = prefix.parse().map_err(|_| StoreError::Invalid {
            field: "prefix",
            reason: format!("{prefix:?} is not an IPv6 prefix"),
        })?;
        let state = self.state.lock().await;
        let allocation = state
            .allocations
            .get(&parsed)
            .cloned()
            .or_not_found("allocation", parsed)?;
        let pool = state
            .pools
            .get(&allocation.pool)
            .cloned()
            .or_not_found("pool", &allocation.pool)?;
        if let Some(mapped) = state.mappings.inside(parsed).next() {
            return Err(StoreError::Precondition(format!(
                "prefix: {parsed} holds the IPv6 side of IPv4 mapping {} (release it first)",
                mapped.ipv4
            )));
        }
        let until = unix_ms(SystemTime::now() + self.quarantine_time);
        let slots = pool.slots(&IpNet::V6(allocation.prefix));
        let key = encode(&allocation.prefix)?;
        let held = held_entries(&pool.name, slots.clone(), until)?;
        let change = StoreChange::PrefixReleased {
            allocation: allocation.clone(),
            quarantined_until_unix_ms: until,
        };
        self.change(
            state,
            change,
            |t| {
                t.allocations.remove(key.as_slice());
                for (slot_key, until) in &held {
                    t.quarantine.insert(slot_key.as_slice(), until.clone());
                }
                Ok(())
            },
            |state| {
                state.allocations.remove(&parsed);
                state.release_slots(&pool.name, slots, until);
            },
        )
        .await?;
        Ok(allocation)
    }

    /// Allocations, of one tenant or all.
    pub async fn allocations(&self, tenant: Option<&str>) -> Result<Vec<Allocation>, StoreError> {
        let state = self.state.lock().await;
        if let Some(tenant) = tenant {
            state.tenants.get(tenant).or_not_found("tenant", tenant)?;
        }
        Ok(match tenant {
            Some(tenant) => state
                .allocations
                .prefixes_of(tenant)
                .filter_map(|prefix| state.allocations.get(&prefix))
                .cloned()
                .collect(),
            None => state.allocations.values().cloned().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;
    use crate::store::HomeAgentRecord;

    /// A tenant with a mobile router holds at most as many prefixes as one
    /// binding carries (issue 32, item 6): the next allocation is refused,
    /// naming why; and a mobile router is not made for a tenant holding
    /// more.
    #[tokio::test]
    async fn a_tenant_holds_at_most_what_a_binding_carries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), std::time::Duration::from_secs(60))
            .await
            .unwrap();
        store
            .create_pool("p", "2001:db8:100::/48", 64)
            .await
            .unwrap();
        store.create_tenant("acme").await.unwrap();
        store
            .register_home_agent(HomeAgentRecord {
                name: "ha1".into(),
                address: "2001:db8:1::1".parse().unwrap(),
                home_prefix: "2001:db8:1::/64".parse().unwrap(),
                udp_endpoint: String::new(),
            })
            .await
            .unwrap();
        store
            .create_mobile_router("acme", "ha1", nemo::auth::Algorithm::default(), false)
            .await
            .unwrap();
        // A tenant without a mobile router is not bound.
        store.create_tenant("plan").await.unwrap();
        for _ in 0..=nemo::ha::MAX_PREFIXES {
            store.allocate("plan", "p", 0).await.unwrap();
        }
        for _ in 0..nemo::ha::MAX_PREFIXES {
            store.allocate("acme", "p", 0).await.unwrap();
        }
        let refused = store.allocate("acme", "p", 0).await.unwrap_err();
        assert!(
            matches!(&refused, StoreError::Precondition(why) if why.contains("binding")),
            "{refused:?}"
        );
        // Released, one more fits again.
        let first = store.allocations(Some("acme")).await.unwrap()[0].prefix;
        store.release(&first.to_string()).await.unwrap();
        store.allocate("acme", "p", 0).await.unwrap();
        let too_many = store
            .create_mobile_router("plan", "ha1", nemo::auth::Algorithm::default(), false)
            .await
            .unwrap_err();
        assert!(
            matches!(too_many, StoreError::Precondition(_)),
            "{too_many:?}"
        );
    }
}
