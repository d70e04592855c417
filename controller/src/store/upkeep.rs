//! Keeping the store bounded: the event history is trimmed to its newest
//! `keep` events (a watcher resuming from before them is told to start
//! over: `api`), and with etcd, etcd's own key history is compacted,
//! since etcd keeps every old value until then and refuses all writes once
//! its quota is full. With etcd, one replica at a time does this, elected
//! with a lease (`etcd::upkeep`); a file store has one controller.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::etcd::{Candidacy, EtcdTables, Leadership};
use super::log::lock;
use super::{Store, StoreError};

/// How the history is kept.
#[derive(Debug, Clone)]
pub struct Upkeep {
    /// Events kept for watchers that resume (daemons after a restart or a
    /// lost connection, `nemoctl events --from`).
    pub keep: u64,
    /// Time between trims.
    pub every: Duration,
    /// This replica's name, held in etcd while it is the maintainer.
    pub who: String,
}

/// Events deleted per transaction: another replica's follower receives a
/// transaction's deletions in one etcd watch message.
const TRIM_CHUNK: u64 = 1000;
/// The maintainer's lease: another replica takes over at most this long
/// after the maintainer dies.
const LEASE: Duration = Duration::from_secs(10);

/// What a trim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trimmed {
    /// The events through this revision are gone (`deleted` of them now).
    Through { revision: u64, deleted: u64 },
    /// Nothing to trim: the history holds `keep` events or fewer.
    Nothing,
    /// This replica no longer holds the maintainer's key: it stopped.
    NotMaintainer,
}

impl Store {
    /// Starts the upkeep; the task ends with the store.
    pub fn start_upkeep(self: &Arc<Store>, upkeep: Upkeep) {
        let task = match self.backend.shared() {
            None => {
                self.maintainer.store(true, Ordering::Release);
                tokio::spawn(keep_file(Arc::downgrade(self), upkeep))
            }
            Some(etcd) => tokio::spawn(keep_etcd(Arc::downgrade(self), etcd.clone(), upkeep)),
        };
        lock(&self.tasks).push(task.abort_handle());
    }

    /// Whether this replica keeps the history now (the file store: always
    /// once started).
    pub fn is_maintainer(&self) -> bool {
        self.maintainer.load(Ordering::Acquire)
    }

    /// Trims the file store's history to its newest `keep` events (etcd:
    /// only the elected replica trims, through [`Store::start_upkeep`]).
    pub async fn trim_history(&self, keep: u64) -> Result<Trimmed, StoreError> {
        self.trim(keep, None).await
    }

    async fn trim(&self, keep: u64, holding: Option<&Leadership>) -> Result<Trimmed, StoreError> {
        let newest = self.log.flushed.load(Ordering::Acquire);
        let through = newest.saturating_sub(keep.max(1));
        let Some(first) = self.backend.first_event().await? else {
            return Ok(Trimmed::Nothing);
        };
        if through < first {
            return Ok(Trimmed::Nothing);
        }
        let mut from = first;
        while from <= through {
            let to = (from + TRIM_CHUNK - 1).min(through);
            if !self.backend.delete_events(from, to, holding).await? {
                return Ok(Trimmed::NotMaintainer);
            }
            from = to + 1;
        }
        Ok(Trimmed::Through {
            revision: through,
            deleted: through - first + 1,
        })
    }
}

fn told(trimmed: &Result<Trimmed, StoreError>) {
    match trimmed {
        Ok(Trimmed::Through { revision, deleted }) => {
            tracing::info!(through = revision, deleted, "event history trimmed");
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, "trimming the event history failed; trying again later")
        }
    }
}

/// The file store: one controller, so no election.
async fn keep_file(store: Weak<Store>, upkeep: Upkeep) {
    loop {
        tokio::time::sleep(upkeep.every).await;
        let Some(store) = store.upgrade() else { return };
        told(&store.trim(upkeep.keep, None).await);
    }
}

/// etcd: campaign for the maintainer's key; while holding it, renew its
/// lease, trim every `every` and compact etcd up to the revision of the
/// trim before (so that a replica's follower a little behind still finds
/// what it reads).
async fn keep_etcd(store: Weak<Store>, etcd: EtcdTables, upkeep: Upkeep) {
    let renew_every = LEASE / 3;
    loop {
        let mut leadership = match etcd.lead(&upkeep.who, LEASE).await {
            Ok(Candidacy::Leading(leadership)) => leadership,
            Ok(Candidacy::Following(holder)) => {
                tracing::debug!(%holder, "another replica keeps the event history");
                tokio::time::sleep(renew_every).await;
                continue;
            }
            Err(error) => {
                tracing::debug!(%error, "cannot campaign to keep the event history");
                tokio::time::sleep(renew_every).await;
                continue;
            }
        };
        {
            let Some(store) = store.upgrade() else { return };
            store.maintainer.store(true, Ordering::Release);
        }
        tracing::info!(who = %upkeep.who, "this replica keeps the event history (trims it, compacts etcd)");
        let mut compact_to: Option<i64> = None;
        let mut next_trim = tokio::time::Instant::now() + upkeep.every;
        loop {
            let now = tokio::time::Instant::now();
            if now >= next_trim {
                let Some(store) = store.upgrade() else { return };
                let trimmed = store.trim(upkeep.keep, Some(&leadership)).await;
                told(&trimmed);
                if matches!(trimmed, Ok(Trimmed::NotMaintainer)) {
                    break;
                }
                if let Some(revision) = compact_to {
                    match etcd.compact(revision).await {
                        Ok(()) => tracing::debug!(etcd_revision = revision, "etcd compacted"),
                        Err(error) => tracing::warn!(%error, "compacting etcd failed"),
                    }
                }
                compact_to = etcd.etcd_revision().await.ok();
                next_trim = tokio::time::Instant::now() + upkeep.every;
            }
            let wait = renew_every.min(next_trim.saturating_duration_since(now));
            tokio::time::sleep(wait).await;
            if !etcd.renew(&mut leadership, renew_every).await {
                break;
            }
        }
        tracing::warn!("this replica lost the maintainer's lease; another may keep the history");
        let Some(store) = store.upgrade() else { return };
        store.maintainer.store(false, Ordering::Release);
    }
}
