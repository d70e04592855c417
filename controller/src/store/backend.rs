//! Where the store keeps its tables: a redb file on this machine (the
//! embedded default, `nemo_daemon::disk`), or an etcd cluster (`etcd`),
//! for a controller whose state must outlive its machine. The rest of the
//! store sees only this: write a batch durably, read a table's range, read
//! one key.

use super::etcd::{EtcdSettings, EtcdTables, Leadership, Written};
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

/// What a refused commit leaves the store to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterRefusal {
    /// Acknowledge nothing more until restarted (and loaded from disk).
    StopAcknowledging,
    /// Put memory back as the shared store holds it, and go on.
    PutBack,
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

    /// Where the store is, for logs.
    pub(super) fn location(&self) -> String {
        match self {
            Backend::Disk(disk) => format!("redb {}", disk.path().display()),
            Backend::Etcd(etcd) => format!("etcd {}", etcd.prefix()),
        }
    }

    /// The other replicas' writes to follow, where there are other writers
    /// (etcd); `None` for the file, whose only writer is this process.
    pub(super) fn shared(&self) -> Option<&EtcdTables> {
        match self {
            Backend::Disk(_) => None,
            Backend::Etcd(etcd) => Some(etcd),
        }
    }

    /// What a refused commit leaves (the questions the log asks of its
    /// backend, answered here instead of by the log matching on the kind).
    pub(super) fn after_refusal(&self) -> AfterRefusal {
        match self {
            // One writer (this process), and a write that failed may or may
            // not be on the file: nothing more can be acknowledged.
            Backend::Disk(_) => AfterRefusal::StopAcknowledging,
            // Other replicas write too: memory is put back as etcd holds it.
            Backend::Etcd(_) => AfterRefusal::PutBack,
        }
    }

    /// Why changes are refused after a failure that stopped them.
    pub(super) fn refusal(&self) -> StoreError {
        match self {
            Backend::Disk(_) => StoreError::Storage(
                "not made: an earlier commit to the file failed; restart the controller".into(),
            ),
            Backend::Etcd(_) => StoreError::Unavailable(
                "etcd: this replica is reloading the store after etcd failed it".into(),
            ),
        }
    }

    /// The newest revision another writer may have made, when there can be
    /// another writer (etcd: one quorum read); `None` for the file, whose
    /// only writer is this process, so memory is always the newest.
    pub(super) async fn newest_elsewhere(&self) -> Result<Option<u64>, StoreError> {
        match self {
            Backend::Disk(_) => Ok(None),
            Backend::Etcd(etcd) => etcd.current_revision().await.map(Some),
        }
    }

    /// The values `records` had at etcd revision `revision`, to put back in
    /// memory; the file has no other writer to put back from.
    pub(super) async fn read_at(
        &self,
        records: &[super::etcd::RecordKey],
        revision: i64,
    ) -> Result<Vec<super::etcd::Record>, StoreError> {
        match self {
            Backend::Disk(_) => Err(StoreError::Storage(
                "the file store cannot put memory back".into(),
            )),
            Backend::Etcd(etcd) => etcd.read_at(records, revision).await,
        }
    }

    /// Connects to etcd.
    pub(super) async fn etcd(settings: &EtcdSettings) -> Result<Backend, StoreError> {
        Ok(Backend::Etcd(Box::new(
            EtcdTables::connect(settings).await?,
        )))
    }

    /// Writes a batch of whole changes after revision `before` through
    /// revision `through`; what it says is written is durable. Of what it
    /// refused with an error nothing may be assumed written or not (the
    /// file: the whole batch; etcd: the transactions from the failed one
    /// on).
    pub(super) async fn write(&self, batch: Vec<Write>, before: u64, through: u64) -> Written {
        match self {
            Backend::Disk(disk) => match disk.write_async(batch).await {
                Ok(()) => Written {
                    through,
                    etcd_revisions: Vec::new(),
                    refused: None,
                },
                Err(error) => Written {
                    through: before,
                    etcd_revisions: Vec::new(),
                    refused: Some((error.into(), Vec::new())),
                },
            },
            Backend::Etcd(etcd) => etcd.write(batch, before).await,
        }
    }

    /// Every record of `tables`, as of one moment, and etcd's revision of
    /// that moment (0 for the file, which has one writer: this process).
    pub(super) async fn snapshot(
        &self,
        tables: &[&'static str],
    ) -> Result<(Vec<(&'static str, Vec<u8>, Vec<u8>)>, i64), StoreError> {
        match self {
            Backend::Disk(_) => {
                let mut records = Vec::new();
                for table in tables {
                    for (key, value) in self.scan(table, None, None).await? {
                        records.push((*table, key, value));
                    }
                }
                Ok((records, 0))
            }
            Backend::Etcd(etcd) => etcd.snapshot(tables).await,
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

    /// The revision of the oldest event the history holds.
    pub(super) async fn first_event(&self) -> Result<Option<u64>, StoreError> {
        match self {
            Backend::Disk(disk) => Ok(disk
                .first_key("events")?
                .and_then(|key| <[u8; 8]>::try_from(key).ok())
                .map(u64::from_be_bytes)),
            Backend::Etcd(etcd) => etcd.first_event().await,
        }
    }

    /// Deletes the events `from..=through` (etcd: only while `holding` the
    /// maintainer's key; `false` when not, and nothing is deleted).
    pub(super) async fn delete_events(
        &self,
        from: u64,
        through: u64,
        holding: Option<&Leadership>,
    ) -> Result<bool, StoreError> {
        match (self, holding) {
            (Backend::Disk(disk), _) => {
                disk.write_async(
                    (from..=through)
                        .map(|revision| Write::Delete {
                            table: "events",
                            key: revision.to_be_bytes().to_vec(),
                        })
                        .collect(),
                )
                .await?;
                Ok(true)
            }
            (Backend::Etcd(etcd), Some(leadership)) => {
                etcd.delete_events(leadership, from, through).await
            }
            (Backend::Etcd(_), None) => Ok(false),
        }
    }
}
