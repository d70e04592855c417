//! The active member's side: accepts one standby at a time (authenticated
//! by the pair's token), takes what it offers where it is newer (after a
//! partition both were active: `nemo::ha::merge`), sends it the whole
//! binding cache, then every batch the writer makes durable; in
//! synchronous mode the writer waits for the standby's acknowledgement
//! (the batch is on the standby's disk) before any answer of the batch
//! leaves.

use std::sync::Arc;
use std::time::Duration;

use nemo::ha::{Binding, Change};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::attached::{Attached, Detached};
use super::secure::{self, SealedReader, SealedWriter};
use super::wire::{change_octets, runs, Frame, WireError};
use super::{Mode, MOST_BINDINGS};
use crate::messages::Replicated;
use crate::messages::{CoreEvent, Role, Shared};
use crate::metrics::{ReasonLabel, Unreplicated};

/// Handshakes in progress at once (a pair has one standby; a few more
/// cover its reconnections).
const MOST_HANDSHAKES: usize = 4;
/// How long a standby has for the handshake (hello and proof).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a standby has to send its offer (its whole cache: 100,000
/// bindings take about a second here).
const OFFER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a standby may take to read its snapshot (the same size as an
/// offer, the other way).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the writer asks of replication.
#[derive(Debug)]
struct Request {
    changes: Vec<Replicated>,
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
    /// Starts accepting standbys on `listener` while `role` is active:
    /// connections from `peer` (the other member's address) only, which
    /// must then prove the token.
    #[allow(clippy::too_many_arguments)] // each is one of the pair's settings or channels
    pub fn start(
        listener: TcpListener,
        peer: std::net::IpAddr,
        token: String,
        mode: Mode,
        timeout: Duration,
        shared: Arc<Shared>,
        core: mpsc::Sender<CoreEvent>,
        role: watch::Receiver<Role>,
    ) -> Primary {
        // The pair's counters, at zero from the start.
        for reason in WireError::REASONS {
            let _ = shared
                .metrics
                .replication_refused
                .get_or_create(&ReasonLabel {
                    reason: (*reason).to_owned(),
                });
        }
        for why in Detached::ALL {
            let _ = shared.metrics.standby_detached.get_or_create(&ReasonLabel {
                reason: why.name().to_owned(),
            });
        }
        let (requests, queue) = mpsc::channel(1024);
        tokio::spawn(serve(
            listener,
            peer,
            token,
            timeout,
            shared.clone(),
            core,
            role,
            queue,
        ));
        Primary {
            requests,
            mode,
            timeout,
            shared,
        }
    }

    /// Whether the standby is attached, in step and answering: an empty
    /// batch it acknowledges within the replication timeout.
    pub async fn confirm(&self) -> Result<(), Unreplicated> {
        let (done, answer) = oneshot::channel();
        let request = Request {
            changes: Vec::new(),
            done,
        };
        if self.requests.send(request).await.is_err() {
            return Err(Unreplicated::NoStandby);
        }
        self.acknowledged(answer).await
    }

    /// The standby's answer to a request, within the replication timeout.
    async fn acknowledged(
        &self,
        answer: oneshot::Receiver<Result<(), Unreplicated>>,
    ) -> Result<(), Unreplicated> {
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Unreplicated::NoStandby),
            Err(_) => Err(Unreplicated::TimedOut),
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
            changes: changes.iter().map(|c| Replicated::of(c)).collect(),
            done,
        };
        let outcome = if self.requests.send(request).await.is_err() {
            Err(Unreplicated::NoStandby)
        } else {
            match self.mode {
                Mode::Asynchronous => Ok(()),
                Mode::Synchronous => self.acknowledged(answer).await,
            }
        };
        let metrics = &self.shared.metrics;
        match outcome {
            Ok(()) => {
                metrics.replicated_batches.inc();
                if self.mode == Mode::Synchronous {
                    self.shared
                        .mark_in_step(super::registered(changes.iter().copied()));
                }
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

/// A standby taking its snapshot: the batches made meanwhile wait here (in
/// order, after the snapshot's cut) and their answers do not wait for it,
/// since it is not a copy yet.
struct Syncing {
    task: tokio::task::JoinHandle<Result<Session, WireError>>,
    frames: Vec<Vec<u8>>,
    /// Octets in `frames`: bounded by [`MOST_CATCH_UP_OCTETS`].
    octets: usize,
    next_id: u64,
}

/// Most octets of batches kept for a standby taking its snapshot: one that
/// takes it slower than batches come is given up on (it tries again).
const MOST_CATCH_UP_OCTETS: usize = 256 << 20;

/// A session with a standby: its sealed halves.
type Session = (SealedWriter<OwnedWriteHalf>, SealedReader<OwnedReadHalf>);

/// A standby that proved the token, and made its offer.
#[derive(Debug)]
struct Greeted {
    reader: SealedReader<OwnedReadHalf>,
    writer: SealedWriter<OwnedWriteHalf>,
    peer: std::net::SocketAddr,
    offered: Vec<Binding>,
    in_step_until: std::time::SystemTime,
}

/// A standby whose offer the core took what it needed from.
type Merged = (
    SealedReader<OwnedReadHalf>,
    SealedWriter<OwnedWriteHalf>,
    std::net::SocketAddr,
);

#[allow(clippy::too_many_arguments)] // the pair's settings and channels
async fn serve(
    listener: TcpListener,
    member: std::net::IpAddr,
    token: String,
    deadline: Duration,
    shared: Arc<Shared>,
    core: mpsc::Sender<CoreEvent>,
    role: watch::Receiver<Role>,
    mut queue: mpsc::Receiver<Request>,
) {
    let token = Arc::new(token);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MOST_HANDSHAKES));
    let mut attached: Option<Attached> = None;
    let mut syncing: Option<Syncing> = None;
    let (greeted_tx, mut greeted) = mpsc::channel::<Greeted>(4);
    let (merged_tx, mut merged) = mpsc::channel::<Merged>(4);
    loop {
        let standby_event = async {
            match attached.as_mut() {
                Some(standby) => standby.next().await,
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
                let Ok((stream, peer)) = accepted else {
                    // Out of descriptors or memory: not a reason to spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if !same_address(peer.ip(), member) {
                    shared.metrics.replication_refused.get_or_create(&ReasonLabel { reason: "not_the_peer".to_owned() }).inc();
                    tracing::warn!(%peer, configured = %member, "replication: a connection not from the pair's peer refused");
                    continue;
                }
                if *role.borrow() != Role::Active {
                    tracing::debug!(%peer, "replication: not active; standby refused");
                    continue;
                }
                // At most a few handshakes at once: each holds a task and a
                // descriptor until its deadline.
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    shared.metrics.replication_refused.get_or_create(&ReasonLabel { reason: "too_many_handshakes".to_owned() }).inc();
                    tracing::warn!(%peer, "replication: too many handshakes at once; connection refused");
                    continue;
                };
                // The hello is awaited apart: a silent connection must not
                // hold replication up.
                let (token, greeted_tx, shared) = (token.clone(), greeted_tx.clone(), shared.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match hello(stream, &token, peer).await {
                        Ok(greeted) => {
                            let _ = greeted_tx.send(greeted).await;
                        }
                        Err(error) => {
                            shared.metrics.replication_refused.get_or_create(&ReasonLabel { reason: error.reason().to_owned() }).inc();
                            tracing::warn!(%peer, %error, "replication: standby refused");
                        }
                    }
                });
            }
            Some(greeted) = greeted.recv() => {
                // Its offer goes to the core first (which takes what is
                // newer and makes it durable), then the snapshot is cut:
                // it holds what was taken. Apart, so that batches keep
                // flowing meanwhile.
                tracing::info!(peer = %greeted.peer, offered = greeted.offered.len(), "replication: standby offers its bindings");
                let (core, merged_tx) = (core.clone(), merged_tx.clone());
                tokio::spawn(async move {
                    let (respond, durable) = oneshot::channel();
                    let merge = CoreEvent::Merge {
                        offered: greeted.offered,
                        in_step_until: greeted.in_step_until,
                        respond,
                    };
                    if core.send(merge).await.is_ok() && durable.await.is_ok() {
                        let _ = merged_tx.send((greeted.reader, greeted.writer, greeted.peer)).await;
                    }
                });
            }
            Some((reader, writer, peer)) = merged.recv() => {
                // The snapshot's cut is here, between two batches: the view
                // holds every batch before this point, and every batch
                // after it is kept for this standby.
                let bindings: Vec<Arc<Binding>> = shared
                    .view
                    .read()
                    .map(|view| view.values().cloned().collect())
                    .unwrap_or_default();
                tracing::info!(%peer, bindings = bindings.len(), "replication: standby attaching");
                detach(&mut attached, &shared, Detached::Lost);
                if let Some(old) = syncing.take() {
                    old.task.abort();
                }
                syncing = Some(Syncing {
                    task: tokio::spawn(send_snapshot(reader, writer, bindings)),
                    frames: Vec::new(),
                    octets: 0,
                    next_id: 1,
                });
            }
            done = synced => {
                let Some(sync) = syncing.take() else { continue };
                match done {
                    Ok(Ok((writer, reader))) => {
                        tracing::info!(batches = sync.frames.len(), "replication: standby attached and in sync");
                        shared.metrics.standby_attached.set(1);
                        attached = Some(Attached::start(writer, reader, sync.frames, sync.next_id, deadline));
                    }
                    Ok(Err(error)) => tracing::warn!(%error, "replication: snapshot not delivered"),
                    Err(error) => tracing::warn!(%error, "replication: snapshot task"),
                }
            }
            request = queue.recv() => {
                let Some(request) = request else { return };
                if let Some(sync) = syncing.as_mut() {
                    for run in runs(request.changes, usize::MAX, change_octets) {
                        let frame = Frame::Batch { id: sync.next_id, changes: run }.encode();
                        sync.next_id += 1;
                        sync.octets += frame.len();
                        sync.frames.push(frame);
                    }
                    let _ = request.done.send(Err(Unreplicated::NoStandby));
                    if sync.octets > MOST_CATCH_UP_OCTETS {
                        tracing::warn!(octets = sync.octets, "replication: the standby takes its snapshot slower than batches come; given up (it attaches again)");
                        if let Some(sync) = syncing.take() {
                            sync.task.abort();
                        }
                    }
                    continue;
                }
                let Some(standby) = attached.as_mut() else {
                    let _ = request.done.send(Err(Unreplicated::NoStandby));
                    continue;
                };
                if let Err((why, done)) = standby.send(request.changes, request.done) {
                    let _ = done.send(Err(Unreplicated::NoStandby));
                    detach(&mut attached, &shared, why);
                }
            }
            event = standby_event => {
                if let Err(why) = event {
                    detach(&mut attached, &shared, why);
                }
            }
        }
    }
}

