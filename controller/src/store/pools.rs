//! Prefix pools.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::allocator::Slots;
use super::model::OrNotFound;
use super::{check_name, encode, Pool, Store, StoreChange, StoreError};

impl Store {
    /// Creates a pool: an IPv6 one of tenants' prefixes, or an IPv4 one
    /// of mapped addresses whose peers are written in the well-known
    /// translation prefix 64:ff9b::/96.
    pub async fn create_pool(
        &self,
        name: &str,
        prefix: &str,
        tenant_length: u32,
    ) -> Result<Pool, StoreError> {
        self.create_pool_translating(name, prefix, tenant_length, "")
            .await
    }

    /// Creates a pool; an IPv4 one with `translation_prefix` (RFC 6052: a
    /// /96; empty for the well-known 64:ff9b::/96), an IPv6 one with none.
    pub async fn create_pool_translating(
        &self,
        name: &str,
        prefix: &str,
        tenant_length: u32,
        translation_prefix: &str,
    ) -> Result<Pool, StoreError> {
        self.retrying(|| self.create_pool_once(name, prefix, tenant_length, translation_prefix))
            .await
    }

    async fn create_pool_once(
        &self,
        name: &str,
        prefix: &str,
        tenant_length: u32,
        translation_prefix: &str,
    ) -> Result<Pool, StoreError> {
        check_name("name", name)?;
        let prefix: IpNet = prefix.parse().map_err(|_| StoreError::Invalid {
            field: "prefix",
            reason: format!("{prefix:?} is not an IPv6 or IPv4 prefix"),
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
        let (tenant_length, translation_prefix) = match prefix {
            IpNet::V6(prefix) => {
                if !translation_prefix.is_empty() {
                    return Err(StoreError::Invalid {
                        field: "translation_prefix",
                        reason: format!(
                            "only an IPv4 pool has one ({prefix} is an IPv6 pool's prefix)"
                        ),
                    });
                }
                let length = u8::try_from(tenant_length)
                    .ok()
                    .filter(|l| {
                        *l > prefix.prefix_len() && *l <= 64 && *l - prefix.prefix_len() <= 32
                    })
                    .ok_or_else(|| StoreError::Invalid {
                        field: "tenant_length",
                        reason: format!(
                            "{tenant_length} must be longer than /{}, at most 64, and carve at most 2^32 prefixes",
                            prefix.prefix_len()
                        ),
                    })?;
                (length, None)
            }
            IpNet::V4(prefix) => {
                check_mappable("prefix", &prefix)?;
                let length = match tenant_length {
                    0 => 32,
                    length => u8::try_from(length)
                        .ok()
                        .filter(|l| *l >= prefix.prefix_len() && *l <= 32)
                        .ok_or_else(|| StoreError::Invalid {
                            field: "tenant_length",
                            reason: format!(
                                "{tenant_length} must be between /{} and /32 (0: /32, single addresses)",
                                prefix.prefix_len()
                            ),
                        })?,
                };
                (length, Some(parse_translation_prefix(translation_prefix)?))
            }
        };
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
        // A translated peer's address must never read as a tenant's: the
        // translation prefixes and the IPv6 pools stay apart.
        let ipv6_spaces = |pool: &Pool| {
            [
                match pool.prefix {
                    IpNet::V6(prefix) => Some(prefix),
                    IpNet::V4(_) => None,
                },
                pool.translation_prefix,
            ]
        };
        let ours = match prefix {
            IpNet::V6(prefix) => Some(("prefix", prefix)),
            IpNet::V4(_) => translation_prefix.map(|p| ("translation_prefix", p)),
        };
        if let Some((field, ours)) = ours {
            for other in state.pools.values() {
                for theirs in ipv6_spaces(other).into_iter().flatten() {
                    let apart =
                        !theirs.contains(&ours.network()) && !ours.contains(&theirs.network());
                    // IPv4 pools may share one translation prefix.
                    let shared = field == "translation_prefix"
                        && other.translation_prefix == Some(theirs)
                        && theirs == ours;
                    if !apart && !shared {
                        return Err(StoreError::Precondition(format!(
                            "{field}: {ours} overlaps {theirs} of pool {:?}",
                            other.name
                        )));
                    }
                }
            }
        }
        let pool = Pool {
            name: name.to_owned(),
            prefix,
            tenant_length,
            translation_prefix,
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
        let allocated = state.allocations.in_pool(name) + state.mappings.in_pool(name);
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
        let in_use = state.allocations.in_pool(name) + state.mappings.in_pool(name);
        if in_use > 0 {
            return Err(StoreError::Precondition(format!(
                "name: pool {name:?} still has {in_use} blocks allocated"
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

/// The well-known translation prefix (RFC 6052 §2.1).
pub const WELL_KNOWN_PREFIX: Ipv6Net =
    match Ipv6Net::new(std::net::Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        Ok(prefix) => prefix,
        Err(_) => unreachable!(),
    };

/// An IPv4 pool's translation prefix: empty for the well-known one, else
/// a /96 (the only length nemo's translator writes) with bits 64-71 zero
/// (RFC 6052 §2.2: the "u" octet).
fn parse_translation_prefix(text: &str) -> Result<Ipv6Net, StoreError> {
    if text.is_empty() {
        return Ok(WELL_KNOWN_PREFIX);
    }
    let invalid = |reason: String| StoreError::Invalid {
        field: "translation_prefix",
        reason,
    };
    let prefix: Ipv6Net = text
        .parse()
        .map_err(|_| invalid(format!("{text:?} is not an IPv6 prefix")))?;
    if prefix.prefix_len() != 96 {
        return Err(invalid(format!(
            "{prefix}: a /96 (RFC 6052 §2.2); nemo translates with /96 prefixes only"
        )));
    }
    if prefix.network() != prefix.addr() {
        return Err(invalid(format!(
            "{prefix} has host bits set; did you mean {}?",
            prefix.trunc()
        )));
    }
    if prefix.network().octets()[8] != 0 {
        return Err(invalid(format!(
            "{prefix}: bits 64 to 71 must be zero (RFC 6052 §2.2)"
        )));
    }
    if prefix.network().is_multicast() || prefix.network().is_loopback() {
        return Err(invalid(format!("{prefix} is not a unicast prefix")));
    }
    Ok(prefix)
}

/// IPv4 addresses a tenant can be given: none of "this network", loopback,
/// link-local, multicast, or the reserved and broadcast block (RFC 7915
/// §4.1 and §5.1 do not translate these, or no host may hold them).
pub(super) fn check_mappable(field: &'static str, prefix: &Ipv4Net) -> Result<(), StoreError> {
    const UNMAPPABLE: [(Ipv4Addr, u8, &str); 5] = [
        (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\""),
        (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
        (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local"),
        (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
        (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved and broadcast"),
    ];
    for (network, length, what) in UNMAPPABLE {
        let Ok(block) = Ipv4Net::new(network, length) else {
            continue;
        };
        if block.contains(&prefix.network()) || prefix.contains(&block.network()) {
            return Err(StoreError::Invalid {
                field,
                reason: format!("{prefix} overlaps {block}, {what} addresses"),
            });
        }
    }
    Ok(())
}
