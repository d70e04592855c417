//! The controller's authorizations on disk, so that the home agent starts
//! and keeps working while the controller is away: one redb file
//! (`authorizations.redb` beside the binding store), a record per home
//! address and the revision the records are complete through, written
//! together in one transaction per burst of updates. A million entries
//! load in about a second, and an update writes its own record, not the
//! whole set (the JSON file of earlier versions was rewritten whole on
//! every update: minutes per update at a million).
//!
//! Record (version 1), after the 16-octet home address as the key:
//!
//! ```text
//! +---------+--------------+-----------+---------+----------+-----+
//! | version | SPI (u32 BE) | algorithm | key len | key ...  | R   |
//! +---------+--------------+-----------+---------+----------+-----+
//! | prefix count | (prefix length, 16 octets of network) ...      |
//! +--------------+------------------------------------------------+
//! ```
//!
//! One security association per record: the controller issues one.
//!
//! A second table holds each home address's IPv4 mappings (the tenant's
//! addresses the translator serves, `crate::translator::encode_mappings`),
//! so that translation too starts and goes on while the controller is
//! away.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::path::Path;

use ipnet::Ipv6Net;
use nemo::auth::{Algorithm, SecurityAssociation};
use nemo::ha::Authorization;
use nemo_daemon::disk::{Disk, DiskError, RecordKind, Write};

/// The record format's version.
const FORMAT: u8 = 1;
const ENTRIES: &str = "authorizations";
const MAPPINGS: &str = "ipv4_mappings";
const META: &str = "meta";
const REVISION: &[u8] = b"revision";
/// The records are read once at the start; redb's cache needs little.
const CACHE_BYTES: usize = 8 << 20;

