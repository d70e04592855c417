//! A standby attached to the active: the batches it is sent, from a task
//! of their own through a bounded queue, and the acknowledgements it
//! returns, each awaited with a deadline. A standby that stops reading or
//! answering (SIGSTOP, a hung disk, a zero window) never blocks the
//! active: its queue fills, or its oldest batch goes unacknowledged past
//! the replication timeout, and it is detached (counted and logged); the
//! active answers alone until it attaches again.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::secure::{SealedReader, SealedWriter};
use super::wire::{change_octets, runs, Frame};
use crate::metrics::Unreplicated;

/// Batches queued for a standby before it counts as not reading.
pub const QUEUED_BATCHES: usize = 4096;

/// Where a batch's answer waits for the standby's acknowledgement.
pub type Done = oneshot::Sender<Result<(), Unreplicated>>;

/// Why a standby was detached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// [`QUEUED_BATCHES`] batches waited to be sent: it stopped reading.
    NotReading,
    /// A batch went unacknowledged past the replication timeout.
    Unacknowledged,
    /// Writing to it failed, or it closed the connection.
    Lost,
}

impl Detached {
    /// Every reason, for counters exported at zero.
    pub const ALL: [Detached; 3] = [
        Detached::NotReading,
        Detached::Unacknowledged,
        Detached::Lost,
    ];

    /// A short name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            Detached::NotReading => "not_reading",
            Detached::Unacknowledged => "unacknowledged",
            Detached::Lost => "lost",
        }
    }
}

/// A standby in step: batches go to it, acknowledgements come back.
#[derive(Debug)]
pub struct Attached {
    frames: mpsc::Sender<Vec<u8>>,
    sender: JoinHandle<()>,
    acks: mpsc::Receiver<u64>,
    ack_reader: JoinHandle<()>,
    /// Batches sent, oldest first: id, when sent, and its answer.
    pending: VecDeque<(u64, Instant, Done)>,
    next_id: u64,
    deadline: Duration,
}

impl Attached {
    /// Starts sending to a standby that took its snapshot: first the
    /// batches made meanwhile (`catch_up`, numbered before `next_id`),
    /// then each batch [`send`](Self::send) queues. A batch must be
    /// acknowledged within `deadline` of being queued.
    pub fn start(
        writer: SealedWriter<OwnedWriteHalf>,
        reader: SealedReader<OwnedReadHalf>,
        catch_up: Vec<Vec<u8>>,
        next_id: u64,
        deadline: Duration,
    ) -> Attached {
        let (frames, queue) = mpsc::channel(QUEUED_BATCHES);
        let (acks_tx, acks) = mpsc::channel(QUEUED_BATCHES);
        Attached {
            frames,
            sender: tokio::spawn(send_frames(writer, catch_up, queue)),
            acks,
            ack_reader: tokio::spawn(read_acks(reader, acks_tx)),
            pending: VecDeque::new(),
            next_id,
            deadline,
        }
    }

    /// Queues a batch of `changes` for the standby; `done` answers once it
    /// is acknowledged. Never waits: a standby whose queue is full or
    /// whose sender ended is detached, and `done` comes back with why.
    pub fn send(
        &mut self,
        changes: Vec<crate::messages::Replicated>,
        done: Done,
    ) -> Result<(), (Detached, Done)> {
        // A large batch goes as several frames (each within the frame
        // budget); acknowledgements are cumulative, so its answer waits for
        // the last one's.
        let mut last = self.next_id;
        for run in runs(changes, usize::MAX, change_octets) {
            last = self.next_id;
            let frame = Frame::Batch {
                id: last,
                changes: run,
            }
            .encode();
            match self.frames.try_send(frame) {
                Ok(()) => self.next_id += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err((Detached::NotReading, done))
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err((Detached::Lost, done)),
            }
        }
        self.pending.push_back((last, Instant::now(), done));
        Ok(())
    }

    /// The next event of this standby's: an acknowledgement answered (its
    /// batches' answers sent), or why it must be detached.
    pub async fn next(&mut self) -> Result<(), Detached> {
        let oldest = self.pending.front().map(|(_, at, _)| *at + self.deadline);
        let overdue = async {
            match oldest {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ack = self.acks.recv() => match ack {
                Some(id) => {
                    while self.pending.front().is_some_and(|(pending, _, _)| *pending <= id) {
                        if let Some((_, _, done)) = self.pending.pop_front() {
                            let _ = done.send(Ok(()));
                        }
                    }
                    Ok(())
                }
                None => Err(Detached::Lost),
            },
            () = overdue => Err(Detached::Unacknowledged),
        }
    }

    /// Detaches the standby: its tasks end (the connection closes), the
    /// batches it did not acknowledge are answered without it.
    pub fn detach(mut self) {
        for (_, _, done) in self.pending.drain(..) {
            let _ = done.send(Err(Unreplicated::NoStandby));
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.sender.abort();
        self.ack_reader.abort();
    }
}

/// Sends the catch-up batches, then each queued one, until the queue
/// closes or a write fails (the standby is then detached as lost).
async fn send_frames(
    mut writer: SealedWriter<OwnedWriteHalf>,
    catch_up: Vec<Vec<u8>>,
    mut queue: mpsc::Receiver<Vec<u8>>,
) {
    for frame in &catch_up {
        if let Err(error) = writer.send_encoded(frame).await {
            tracing::warn!(%error, "replication: standby lost while catching up");
            return;
        }
    }
    while let Some(frame) = queue.recv().await {
        if let Err(error) = writer.send_encoded(&frame).await {
            tracing::warn!(%error, "replication: standby lost");
            return;
        }
    }
}

/// The standby's acknowledgements, as they come (a frame that fails its
/// mac ends them: the standby is detached).
async fn read_acks(mut reader: SealedReader<OwnedReadHalf>, acks: mpsc::Sender<u64>) {
    loop {
        match reader.receive().await {
            Ok(Frame::Ack { id }) => {
                if acks.send(id).await.is_err() {
                    return;
                }
            }
            Ok(_) => {
                tracing::warn!(
                    "replication: the standby sent something else than an acknowledgement"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "replication: the standby's stream ended");
                return;
            }
        }
    }
}
