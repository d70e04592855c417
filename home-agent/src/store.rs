//! The binding cache on disk (`nemo_daemon::disk`, one redb file).
//!
//! One record per home address. A batch of changes is written with
//! `commit`, one transaction that is on the device (fdatasync) when it
//! returns; the daemon sends no accepting Binding Acknowledgement before the
//! commit that covers its binding returns, and batches changes (group commit)
//! so durability costs one sync per batch, not per registration.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv6Net;
use std::sync::Arc;

use nemo::ha::{Binding, CareOf, Change};
use nemo::wire::{Lifetime, NtpTimestamp, SequenceNumber};
use nemo_daemon::disk::{Disk, DiskError, RecordKind, Write};

/// Record format version of a binding to an IPv6 care-of address: its
/// care-of address is 16 octets. What every nemo before IPv4 care-of
/// addresses wrote and reads, so that a pair can be upgraded one member at
/// a time while its bindings are IPv6 ones.
const FORMAT: u8 = 1;
/// Record format version of a binding to an IPv4 care-of address (RFC
/// 5555): the care-of field is a kind octet, the IPv4 care-of address and,
/// for UDP through a NAT, the datagram's source address and port
/// (`CARE_OF_IPV4`, 5 octets, or `CARE_OF_UDP`, 11). An older nemo refuses
/// such a record as an unknown format instead of misreading it.
const FORMAT_IPV4_CARE_OF: u8 = 2;
const CARE_OF_IPV4: u8 = 1;
const CARE_OF_UDP: u8 = 2;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk failed (I/O, corruption).
    #[error("store: {0}")]
    Disk(#[from] DiskError),
    /// A record that does not decode.
    #[error("store: record for {key} is corrupt: {reason}")]
    Corrupt {
        /// The record's key, as an address when it is one.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The on-disk binding cache.
#[derive(Debug, Clone)]
pub struct Store {
    disk: Disk,
}

/// The store's file in its directory, and its one table.
const FILE: &str = "bindings.redb";
const BINDINGS: &str = "bindings";

/// redb's page cache: the daemon keeps every binding in memory already, so
/// the store's cache only needs to hold the tree's upper levels and the
/// pages a batch touches.
const CACHE_BYTES: usize = 32 << 20;

/// A change as the bindings table (and the admin view) takes it: the
/// binding upserted, or a removal, by home address. The active's own
/// [`Change`]s, and those a standby takes from it
/// (`crate::replication::wire::Replicated`, which carry no more than the
/// address for a removal).
pub trait BindingWrite {
    /// The home address: the table's key.
    fn home_address(&self) -> Ipv6Addr;
    /// The binding written, or `None` for a removal.
    fn upserted(&self) -> Option<&Arc<Binding>>;
}

impl BindingWrite for Change {
    fn home_address(&self) -> Ipv6Addr {
        self.binding().home_address
    }

    fn upserted(&self) -> Option<&Arc<Binding>> {
        match self {
            Change::Upsert { binding, .. } => Some(binding),
            Change::Remove { .. } => None,
        }
    }
}

/// Milliseconds since the Unix epoch, as records (and the replication
/// stream) keep times: [`nemo_daemon::clock::unix_ms`], never negative.
pub fn unix_millis(time: SystemTime) -> u64 {
    nemo_daemon::clock::unix_ms(time).unsigned_abs()
}

/// Octets of a binding's record, as [`encode`] makes it, without making it
/// (replication sizes its frames by this, for every change it sends).
pub fn encoded_len(binding: &Binding) -> usize {
    // Format, care-of, flags, sequence, SPI, timestamp, lifetime,
    // registered, expires, prefix count; then 17 octets a prefix.
    const FIXED: usize = 1 + 1 + 2 + 4 + 8 + 2 + 8 + 8 + 1;
    FIXED + care_of_len(&binding.care_of) + 17 * binding.prefixes.len().min(usize::from(u8::MAX))
}

/// Octets of the care-of field.
fn care_of_len(care_of: &CareOf) -> usize {
    match care_of {
        CareOf::Ipv6(_) => 16,
        CareOf::Ipv4(_) => 1 + 4,
        CareOf::Udp { .. } => 1 + 4 + 4 + 2,
    }
}

/// The format version and care-of field of a binding.
fn put_care_of(out: &mut Vec<u8>, care_of: &CareOf) {
    match care_of {
        CareOf::Ipv6(address) => {
            out.push(FORMAT);
            out.extend_from_slice(&address.octets());
        }
        CareOf::Ipv4(address) => {
            out.push(FORMAT_IPV4_CARE_OF);
            out.push(CARE_OF_IPV4);
            out.extend_from_slice(&address.octets());
        }
        CareOf::Udp { care_of, outer } => {
            out.push(FORMAT_IPV4_CARE_OF);
            out.push(CARE_OF_UDP);
            out.extend_from_slice(&care_of.octets());
            out.extend_from_slice(&outer.ip().octets());
            out.extend_from_slice(&outer.port().to_be_bytes());
        }
    }
}

/// Encodes a binding record (the key is the home address).
pub fn encode(binding: &Binding) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 17 * binding.prefixes.len());
    put_care_of(&mut out, &binding.care_of);
    let flags = u8::from(binding.mobile_router) | (u8::from(binding.timestamp.is_some()) << 1);
    out.push(flags);
    out.extend_from_slice(&binding.sequence.0.to_be_bytes());
    out.extend_from_slice(&binding.spi.to_be_bytes());
    out.extend_from_slice(&binding.timestamp.unwrap_or_default().0.to_be_bytes());
    out.extend_from_slice(&binding.lifetime.0.to_be_bytes());
    out.extend_from_slice(&unix_millis(binding.registered_at).to_be_bytes());
    out.extend_from_slice(&unix_millis(binding.expires_at).to_be_bytes());
    // A binding has at most nemo::ha::MAX_PREFIXES (255) prefixes: an
    // authorization with more is refused, and one Mobility Header holds
    // fewer options (2048 octets / 20 per option); the cut below never
    // happens.
    out.push(u8::try_from(binding.prefixes.len()).unwrap_or(u8::MAX));
    for prefix in binding.prefixes.iter().take(usize::from(u8::MAX)) {
        out.push(prefix.prefix_len());
        out.extend_from_slice(&prefix.network().octets());
    }
    out
}

