//! The revision log and group commit: a change is applied in memory under
//! the state lock and its writes queued; `durable` commits everything
//! queued in one transaction (one fdatasync) and only then announces the
//! events, so a watcher never hears of a change that is not on disk.

use super::*;

/// Group commit. A change is applied (memory, and its writes queued) under
/// the state lock, which is then released; the caller waits in `durable`
/// until a commit covers its revision. While one commit runs, the changes of
/// other callers are queued, and the next commit writes them all: one
/// fdatasync for many acknowledgements, none before its change is on disk.
#[derive(Debug)]
pub(super) struct DurableLog {
    /// One commit at a time.
    pub(super) flushing: Mutex<()>,
    /// Writes applied in memory, not yet committed, in revision order, and
    /// the newest revision among them: taken together, so that a commit
    /// knows exactly which revisions it covers.
    pub(super) unwritten: std::sync::Mutex<(Vec<Write>, u64)>,
    /// Set when a commit failed: memory is then ahead of the disk, and no
    /// change may be acknowledged any more (restart to recover from disk).
    pub(super) failed: std::sync::atomic::AtomicBool,
    /// The newest revision on disk.
    pub(super) flushed: AtomicU64,
    /// Applied events not yet announced, in revision order. Also the lock
    /// under which `flushed` moves and events are announced, so that a
    /// watcher subscribing under it misses nothing and sees nothing twice.
    pub(super) pending: std::sync::Mutex<VecDeque<Event>>,
}

impl Store {
    /// Waits until `revision` is on disk, flushing if nobody else is; then
    /// announces every event the flush covered.
    pub(super) async fn durable(&self, revision: u64) -> Result<(), StoreError> {
        if self.log.flushed.load(Ordering::Acquire) >= revision {
            return Ok(());
        }
        let _flushing = self.log.flushing.lock().await;
        if self.log.flushed.load(Ordering::Acquire) >= revision {
            // The flush we waited for covered it.
            return Ok(());
        }
        // Every change up to `through` is queued: this commit covers it.
        let (batch, through) = {
            let mut unwritten = self
                .log
                .unwritten
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (std::mem::take(&mut unwritten.0), unwritten.1)
        };
        if let Err(error) = self.backend.write(batch).await {
            self.log.failed.store(true, Ordering::Release);
            tracing::error!(%error, "store commit failed; no change is acknowledged any more, restart to recover from disk");
            return Err(error);
        }
        let mut pending = self
            .log
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.log.flushed.store(through, Ordering::Release);
        while pending.front().is_some_and(|e| e.revision <= through) {
            if let Some(event) = pending.pop_front() {
                let _ = self.changes.send(event);
            }
        }
        Ok(())
    }

    /// The one way a change is made: its writes and event queued
    /// ([`Store::commit`]), memory mirrored by `mirror` under the same lock,
    /// the lock released, and the caller held until the change is on disk
    /// ([`Store::durable`]). Returns the event.
    pub(super) async fn change(
        &self,
        mut state: tokio::sync::MutexGuard<'_, State>,
        change: StoreChange,
        writes: impl Fn(&Trees<'_>) -> Result<(), StoreError>,
        mirror: impl FnOnce(&mut State),
    ) -> Result<Event, StoreError> {
        let event = self.commit(&mut state, change, writes)?;
        mirror(&mut state);
        drop(state);
        self.durable(event.revision).await?;
        Ok(event)
    }

    /// Applies a change: its entity writes and the event are queued to be
    /// committed together. The caller mirrors it in memory, releases the
    /// state and waits in `durable` for the commit before it answers.
    fn commit(
        &self,
        state: &mut State,
        change: StoreChange,
        writes: impl Fn(&Trees<'_>) -> Result<(), StoreError>,
    ) -> Result<Event, StoreError> {
        if self.log.failed.load(Ordering::Acquire) {
            return Err(StoreError::Storage(
                "an earlier commit failed; restart the controller".into(),
            ));
        }
        let event = Event {
            revision: state.revision + 1,
            at_unix_ms: unix_ms(SystemTime::now()),
            change,
        };
        let queued = std::cell::RefCell::new(Vec::new());
        let table = |name| Table {
            name,
            queued: &queued,
        };
        writes(&Trees {
            pools: table("pools"),
            tenants: table("tenants"),
            allocations: table("allocations"),
            quarantine: table("quarantine"),
            home_agents: table("home_agents"),
            hypervisors: table("hypervisors"),
            mobile_routers: table("mobile_routers"),
            placements: table("placements"),
            sequences: table("sequences"),
        })?;
        table("events").insert(&event.revision.to_be_bytes(), encode(&event)?)?;
        table("meta").insert(REVISION_KEY, encode(&event.revision)?)?;
        state.revision = event.revision;
        self.log
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(event.clone());
        let mut unwritten = self
            .log
            .unwritten
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        unwritten.0.extend(queued.into_inner());
        unwritten.1 = event.revision;
        Ok(event)
    }

    /// Events after `revision`, from the history, and a receiver for later
    /// ones that starts exactly after the last returned.
    pub async fn events_after(
        &self,
        revision: u64,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>), StoreError> {
        // Under the announcement lock: every event up to `flushed` has been
        // announced (before this subscription), every later one will be
        // (after it). The history is read up to `flushed` only: an event
        // applied but not yet on disk is not told to anyone.
        let (receiver, flushed) = {
            let _announcing = self
                .log
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (
                self.changes.subscribe(),
                self.log.flushed.load(Ordering::Acquire),
            )
        };
        let mut events = Vec::new();
        if flushed > revision {
            for (_, value) in self
                .backend
                .scan(
                    "events",
                    Some(&(revision + 1).to_be_bytes()),
                    Some(&flushed.to_be_bytes()),
                )
                .await?
            {
                events.push(decode(&value)?);
            }
        }
        Ok((events, receiver))
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
pub(super) struct Trees<'a> {
    pub(super) pools: Table<'a>,
    pub(super) tenants: Table<'a>,
    pub(super) allocations: Table<'a>,
    pub(super) quarantine: Table<'a>,
    pub(super) home_agents: Table<'a>,
    pub(super) hypervisors: Table<'a>,
    pub(super) mobile_routers: Table<'a>,
    pub(super) placements: Table<'a>,
    pub(super) sequences: Table<'a>,
}

/// One table of a change.
#[derive(Debug)]
pub(super) struct Table<'a> {
    pub(super) name: &'static str,
    pub(super) queued: &'a std::cell::RefCell<Vec<Write>>,
}

impl Table<'_> {
    pub(super) fn insert(&self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.queued.borrow_mut().push(Write::Put {
            table: self.name,
            key: key.to_vec(),
            value,
        });
        Ok(())
    }

    pub(super) fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.queued.borrow_mut().push(Write::Delete {
            table: self.name,
            key: key.to_vec(),
        });
        Ok(())
    }
}
