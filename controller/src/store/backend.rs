//! Where the store keeps its tables: a redb file on this machine (the
//! embedded default, `nemo_daemon::disk`), or an etcd cluster (`etcd`),
//! for a controller whose state must outlive its machine. The rest of the
//! store sees only this: write a batch durably, read a table's range, read
//! one key.

use super::etcd::{EtcdSettings, EtcdTables};
use super::{Disk, StoreError, Write};

/// The store's tables, on one backend.
#[derive(Debug)]
pub(super) enum Backend {
    /// A redb file: durable when a write returns (fdatasync).
    Disk(Disk),
    /// An etcd cluster: durable on a quorum of its members when a write
    /// returns.
    Etcd(Box<EtcdTables>),
}

impl Backend {
    /// Opens the file store in `directory`.
    pub(super) fn disk(directory: &std::path::Path) -> Result<Backend, StoreError> {
        Ok(Backend::Disk(Disk::open(
            directory,
            super::FILE,
            super::TABLES,
            super::CACHE_BYTES,
        )?))
    }

    /// Connects to etcd.
    pub(super) async fn etcd(settings: &EtcdSettings) -> Result<Backend, StoreError> {
        Ok(Backend::Etcd(Box::new(
            EtcdTables::connect(settings).await?,
        )))
    }

    /// Writes a batch of whole changes; durable when this returns Ok. On an
    /// error nothing of the batch may be assumed written or not.
    pub(super) async fn write(&self, batch: Vec<Write>) -> Result<(), StoreError> {
        match self {
            Backend::Disk(disk) => Ok(disk.write_async(batch).await?),
            Backend::Etcd(etcd) => etcd.write(batch).await,
        }
    }

    /// The records of `table` with keys in `from..=through` (all when both
    /// are `None`), in key order.
    pub(super) async fn scan(
        &self,
        table: &str,
        from: Option<&[u8]>,
        through: Option<&[u8]>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        match self {
            Backend::Disk(disk) => {
                let mut records = Vec::new();
                disk.for_each(table, from, through, |key, value| {
                    records.push((key.to_vec(), value.to_vec()));
                    Ok::<_, StoreError>(())
                })?;
                Ok(records)
            }
            Backend::Etcd(etcd) => etcd.scan(table, from, through).await,
        }
    }

    /// Writes records as they are, without the revision guard (copying a
    /// store into an empty one); durable when this returns Ok.
    pub(super) async fn write_records(
        &self,
        records: Vec<(&'static str, Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        match self {
            Backend::Disk(disk) => Ok(disk
                .write_async(
                    records
                        .into_iter()
                        .map(|(table, key, value)| Write::Put { table, key, value })
                        .collect(),
                )
                .await?),
            Backend::Etcd(etcd) => etcd.put_records(records).await,
        }
    }

    /// The value of `key` in `table`.
    pub(super) async fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Backend::Disk(disk) => Ok(disk.get(table, key)?),
            Backend::Etcd(etcd) => etcd.get(table, key).await,
        }
    }
}
