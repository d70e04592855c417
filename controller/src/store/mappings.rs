//! IPv4 mappings: an IPv4 address (or block) from an IPv4 pool, given to a
//! tenant and mapped to an IPv6 address (or prefix) of the same size inside
//! one of its prefixes (an Explicit Address Mapping, RFC 7757 §3.1). The
//! IPv4 side comes from the pool's slots as prefixes do, and goes back into
//! quarantine when released; the IPv6 side is the operator's choice (the
//! VM's address), one mapping per IPv6 address.

use std::time::SystemTime;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nemo_daemon::clock::unix_ms;

use super::blocks::{find_block, held_entries, unheld_keys, BlockUse};
use super::model::OrNotFound;
use super::pools::check_mappable;
use super::{encode, Ipv4Mapping, Store, StoreChange, StoreError};

/// The IPv4 side asked for.
#[derive(Debug, Clone, Copy)]
pub enum Ipv4Wanted {
    /// The first free block of this length (0: the pool's tenant length).
    Any {
        /// Its length.
        length: u32,
    },
    /// This block.
    Exact(Ipv4Net),
}

impl Ipv4Wanted {
    /// What the API's fields ask for: `ipv4` empty for the first free
    /// block of `length`, else an address (a /32) or a block, whose length
    /// `length` (when not 0) must be.
    pub fn parse(ipv4: &str, length: u32) -> Result<Ipv4Wanted, StoreError> {
        if ipv4.is_empty() {
            return Ok(Ipv4Wanted::Any { length });
        }
        let block: Ipv4Net = ipv4
            .parse()
            .or_else(|_| ipv4.parse::<std::net::Ipv4Addr>().map(Ipv4Net::from))
            .map_err(|_| StoreError::Invalid {
                field: "ipv4",
                reason: format!("{ipv4:?} is not an IPv4 address or prefix"),
            })?;
        if length != 0 && length != u32::from(block.prefix_len()) {
            return Err(StoreError::Invalid {
                field: "length",
                reason: format!("{length}: with ipv4, 0 or its own length ({block})"),
            });
        }
        Ok(Ipv4Wanted::Exact(block))
    }
}

/// An IPv4 block in refusals.
const AS_IPV4: BlockUse = BlockUse {
    field: "ipv4",
    taken: "mapped",
};

impl Store {
    /// Maps an IPv4 address or block of `pool` to `ipv6` (an address, or a
    /// prefix of as many addresses) inside one of `tenant`'s prefixes.
    pub async fn allocate_ipv4(
        &self,
        tenant: &str,
        pool: &str,
        wanted: Ipv4Wanted,
        ipv6: &str,
    ) -> Result<Ipv4Mapping, StoreError> {
        self.retrying(|| self.allocate_ipv4_once(tenant, pool, wanted, ipv6))
            .await
    }

