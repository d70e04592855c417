//! The active member's side: accepts one standby at a time (authenticated
//! by the pair's token), sends it the whole binding cache, then every
//! batch the writer makes durable; in synchronous mode the writer waits for
//! the standby's acknowledgement (the batch is on the standby's disk)
//! before any answer of the batch leaves.

use std::sync::Arc;
use std::time::Duration;

use nemo::ha::{Binding, Change};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::wire::{Frame, SNAPSHOT_CHUNK};
use super::{Mode, Unreplicated};
use crate::driver::{Role, Shared};
use crate::metrics::ReasonLabel;

/// How long a standby has to introduce itself.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the writer asks of replication.
#[derive(Debug)]
struct Request {
    changes: Vec<Change>,
    done: oneshot::Sender<Result<(), Unreplicated>>,
}

/// The writer's handle on replication.
#[derive(Debug, Clone)]
pub struct Primary {
    requests: mpsc::Sender<Request>,
    mode: Mode,
    timeout: Duration,
    shared: Arc<Shared>,
}

impl Primary {
    /// Starts accepting standbys on `listener` while `role` is active.
    pub fn start(
        listener: TcpListener,
        token: String,
        mode: Mode,
        timeout: Duration,
        shared: Arc<Shared>,
        role: watch::Receiver<Role>,
    ) -> Primary {
        let (requests, queue) = mpsc::channel(1024);
        tokio::spawn(serve(listener, token, shared.clone(), role, queue));
        Primary {
            requests,
            mode,
            timeout,
            shared,
        }
    }

    /// Sends a durable batch to the standby. Synchronous mode: returns once
    /// the standby has it on disk, or why not (no standby, or no answer
    /// within the timeout: the batch's answers then rest on this member's
    /// disk alone, and it is counted). Asynchronous mode: returns once
    /// it is queued.
    pub async fn replicate(&self, changes: &[&Change]) {
        if changes.is_empty() {
            return;
        }
        let (done, answer) = oneshot::channel();
        let request = Request {
            changes: changes.iter().map(|c| (*c).clone()).collect(),
            done,
        };
        let outcome = if self.requests.send(request).await.is_err() {
            Err(Unreplicated::NoStandby)
        } else {
            match self.mode {
                Mode::Asynchronous => Ok(()),
                Mode::Synchronous => match tokio::time::timeout(self.timeout, answer).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(Unreplicated::NoStandby),
                    Err(_) => Err(Unreplicated::TimedOut),
                },
            }
        };
        let metrics = &self.shared.metrics;
        match outcome {
            Ok(()) => {
                metrics.replicated_batches.inc();
            }
            Err(why) => {
                metrics
                    .unreplicated_batches
                    .get_or_create(&ReasonLabel {
                        reason: why.name().to_owned(),
                    })
                    .inc();
            }
        }
    }
}

/// A standby attached: where batches go, and the acknowledgements awaited.
struct Attached {
    writer: OwnedWriteHalf,
    acks: mpsc::Receiver<u64>,
    pending: std::collections::VecDeque<(u64, oneshot::Sender<Result<(), Unreplicated>>)>,
    next_id: u64,
}

async fn serve(
    listener: TcpListener,
    token: String,
    shared: Arc<Shared>,
    role: watch::Receiver<Role>,
    mut queue: mpsc::Receiver<Request>,
) {
    let mut attached: Option<Attached> = None;
    loop {
        let ack = async {
            match attached.as_mut() {
                Some(standby) => standby.acks.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                if *role.borrow() != Role::Active {
                    tracing::debug!(%peer, "replication: not active; standby refused");
                    continue;
                }
                match attach(stream, &token, &shared).await {
                    Ok(standby) => {
                        tracing::info!(%peer, "replication: standby attached and in sync");
                        shared.metrics.standby_attached.set(1);
                        // A new standby replaces the old one.
                        attached = Some(standby);
                    }
                    Err(error) => tracing::warn!(%peer, %error, "replication: standby refused"),
                }
            }
            request = queue.recv() => {
                let Some(request) = request else { return };
                let Some(standby) = attached.as_mut() else {
                    let _ = request.done.send(Err(Unreplicated::NoStandby));
                    continue;
                };
                let id = standby.next_id;
                standby.next_id += 1;
                let frame = Frame::Batch { id, changes: request.changes }.encode();
                if let Err(error) = standby.writer.write_all(&frame).await {
                    tracing::warn!(%error, "replication: standby lost");
                    let _ = request.done.send(Err(Unreplicated::NoStandby));
                    detach(&mut attached, &shared);
                    continue;
                }
                standby.pending.push_back((id, request.done));
            }
            ack = ack => match ack {
                Some(id) => {
                    if let Some(standby) = attached.as_mut() {
                        while standby.pending.front().is_some_and(|(pending, _)| *pending <= id) {
                            if let Some((_, done)) = standby.pending.pop_front() {
                                let _ = done.send(Ok(()));
                            }
                        }
                    }
                }
                None => {
                    tracing::warn!("replication: standby disconnected");
                    detach(&mut attached, &shared);
                }
            },
        }
    }
}

fn detach(attached: &mut Option<Attached>, shared: &Shared) {
    if let Some(standby) = attached.take() {
        for (_, done) in standby.pending {
            let _ = done.send(Err(Unreplicated::NoStandby));
        }
    }
    shared.metrics.standby_attached.set(0);
}

/// Authenticates a standby and sends it the whole durable cache.
async fn attach(
    stream: TcpStream,
    token: &str,
    shared: &Shared,
) -> Result<Attached, super::wire::WireError> {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, Frame::read(&mut reader))
        .await
        .map_err(|_| super::wire::WireError::Malformed("no hello in time"))??;
    let Frame::Hello { token: offered } = hello else {
        return Err(super::wire::WireError::Malformed("expected a hello"));
    };
    if !super::same_secret(offered.as_bytes(), token.as_bytes()) {
        return Err(super::wire::WireError::Malformed("wrong token"));
    }
    let bindings: Vec<Binding> = shared
        .view
        .read()
        .map(|view| view.values().cloned().collect())
        .unwrap_or_default();
    let mut chunks = bindings.chunks(SNAPSHOT_CHUNK).peekable();
    if chunks.peek().is_none() {
        Frame::Snapshot {
            bindings: Vec::new(),
            last: true,
        }
        .write(&mut writer)
        .await?;
    }
    while let Some(chunk) = chunks.next() {
        Frame::Snapshot {
            bindings: chunk.to_vec(),
            last: chunks.peek().is_none(),
        }
        .write(&mut writer)
        .await?;
    }
    let (acks_tx, acks) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            match Frame::read(&mut reader).await {
                Ok(Frame::Ack { id }) => {
                    if acks_tx.send(id).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(_) => return,
            }
        }
    });
    Ok(Attached {
        writer,
        acks,
        pending: std::collections::VecDeque::new(),
        next_id: 1,
    })
}
