//! The revision log and group commit: a change is applied in memory under
//! the state lock and its writes queued; a commit writes everything queued
//! at once (one fdatasync, or one etcd transaction per 120 keys) and only
//! then announces the events and answers the callers, so a watcher never
//! hears of a change that is not durable.
//!
//! With etcd, other replicas write too. A commit refused because another
//! replica wrote first (or left unanswered) puts back in memory what the
//! refused changes touched, as etcd held it, and tells their callers
//! [`StoreError::Conflict`]; the store's operations then run again on the
//! newer state ([`Store::retrying`]). The follower (`follow`) applies the
//! other replicas' changes.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nemo_daemon::clock::unix_ms;
use nemo_daemon::disk::Write;
use tokio::sync::{broadcast, oneshot, Mutex};

use super::{
    backend, decode, encode, requests, Event, State, Store, StoreChange, StoreError, REVISION_KEY,
};

/// Group commit. A change is applied (memory, and its writes queued) under
/// the state lock, which is then released; the caller waits in `durable`
/// until a commit decided its change's fate. While one commit runs, the
/// changes of other callers are queued, and the next commit writes them
/// all: one fdatasync for many acknowledgements, none before its change is
/// durable.
#[derive(Debug)]
pub(super) struct DurableLog {
    /// One commit at a time; the follower applies another replica's
    /// change under it too, so the two never interleave.
    pub(super) flushing: Mutex<()>,
    /// Changes applied in memory, not yet committed, in revision order.
    pub(super) unwritten: std::sync::Mutex<Unwritten>,
    /// Set when a commit to the file failed (memory is then ahead of the
    /// disk: no change may be acknowledged any more, restart to recover),
    /// or while a replica's memory could not be put back after a refused
    /// commit (until the follower loads it anew).
    pub(super) failed: std::sync::atomic::AtomicBool,
    /// The newest revision durable (ours or another replica's).
    pub(super) flushed: AtomicU64,
    /// Applied events not yet announced, in revision order. Also the lock
    /// under which `flushed` moves and events are announced, so that a
    /// watcher subscribing under it misses nothing and sees nothing twice.
    pub(super) pending: std::sync::Mutex<VecDeque<Event>>,
    /// Counts the times changes applied in memory were put back: a read
    /// that waits for what it saw to be durable checks it did not move.
    pub(super) generation: AtomicU64,
    /// etcd's revision of the state `flushed` names (0 for the file).
    pub(super) etcd_revision: std::sync::atomic::AtomicI64,
    /// etcd revisions of our own transactions the follower has not seen
    /// yet (it skips them: they are in memory already).
    pub(super) own: std::sync::Mutex<BTreeSet<i64>>,
    /// Woken whenever `flushed` moves.
    pub(super) advanced: tokio::sync::Notify,
    /// Told when `failed` is set by a commit: the follower, which may be
    /// waiting on a quiet watch, loads the store anew at once instead of
    /// at the next change another replica makes (memory would stay ahead
    /// of etcd until then, listing what etcd may not hold).
    pub(super) reload_wanted: std::sync::Arc<tokio::sync::Notify>,
}

/// Changes applied in memory and not yet committed.
#[derive(Debug, Default)]
pub(super) struct Unwritten {
    /// Their writes, in order.
    pub(super) writes: Vec<Write>,
    /// The newest revision among them.
    pub(super) through: u64,
    /// Each one's revision and the caller waiting for its fate.
    pub(super) fates: Vec<(u64, oneshot::Sender<Result<(), StoreError>>)>,
}

/// A change waiting for its commit.
#[derive(Debug)]
pub(super) struct Fate(oneshot::Receiver<Result<(), StoreError>>);

/// How often an operation is done again after a conflict before its caller
/// is told (other replicas keep winning).
const CONFLICT_ATTEMPTS: u32 = 16;
/// The longest random pause before an operation runs again after a
/// conflict: replicas that collided do not collide again in step.
const MOST_JITTER_MS: u64 = 64;
/// How long an operation waits for the follower to bring in the change it
/// conflicted with before it runs again anyway.
const CATCH_UP: Duration = Duration::from_secs(2);