/// Detaches the standby, if one is attached, saying why: the active
/// answers alone until it attaches again.
fn detach(attached: &mut Option<Attached>, shared: &Shared, why: Detached) {
    if let Some(standby) = attached.take() {
        tracing::warn!(
            why = why.name(),
            "replication: standby detached; answering alone until it attaches again"
        );
        shared
            .metrics
            .standby_detached
            .get_or_create(&ReasonLabel {
                reason: why.name().to_owned(),
            })
            .inc();
        standby.detach();
    }
    shared.metrics.standby_attached.set(0);
}

/// Whether `peer` is the configured member's address (an IPv4 member may
/// reach an IPv6 socket as a mapped address).
fn same_address(peer: std::net::IpAddr, member: std::net::IpAddr) -> bool {
    peer.to_canonical() == member.to_canonical()
}

/// Runs the handshake with a standby (it proves the token, and so does
/// this member), then reads its offer.
async fn hello(
    stream: TcpStream,
    token: &str,
    peer: std::net::SocketAddr,
) -> Result<Greeted, WireError> {
    super::keep_alive(&stream);
    let (reader, writer) = stream.into_split();
    let ((mut reader, writer), in_step_until) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, secure::as_active(reader, writer, token))
            .await
            .map_err(|_| WireError::Malformed("no hello in time"))??;
    let offer = async {
        let mut offered = Vec::new();
        loop {
            match reader.receive().await? {
                Frame::Offer { bindings, last } => {
                    if offered.len() + bindings.len() > MOST_BINDINGS {
                        return Err(WireError::Malformed("an offer larger than any cache"));
                    }
                    offered.extend(bindings);
                    if last {
                        return Ok(offered);
                    }
                }
                _ => return Err(WireError::Malformed("expected an offer")),
            }
        }
    };
    let offered = tokio::time::timeout(OFFER_TIMEOUT, offer)
        .await
        .map_err(|_| WireError::Malformed("no offer in time"))??;
    Ok(Greeted {
        reader,
        writer,
        peer,
        offered,
        in_step_until,
    })
}

