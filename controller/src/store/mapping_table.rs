//! The IPv4 mappings in memory: by IPv4 block, with the IPv6 side indexed
//! so that a new mapping's overlap with any other is two ordered lookups,
//! and counted per pool and per tenant.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;

use ipnet::{Ipv4Net, Ipv6Net};

use super::model::Ipv4Mapping;

/// Mappings by IPv4 block. Changes go through [`MappingTable::insert`] and
/// [`MappingTable::remove`], which keep the index and the counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct MappingTable {
    by_ipv4: BTreeMap<Ipv4Net, Ipv4Mapping>,
    /// IPv6 side's network address -> (its prefix, the IPv4 block).
    by_ipv6: BTreeMap<Ipv6Addr, (Ipv6Net, Ipv4Net)>,
    per_pool: HashMap<String, u64>,
}

impl MappingTable {
    /// Adds (or replaces) a mapping.
    pub(super) fn insert(&mut self, mapping: Ipv4Mapping) {
        self.remove(&mapping.ipv4);
        *self.per_pool.entry(mapping.pool.clone()).or_default() += 1;
        self.by_ipv6
            .insert(mapping.ipv6.network(), (mapping.ipv6, mapping.ipv4));
        self.by_ipv4.insert(mapping.ipv4, mapping);
    }

    /// Removes the mapping of an IPv4 block.
    pub(super) fn remove(&mut self, ipv4: &Ipv4Net) -> Option<Ipv4Mapping> {
        let removed = self.by_ipv4.remove(ipv4)?;
        self.by_ipv6.remove(&removed.ipv6.network());
        if let Some(count) = self.per_pool.get_mut(&removed.pool) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_pool.remove(&removed.pool);
            }
        }
        Some(removed)
    }

    /// The mapping of an IPv4 block.
    pub(super) fn get(&self, ipv4: &Ipv4Net) -> Option<&Ipv4Mapping> {
        self.by_ipv4.get(ipv4)
    }

    /// Every mapping, by IPv4 block.
    pub(super) fn values(&self) -> impl Iterator<Item = &Ipv4Mapping> {
        self.by_ipv4.values()
    }

    /// How many mappings a pool holds.
    pub(super) fn in_pool(&self, pool: &str) -> u64 {
        self.per_pool.get(pool).copied().unwrap_or(0)
    }

    /// The IPv4 block of a mapping whose IPv6 side overlaps `ipv6`, if any:
    /// one that contains it (the nearest one starting at or before it) or
    /// one inside it (any starting within it). The IPv6 sides are disjoint,
    /// so these two are the only candidates.
    pub(super) fn overlapping_ipv6(&self, ipv6: &Ipv6Net) -> Option<Ipv4Net> {
        let before = self
            .by_ipv6
            .range(..=ipv6.network())
            .next_back()
            .filter(|(_, (prefix, _))| prefix.contains(&ipv6.network()));
        let inside = self.by_ipv6.range(ipv6.network()..=ipv6.broadcast()).next();
        before.or(inside).map(|(_, (_, ipv4))| *ipv4)
    }

    /// The mappings whose IPv6 side lies inside `prefix`.
    pub(super) fn inside(&self, prefix: Ipv6Net) -> impl Iterator<Item = &Ipv4Mapping> {
        self.by_ipv6
            .range(prefix.network()..=prefix.broadcast())
            .filter_map(|(_, (_, ipv4))| self.by_ipv4.get(ipv4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(ipv4: &str, ipv6: &str) -> Ipv4Mapping {
        Ipv4Mapping {
            ipv4: ipv4.parse().unwrap(),
            ipv6: ipv6.parse().unwrap(),
            tenant: "t".into(),
            pool: "v4".into(),
            allocated_at_unix_ms: 0,
            revision: 1,
        }
    }

    #[test]
    fn overlaps_are_found_from_either_side_and_only_then() {
        let mut table = MappingTable::default();
        table.insert(mapping("192.0.2.8/30", "2001:db8:1::8/126"));
        table.insert(mapping("192.0.2.1/32", "2001:db8:1::100/128"));
        let ipv4 = |s: &str| Some(s.parse::<Ipv4Net>().unwrap());
        let ipv6 = |s: &str| s.parse::<Ipv6Net>().unwrap();
        // Inside a mapped block, the block itself, a block around one.
        assert_eq!(
            table.overlapping_ipv6(&ipv6("2001:db8:1::a/128")),
            ipv4("192.0.2.8/30")
        );
        assert_eq!(
            table.overlapping_ipv6(&ipv6("2001:db8:1::8/126")),
            ipv4("192.0.2.8/30")
        );
        assert_eq!(
            table.overlapping_ipv6(&ipv6("2001:db8:1::100/120")),
            ipv4("192.0.2.1/32")
        );
        // Beside them: free.
        assert_eq!(table.overlapping_ipv6(&ipv6("2001:db8:1::c/128")), None);
        assert_eq!(table.overlapping_ipv6(&ipv6("2001:db8:1::7/128")), None);
        assert_eq!(table.overlapping_ipv6(&ipv6("2001:db8:1::200/120")), None);
        assert_eq!(table.inside(ipv6("2001:db8:1::/64")).count(), 2);
        assert_eq!(table.in_pool("v4"), 2);
        table.remove(&"192.0.2.8/30".parse().unwrap());
        assert_eq!(table.overlapping_ipv6(&ipv6("2001:db8:1::a/128")), None);
        assert_eq!(table.in_pool("v4"), 1);
    }
}