/// A cursor over a record that fails instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at + n)?;
        self.at += n;
        Some(slice)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

/// Decodes a record.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Binding, StoreError> {
    let key_octets: [u8; 16] = key.try_into().map_err(|_| StoreError::Corrupt {
        key: format!("{key:02x?}"),
        reason: "key is not an IPv6 address",
    })?;
    let home_address = Ipv6Addr::from(key_octets);
    let corrupt = |reason| StoreError::Corrupt {
        key: home_address.to_string(),
        reason,
    };
    let mut reader = Reader {
        bytes: value,
        at: 0,
    };
    let truncated = || corrupt("truncated");
    let care_of = match reader.array::<1>().ok_or_else(truncated)?[0] {
        FORMAT => CareOf::Ipv6(Ipv6Addr::from(reader.array::<16>().ok_or_else(truncated)?)),
        FORMAT_IPV4_CARE_OF => {
            let kind = reader.array::<1>().ok_or_else(truncated)?[0];
            let care_of = Ipv4Addr::from(reader.array::<4>().ok_or_else(truncated)?);
            match kind {
                CARE_OF_IPV4 => CareOf::Ipv4(care_of),
                CARE_OF_UDP => {
                    let outer = Ipv4Addr::from(reader.array::<4>().ok_or_else(truncated)?);
                    let port = u16::from_be_bytes(reader.array().ok_or_else(truncated)?);
                    CareOf::Udp {
                        care_of,
                        outer: SocketAddrV4::new(outer, port),
                    }
                }
                _ => return Err(corrupt("unknown kind of care-of address")),
            }
        }
        _ => return Err(corrupt("unknown format version")),
    };
    let flags = reader.array::<1>().ok_or_else(truncated)?[0];
    let sequence = u16::from_be_bytes(reader.array().ok_or_else(truncated)?);
    let spi = u32::from_be_bytes(reader.array().ok_or_else(truncated)?);
    let timestamp = u64::from_be_bytes(reader.array().ok_or_else(truncated)?);
    let lifetime = u16::from_be_bytes(reader.array().ok_or_else(truncated)?);
    let registered = u64::from_be_bytes(reader.array().ok_or_else(truncated)?);
    let expires = u64::from_be_bytes(reader.array().ok_or_else(truncated)?);
    let count = reader.array::<1>().ok_or_else(truncated)?[0];
    let mut prefixes = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let length = reader.array::<1>().ok_or_else(truncated)?[0];
        let network = Ipv6Addr::from(reader.array::<16>().ok_or_else(truncated)?);
        prefixes.push(Ipv6Net::new(network, length).map_err(|_| corrupt("prefix length"))?);
    }
    if reader.at != value.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Binding {
        home_address,
        care_of,
        prefixes: prefixes.into(),
        mobile_router: flags & 1 != 0,
        sequence: SequenceNumber(sequence),
        spi,
        timestamp: (flags & 2 != 0).then_some(NtpTimestamp(timestamp)),
        lifetime: Lifetime(lifetime),
        registered_at: UNIX_EPOCH + Duration::from_millis(registered),
        expires_at: UNIX_EPOCH + Duration::from_millis(expires),
    })
}

