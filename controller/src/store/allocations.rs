//! Prefix allocation: per pool, the used tenant-length slots in memory
//! (rebuilt at start), a free block found by a scan from a moving cursor,
//! released prefixes held in quarantine.

use super::*;

/// Per-pool allocation state in memory.
#[derive(Debug, Default)]
pub(super) struct Slots {
    pub(super) used: BTreeSet<u64>,
    /// Slot -> until (unix ms): released, not yet reusable.
    pub(super) quarantine: BTreeMap<u64, i64>,
    /// Where the search for a free block starts: after the last allocation.
    pub(super) cursor: u64,
    /// The revision of the allocation that set the cursor at load.
    pub(super) cursor_revision: u64,
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
        self.change(
            state,
            StoreChange::PrefixAllocated(allocation.clone()),
            |t| {
                t.allocations.insert(key.as_slice(), record.clone())?;
                for slot_key in &released {
                    t.quarantine.remove(slot_key.as_slice())?;
                }
                Ok(())
            },
            |state| {
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
            },
        )
        .await?;
        Ok(allocation)
    }

    /// Releases a prefix into quarantine.
    pub async fn release(&self, prefix: &str) -> Result<Allocation, StoreError> {
        let parsed: Ipv6Net = prefix.parse().map_err(|_| StoreError::Invalid {
            field: "prefix",
            reason: format!("{prefix:?} is not an IPv6 prefix"),
        })?;
        let state = self.state.lock().await;
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
        let change = StoreChange::PrefixReleased {
            allocation: allocation.clone(),
            quarantined_until_unix_ms: until,
        };
        self.change(
            state,
            change,
            |t| {
                t.allocations.remove(key.as_slice())?;
                for (slot_key, until) in &held {
                    t.quarantine.insert(slot_key.as_slice(), until.clone())?;
                }
                Ok(())
            },
            |state| {
                state.allocations.remove(&parsed);
                let slots = state.slots.entry(pool.name.clone()).or_default();
                for slot in first..first + block {
                    slots.used.remove(&slot);
                    slots.quarantine.insert(slot, until);
                }
            },
        )
        .await?;
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
}
