//! The allocations in memory: by prefix, how many each pool holds and
//! which each tenant holds, so that a pool's usage (`GetPool`, a pool's
//! deletion) and a tenant's prefixes (its view, `GetTenant`) are lookups,
//! not reads of every allocation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    per_tenant: HashMap<String, BTreeSet<Ipv6Net>>,
}

impl AllocationTable {
    /// Adds (or replaces) an allocation; returns the one it replaced.
    pub(super) fn insert(&mut self, allocation: Allocation) -> Option<Allocation> {
        let replaced = self.remove(&allocation.prefix);
        *self.per_pool.entry(allocation.pool.clone()).or_default() += 1;
        self.per_tenant
            .entry(allocation.tenant.clone())
            .or_default()
            .insert(allocation.prefix);
        self.by_prefix.insert(allocation.prefix, allocation);
        replaced
    }

    /// Removes the allocation of a prefix.
    pub(super) fn remove(&mut self, prefix: &Ipv6Net) -> Option<Allocation> {
        let removed = self.by_prefix.remove(prefix)?;
        if let Some(count) = self.per_pool.get_mut(&removed.pool) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_pool.remove(&removed.pool);
            }
        }
        if let Some(prefixes) = self.per_tenant.get_mut(&removed.tenant) {
            prefixes.remove(prefix);
            if prefixes.is_empty() {
                self.per_tenant.remove(&removed.tenant);
            }
        }
        Some(removed)
    }

    /// How many allocations a pool holds.
    pub(super) fn in_pool(&self, pool: &str) -> u64 {
        self.per_pool.get(pool).copied().unwrap_or(0)
    }

    /// How many allocations a tenant holds.
    pub(super) fn of_tenant(&self, tenant: &str) -> u64 {
        self.per_tenant.get(tenant).map_or(0, |p| p.len() as u64)
    }

    /// A tenant's prefixes, in order.
    pub(super) fn prefixes_of<'a>(&'a self, tenant: &str) -> impl Iterator<Item = Ipv6Net> + 'a {
        self.per_tenant
            .get(tenant)
            .into_iter()
            .flat_map(|prefixes| prefixes.iter().copied())
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
        // Moved to another tenant: listed under that one only.
        let mut moved = allocation("2001:db8:2::/56", "a");
        moved.tenant = "other".into();
        table.insert(moved);
        let listed: Vec<Ipv6Net> = table.prefixes_of("acme").collect();
        assert_eq!(listed, vec!["2001:db8:3::/56".parse::<Ipv6Net>().unwrap()]);
        assert_eq!(table.of_tenant("other"), 1);
        assert_eq!(table.prefixes_of("nobody").count(), 0);
    }
}
