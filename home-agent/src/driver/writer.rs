//! The writer task: makes changes durable in batches (group commit) on this
//! member's disk and, in a pair, on the standby's at the same time, and only
//! then sends the answers and publishes each change to watchers.

use std::sync::Arc;
use std::time::Instant;

use nemo::ha::{Change, Transmit};
use nemo::wire::BaStatus;
use tokio::sync::{mpsc, oneshot};

use crate::config::FlushMode;
use crate::messages::{BindingChange, BindingEvent, Deleted, ReplyPath, Shared};
use crate::metrics::Metrics;
use crate::replication::Primary;
use crate::store::{Store, StoreError};

/// Work for the writer, done in order: what to make durable first, then
/// what to send or whom to tell.
#[derive(Debug)]
pub(super) enum Pending {
    /// A reply that changes nothing (a Binding Error): sent in turn.
    Send(Transmit<ReplyPath>),
    /// An answered Binding Update: its change, if any, made durable, then
    /// its acknowledgement sent and counted.
    Acknowledge {
        change: Option<(Change, &'static str)>,
        reply: Transmit<ReplyPath>,
        status: BaStatus,
        received_at: Instant,
    },
    /// A binding expired: made durable.
    Expire(Change),
    /// A binding taken from the other member of a pair (a merge): made
    /// durable.
    Merge(Change),
    /// Answered once everything queued before it is durable (and on the
    /// standby): a hand-over waits for it.
    Drain(oneshot::Sender<()>),
    /// As `Drain`, then the standby confirms it is in step (an empty batch
    /// acknowledged): a hand-over resigns only to a standby that answers.
    Confirm(oneshot::Sender<Result<(), crate::metrics::Unreplicated>>),
    /// An operator removed a binding: made durable, then the operator told.
    Remove {
        change: Change,
        respond: oneshot::Sender<Deleted>,
    },
}

impl Pending {
    /// The change to make durable, and why.
    fn change(&self) -> Option<(&Change, &'static str)> {
        match self {
            Pending::Send(_) | Pending::Drain(_) | Pending::Confirm(_) => None,
            Pending::Acknowledge { change, .. } => change.as_ref().map(|(c, why)| (c, *why)),
            Pending::Expire(change) => Some((change, "expiry")),
            Pending::Merge(change) => Some((change, "merge")),
            Pending::Remove { change, .. } => Some((change, "admin")),
        }
    }
}

/// The writer: group commit, then answers.
pub(super) async fn writer(
    store: Store,
    flush_mode: FlushMode,
    mut queue: mpsc::Receiver<Pending>,
    shared: Arc<Shared>,
    replica: Option<Primary>,
) -> Result<(), StoreError> {
    const MAX_BATCH: usize = 8192;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let changes: Vec<&Change> = batch
            .iter()
            .filter_map(|pending| pending.change().map(|(change, _)| change))
            .collect();
        // The view shows the batch first (a standby attaching now takes
        // the view as its snapshot, so nothing falls between the snapshot
        // and the stream), then this member's disk and the standby's take
        // it at once, then the answers leave.
        for change in &changes {
            shared.mirror(*change);
        }
        let local = async {
            match flush_mode {
                FlushMode::Group if !changes.is_empty() => {
                    timed_commit(&store, &shared.metrics, &changes).await
                }
                FlushMode::Group => Ok(()),
                FlushMode::EachBinding => {
                    for change in &changes {
                        timed_commit(&store, &shared.metrics, &[change]).await?;
                    }
                    Ok(())
                }
            }
        };
        let standby = async {
            if let Some(replica) = &replica {
                replica.replicate(&changes).await;
            }
        };
        let (committed, ()) = tokio::join!(local, standby);
        committed?;
        for pending in batch.drain(..) {
            if let Some((change, reason)) = pending.change() {
                publish(&shared, change, reason);
            }
            match pending {
                Pending::Send(outgoing) => outgoing.path.send(&outgoing.packet).await,
                Pending::Acknowledge {
                    reply,
                    status,
                    received_at,
                    ..
                } => {
                    reply.path.send(&reply.packet).await;
                    shared
                        .metrics
                        .acknowledgements
                        .get_or_create(&crate::metrics::StatusLabel {
                            status: status.0.to_string(),
                        })
                        .inc();
                    shared
                        .metrics
                        .bu_to_ba_seconds
                        .observe(received_at.elapsed().as_secs_f64());
                }
                Pending::Expire(_) | Pending::Merge(_) => {}
                Pending::Drain(respond) => {
                    let _ = respond.send(());
                }
                Pending::Confirm(respond) => {
                    let confirmed = match &replica {
                        Some(replica) => replica.confirm().await,
                        None => Err(crate::metrics::Unreplicated::NoStandby),
                    };
                    let _ = respond.send(confirmed);
                }
                Pending::Remove { change, respond } => {
                    let removed = match change {
                        Change::Remove { binding } => Deleted::Removed(binding),
                        Change::Upsert { .. } => Deleted::NoBinding,
                    };
                    let _ = respond.send(removed);
                }
            }
        }
    }
    tracing::info!("writer stopped, every acknowledged change on disk");
    Ok(())
}

/// One durable commit of a batch, measured.
async fn timed_commit(
    store: &Store,
    metrics: &Metrics,
    changes: &[&Change],
) -> Result<(), StoreError> {
    let started = Instant::now();
    store.commit(changes.iter().copied()).await?;
    metrics
        .flush_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.flush_batch.observe(changes.len() as f64);
    Ok(())
}

/// Tells watchers of a durable change (the view has it already).
fn publish(shared: &Shared, change: &Change, reason: &'static str) {
    let event = match change {
        Change::Upsert { binding, .. } => BindingEvent {
            change: BindingChange::Upserted,
            binding: binding.clone(),
            reason,
        },
        Change::Remove { binding } => BindingEvent {
            change: BindingChange::Removed,
            binding: binding.clone(),
            reason,
        },
    };
    // No watcher is fine.
    let _ = shared.events.send(event);
}