    async fn allocate_ipv4_once(
        &self,
        tenant: &str,
        pool: &str,
        wanted: Ipv4Wanted,
        ipv6: &str,
    ) -> Result<Ipv4Mapping, StoreError> {
        let state = self.state.lock().await;
        state.tenants.get(tenant).or_not_found("tenant", tenant)?;
        let pool_record = state.pools.get(pool).cloned().or_not_found("pool", pool)?;
        let IpNet::V4(pool_prefix) = pool_record.prefix else {
            return Err(StoreError::Invalid {
                field: "pool",
                reason: format!(
                    "{pool:?} is an IPv6 pool: its prefixes are allocated (AllocatePrefix), not mapped"
                ),
            });
        };
        let length = match wanted {
            Ipv4Wanted::Any { length: 0 } => pool_record.tenant_length,
            Ipv4Wanted::Any { length } => u8::try_from(length)
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
            Ipv4Wanted::Exact(block) => {
                if block != block.trunc() {
                    return Err(StoreError::Invalid {
                        field: "ipv4",
                        reason: format!(
                            "{block} has host bits set (did you mean {}?)",
                            block.trunc()
                        ),
                    });
                }
                if !pool_prefix.contains(&block) || block.prefix_len() > pool_record.tenant_length {
                    return Err(StoreError::Invalid {
                        field: "ipv4",
                        reason: format!(
                            "{block} is not a block of pool {pool:?} ({pool_prefix}, tenants /{})",
                            pool_record.tenant_length
                        ),
                    });
                }
                check_mappable("ipv4", &block)?;
                block.prefix_len()
            }
        };
        let ipv6 = ipv6_side(ipv6, length)?;
        // RFC 7757 §3.2: a mapping must be one-to-one; and the IPv6 side is
        // the tenant's, so that the home agent tunnels it to the tenant.
        let Some(inside) = state
            .allocations
            .prefixes_of(tenant)
            .find(|prefix| prefix.contains(&ipv6))
        else {
            return Err(StoreError::Precondition(format!(
                "ipv6: {ipv6} is not inside a prefix of tenant {tenant:?}"
            )));
        };
        if ipv6.prefix_len() == 128
            && ipv6.network() == inside.network()
            && inside.prefix_len() < 127
        {
            return Err(StoreError::Invalid {
                field: "ipv6",
                reason: format!(
                    "{} is {inside}'s Subnet-Router anycast address (RFC 4291 §2.6.1)",
                    ipv6.network()
                ),
            });
        }
        if let Some(other) = state.mappings.overlapping_ipv6(&ipv6) {
            return Err(StoreError::Precondition(format!(
                "ipv6: {ipv6} overlaps the IPv6 side of mapping {other}"
            )));
        }
        let now = unix_ms(SystemTime::now());
        // Any free block is mappable: pools are checked at creation.
        let exact = match wanted {
            Ipv4Wanted::Any { .. } => None,
            Ipv4Wanted::Exact(wanted) => Some(IpNet::V4(wanted)),
        };
        let found = find_block(&state, &pool_record, length, exact, now, AS_IPV4)?;
        let IpNet::V4(ipv4) = pool_record.slot_block(found.slots.start, length) else {
            return Err(StoreError::Storage(format!(
                "pool {pool:?} changed family under a mapping"
            )));
        };
        let mapping = Ipv4Mapping {
            ipv4,
            ipv6,
            tenant: tenant.to_owned(),
            pool: pool.to_owned(),
            allocated_at_unix_ms: now,
            revision: state.revision + 1,
        };
        let record = encode(&mapping)?;
        let key = encode(&mapping.ipv4)?;
        let unheld = unheld_keys(pool, &found)?;
        self.change(
            state,
            StoreChange::Ipv4Mapped(mapping.clone()),
            |t| {
                t.mappings.insert(key.as_slice(), record.clone());
                for slot_key in &unheld {
                    t.quarantine.remove(slot_key.as_slice());
                }
                Ok(())
            },
            |state| {
                state.take_slots(&pool_record, &found);
                state.mappings.insert(mapping.clone());
            },
        )
        .await?;
        Ok(mapping)
    }

    /// Ends an IPv4 mapping; its IPv4 addresses go into quarantine.
    pub async fn release_ipv4(&self, ipv4: &str) -> Result<Ipv4Mapping, StoreError> {
        self.retrying(|| self.release_ipv4_once(ipv4)).await
    }

    async fn release_ipv4_once(&self, ipv4: &str) -> Result<Ipv4Mapping, StoreError> {
        let Ipv4Wanted::Exact(block) = Ipv4Wanted::parse(ipv4, 0)? else {
            return Err(StoreError::Invalid {
                field: "ipv4",
                reason: "empty: which mapping to release".into(),
            });
        };
        let state = self.state.lock().await;
        let mapping = state
            .mappings
            .get(&block)
            .cloned()
            .or_not_found("ipv4 mapping", block)?;
        let pool = state
            .pools
            .get(&mapping.pool)
            .cloned()
            .or_not_found("pool", &mapping.pool)?;
        let until = unix_ms(SystemTime::now() + self.quarantine_time);
        let slots = pool.slots(&IpNet::V4(mapping.ipv4));
        let key = encode(&mapping.ipv4)?;
        let held = held_entries(&pool.name, slots.clone(), until)?;
        let change = StoreChange::Ipv4Released {
            mapping: mapping.clone(),
            quarantined_until_unix_ms: until,
        };
        self.change(
            state,
            change,
            |t| {
                t.mappings.remove(key.as_slice());
                for (slot_key, until) in &held {
                    t.quarantine.insert(slot_key.as_slice(), until.clone());
                }
                Ok(())
            },
            |state| {
                state.mappings.remove(&block);
                state.release_slots(&pool.name, slots, until);
            },
        )
        .await?;
        Ok(mapping)
    }

