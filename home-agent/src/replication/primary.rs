//! The active member's side: accepts one standby at a time (authenticated
//! by the pair's token), sends it the whole binding cache, then every
//! batch the writer makes durable; in synchronous mode the writer waits for
//! the standby's acknowledgement (the batch is on the standby's disk)
//! before any answer of the batch leaves.

use std::sync::Arc;
use std::time::Duration;

use nemo::ha::{Binding, Change};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::wire::{Frame, WireError, SNAPSHOT_CHUNK};
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

/// A standby taking its snapshot: the batches made meanwhile wait here (in
/// order, after the snapshot's cut) and their answers do not wait for it,
/// since it is not a copy yet.
struct Syncing {
    task: tokio::task::JoinHandle<Result<(OwnedWriteHalf, OwnedReadHalf), WireError>>,
    frames: Vec<Vec<u8>>,
    next_id: u64,
}

/// A standby that said hello with the right token.
type Greeted = (OwnedReadHalf, OwnedWriteHalf, std::net::SocketAddr);

async fn serve(
    listener: TcpListener,
    token: String,
    shared: Arc<Shared>,
    role: watch::Receiver<Role>,
    mut queue: mpsc::Receiver<Request>,
) {
    let token = Arc::new(token);
    let mut attached: Option<Attached> = None;
    let mut syncing: Option<Syncing> = None;
    let (greeted_tx, mut greeted) = mpsc::channel::<Greeted>(4);
    loop {
        let ack = async {
            match attached.as_mut() {
                Some(standby) => standby.acks.recv().await,
                None => std::future::pending().await,
            }
        };
        let synced = async {
            match syncing.as_mut() {
                Some(sync) => (&mut sync.task).await,
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
                // The hello is awaited apart: a silent connection must not
                // hold replication up.
                let (token, greeted_tx) = (token.clone(), greeted_tx.clone());
                tokio::spawn(async move {
                    match hello(stream, &token).await {
                        Ok((reader, writer)) => {
                            let _ = greeted_tx.send((reader, writer, peer)).await;
                        }
                        Err(error) => tracing::warn!(%peer, %error, "replication: standby refused"),
                    }
                });
            }
            Some((reader, writer, peer)) = greeted.recv() => {
                // The snapshot's cut is here, between two batches: the view
                // holds every batch before this point, and every batch
                // after it is kept for this standby.
                let bindings: Vec<Binding> = shared
                    .view
                    .read()
                    .map(|view| view.values().cloned().collect())
                    .unwrap_or_default();
                tracing::info!(%peer, bindings = bindings.len(), "replication: standby attaching");
                detach(&mut attached, &shared);
                if let Some(old) = syncing.take() {
                    old.task.abort();
                }
                syncing = Some(Syncing {
                    task: tokio::spawn(send_snapshot(reader, writer, bindings)),
                    frames: Vec::new(),
                    next_id: 1,
                });
            }
            done = synced => {
                let Some(sync) = syncing.take() else { continue };
                match done {
                    Ok(Ok((mut writer, reader))) => {
                        let mut caught_up = Ok(());
                        for frame in &sync.frames {
                            caught_up = writer.write_all(frame).await;
                            if caught_up.is_err() {
                                break;
                            }
                        }
                        match caught_up {
                            Ok(()) => {
                                tracing::info!(batches = sync.frames.len(), "replication: standby attached and in sync");
                                shared.metrics.standby_attached.set(1);
                                attached = Some(Attached {
                                    writer,
                                    acks: read_acks(reader),
                                    pending: std::collections::VecDeque::new(),
                                    next_id: sync.next_id,
                                });
                            }
                            Err(error) => tracing::warn!(%error, "replication: standby lost while catching up"),
                        }
                    }
                    Ok(Err(error)) => tracing::warn!(%error, "replication: snapshot not delivered"),
                    Err(error) => tracing::warn!(%error, "replication: snapshot task"),
                }
            }
            request = queue.recv() => {
                let Some(request) = request else { return };
                if let Some(sync) = syncing.as_mut() {
                    let id = sync.next_id;
                    sync.next_id += 1;
                    sync.frames.push(Frame::Batch { id, changes: request.changes }.encode());
                    let _ = request.done.send(Err(Unreplicated::NoStandby));
                    continue;
                }
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

/// Reads a standby's hello and checks its token.
async fn hello(
    stream: TcpStream,
    token: &str,
) -> Result<(OwnedReadHalf, OwnedWriteHalf), WireError> {
    super::keep_alive(&stream);
    let (mut reader, writer) = stream.into_split();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, Frame::read(&mut reader))
        .await
        .map_err(|_| WireError::Malformed("no hello in time"))??;
    let Frame::Hello { token: offered } = hello else {
        return Err(WireError::Malformed("expected a hello"));
    };
    if !super::same_secret(offered.as_bytes(), token.as_bytes()) {
        return Err(WireError::Malformed("wrong token"));
    }
    Ok((reader, writer))
}

/// Sends the whole cache as of the cut, in chunks.
async fn send_snapshot(
    reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    bindings: Vec<Binding>,
) -> Result<(OwnedWriteHalf, OwnedReadHalf), WireError> {
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
    Ok((writer, reader))
}

/// The standby's acknowledgements, as they come.
fn read_acks(mut reader: OwnedReadHalf) -> mpsc::Receiver<u64> {
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
    acks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `hello` makes of a standby that sends `frame` first.
    async fn greet(frame: Vec<u8>) -> Result<(), WireError> {
        let listener = TcpListener::bind("[::1]:0")
            .await
            .map_err(WireError::from)?;
        let address = listener.local_addr().map_err(WireError::from)?;
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await?;
            stream.write_all(&frame).await?;
            // Hold the connection until the server has decided.
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, std::io::Error>(())
        });
        let (stream, _) = listener.accept().await.map_err(WireError::from)?;
        let result = hello(stream, "the-right-token-0123").await.map(drop);
        let _ = client.await;
        result
    }

    #[tokio::test]
    async fn only_the_pairs_token_opens_replication() {
        let right = Frame::Hello {
            token: "the-right-token-0123".into(),
        };
        assert!(greet(right.encode()).await.is_ok());
        let wrong = Frame::Hello {
            token: "the-wrong-token-0123".into(),
        };
        assert!(matches!(
            greet(wrong.encode()).await,
            Err(WireError::Malformed("wrong token"))
        ));
        // Not a hello at all.
        assert!(matches!(
            greet(Frame::Ack { id: 1 }.encode()).await,
            Err(WireError::Malformed("expected a hello"))
        ));
        // A frame claiming to be larger than any allowed.
        assert!(matches!(
            greet(u32::MAX.to_be_bytes().to_vec()).await,
            Err(WireError::TooLarge(_))
        ));
    }
}