impl DurableLog {
    pub(super) fn new(revision: u64, etcd_revision: i64) -> DurableLog {
        DurableLog {
            flushing: Mutex::new(()),
            unwritten: std::sync::Mutex::new(Unwritten {
                through: revision,
                ..Unwritten::default()
            }),
            failed: std::sync::atomic::AtomicBool::new(false),
            flushed: AtomicU64::new(revision),
            pending: std::sync::Mutex::new(VecDeque::new()),
            generation: AtomicU64::new(0),
            etcd_revision: std::sync::atomic::AtomicI64::new(etcd_revision),
            own: std::sync::Mutex::new(BTreeSet::new()),
            advanced: tokio::sync::Notify::new(),
            reload_wanted: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Memory is ahead of etcd and cannot be put back now: no change is
    /// acknowledged, reads say they may be stale, and the follower loads
    /// the store anew as soon as etcd answers.
    pub(super) fn fail_until_reloaded(&self) {
        self.failed.store(true, Ordering::Release);
        self.reload_wanted.notify_one();
    }

    pub(super) fn take_unwritten(&self) -> Unwritten {
        let mut unwritten = lock(&self.unwritten);
        let through = unwritten.through;
        std::mem::replace(
            &mut *unwritten,
            Unwritten {
                through,
                ..Unwritten::default()
            },
        )
    }
}

/// A random pause of up to 2^attempt ms (at most [`MOST_JITTER_MS`]).
fn jitter(attempt: u32) -> Duration {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(attempt);
    let bound = 1u64
        .checked_shl(attempt)
        .unwrap_or(u64::MAX)
        .min(MOST_JITTER_MS);
    Duration::from_millis(random % bound.max(1))
}

/// A std mutex's guard, also after a panic elsewhere (the data are plain
/// queues, whole after every step).
pub(super) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    /// Waits until a commit decided `fate`, committing if nobody else is.
    pub(super) async fn durable(&self, fate: Fate) -> Result<(), StoreError> {
        let Fate(mut fate) = fate;
        loop {
            match fate.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err(StoreError::Storage(
                        "a change was lost before its commit".into(),
                    ))
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let _flushing = self.log.flushing.lock().await;
            if let Ok(result) = fate.try_recv() {
                // The commit we waited for decided it.
                return result;
            }
            // Every change queued so far, ours among them: this commit
            // decides them all.
            self.commit_queued().await;
        }
    }

    /// Waits until everything applied in memory so far is durable: for an
    /// answer read from memory (a registration already there) that must
    /// not be given before the change that made it. `Conflict` if what
    /// was read was put back meanwhile.
    pub(super) async fn settled(&self, generation: u64) -> Result<(), StoreError> {
        {
            let _flushing = self.log.flushing.lock().await;
            self.commit_queued().await;
        }
        if self.log.generation.load(Ordering::Acquire) != generation {
            return Err(StoreError::Conflict {
                at: self.log.flushed.load(Ordering::Acquire),
            });
        }
        if self.log.failed.load(Ordering::Acquire) {
            return Err(self.refusal());
        }
        Ok(())
    }

    /// Commits every queued change (the caller holds `flushing`), then
    /// announces and answers what is durable, and puts back and refuses
    /// what is not.
    pub(super) async fn commit_queued(&self) {
        let Unwritten {
            writes,
            through,
            fates,
        } = self.log.take_unwritten();
        if fates.is_empty() {
            return;
        }
        if self.log.failed.load(Ordering::Acquire) {
            let refusal = self.refusal();
            for (_, fate) in fates {
                let _ = fate.send(Err(refusal.clone()));
            }
            return;
        }
        let before = self.log.flushed.load(Ordering::Acquire);
        let written = self.backend.write(writes, before, through).await;
        if let Some(last) = written.etcd_revisions.last() {
            lock(&self.log.own).extend(written.etcd_revisions.iter().copied());
            self.log.etcd_revision.store(*last, Ordering::Release);
        }
        self.announce_through(written.through, Vec::new());
        let (done, refused): (Vec<_>, Vec<_>) = fates
            .into_iter()
            .partition(|(revision, _)| *revision <= written.through);
        for (_, fate) in done {
            let _ = fate.send(Ok(()));
        }
        let Some((error, records)) = written.refused else {
            return;
        };
        if self.backend.after_refusal() == backend::AfterRefusal::StopAcknowledging {
            self.log.failed.store(true, Ordering::Release);
            tracing::error!(%error, "store commit failed; no change is acknowledged any more, restart to recover from disk");
            // A commit that failed part way (a write, or the fdatasync)
            // may or may not be found on the file after a restart.
            let unknown = StoreError::OutcomeUnknown(format!(
                "the commit to the file failed ({error}): the change may or may not be there \
                 after the controller restarts"
            ));
            for (_, fate) in refused {
                let _ = fate.send(Err(unknown.clone()));
            }
            return;
        }
        if !matches!(error, StoreError::Conflict { .. }) {
            tracing::warn!(%error, "etcd refused or did not answer a commit; its changes are put back in memory");
        }
        let mut state = self.state.lock().await;
        let at = match &error {
            StoreError::Conflict { at } => *at,
            _ => written.through,
        };
        // What the refused batch touched, and what changes queued behind
        // it (applied on top of it) touched.
        self.put_back(&mut state, records, error, refused, at).await;
    }

    /// Puts back in memory, as etcd held them at the state `flushed`
    /// names, the records of changes that will not be committed: those of
    /// `refused` (told `error`: they may have applied unseen, which the
    /// follower will then bring) and every change queued after them (told
    /// `Conflict`: never sent). The caller holds `flushing` and the state.
    pub(super) async fn put_back(
        &self,
        state: &mut State,
        mut records: Vec<super::etcd::RecordKey>,
        error: StoreError,
        refused: Vec<(u64, oneshot::Sender<Result<(), StoreError>>)>,
        at: u64,
    ) {
        let later = self.log.take_unwritten();
        records.extend(later.writes.iter().map(Write::record));
        records.sort_unstable();
        records.dedup();
        let flushed = self.log.flushed.load(Ordering::Acquire);
        let etcd_revision = self.log.etcd_revision.load(Ordering::Acquire);
        // Without a store to put back from, memory stays ahead of it and
        // nothing more is acknowledged (as after a failed commit).
        let read = self.backend.read_at(&records, etcd_revision).await;
        match read {
            Ok(values) => {
                for (table, key, value) in values {
                    if let Err(error) = state.apply(table, &key, value.as_deref()) {
                        tracing::error!(%error, table, "a record put back is unreadable");
                    }
                }
                state.revision = flushed;
            }
            Err(error) => {
                // Memory is ahead of etcd and cannot be put back now: no
                // change is made until the follower loaded it anew.
                tracing::error!(%error, "memory could not be put back after a refused commit; changes are refused until the store is loaded anew");
                self.log.fail_until_reloaded();
            }
        }
        lock(&self.log.pending).retain(|event| event.revision <= flushed);
        self.log.generation.fetch_add(1, Ordering::AcqRel);
        for (_, fate) in refused {
            let _ = fate.send(Err(error.clone()));
        }
        for (_, fate) in later.fates {
            let _ = fate.send(Err(StoreError::Conflict { at }));
        }
    }

    /// Marks `through` durable and announces every event up to it, first
    /// `extra` (another replica's, in order), then our own pending ones.
    pub(super) fn announce_through(&self, through: u64, extra: Vec<Event>) {
        let mut pending = lock(&self.log.pending);
        if through <= self.log.flushed.load(Ordering::Acquire) && extra.is_empty() {
            return;
        }
        self.log.flushed.store(through, Ordering::Release);
        for event in extra {
            let _ = self.changes.send(event);
        }
        while pending.front().is_some_and(|e| e.revision <= through) {
            if let Some(event) = pending.pop_front() {
                let _ = self.changes.send(event);
            }
        }
        drop(pending);
        self.log.advanced.notify_waiters();
    }

    /// Why changes are refused after a failure.
    fn refusal(&self) -> StoreError {
        self.backend.refusal()
    }

    /// Runs an operation, and again on the newer state when another
    /// replica changed the store first (once this replica's follower
    /// brought that change in, or after [`CATCH_UP`]). A refusal that
    /// rests on what memory holds (not found, exists, precondition, pool
    /// full) is given only once memory is as new as etcd was when it was
    /// made: a client that made a change on one replica and asks another
    /// gets the same answer.
    pub(super) async fn retrying<T, F, Fut>(&self, mut operation: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 1;
        let mut checked_fresh = false;
        loop {
            // What memory held when the operation looked.
            let seen = self.log.flushed.load(Ordering::Acquire);
            match operation().await {
                Err(StoreError::Conflict { at }) if attempt < CONFLICT_ATTEMPTS => {
                    attempt += 1;
                    self.caught_up(at).await;
                    tokio::time::sleep(jitter(attempt)).await;
                }
                Err(
                    refusal @ (StoreError::NotFound { .. }
                    | StoreError::Exists { .. }
                    | StoreError::Precondition(_)
                    | StoreError::Exhausted { .. }),
                ) if !checked_fresh => {
                    checked_fresh = true;
                    let Some(now) = self.backend.newest_elsewhere().await? else {
                        return Err(refusal);
                    };
                    if now <= seen {
                        return Err(refusal);
                    }
                    self.caught_up(now).await;
                }
                other => return other,
            }
        }
    }

    /// Before a read: memory holds every change etcd held when the read
    /// came (one quorum read of etcd's revision), so that a read on one
    /// replica sees what another acknowledged before it was asked. Nothing
    /// to wait for on the file store (one writer: this process).
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        let Some(now) = self.backend.newest_elsewhere().await? else {
            return Ok(());
        };
        self.caught_up(now).await;
        if self.log.flushed.load(Ordering::Acquire) < now {
            return Err(StoreError::Unavailable(format!(
                "this replica has not caught up with etcd's revision {now} yet; ask again or ask another"
            )));
        }
        Ok(())
    }

