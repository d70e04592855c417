//! Prefix pools.

use ipnet::Ipv6Net;

use super::allocator::Slots;
use super::model::OrNotFound;
use super::{check_name, encode, Pool, Store, StoreChange, StoreError};

impl Store {
    /// Creates a pool.
    pub async fn create_pool(
        &self,
        name: &str,
        prefix: &str,
        tenant_length: u32,
    ) -> Result<Pool, StoreError> {
        self.retrying(|| self.create_pool_once(name, prefix, tenant_length))
            .await
    }

    async fn create_pool_once(
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
        let state = self.state.lock().await;
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
        self.change(
            state,
            StoreChange::PoolCreated(pool.clone()),
            |t| {
                t.pools.insert(pool.name.as_bytes(), record.clone());
                Ok(())
            },
            |state| {
                state.slots.insert(pool.name.clone(), Slots::default());
                state.pools.insert(pool.name.clone(), pool.clone());
            },
        )
        .await?;
        Ok(pool)
    }

    /// A pool and its usage: (pool, allocated prefixes, quarantined slots).
    pub async fn pool(&self, name: &str) -> Result<(Pool, u64, u64), StoreError> {
        let state = self.state.lock().await;
        let pool = state.pools.get(name).cloned().or_not_found("pool", name)?;
        let allocated = state.allocations.in_pool(name);
        let quarantined = state.slots.get(name).map_or(0, |s| s.quarantined() as u64);
        Ok((pool, allocated, quarantined))
    }

    /// Every pool's name.
    pub async fn pool_names(&self) -> Vec<String> {
        self.state.lock().await.pools.keys().cloned().collect()
    }

    /// Deletes an empty pool.
    pub async fn delete_pool(&self, name: &str) -> Result<(), StoreError> {
        self.retrying(|| self.delete_pool_once(name)).await
    }

    async fn delete_pool_once(&self, name: &str) -> Result<(), StoreError> {
        let state = self.state.lock().await;
        let pool = state.pools.get(name).cloned().or_not_found("pool", name)?;
        let in_use = state.allocations.in_pool(name);
        if in_use > 0 {
            return Err(StoreError::Precondition(format!(
                "name: pool {name:?} still has {in_use} prefixes allocated"
            )));
        }
        let quarantined: Vec<u64> = state
            .slots
            .get(name)
            .map(|s| s.quarantined_slots().collect())
            .unwrap_or_default();
        let keys: Vec<Vec<u8>> = quarantined
            .iter()
            .map(|slot| encode(&(name, *slot)))
            .collect::<Result<_, _>>()?;
        self.change(
            state,
            StoreChange::PoolDeleted(pool),
            |t| {
                t.pools.remove(name.as_bytes());
                for key in &keys {
                    t.quarantine.remove(key.as_slice());
                }
                Ok(())
            },
            |state| {
                state.pools.remove(name);
                state.slots.remove(name);
            },
        )
        .await?;
        Ok(())
    }
}