/// The bindings table's records.
struct Bindings;

impl RecordKind for Bindings {
    type Record = Binding;
    type Error = StoreError;
    const TABLE: &'static str = BINDINGS;
    fn decode(key: &[u8], value: &[u8]) -> Result<Binding, StoreError> {
        decode(key, value)
    }
}

impl Store {
    /// Opens (or creates) the store in a directory.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            disk: Disk::open(path, FILE, &[BINDINGS], CACHE_BYTES)?,
        })
    }

    /// Every binding on disk. A record that does not decode stops the
    /// load: a home agent that silently forgot bindings would break the
    /// promise of its acknowledgements.
    pub fn load(&self) -> Result<Vec<Binding>, StoreError> {
        self.disk.load::<Bindings>()
    }

    /// How many bindings are on disk.
    pub fn count(&self) -> Result<u64, StoreError> {
        Ok(self.disk.len(BINDINGS)?)
    }

    /// Calls `each` with every binding on disk, one record decoded at a
    /// time (a restart with a million holds no second copy of them all);
    /// stops at the first error, a record that does not decode included.
    pub fn for_each<E: From<StoreError> + From<DiskError>>(
        &self,
        each: impl FnMut(Binding) -> Result<(), E>,
    ) -> Result<(), E> {
        self.disk.for_each_record::<Bindings, E>(each)
    }

    /// Writes a batch of changes in one transaction; when this returns, the
    /// batch survives a power loss. The one way bindings reach the disk,
    /// whatever the role: the active's own changes and those a standby
    /// takes from it.
    pub async fn commit<'a, C: BindingWrite + 'a>(
        &self,
        changes: impl IntoIterator<Item = &'a C>,
    ) -> Result<(), StoreError> {
        let batch: Vec<Write> = changes
            .into_iter()
            .map(|change| {
                let key = change.home_address().octets().to_vec();
                match change.upserted() {
                    Some(binding) => Write::Put {
                        table: BINDINGS,
                        key,
                        value: encode(binding),
                    },
                    None => Write::Delete {
                        table: BINDINGS,
                        key,
                    },
                }
            })
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        Ok(self.disk.write_async(batch).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
        Binding {
            home_address: "2001:db8:1::100".parse().unwrap(),
            care_of: CareOf::Ipv6("2001:db8:2::10".parse().unwrap()),
            prefixes: vec![
                "2001:db8:100::/56".parse().unwrap(),
                "2001:db8:200:1::/64".parse().unwrap(),
            ]
            .into(),
            mobile_router: true,
            sequence: SequenceNumber(4242),
            spi: 0x1000,
            timestamp: Some(NtpTimestamp(0xdead_beef_0000_0001)),
            lifetime: Lifetime(150),
            registered_at: now,
            expires_at: now + Duration::from_secs(600),
        }
    }

    /// The three kinds of care-of address.
    fn care_ofs() -> [CareOf; 3] {
        [
            CareOf::Ipv6("2001:db8:2::10".parse().unwrap()),
            CareOf::Ipv4(Ipv4Addr::new(192, 0, 2, 10)),
            CareOf::Udp {
                care_of: Ipv4Addr::new(192, 0, 2, 10),
                outer: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 99), 40000),
            },
        ]
    }

    #[test]
    fn a_binding_to_an_ipv6_care_of_address_keeps_the_first_format() {
        // An older member of a pair reads it: format 1, the address next.
        let record = encode(&binding());
        assert_eq!(record[0], 1);
        assert_eq!(
            record[1..17],
            "2001:db8:2::10".parse::<Ipv6Addr>().unwrap().octets()
        );
        for care_of in &care_ofs()[1..] {
            let record = encode(&Binding {
                care_of: *care_of,
                ..binding()
            });
            assert_eq!(record[0], 2, "{care_of}");
        }
    }

    #[test]
    fn encoded_len_is_the_records_length() {
        for care_of in care_ofs() {
            let mut binding = binding();
            binding.care_of = care_of;
            assert_eq!(encoded_len(&binding), encode(&binding).len(), "{care_of}");
        }
        let mut binding = binding();
        for prefixes in [0usize, 2, 255] {
            binding.prefixes = (0..prefixes)
                .map(|n| {
                    ipnet::Ipv6Net::new(
                        std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x100, n as u16, 0, 0, 0, 0),
                        64,
                    )
                    .unwrap()
                })
                .collect::<Vec<_>>()
                .into();
            binding.timestamp = None;
            assert_eq!(encoded_len(&binding), encode(&binding).len(), "{prefixes}");
        }
    }

    #[test]
    fn records_round_trip() {
        for care_of in care_ofs() {
            let b = Binding {
                care_of,
                ..binding()
            };
            let record = encode(&b);
            assert_eq!(decode(&b.home_address.octets(), &record).unwrap(), b);
        }
        let plain = Binding {
            timestamp: None,
            prefixes: Box::default(),
            mobile_router: false,
            ..binding()
        };
        assert_eq!(
            decode(&plain.home_address.octets(), &encode(&plain)).unwrap(),
            plain
        );
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        for care_of in care_ofs() {
            let record = encode(&Binding {
                care_of,
                ..binding()
            });
            let key = binding().home_address.octets();
            for cut in 0..record.len() {
                assert!(
                    decode(&key, &record[..cut]).is_err(),
                    "{care_of}: cut at {cut}"
                );
            }
            if record[0] == 2 {
                let mut kind = record.clone();
                kind[1] = 7;
                assert!(decode(&key, &kind).is_err());
            }
        }
        let b = binding();
        let record = encode(&b);
        let key = b.home_address.octets();
        let mut extra = record.clone();
        extra.push(0);
        assert!(decode(&key, &extra).is_err());
        let mut version = record.clone();
        version[0] = 9;
        assert!(decode(&key, &version).is_err());
        assert!(decode(&key[..15], &record).is_err());
        let mut bad_length = record;
        let last_prefix = bad_length.len() - 17;
        bad_length[last_prefix] = 200;
        assert!(decode(&key, &bad_length).is_err());
    }

    #[tokio::test]
    async fn flushed_bindings_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut other = binding();
            other.home_address = "2001:db8:1::200".parse().unwrap();
            store
                .commit(&[
                    Change::Upsert {
                        binding: binding().into(),
                        previous: None,
                    },
                    Change::Upsert {
                        binding: other.clone().into(),
                        previous: None,
                    },
                ])
                .await
                .unwrap();
            store
                .commit(&[Change::Remove {
                    binding: other.into(),
                }])
                .await
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), vec![binding()]);
    }
}