    /// IPv4 mappings, of one tenant or all, with each one's translation
    /// prefix (its pool's).
    pub async fn ipv4_mappings(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<(Ipv4Mapping, Ipv6Net)>, StoreError> {
        let state = self.state.lock().await;
        if let Some(tenant) = tenant {
            state.tenants.get(tenant).or_not_found("tenant", tenant)?;
        }
        let with_prefix = |m: &Ipv4Mapping| (m.clone(), state.translation_prefix_of(m));
        Ok(match tenant {
            Some(tenant) => {
                // By IPv4 block, as the whole list is.
                let mut mappings: Vec<_> = state.mappings_of(tenant).map(with_prefix).collect();
                mappings.sort_by_key(|(m, _)| m.ipv4);
                mappings
            }
            None => state.mappings.values().map(with_prefix).collect(),
        })
    }
}

impl Store {
    /// The translation prefix of a mapping's pool.
    pub async fn translation_prefix(&self, mapping: &Ipv4Mapping) -> Ipv6Net {
        self.state.lock().await.translation_prefix_of(mapping)
    }
}

impl super::State {
    /// The translation prefix a mapping's tenant sees IPv4 peers in: its
    /// pool's (the well-known one if the pool is gone, which a mapping
    /// keeps from happening).
    pub(super) fn translation_prefix_of(&self, mapping: &Ipv4Mapping) -> Ipv6Net {
        self.pools
            .get(&mapping.pool)
            .and_then(|p| p.translation_prefix)
            .unwrap_or(super::WELL_KNOWN_PREFIX)
    }

    /// A tenant's IPv4 mappings: those inside its prefixes (a mapping's
    /// IPv6 side is inside one of its tenant's prefixes, which is not
    /// released under it), found by the tenant's index and ordered ranges,
    /// not by reading every mapping.
    pub(super) fn mappings_of<'a>(
        &'a self,
        tenant: &'a str,
    ) -> impl Iterator<Item = &'a Ipv4Mapping> + 'a {
        self.allocations
            .prefixes_of(tenant)
            .flat_map(move |prefix| self.mappings.inside(prefix))
            .filter(move |m| m.tenant == tenant)
    }
}

