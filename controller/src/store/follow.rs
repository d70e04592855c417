//! Following the other replicas (etcd): a watch on the store's prefix
//! from the etcd revision memory holds brings in every transaction another
//! controller replica wrote, applied record by record (`records`) and its
//! events announced to this replica's watchers in order. Our own
//! transactions come back too and are skipped (memory has them).
//!
//! A watch that breaks is opened again where memory is. When etcd has
//! compacted that far, or memory could not be put back after a refused
//! commit, the store is loaded anew from a snapshot, and the events in
//! between are announced from the history.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::etcd::{EtcdTables, Record};
use super::log::lock;
use super::{decode, records, State, Store, StoreError, REVISION_KEY};

/// Pause before watching again after etcd failed the watch (doubles up to
/// [`MOST_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MOST_BACKOFF: Duration = Duration::from_secs(5);

impl Store {
    /// Starts following the other replicas; the task ends with the store.
    pub(super) fn start_following(self: &Arc<Store>, etcd: EtcdTables) {
        let task = tokio::spawn(follow(Arc::downgrade(self), etcd));
        lock(&self.tasks).push(task.abort_handle());
    }

    /// Whether reads may not be what etcd holds: this replica is not
    /// following the others now (etcd unreachable), so its memory may be
    /// behind, or a commit whose fate etcd did not tell left memory ahead
    /// until the store is loaded anew. Always false for the file store
    /// (one writer; a failed commit there refuses every change instead).
    pub fn may_be_stale(&self) -> bool {
        self.backend.shared().is_some()
            && (!self.following.load(Ordering::Acquire) || self.log.failed.load(Ordering::Acquire))
    }

    /// Applies a transaction another replica wrote at etcd revision
    /// `etcd_revision`, unless it is ours or memory has it already.
    async fn apply_theirs(&self, etcd_revision: i64, records: Vec<Record>) {
        let _flushing = self.log.flushing.lock().await;
        {
            let mut own = lock(&self.log.own);
            let ours = own.remove(&etcd_revision);
            // Ours before it can no longer come (the watch is in order).
            own.retain(|revision| *revision > etcd_revision);
            if ours {
                return;
            }
        }
        if etcd_revision <= self.log.etcd_revision.load(Ordering::Acquire) {
            return;
        }
        let theirs = records.iter().find_map(|(table, key, value)| {
            (*table == "meta" && key == REVISION_KEY)
                .then(|| value.as_deref().and_then(|v| decode::<u64>(v).ok()))
                .flatten()
        });
        let mut state = self.state.lock().await;
        // A transaction without a revision (the maintainer trimming the
        // history) changes no state: our changes stand.
        if let Some(at) =
            theirs.filter(|_| state.revision > self.log.flushed.load(Ordering::Acquire))
        {
            // Our changes not yet committed were made on the state before
            // theirs: their commit would be refused. Put them back now.
            self.put_back(
                &mut state,
                Vec::new(),
                StoreError::Conflict { at },
                Vec::new(),
                at,
            )
            .await;
        }
        let mut events = Vec::new();
        for (table, key, value) in records {
            match state.apply(table, &key, value.as_deref()) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, table, "another replica's record is unreadable; loading the store anew");
                    self.log.fail_until_reloaded();
                }
            }
        }
        events.sort_by_key(|event| event.revision);
        self.log
            .etcd_revision
            .store(etcd_revision, Ordering::Release);
        let through = state.revision;
        drop(state);
        tracing::debug!(
            through,
            etcd_revision,
            events = events.len(),
            "applied another replica's change"
        );
        self.announce_through(through, events);
    }

    /// Loads the whole state anew from a snapshot of etcd (after the
    /// follower fell too far behind, or memory could not be put back) and
    /// announces the events between.
    async fn reload(&self) -> Result<(), StoreError> {
        let _flushing = self.log.flushing.lock().await;
        let (records, etcd_revision) = self.backend.snapshot(records::STATE_TABLES).await?;
        let mut loaded = State::loaded(records)?;
        loaded.requests = super::requests::recorded(&self.backend, loaded.revision).await?;
        let mut state = self.state.lock().await;
        let old = self.log.flushed.load(Ordering::Acquire);
        let refusal = StoreError::Conflict {
            at: loaded.revision,
        };
        for (_, fate) in self.log.take_unwritten().fates {
            let _ = fate.send(Err(refusal.clone()));
        }
        lock(&self.log.pending).clear();
        let through = loaded.revision;
        *state = loaded;
        lock(&self.log.unwritten).through = through;
        lock(&self.log.own).clear();
        self.log
            .etcd_revision
            .store(etcd_revision, Ordering::Release);
        self.log.generation.fetch_add(1, Ordering::AcqRel);
        self.log.failed.store(false, Ordering::Release);
        drop(state);
        let between = self.history(old, through).await?;
        tracing::info!(
            revision = through,
            etcd_revision,
            "store loaded anew from etcd"
        );
        self.announce_through(through, between);
        Ok(())
    }
}

/// The follower: watches from where memory is, applies what others wrote,
/// watches again when the watch breaks. Holds the store only while it
/// applies, so that dropping the store ends it.
async fn follow(store: Weak<Store>, etcd: EtcdTables) {
    let mut backoff = FIRST_BACKOFF;
    let reload_wanted = match store.upgrade() {
        Some(store) => store.log.reload_wanted.clone(),
        None => return,
    };
    loop {
        let after = {
            let Some(store) = store.upgrade() else { return };
            store.following.store(false, Ordering::Release);
            if store.log.failed.load(Ordering::Acquire) {
                if let Err(error) = store.reload().await {
                    tracing::warn!(%error, "etcd: loading the store anew failed; trying again");
                    drop(store);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MOST_BACKOFF);
                    continue;
                }
            }
            store.log.etcd_revision.load(Ordering::Acquire)
        };
        let mut stream = match etcd.watch(after).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "etcd: cannot follow the other replicas; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MOST_BACKOFF);
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                next = etcd.next_transactions(&mut stream) => next,
                // A commit left memory ahead of etcd: load anew now.
                () = reload_wanted.notified() => break,
            };
            let Some(store) = store.upgrade() else { return };
            match next {
                Ok(Some(transactions)) => {
                    store.following.store(true, Ordering::Release);
                    backoff = FIRST_BACKOFF;
                    for (etcd_revision, records) in transactions {
                        store.apply_theirs(etcd_revision, records).await;
                    }
                    if store.log.failed.load(Ordering::Acquire) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "etcd: following the other replicas stopped; loading anew");
                    if matches!(error, StoreError::Storage(_)) {
                        store.log.fail_until_reloaded();
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MOST_BACKOFF);
                    break;
                }
            }
        }
    }
}
