//! Replication between the members of a home-agent pair: the active sends
//! every durable batch to the standby (`primary`), the standby makes it
//! durable, acknowledges it and keeps its engine and kernel in step
//! (`standby`); `wire` is the stream between them, `secure` its
//! handshake and the MAC on every frame. A standby that attaches
//! first offers its own cache, and the active takes what is newer
//! (`nemo::ha::merge`: after a partition both were active).
//!
//! Synchronous mode (the default): an answer of a batch leaves only after
//! the standby has the batch on its disk, so an acknowledged binding
//! survives the active's death at the next instant. When no standby is
//! attached, or it does not answer within the timeout, the active answers
//! on its own disk alone and counts it (`nemo_ha_unreplicated_batches`):
//! availability over the second copy, said loudly. Asynchronous mode never
//! waits: a takeover may lose the last batches acknowledged.

pub mod attached;
pub mod primary;
pub mod secure;
pub mod standby;
pub mod wire;

pub use primary::Primary;

/// Most bindings an offer or a snapshot may hold: four times the million
/// bindings one home agent is sized for (docs/BENCHMARKS.md), so that even
/// the pair's own authenticated peer cannot make a member hold unbounded
/// memory.
pub const MOST_BINDINGS: usize = 4 << 20;

/// Whether answers wait for the standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Answers wait for the standby's disk.
    Synchronous,
    /// Answers do not wait; the standby may lag.
    Asynchronous,
}

/// When each upsert among `changes` was registered.
pub fn registered<'a, C, I>(
    changes: I,
) -> impl Iterator<Item = std::time::SystemTime> + use<'a, C, I>
where
    C: crate::store::BindingWrite + 'a,
    I: IntoIterator<Item = &'a C>,
{
    changes
        .into_iter()
        .filter_map(|change| change.upserted().map(|binding| binding.registered_at))
}

/// Low latency, and a dead peer noticed within seconds even when no batch
/// is flowing (TCP keepalive: 2 s idle, then 3 probes 1 s apart) or when
/// what was sent goes unacknowledged (TCP_USER_TIMEOUT, 5 s). A peer that
/// is alive but stops reading is the active's to notice
/// (`attached`: its batches go unacknowledged).
pub fn keep_alive(stream: &tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(2))
        .with_interval(std::time::Duration::from_secs(1))
        .with_retries(3);
    let socket = socket2::SockRef::from(stream);
    let _ = socket.set_tcp_keepalive(&keepalive);
    let _ = socket.set_tcp_user_timeout(Some(std::time::Duration::from_secs(5)));
}