/// The IPv6 side: an address (then as long as the IPv4 side, 96 + its
/// length) or a prefix of as many addresses as the IPv4 side
/// (RFC 7757 §3.2: "the same number of addresses").
fn ipv6_side(text: &str, ipv4_length: u8) -> Result<Ipv6Net, StoreError> {
    let length = 96 + ipv4_length;
    let invalid = |reason: String| StoreError::Invalid {
        field: "ipv6",
        reason,
    };
    let prefix = match text.parse::<Ipv6Net>() {
        Ok(prefix) => prefix,
        Err(_) => {
            let address: std::net::Ipv6Addr = text
                .parse()
                .map_err(|_| invalid(format!("{text:?} is not an IPv6 address or prefix")))?;
            Ipv6Net::new(address, length).map_err(|e| invalid(e.to_string()))?
        }
    };
    if prefix.prefix_len() != length {
        return Err(invalid(format!(
            "{prefix}: an IPv4 /{ipv4_length} maps to an IPv6 /{length} (as many addresses)"
        )));
    }
    if prefix != prefix.trunc() {
        return Err(invalid(format!(
            "{prefix} has host bits set (did you mean {}?)",
            prefix.trunc()
        )));
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use std::time::Duration;

    use super::*;

    async fn store(quarantine: Duration) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), quarantine).await.unwrap();
        store
            .create_pool("v6", "2001:db8:100::/48", 64)
            .await
            .unwrap();
        store
            .create_pool_translating("v4", "192.0.2.0/28", 32, "2001:db8:64::/96")
            .await
            .unwrap();
        store.create_tenant("acme").await.unwrap();
        store.allocate("acme", "v6", 0).await.unwrap();
        (dir, store)
    }

    fn any() -> Ipv4Wanted {
        Ipv4Wanted::Any { length: 0 }
    }

    #[tokio::test]
    async fn first_free_addresses_map_to_the_tenants_addresses_and_are_quarantined() {
        let (_dir, store) = store(Duration::from_secs(3600)).await;
        let first = store
            .allocate_ipv4("acme", "v4", any(), "2001:db8:100::10")
            .await
            .unwrap();
        assert_eq!(first.ipv4, "192.0.2.0/32".parse::<Ipv4Net>().unwrap());
        assert_eq!(
            first.ipv6,
            "2001:db8:100::10/128".parse::<Ipv6Net>().unwrap()
        );
        let block = store
            .allocate_ipv4(
                "acme",
                "v4",
                Ipv4Wanted::parse("192.0.2.4/30", 0).unwrap(),
                "2001:db8:100::20/126",
            )
            .await
            .unwrap();
        assert_eq!(block.ipv4.to_string(), "192.0.2.4/30");
        let listed = store.ipv4_mappings(Some("acme")).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed
            .iter()
            .all(|(_, prefix)| prefix.to_string() == "2001:db8:64::/96"));
        // The same IPv6 address twice, or inside a mapped block: refused.
        for ipv6 in ["2001:db8:100::10", "2001:db8:100::21"] {
            let refused = store
                .allocate_ipv4("acme", "v4", any(), ipv6)
                .await
                .unwrap_err();
            assert!(
                matches!(&refused, StoreError::Precondition(why) if why.starts_with("ipv6:")),
                "{refused:?}"
            );
        }
        // Released: held back, not handed out again, until the quarantine.
        store.release_ipv4("192.0.2.0").await.unwrap();
        let next = store
            .allocate_ipv4("acme", "v4", any(), "2001:db8:100::11")
            .await
            .unwrap();
        // After the last one taken (the /30), as prefixes are.
        assert_eq!(next.ipv4.to_string(), "192.0.2.8/32");
        let held = store
            .allocate_ipv4(
                "acme",
                "v4",
                Ipv4Wanted::parse("192.0.2.0", 0).unwrap(),
                "2001:db8:100::12",
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&held, StoreError::Precondition(why) if why.contains("held back")),
            "{held:?}"
        );
        let (_, in_use, quarantined) = store.pool("v4").await.unwrap();
        // Mappings in use (one a /30), addresses held back.
        assert_eq!((in_use, quarantined), (2, 1));
    }

    #[tokio::test]
    async fn mappings_pin_the_prefixes_and_pools_they_use() {
        let (_dir, store) = store(Duration::ZERO).await;
        let prefix = store.allocations(Some("acme")).await.unwrap()[0].prefix;
        store
            .allocate_ipv4("acme", "v4", any(), "2001:db8:100::10")
            .await
            .unwrap();
        let refused = store.release(&prefix.to_string()).await.unwrap_err();
        assert!(
            matches!(&refused, StoreError::Precondition(why) if why.contains("192.0.2.0/32")),
            "{refused:?}"
        );
        assert!(matches!(
            store.delete_pool("v4").await,
            Err(StoreError::Precondition(_))
        ));
        // A cascade takes the mapping, then the prefix.
        let released = store.delete_tenant("acme", true).await.unwrap();
        let mapped: IpNet = "192.0.2.0/32".parse().unwrap();
        assert_eq!(released, vec![mapped, IpNet::V6(prefix)]);
        assert!(store.ipv4_mappings(None).await.unwrap().is_empty());
        store.delete_pool("v4").await.unwrap();
    }

    #[tokio::test]
    async fn bad_requests_name_the_field() {
        let (_dir, store) = store(Duration::ZERO).await;
        let field = |e: StoreError| match e {
            StoreError::Invalid { field, .. } => field.to_string(),
            StoreError::Precondition(why) => why.split(':').next().unwrap_or("").to_owned(),
            other => format!("{other:?}"),
        };
        let refused = |wanted: Ipv4Wanted, pool: &'static str, ipv6: &'static str| {
            let store = &store;
            async move {
                field(
                    store
                        .allocate_ipv4("acme", pool, wanted, ipv6)
                        .await
                        .unwrap_err(),
                )
            }
        };
        // Outside the tenant's prefixes, a size that does not match, an
        // IPv6 pool, an address outside the pool, the anycast address.
        assert_eq!(refused(any(), "v4", "2001:db8:200::1").await, "ipv6");
        assert_eq!(refused(any(), "v4", "2001:db8:100::/126").await, "ipv6");
        assert_eq!(refused(any(), "v4", "2001:db8:100::").await, "ipv6");
        assert_eq!(refused(any(), "v4", "not an address").await, "ipv6");
        assert_eq!(refused(any(), "v6", "2001:db8:100::1").await, "pool");
        let outside = Ipv4Wanted::parse("198.51.100.1", 0).unwrap();
        assert_eq!(refused(outside, "v4", "2001:db8:100::1").await, "ipv4");
        let too_wide = Ipv4Wanted::Any { length: 24 };
        assert_eq!(refused(too_wide, "v4", "2001:db8:100::1").await, "length");
        assert!(matches!(
            Ipv4Wanted::parse("192.0.2.1", 30),
            Err(StoreError::Invalid {
                field: "length",
                ..
            })
        ));
        assert!(matches!(
            store.allocate("acme", "v4", 0).await,
            Err(StoreError::Invalid { field: "pool", .. })
        ));
        // Pools: special-purpose IPv4 blocks, translation prefixes.
        let pool = |prefix: &'static str, translation: &'static str| {
            let store = &store;
            async move {
                field(
                    store
                        .create_pool_translating("x", prefix, 0, translation)
                        .await
                        .unwrap_err(),
                )
            }
        };
        assert_eq!(pool("127.0.0.0/24", "").await, "prefix");
        assert_eq!(pool("224.0.0.0/24", "").await, "prefix");
        assert_eq!(
            pool("198.51.100.0/24", "2001:db8:64::/64").await,
            "translation_prefix"
        );
        assert_eq!(
            pool("198.51.100.0/24", "2001:db8:64:0:ff00::/96").await,
            "translation_prefix"
        );
        // Inside the IPv6 pool: a peer would read as a tenant.
        assert_eq!(
            pool("198.51.100.0/24", "2001:db8:100:5::/96").await,
            "translation_prefix"
        );
        assert_eq!(
            pool("2001:db8:300::/48", "64:ff9b::/96").await,
            "translation_prefix"
        );
        // Another IPv4 pool may share the translation prefix.
        store
            .create_pool_translating("v4b", "198.51.100.0/24", 0, "2001:db8:64::/96")
            .await
            .unwrap();
    }

    /// Reopened, the store holds the mappings, their slots and the
    /// quarantine as it did.
    #[tokio::test]
    async fn mappings_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), Duration::from_secs(60))
                .await
                .unwrap();
            store
                .create_pool("v6", "2001:db8:100::/48", 64)
                .await
                .unwrap();
            store.create_pool("v4", "192.0.2.0/30", 0).await.unwrap();
            store.create_tenant("acme").await.unwrap();
            store.allocate("acme", "v6", 0).await.unwrap();
            for ipv6 in ["2001:db8:100::1", "2001:db8:100::2"] {
                store
                    .allocate_ipv4("acme", "v4", any(), ipv6)
                    .await
                    .unwrap();
            }
            store.release_ipv4("192.0.2.0/32").await.unwrap();
        }
        let store = Store::open(dir.path(), Duration::from_secs(60))
            .await
            .unwrap();
        let mappings = store.ipv4_mappings(None).await.unwrap();
        assert_eq!(mappings.len(), 1);
        assert_eq!(mappings[0].0.ipv4.to_string(), "192.0.2.1/32");
        assert_eq!(mappings[0].1, super::super::WELL_KNOWN_PREFIX);
        let (_, in_use, quarantined) = store.pool("v4").await.unwrap();
        assert_eq!((in_use, quarantined), (1, 1));
        let next = store
            .allocate_ipv4("acme", "v4", any(), "2001:db8:100::3")
            .await
            .unwrap();
        assert_eq!(next.ipv4.to_string(), "192.0.2.2/32");
    }
}
