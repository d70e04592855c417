//! Durable tables on disk, the one storage engine of nemo's daemons (redb).
//!
//! Why not sled, which nemo started with: sled 0.34's flush ends in
//! `sync_file_range`, never `fsync`/`fdatasync` (sled-0.34.7
//! `src/pagecache/iobuf.rs`), so the log file's size and block allocation,
//! and the device's cache, are not covered; its snapshots are renamed into
//! place without a directory sync. An emulated power loss (ext4 image on a
//! loop device, `kill -9`, copy without `sync`) lost every acknowledged
//! binding in 3 of 6 runs (6 of 6 with the tests here). Patching around
//! that would mean syncing sled's private files behind its back. redb commits with `fdatasync` (and, in its
//! one-phase commit, checksums that let it reject a torn commit at open), so
//! a commit that returned is on the device.
//!
//! The use is narrow on purpose: a daemon keeps its state in memory, writes
//! each batch of changes here in one transaction that is durable when
//! [`Disk::write`] returns (group commit: one sync per batch), and reads
//! everything back at start.

use std::path::{Path, PathBuf};

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

/// Why the disk failed.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The database failed (I/O, corruption, a commit that did not finish).
    #[error("{path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What failed.
        source: Box<redb::Error>,
    },
    /// Opening or syncing the directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The directory holds a store of an earlier nemo (sled), which this
    /// version does not read; starting empty would forget what it holds.
    #[error(
        "{path} holds a sled store of an earlier nemo version; move it aside (its state is not read) or point the store at an empty directory"
    )]
    Legacy {
        /// The directory.
        path: PathBuf,
    },
    /// A table name that was not declared at open.
    #[error("no table {0:?} in this store")]
    UnknownTable(String),
}

/// One change of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Sets `key` to `value` in `table`.
    Put {
        /// The table.
        table: &'static str,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key` from `table` (nothing if absent).
    Delete {
        /// The table.
        table: &'static str,
        /// The key.
        key: Vec<u8>,
    },
}

impl Write {
    /// The table and key this write touches.
    pub fn record(&self) -> (&'static str, Vec<u8>) {
        match self {
            Write::Put { table, key, .. } | Write::Delete { table, key } => (table, key.clone()),
        }
    }
}

/// A database file of named byte tables.
#[derive(Debug, Clone)]
pub struct Disk {
    db: std::sync::Arc<redb::Database>,
    path: PathBuf,
    tables: &'static [&'static str],
}

type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// One table's kind of record: the table, and how a record decodes. The
/// stores built on [`Disk`] read their tables through it
/// ([`Disk::load`], [`Disk::for_each_record`]), so that each says only
/// what its records are.
pub trait RecordKind {
    /// What a record decodes to.
    type Record;
    /// Why a record does not decode, or the disk failed.
    type Error: From<DiskError>;
    /// The table.
    const TABLE: &'static str;
    /// Decodes one record.
    fn decode(key: &[u8], value: &[u8]) -> Result<Self::Record, Self::Error>;
}

/// Whether `directory` holds a sled store (an earlier nemo's).
pub fn holds_sled_store(directory: &Path) -> bool {
    directory.join("conf").exists() && directory.join("db").exists()
}