/// Sends the whole cache as of the cut, in chunks.
async fn send_snapshot(
    reader: SealedReader<OwnedReadHalf>,
    mut writer: SealedWriter<OwnedWriteHalf>,
    bindings: Vec<Arc<Binding>>,
) -> Result<Session, WireError> {
    let sent = writer.send_parts(&bindings, |bindings, last| Frame::Snapshot {
        bindings,
        last,
    });
    tokio::time::timeout(SNAPSHOT_TIMEOUT, sent)
        .await
        .map_err(|_| WireError::Malformed("the standby did not read its snapshot in time"))??;
    Ok((writer, reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const TOKEN: &str = "the-right-token-0123";

    /// What `hello` makes of a standby that `standby` plays over a real
    /// connection.
    async fn greet<F, Fut>(standby: F) -> Result<Greeted, WireError>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("[::1]:0")
            .await
            .map_err(WireError::from)?;
        let address = listener.local_addr().map_err(WireError::from)?;
        let client = tokio::spawn(async move {
            if let Ok(stream) = TcpStream::connect(address).await {
                standby(stream).await;
            }
        });
        let (stream, peer) = listener.accept().await.map_err(WireError::from)?;
        let result = hello(stream, TOKEN, peer).await;
        let _ = client.await;
        result
    }

    /// A standby that runs the handshake with `token`, then sends `then`
    /// sealed, then holds the connection until the active decided.
    async fn standby(stream: TcpStream, token: &'static str, then: Vec<Frame>) {
        let (reader, writer) = stream.into_split();
        if let Ok((_reader, mut writer)) =
            secure::as_standby(reader, writer, token, std::time::UNIX_EPOCH).await
        {
            for frame in &then {
                let _ = writer.send(frame).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// A standby that sends `octets` as they are.
    async fn raw(mut stream: TcpStream, octets: Vec<u8>) {
        let _ = stream.write_all(&octets).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    #[tokio::test]
    async fn only_a_standby_that_proves_the_token_opens_replication() {
        let offer = Frame::Offer {
            bindings: Vec::new(),
            last: true,
        };
        let right = greet(move |s| standby(s, TOKEN, vec![offer])).await;
        assert!(right.is_ok());
        // The right token, then something else than its offer.
        let unoffered = greet(|s| standby(s, TOKEN, vec![Frame::Ack { id: 1 }])).await;
        assert!(matches!(
            unoffered,
            Err(WireError::Malformed("expected an offer"))
        ));
        // A standby without the token refuses this member's challenge and
        // goes: nothing was sent it but a nonce and a proof.
        let wrong = greet(|s| standby(s, "the-wrong-token-0123", Vec::new())).await;
        assert!(matches!(wrong, Err(WireError::Io(_))), "{wrong:?}");
        // The hello of a nemo-ha before the handshake: its token in clear.
        let mut clear = vec![0, 0, 0, 15, 1, 0, 4];
        clear.extend_from_slice(b"toke");
        clear.extend_from_slice(&[0; 8]);
        let clear = greet(move |s| raw(s, clear)).await;
        assert!(
            matches!(clear, Err(WireError::Malformed(why)) if why.contains("upgrade")),
            "{clear:?}"
        );
        // Not a hello at all.
        let not_hello = greet(|s| raw(s, Frame::Ack { id: 1 }.encode())).await;
        assert!(matches!(
            not_hello,
            Err(WireError::Malformed("expected a hello"))
        ));
        // Nothing large is read before the standby is authenticated.
        let large = greet(|s| raw(s, 1000u32.to_be_bytes().to_vec())).await;
        assert!(matches!(large, Err(WireError::TooLarge(1000))));
        // A frame whose mac is not the session's (forged, or recorded from
        // another session): refused.
        let forged = greet(|s| async move {
            let (reader, writer) = s.into_split();
            if let Ok((_reader, mut writer)) =
                secure::as_standby(reader, writer, TOKEN, std::time::UNIX_EPOCH).await
            {
                // An offer with a mac that is not this session's.
                let mut bytes = Frame::Offer {
                    bindings: Vec::new(),
                    last: true,
                }
                .encode();
                bytes[3] += secure::MAC_LEN as u8;
                bytes.extend_from_slice(&[0u8; secure::MAC_LEN]);
                let _ = writer.inner_mut().write_all(&bytes).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
        .await;
        assert!(matches!(forged, Err(WireError::Forged)), "{forged:?}");
    }
}
