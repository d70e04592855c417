//! The standby member's side: while this member is standby, follow the
//! active (its peer): take its whole binding cache, then each batch, make
//! it durable on this member's disk, acknowledge it, and hand it to the
//! core, which keeps the engine and the kernel's routes in step (a hot
//! standby: nothing to install at takeover).

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;

use nemo::ha::Binding;
use tokio::net::TcpSocket;
use tokio::sync::{mpsc, watch};

use super::wire::{Frame, WireError};
use super::{registered, secure};
use crate::messages::Replicated;
use crate::messages::{CoreEvent, Role, Shared};
use crate::store::Store;

/// How long the active has to answer the hello.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Follows the active at `peer` whenever `role` is standby, until the task
/// is dropped.
pub async fn follow(
    local: std::net::IpAddr,
    peer: SocketAddr,
    token: String,
    store: Store,
    shared: Arc<Shared>,
    core: mpsc::Sender<CoreEvent>,
    mut role: watch::Receiver<Role>,
) {
    let mut backoff = nemo_daemon::Backoff::new("replication peer");
    loop {
        if role.wait_for(|r| *r == Role::Standby).await.is_err() {
            return;
        }
        let started = std::time::Instant::now();
        let session = session(local, peer, &token, &store, &shared, &core);
        let result = tokio::select! {
            result = session => result,
            became = role.wait_for(|r| *r == Role::Active) => {
                if became.is_err() {
                    return;
                }
                tracing::info!("replication: active now; no longer following the peer");
                continue;
            }
        };
        // A session that lasted is a success: the next attempt starts from
        // the shortest wait again.
        if started.elapsed() > std::time::Duration::from_secs(10) {
            backoff = nemo_daemon::Backoff::new("replication peer");
        }
        match result {
            Ok(()) => {}
            Err(error) => {
                if let SessionError::Wire(wire) = &error {
                    shared
                        .metrics
                        .replication_refused
                        .get_or_create(&crate::metrics::ReasonLabel {
                            reason: wire.reason().to_owned(),
                        })
                        .inc();
                }
                backoff
                    .wait(
                        &error,
                        &peer.to_string(),
                        "standing by with what is on disk",
                    )
                    .await;
            }
        }
    }
}

async fn session(
    local: std::net::IpAddr,
    peer: SocketAddr,
    token: &str,
    store: &Store,
    shared: &Shared,
    core: &mpsc::Sender<CoreEvent>,
) -> Result<(), SessionError> {
    // From this member's own address: never from the home-agent address,
    // which moves away with the active role (and with it the replies).
    let socket = match local {
        std::net::IpAddr::V6(_) => TcpSocket::new_v6(),
        std::net::IpAddr::V4(_) => TcpSocket::new_v4(),
    }
    .map_err(WireError::from)?;
    socket
        .bind(SocketAddr::new(local, 0))
        .map_err(WireError::from)?;
    let stream = socket.connect(peer).await.map_err(WireError::from)?;
    super::keep_alive(&stream);
    let (reader, writer) = stream.into_split();
    // Both members prove the token; nothing else leaves before the active
    // has (`secure`): an impostor at the peer's address learns a nonce.
    let (mut reader, mut writer) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        secure::as_standby(reader, writer, token, shared.in_step_until()),
    )
    .await
    .map_err(|_| WireError::Malformed("no challenge in time"))??;
    // What this member holds, offered before it takes the active's: if
    // both were active, the active takes what is newer (`nemo::ha::merge`).
    // Only this session writes this member's store while it stands by, so
    // what is read here is also what the snapshot replaces below.
    let on_disk = store.load()?;
    writer
        .send_parts(&on_disk, |bindings, last| Frame::Offer { bindings, last })
        .await?;
    // The whole cache first.
    let mut snapshot: Vec<Arc<Binding>> = Vec::new();
    loop {
        match reader.receive().await? {
            Frame::Snapshot { bindings, last } => {
                if snapshot.len() + bindings.len() > super::MOST_BINDINGS {
                    return Err(WireError::Malformed("a snapshot larger than any cache").into());
                }
                snapshot.extend(bindings.into_iter().map(Arc::new));
                if last {
                    break;
                }
            }
            _ => return Err(WireError::Malformed("expected a snapshot").into()),
        }
    }
    let held: BTreeSet<Ipv6Addr> = on_disk.iter().map(|b| b.home_address).collect();
    let kept: BTreeSet<Ipv6Addr> = snapshot.iter().map(|b| b.home_address).collect();
    let mut changes: Vec<Replicated> = held
        .difference(&kept)
        .map(|home| Replicated::Removed(*home))
        .collect();
    changes.extend(snapshot.iter().cloned().map(Replicated::Upsert));
    store.commit(&changes).await?;
    shared.replace_view(&snapshot);
    shared.mark_in_step(snapshot.iter().map(|binding| binding.registered_at));
    tracing::info!(
        bindings = snapshot.len(),
        dropped = held.difference(&kept).count(),
        "replication: in sync with the active"
    );
    core.send(CoreEvent::Resync(snapshot))
        .await
        .map_err(|_| SessionError::Stopped)?;
    // Then every batch: on disk, acknowledged, applied.
    loop {
        match reader.receive().await? {
            Frame::Batch { id, changes } => {
                store.commit(&changes).await?;
                writer.send(&Frame::Ack { id }).await?;
                for change in &changes {
                    shared.mirror(change);
                }
                shared.mark_in_step(registered(&changes));
                core.send(CoreEvent::Replicated(changes))
                    .await
                    .map_err(|_| SessionError::Stopped)?;
            }
            _ => return Err(WireError::Malformed("expected a batch").into()),
        }
    }
}

/// Why a session with the active ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The stream failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// This member's disk failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The daemon is stopping.
    #[error("the core stopped")]
    Stopped,
}
