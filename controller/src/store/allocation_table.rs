//! The allocations in memory: by prefix, and how many each pool (and each
//! tenant) holds, so
//! that a pool's usage (`GetPool`, a pool's deletion) is a lookup, not a
//! read of every allocation of every pool.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;

use ipnet::Ipv6Net;

use super::model::Allocation;

/// Allocations by prefix, counted per pool. Reads go to the map
/// (`Deref`); changes go through [`AllocationTable::insert`] and
/// [`AllocationTable::remove`], which keep the counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct AllocationTable {
    by_prefix: BTreeMap<Ipv6Net, Allocation>,
    per_pool: HashMap<String, u64>,
    per_tenant: HashMap<String, u64>,
}

impl AllocationTable {
    /// Adds (or replaces) an allocation; returns the one it replaced.
    pub(super) fn insert(&mut self, allocation: Allocation) -> Option<Allocation> {
        *self.per_pool.entry(allocation.pool.clone()).or_default() += 1;
        *self
            .per_tenant
            .entry(allocation.tenant.clone())
            .or_default() += 1;
        let replaced = self.by_prefix.insert(allocation.prefix, allocation);
        if let Some(old) = &replaced {
            self.uncount(&old.pool, &old.tenant);
        }
        replaced
    }

    /// Removes the allocation of a prefix.
    pub(super) fn remove(&mut self, prefix: &Ipv6Net) -> Option<Allocation> {
        let removed = self.by_prefix.remove(prefix)?;
        self.uncount(&removed.pool, &removed.tenant);
        Some(removed)
    }

    /// How many allocations a pool holds.
    pub(super) fn in_pool(&self, pool: &str) -> u64 {
        self.per_pool.get(pool).copied().unwrap_or(0)
    }

    /// How many allocations a tenant holds.
    pub(super) fn of_tenant(&self, tenant: &str) -> u64 {
        self.per_tenant.get(tenant).copied().unwrap_or(0)
    }

    fn uncount(&mut self, pool: &str, tenant: &str) {
        for (counts, name) in [(&mut self.per_pool, pool), (&mut self.per_tenant, tenant)] {
            if let Some(count) = counts.get_mut(name) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(name);
                }
            }
        }
    }
}

impl Deref for AllocationTable {
    type Target = BTreeMap<Ipv6Net, Allocation>;

    fn deref(&self) -> &Self::Target {
        &self.by_prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocation(prefix: &str, pool: &str) -> Allocation {
        Allocation {
            prefix: prefix.parse().unwrap(),
            tenant: "acme".into(),
            pool: pool.into(),
            allocated_at_unix_ms: 0,
            revision: 1,
        }
    }

    #[test]
    fn the_counts_follow_every_change_as_a_scan_would_count() {
        let mut table = AllocationTable::default();
        table.insert(allocation("2001:db8:1::/56", "a"));
        table.insert(allocation("2001:db8:2::/56", "a"));
        table.insert(allocation("2001:db8:3::/56", "b"));
        // The same prefix again (a record applied twice), then moved to
        // another pool's name: counted once, where it is now.
        table.insert(allocation("2001:db8:2::/56", "a"));
        table.insert(allocation("2001:db8:3::/56", "a"));
        table.remove(&"2001:db8:1::/56".parse().unwrap());
        table.remove(&"2001:db8:9::/56".parse().unwrap());
        for pool in ["a", "b", "c"] {
            let scanned = table.values().filter(|a| a.pool == pool).count() as u64;
            assert_eq!(table.in_pool(pool), scanned, "pool {pool}");
        }
        assert_eq!(table.in_pool("a"), 2);
    }
}