/// Why the cache failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The disk failed.
    #[error("authorization cache: {0}")]
    Disk(#[from] DiskError),
    /// A record that does not decode.
    #[error("authorization cache: record for {key} is corrupt: {reason}")]
    Corrupt {
        /// The record's key, as an address when it is one.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// One change to the cached set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheChange {
    /// Authorized (or changed).
    Put(Authorization),
    /// No longer authorized (its mappings go too).
    Remove(Ipv6Addr),
    /// The tenant's IPv4 mappings now (none: the record goes).
    Mappings(Ipv6Addr, Vec<nemo_dataplane::bpf::translator::Mapping>),
}

/// The authorizations table's records.
struct Entries;

impl RecordKind for Entries {
    type Record = Authorization;
    type Error = CacheError;
    const TABLE: &'static str = ENTRIES;
    fn decode(key: &[u8], value: &[u8]) -> Result<Authorization, CacheError> {
        decode(key, value)
    }
}

/// The on-disk copy of the controller's authorizations.
#[derive(Debug, Clone)]
pub struct AuthorizationCache {
    disk: Disk,
}

impl AuthorizationCache {
    /// Opens (or creates) the cache file at `path`.
    pub fn open(path: &Path) -> Result<AuthorizationCache, CacheError> {
        let directory = path.parent().unwrap_or_else(|| Path::new("."));
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("authorizations.redb");
        Ok(AuthorizationCache {
            disk: Disk::open(directory, file, &[ENTRIES, META, MAPPINGS], CACHE_BYTES)?,
        })
    }

    /// The revision the records are complete through (0: none, or a
    /// snapshot not finished).
    pub fn revision(&self) -> Result<u64, CacheError> {
        let Some(value) = self.disk.get(META, REVISION)? else {
            return Ok(0);
        };
        let octets: [u8; 8] = value
            .as_slice()
            .try_into()
            .map_err(|_| CacheError::Corrupt {
                key: "revision".into(),
                reason: "not 8 octets",
            })?;
        Ok(u64::from_be_bytes(octets))
    }

    /// Every cached authorization. A record that does not decode stops the
    /// load, naming it.
    pub fn load(&self) -> Result<Vec<Authorization>, CacheError> {
        self.disk.load::<Entries>()
    }

    /// How many authorizations are cached.
    pub fn count(&self) -> Result<u64, CacheError> {
        Ok(self.disk.len(ENTRIES)?)
    }

    /// Calls `each` with every cached authorization, one record decoded at
    /// a time (a million load without a second copy of them all); stops at
    /// the first error.
    pub fn for_each<E: From<CacheError> + From<DiskError>>(
        &self,
        each: impl FnMut(Authorization) -> Result<(), E>,
    ) -> Result<(), E> {
        self.disk.for_each_record::<Entries, E>(each)
    }

    /// Every cached home address's IPv4 mappings. A record that does not
    /// decode stops the load, naming it.
    pub fn load_mappings(
        &self,
    ) -> Result<Vec<(Ipv6Addr, Vec<nemo_dataplane::bpf::translator::Mapping>)>, CacheError> {
        let mut all = Vec::new();
        self.disk.for_each(MAPPINGS, None, None, |key, value| {
            let home_address = home_address(key)?;
            let mappings = crate::translator::decode_mappings(value).map_err(|reason| {
                CacheError::Corrupt {
                    key: home_address.to_string(),
                    reason,
                }
            })?;
            all.push((home_address, mappings));
            Ok::<_, CacheError>(())
        })?;
        Ok(all)
    }

    /// The cached home addresses.
    pub fn home_addresses(&self) -> Result<BTreeSet<Ipv6Addr>, CacheError> {
        let mut addresses = BTreeSet::new();
        self.disk.for_each(ENTRIES, None, None, |key, _| {
            addresses.insert(home_address(key)?);
            Ok::<_, CacheError>(())
        })?;
        Ok(addresses)
    }

    /// Writes `changes` and the revision they bring the set to (`None`
    /// leaves it) in one transaction, on the device when this returns.
    pub async fn write(
        &self,
        changes: &[CacheChange],
        revision: Option<u64>,
    ) -> Result<(), CacheError> {
        let mut batch: Vec<Write> = Vec::with_capacity(changes.len() + 1);
        for change in changes {
            match change {
                CacheChange::Put(entry) => batch.push(Write::Put {
                    table: ENTRIES,
                    key: entry.home_address.octets().to_vec(),
                    value: encode(entry),
                }),
                CacheChange::Remove(home_address) => {
                    for table in [ENTRIES, MAPPINGS] {
                        batch.push(Write::Delete {
                            table,
                            key: home_address.octets().to_vec(),
                        });
                    }
                }
                CacheChange::Mappings(home_address, mappings) if mappings.is_empty() => {
                    batch.push(Write::Delete {
                        table: MAPPINGS,
                        key: home_address.octets().to_vec(),
                    })
                }
                CacheChange::Mappings(home_address, mappings) => batch.push(Write::Put {
                    table: MAPPINGS,
                    key: home_address.octets().to_vec(),
                    value: crate::translator::encode_mappings(mappings),
                }),
            }
        }
        if let Some(revision) = revision {
            batch.push(Write::Put {
                table: META,
                key: REVISION.to_vec(),
                value: revision.to_be_bytes().to_vec(),
            });
        }
        if batch.is_empty() {
            return Ok(());
        }
        Ok(self.disk.write_async(batch).await?)
    }
}

fn algorithm_code(algorithm: Algorithm) -> u8 {
    match algorithm {
        Algorithm::HmacSha256 => 0,
        Algorithm::HmacSha1_96 => 1,
    }
}

/// Encodes an authorization's record (its first security association).
pub fn encode(entry: &Authorization) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + 17 * entry.prefixes.len());
    out.push(FORMAT);
    if let Some(sa) = entry.security_associations.first() {
        let key = sa.key();
        out.extend_from_slice(&sa.spi().to_be_bytes());
        out.push(algorithm_code(sa.algorithm()));
        // Keys are at most 255 octets (the config and the controller
        // refuse longer ones).
        out.push(u8::try_from(key.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&key[..key.len().min(255)]);
    }
    out.push(u8::from(entry.mobile_router));
    out.push(u8::try_from(entry.prefixes.len()).unwrap_or(u8::MAX));
    for prefix in entry.prefixes.iter().take(255) {
        out.push(prefix.prefix_len());
        out.extend_from_slice(&prefix.network().octets());
    }
    out
}

