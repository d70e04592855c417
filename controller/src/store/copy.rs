//! Moving a deployment between backends: every record of every table
//! copied from one store (a directory, or a prefix in etcd) into an empty
//! one, the revision last, then both read back and compared record by
//! record, and the copy loaded as a controller would load it. Revisions
//! keep their meaning: a watcher resumes from the same revision against
//! the copy. A directory holding an earlier nemo's sled store (same
//! tables, keys and values) is read as a source.

use std::path::PathBuf;

use super::backend::Backend;
use super::etcd::EtcdSettings;
use super::{StoreError, REVISION_KEY, TABLES};

/// Where a store is.
#[derive(Debug, Clone)]
pub enum Location {
    /// A redb file in this directory.
    Directory(PathBuf),
    /// Under a prefix in an etcd cluster.
    Etcd(EtcdSettings),
}

impl Location {
    async fn open(&self) -> Result<Backend, StoreError> {
        match self {
            Location::Directory(path) => Backend::disk(path),
            Location::Etcd(settings) => Backend::etcd(settings).await,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Directory(path) => write!(f, "directory {}", path.display()),
            Location::Etcd(settings) => write!(
                f,
                "etcd {} under {}",
                settings.endpoints.join(","),
                settings.prefix
            ),
        }
    }
}

/// Where records are read from.
enum Source {
    /// This version's store.
    Tables(Backend),
    /// An earlier nemo's sled store: its trees are our tables.
    Sled(sled::Db),
}

impl Source {
    async fn open(location: &Location) -> Result<Source, StoreError> {
        match location {
            Location::Directory(path)
                if !path.join(super::FILE).exists()
                    && nemo_daemon::disk::holds_sled_store(path) =>
            {
                let db = sled::Config::new().path(path).open().map_err(|e| {
                    StoreError::Storage(format!(
                        "reading the sled store in {}: {e}",
                        path.display()
                    ))
                })?;
                Ok(Source::Sled(db))
            }
            other => Ok(Source::Tables(other.open().await?)),
        }
    }

    async fn scan(&self, table: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        match self {
            Source::Tables(backend) => backend.scan(table, None, None).await,
            Source::Sled(db) => {
                // A tree the earlier version did not have: no records (and
                // not created by asking).
                if !db.tree_names().iter().any(|name| name == table.as_bytes()) {
                    return Ok(Vec::new());
                }
                let sled_error = |e: sled::Error| StoreError::Storage(format!("sled: {e}"));
                db.open_tree(table)
                    .map_err(sled_error)?
                    .iter()
                    .map(|record| {
                        record
                            .map(|(key, value)| (key.to_vec(), value.to_vec()))
                            .map_err(sled_error)
                    })
                    .collect()
            }
        }
    }
}

/// What a copy moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Records per table, as read back from the copy.
    pub records: Vec<(&'static str, usize)>,
    /// The revision of both.
    pub revision: u64,
}

/// Copies the store at `from` into the empty store at `to` and checks the
/// copy: every table read back from both must be equal. A target that
/// holds anything is refused before anything is written. Stop the
/// controller using `from` first (a change made during the copy would be
/// missing from it; the check would then fail).
pub async fn copy(from: &Location, to: &Location) -> Result<Copied, StoreError> {
    let source = Source::open(from).await?;
    let target = to.open().await?;
    for table in TABLES {
        if !target.scan(table, None, None).await?.is_empty() {
            return Err(StoreError::Precondition(format!(
                "{to} is not empty (table {table}): a copy goes into an empty store only"
            )));
        }
    }
    let mut revision_record = None;
    for table in TABLES {
        let mut records = Vec::new();
        for (key, value) in source.scan(table).await? {
            // The revision goes last: a store without it is not a store yet.
            if *table == "meta" && key == REVISION_KEY {
                revision_record = Some((*table, key, value));
            } else {
                records.push((*table, key, value));
            }
        }
        for chunk in records.chunks(4096) {
            target.write_records(chunk.to_vec()).await?;
        }
    }
    let revision = match revision_record {
        Some(record) => {
            let revision = super::decode(&record.2)?;
            target.write_records(vec![record]).await?;
            revision
        }
        None => 0,
    };
    let mut counts = Vec::new();
    for table in TABLES {
        let copied = target.scan(table, None, None).await?;
        if source.scan(table).await? != copied {
            return Err(StoreError::Storage(format!(
                "the copy's table {table} differs from the source's (was {from} changed during the copy?)"
            )));
        }
        counts.push((*table, copied.len()));
    }
    // Loads as a controller would load it: every record decodes.
    let (records, _) = target.snapshot(super::records::STATE_TABLES).await?;
    super::State::loaded(records).map_err(|e| {
        StoreError::Storage(format!("the copy in {to} does not load as a store: {e}"))
    })?;
    Ok(Copied {
        records: counts,
        revision,
    })
}