impl Disk {
    /// Opens (or creates) `file_name` in `directory` with these tables. The
    /// page cache redb may keep is bounded by `cache_bytes`.
    pub fn open(
        directory: &Path,
        file_name: &str,
        tables: &'static [&'static str],
        cache_bytes: usize,
    ) -> Result<Disk, DiskError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DiskError::Io { path, source }
        };
        std::fs::create_dir_all(directory).map_err(io(directory))?;
        let path = directory.join(file_name);
        if !path.exists() && holds_sled_store(directory) {
            return Err(DiskError::Legacy {
                path: directory.to_owned(),
            });
        }
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| database(&path, e))?;
        // The stores hold keys (the controller's, the home agent's copy of
        // its authorizations): the owner's alone, whatever the umask.
        crate::secret::owner_only(&path).map_err(io(&path))?;
        // A file just created is durable only once its directory entry is.
        std::fs::File::open(directory)
            .and_then(|d| d.sync_all())
            .map_err(io(directory))?;
        let disk = Disk {
            db: std::sync::Arc::new(db),
            path,
            tables,
        };
        let txn = disk.db.begin_write().map_err(|e| disk.error(e))?;
        for name in tables {
            txn.open_table(Table::new(name))
                .map_err(|e| disk.error(e))?;
        }
        txn.commit().map_err(|e| disk.error(e))?;
        Ok(disk)
    }

    fn error(&self, error: impl Into<redb::Error>) -> DiskError {
        database(&self.path, error)
    }

    fn table(&self, name: &str) -> Result<Table, DiskError> {
        self.tables
            .iter()
            .find(|t| **t == name)
            .map(|t| Table::new(t))
            .ok_or_else(|| DiskError::UnknownTable(name.to_owned()))
    }

    /// Writes a batch in one transaction; when this returns Ok, the batch
    /// is on the device (fdatasync) and survives a power loss. On an error
    /// nothing of the batch may be assumed written or not written: the
    /// caller must stop acknowledging (redb refuses further writes until
    /// reopened).
    pub fn write(&self, batch: &[Write]) -> Result<(), DiskError> {
        let mut txn = self.db.begin_write().map_err(|e| self.error(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.error(e))?;
        {
            // Every declared table open once for the batch, by position.
            let mut open = Vec::with_capacity(self.tables.len());
            for name in self.tables {
                open.push(
                    txn.open_table(Table::new(name))
                        .map_err(|e| self.error(e))?,
                );
            }
            for write in batch {
                let (Write::Put { table, .. } | Write::Delete { table, .. }) = write;
                let table = self
                    .tables
                    .iter()
                    .position(|t| t == table)
                    .and_then(|at| open.get_mut(at))
                    .ok_or_else(|| DiskError::UnknownTable((*table).to_owned()))?;
                match write {
                    Write::Put { key, value, .. } => {
                        table
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(|e| self.error(e))?;
                    }
                    Write::Delete { key, .. } => {
                        table.remove(key.as_slice()).map_err(|e| self.error(e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| self.error(e))
    }

    /// [`Disk::write`] on a blocking thread (the sync must not stall the
    /// runtime).
    pub async fn write_async(&self, batch: Vec<Write>) -> Result<(), DiskError> {
        let disk = self.clone();
        tokio::task::spawn_blocking(move || disk.write(&batch))
            .await
            .map_err(|e| DiskError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?
    }

    /// Calls `each` with every record of `table` whose key is in
    /// `from..=through` (all records when both are `None`), in key order;
    /// stops at the first error `each` returns.
    pub fn for_each<E: From<DiskError>>(
        &self,
        table: &str,
        from: Option<&[u8]>,
        through: Option<&[u8]>,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn
            .open_table(self.table(table)?)
            .map_err(|e| self.error(e))?;
        let range = match (from, through) {
            (Some(from), Some(through)) => table.range::<&[u8]>(from..=through),
            (Some(from), None) => table.range::<&[u8]>(from..),
            (None, Some(through)) => table.range::<&[u8]>(..=through),
            (None, None) => table.iter(),
        }
        .map_err(|e| self.error(e))?;
        for record in range {
            let (key, value) = record.map_err(|e| self.error(e))?;
            each(key.value(), value.value())?;
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record of `K`'s table, in key order. The first that does not
    /// decode stops the load, naming it: a store that silently forgot a
    /// record would break the promise of what it acknowledged.
    pub fn load<K: RecordKind>(&self) -> Result<Vec<K::Record>, K::Error> {
        let mut records = Vec::new();
        self.for_each_record::<K, K::Error>(|record| {
            records.push(record);
            Ok(())
        })?;
        Ok(records)
    }

    /// Calls `each` with every record of `K`'s table, decoded one at a time
    /// (a million load without a second copy of them all); stops at the
    /// first error, a record that does not decode included.
    pub fn for_each_record<K: RecordKind, E: From<K::Error> + From<DiskError>>(
        &self,
        mut each: impl FnMut(K::Record) -> Result<(), E>,
    ) -> Result<(), E> {
        self.for_each(K::TABLE, None, None, |key, value| {
            each(K::decode(key, value).map_err(E::from)?)
        })
    }

    /// How many records `table` holds (to size what a load fills).
    pub fn len(&self, table: &str) -> Result<u64, DiskError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn
            .open_table(self.table(table)?)
            .map_err(|e| self.error(e))?;
        table.len().map_err(|e| self.error(e))
    }

    /// The first (smallest) key of `table`, if it holds any.
    pub fn first_key(&self, table: &str) -> Result<Option<Vec<u8>>, DiskError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn
            .open_table(self.table(table)?)
            .map_err(|e| self.error(e))?;
        let first = table
            .first()
            .map_err(|e| self.error(e))?
            .map(|(key, _)| key.value().to_vec());
        Ok(first)
    }

    /// The value of `key` in `table`.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, DiskError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn
            .open_table(self.table(table)?)
            .map_err(|e| self.error(e))?;
        Ok(table
            .get(key)
            .map_err(|e| self.error(e))?
            .map(|v| v.value().to_vec()))
    }
}

fn database(path: &Path, error: impl Into<redb::Error>) -> DiskError {
    DiskError::Database {
        path: path.to_owned(),
        source: Box::new(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: &[&str] = &["a", "b"];

    fn put(table: &'static str, key: &[u8], value: &[u8]) -> Write {
        Write::Put {
            table,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn all(disk: &Disk, table: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        disk.for_each::<DiskError>(table, None, None, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn batches_survive_reopen_and_tables_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let disk = Disk::open(dir.path(), "t.redb", TABLES, 1 << 20).unwrap();
            disk.write(&[
                put("a", b"1", b"x"),
                put("a", b"2", b"y"),
                put("b", b"1", b"z"),
            ])
            .unwrap();
            disk.write(&[Write::Delete {
                table: "a",
                key: b"2".to_vec(),
            }])
            .unwrap();
        }
        let disk = Disk::open(dir.path(), "t.redb", TABLES, 1 << 20).unwrap();
        assert_eq!(all(&disk, "a"), vec![(b"1".to_vec(), b"x".to_vec())]);
        assert_eq!(all(&disk, "b"), vec![(b"1".to_vec(), b"z".to_vec())]);
        assert_eq!(disk.get("b", b"1").unwrap(), Some(b"z".to_vec()));
    }

    #[test]
    fn ranges_are_inclusive_and_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), "t.redb", TABLES, 1 << 20).unwrap();
        let batch: Vec<Write> = (1u8..=5).map(|k| put("a", &[k], &[k])).collect();
        disk.write(&batch).unwrap();
        let mut keys = Vec::new();
        disk.for_each::<DiskError>("a", Some(&[2]), Some(&[4]), |k, _| {
            keys.push(k[0]);
            Ok(())
        })
        .unwrap();
        assert_eq!(keys, vec![2, 3, 4]);
    }

    #[test]
    fn unknown_tables_and_legacy_stores_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::open(dir.path(), "t.redb", TABLES, 1 << 20).unwrap();
        assert!(matches!(
            disk.write(&[put("nope", b"1", b"1")]),
            Err(DiskError::UnknownTable(_))
        ));
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join("conf"), b"").unwrap();
        std::fs::write(old.path().join("db"), b"").unwrap();
        let error = Disk::open(old.path(), "t.redb", TABLES, 1 << 20).unwrap_err();
        assert!(matches!(error, DiskError::Legacy { .. }), "{error}");
    }
}