fn home_address(key: &[u8]) -> Result<Ipv6Addr, CacheError> {
    let octets: [u8; 16] = key.try_into().map_err(|_| CacheError::Corrupt {
        key: format!("{key:02x?}"),
        reason: "key is not 16 octets",
    })?;
    Ok(Ipv6Addr::from(octets))
}

/// Decodes a record.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Authorization, CacheError> {
    let home_address = home_address(key)?;
    let corrupt = |reason| CacheError::Corrupt {
        key: home_address.to_string(),
        reason,
    };
    let mut reader = Reader(value);
    if reader.take(1).ok_or_else(|| corrupt("empty"))?[0] != FORMAT {
        return Err(corrupt("unknown format version"));
    }
    let spi = u32::from_be_bytes(
        reader
            .take(4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| corrupt("short SPI"))?,
    );
    let algorithm = match reader.take(1).ok_or_else(|| corrupt("no algorithm"))?[0] {
        0 => Algorithm::HmacSha256,
        1 => Algorithm::HmacSha1_96,
        _ => return Err(corrupt("unknown algorithm")),
    };
    let key_len = reader.take(1).ok_or_else(|| corrupt("no key length"))?[0];
    let key = reader
        .take(usize::from(key_len))
        .ok_or_else(|| corrupt("short key"))?
        .to_vec();
    let sa = SecurityAssociation::new(spi, algorithm, key)
        .map_err(|_| corrupt("invalid association"))?;
    let mobile_router = reader.take(1).ok_or_else(|| corrupt("no R flag"))?[0] != 0;
    let count = reader.take(1).ok_or_else(|| corrupt("no prefix count"))?[0];
    let mut prefixes = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let length = reader.take(1).ok_or_else(|| corrupt("short prefix"))?[0];
        let network: [u8; 16] = reader
            .take(16)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| corrupt("short prefix"))?;
        prefixes.push(
            Ipv6Net::new(Ipv6Addr::from(network), length)
                .map_err(|_| corrupt("prefix length above 128"))?,
        );
    }
    if !reader.0.is_empty() {
        return Err(corrupt("trailing octets"));
    }
    Ok(Authorization {
        home_address,
        security_associations: vec![sa],
        mobile_router,
        prefixes: prefixes.into(),
    })
}

/// Takes octets off the front of a record.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.0.len() < count {
            return None;
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;

    fn entry(n: u16) -> Authorization {
        Authorization {
            home_address: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n),
            security_associations: vec![SecurityAssociation::new(
                4096 + u32::from(n),
                Algorithm::HmacSha1_96,
                vec![n as u8; 20],
            )
            .unwrap()],
            mobile_router: true,
            prefixes: vec![
                format!("2001:db8:{n:x}::/56").parse().unwrap(),
                format!("2001:db8:{n:x}:8000::/64").parse().unwrap(),
            ]
            .into(),
        }
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded_and_a_damaged_one_is_named() {
        let original = entry(7);
        let key = original.home_address.octets();
        let record = encode(&original);
        assert_eq!(decode(&key, &record).unwrap(), original);
        for cut in 0..record.len() {
            let error = decode(&key, &record[..cut]).unwrap_err();
            assert!(error.to_string().contains("2001:db8:1::7"), "{error}");
        }
        let mut longer = record.clone();
        longer.push(0);
        assert!(decode(&key, &longer).is_err());
        assert!(decode(&key[..15], &record).is_err());
    }

    #[tokio::test]
    async fn changes_and_the_revision_land_together_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorizations.redb");
        let cache = AuthorizationCache::open(&path).unwrap();
        assert_eq!(cache.revision().unwrap(), 0);
        cache
            .write(
                &[CacheChange::Put(entry(1)), CacheChange::Put(entry(2))],
                Some(5),
            )
            .await
            .unwrap();
        cache
            .write(&[CacheChange::Remove(entry(1).home_address)], Some(6))
            .await
            .unwrap();
        drop(cache);
        let reopened = AuthorizationCache::open(&path).unwrap();
        assert_eq!(reopened.revision().unwrap(), 6);
        assert_eq!(reopened.load().unwrap(), vec![entry(2)]);
        assert_eq!(
            reopened.home_addresses().unwrap(),
            BTreeSet::from([entry(2).home_address])
        );
    }
}