    /// Waits until memory holds revision `at` (the follower brought it
    /// in), at most [`CATCH_UP`].
    async fn caught_up(&self, at: u64) {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            let advanced = self.log.advanced.notified();
            tokio::pin!(advanced);
            // Registered before the check: a move in between still wakes it.
            advanced.as_mut().enable();
            if self.log.flushed.load(Ordering::Acquire) >= at {
                return;
            }
            if tokio::time::timeout_at(deadline, advanced).await.is_err() {
                return;
            }
        }
    }

    /// The one way a change is made: its writes and event queued
    /// ([`Store::commit`]), memory mirrored by `mirror` under the same lock,
    /// the lock released, and the caller held until the change is durable
    /// ([`Store::durable`]). Returns the event.
    pub(super) async fn change(
        &self,
        mut state: tokio::sync::MutexGuard<'_, State>,
        change: StoreChange,
        writes: impl Fn(&ChangeTables<'_>) -> Result<(), StoreError>,
        mirror: impl FnOnce(&mut State),
    ) -> Result<Event, StoreError> {
        let (event, fate) = self.commit(&mut state, change, writes)?;
        mirror(&mut state);
        drop(state);
        self.durable(fate).await?;
        Ok(event)
    }

    /// Applies a change: its entity writes and the event are queued to be
    /// committed together. The caller mirrors it in memory, releases the
    /// state and waits in `durable` for the commit before it answers.
    fn commit(
        &self,
        state: &mut State,
        change: StoreChange,
        writes: impl Fn(&ChangeTables<'_>) -> Result<(), StoreError>,
    ) -> Result<(Event, Fate), StoreError> {
        if self.log.failed.load(Ordering::Acquire) {
            return Err(self.refusal());
        }
        let request = requests::check(&state.requests)?;
        let event = Event {
            revision: state.revision + 1,
            at_unix_ms: unix_ms(SystemTime::now()),
            change,
            // Recorded with its change (requests.rs).
            request,
        };
        let queued = std::cell::RefCell::new(Vec::new());
        let table = |name| Table {
            name,
            queued: &queued,
        };
        writes(&ChangeTables {
            pools: table("pools"),
            tenants: table("tenants"),
            allocations: table("allocations"),
            mappings: table("mappings"),
            quarantine: table("quarantine"),
            home_agents: table("home_agents"),
            hypervisors: table("hypervisors"),
            mobile_routers: table("mobile_routers"),
            placements: table("placements"),
            sequences: table("sequences"),
            credentials: table("credentials"),
        })?;
        table("events").insert(&event.revision.to_be_bytes(), encode(&event)?);
        state.requests.record(&event);
        table("meta").insert(REVISION_KEY, encode(&event.revision)?);
        state.revision = event.revision;
        lock(&self.log.pending).push_back(event.clone());
        let (decided, fate) = oneshot::channel();
        let mut unwritten = lock(&self.log.unwritten);
        unwritten.writes.extend(queued.into_inner());
        unwritten.through = event.revision;
        unwritten.fates.push((event.revision, decided));
        Ok((event, Fate(fate)))
    }

    /// Events after `revision`, from the history, and a receiver for later
    /// ones that starts exactly after the last returned.
    pub async fn events_after(
        &self,
        revision: u64,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>), StoreError> {
        let (history, live, _) = self.events_through(revision).await?;
        Ok((history, live))
    }

    /// As [`Store::events_after`], and the revision the history was read
    /// through: the receiver starts right after it. A history that should
    /// hold changes up to there and holds none (or starts later than
    /// `revision` + 1) was trimmed.
    pub async fn events_through(
        &self,
        revision: u64,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>, u64), StoreError> {
        // Under the announcement lock: every event up to `flushed` has been
        // announced (before this subscription), every later one will be
        // (after it). The history is read up to `flushed` only: an event
        // applied but not yet on disk is not told to anyone.
        let (receiver, flushed) = {
            let _announcing = lock(&self.log.pending);
            (
                self.changes.subscribe(),
                self.log.flushed.load(Ordering::Acquire),
            )
        };
        Ok((self.history(revision, flushed).await?, receiver, flushed))
    }

    /// The events after `after` through `through`, from the history.
    pub(super) async fn history(&self, after: u64, through: u64) -> Result<Vec<Event>, StoreError> {
        if through <= after {
            return Ok(Vec::new());
        }
        self.backend
            .scan(
                "events",
                Some(&(after + 1).to_be_bytes()),
                Some(&through.to_be_bytes()),
            )
            .await?
            .iter()
            .map(|(_, value)| decode(value))
            .collect()
    }

    /// The newest revision on disk.
    pub async fn revision(&self) -> u64 {
        self.revision_now()
    }

    /// The newest revision on disk (no wait: for metrics).
    pub fn revision_now(&self) -> u64 {
        self.log.flushed.load(Ordering::Acquire)
    }

    /// Watch streams following the history now.
    pub fn watchers(&self) -> usize {
        self.changes.receiver_count()
    }
}

/// The tables a change writes; each write is queued for the commit.
#[derive(Debug)]
pub(super) struct ChangeTables<'a> {
    pub(super) pools: Table<'a>,
    pub(super) tenants: Table<'a>,
    pub(super) allocations: Table<'a>,
    pub(super) mappings: Table<'a>,
    pub(super) quarantine: Table<'a>,
    pub(super) home_agents: Table<'a>,
    pub(super) hypervisors: Table<'a>,
    pub(super) mobile_routers: Table<'a>,
    pub(super) placements: Table<'a>,
    pub(super) sequences: Table<'a>,
    pub(super) credentials: Table<'a>,
}

/// One table of a change.
#[derive(Debug)]
pub(super) struct Table<'a> {
    pub(super) name: &'static str,
    pub(super) queued: &'a std::cell::RefCell<Vec<Write>>,
}

impl Table<'_> {
    /// Queues `key` set to `value` (written with the change's event).
    pub(super) fn insert(&self, key: &[u8], value: Vec<u8>) {
        self.queued.borrow_mut().push(Write::Put {
            table: self.name,
            key: key.to_vec(),
            value,
        });
    }

    /// Queues `key` removed (with the change's event).
    pub(super) fn remove(&self, key: &[u8]) {
        self.queued.borrow_mut().push(Write::Delete {
            table: self.name,
            key: key.to_vec(),
        });
    }
}
