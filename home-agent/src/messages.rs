//! The vocabulary the home agent's tasks speak (the core, the writer, the
//! transports, replication, the election, the admin API, the controller
//! link): a leaf module, so that each task imports it and none imports
//! another task's wiring (holo's `tasks::messages`).

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use nemo::ha::{Arrival, Binding, Change};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, oneshot};

use crate::metrics::Metrics;
use crate::store::BindingWrite;

/// What happened to a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingChange {
    /// Created or updated.
    Upserted,
    /// Removed.
    Removed,
}

/// A binding change as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingEvent {
    /// What happened.
    pub change: BindingChange,
    /// The binding.
    pub binding: Arc<Binding>,
    /// Why: registration, deregistration, expiry, admin, snapshot.
    pub reason: &'static str,
}

/// This member's role in a home-agent pair; a home agent alone is always
/// active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Answers Binding Updates, runs the timers, replicates to the standby.
    Active,
    /// Answers nothing; follows the active's replication.
    Standby,
}

/// What the admin API and the metrics read: the durable state.
#[derive(Debug)]
pub struct Shared {
    /// Bindings on disk, or in the batch being written (a failed write
    /// stops the daemon).
    pub view: RwLock<BTreeMap<Ipv6Addr, Arc<Binding>>>,
    /// Durable changes, as they happen.
    pub events: broadcast::Sender<BindingEvent>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The newest registration known to be on both members of a pair
    /// (replicated to the standby, or applied from the active); what this
    /// member registers after it, it registered alone. The epoch until
    /// this process has been in step once: a merge then takes whatever it
    /// offers that the other member lacks (`nemo::ha::merge`).
    pub in_step_until: std::sync::Mutex<SystemTime>,
}

/// How to reach the peer that sent a message.
#[derive(Debug, Clone)]
pub enum ReplyPath {
    /// Back over the UDP socket it came in on, to its source.
    Udp {
        /// The socket.
        socket: Arc<UdpSocket>,
        /// The peer.
        peer: SocketAddr,
    },
    /// Out of a raw IPv6 socket, to the packet's destination.
    Native {
        /// The raw socket.
        sender: Arc<nemo_dataplane::transport::RawSender>,
    },
}

impl Shared {
    /// Mirrors a durable change in the view the admin API reads.
    pub fn mirror(&self, change: &impl BindingWrite) {
        if let Ok(mut view) = self.view.write() {
            match change.upserted() {
                Some(binding) => {
                    view.insert(binding.home_address, binding.clone());
                }
                None => {
                    view.remove(&change.home_address());
                }
            }
            self.metrics.bindings.set(view.len() as i64);
        }
    }

    /// Notes registrations now on both members of the pair.
    pub fn mark_in_step(&self, registered: impl IntoIterator<Item = SystemTime>) {
        if let (Some(newest), Ok(mut until)) =
            (registered.into_iter().max(), self.in_step_until.lock())
        {
            *until = (*until).max(newest);
        }
    }

    /// The newest registration known to be on both members.
    pub fn in_step_until(&self) -> SystemTime {
        self.in_step_until
            .lock()
            .map_or(SystemTime::UNIX_EPOCH, |until| *until)
    }

    /// Replaces the view with a whole cache (a standby's resynchronisation).
    pub fn replace_view(&self, bindings: &[Arc<Binding>]) {
        if let Ok(mut view) = self.view.write() {
            *view = bindings
                .iter()
                .map(|binding| (binding.home_address, binding.clone()))
                .collect();
            self.metrics.bindings.set(view.len() as i64);
        }
    }
}

impl ReplyPath {
    /// How the message that this path answers arrived: in UDP over IPv4
    /// when its peer is an IPv4 address (or IPv4-mapped, on a dual-stack
    /// socket), which gives the engine its NAT detection (RFC 5555 §4.2).
    pub fn arrival(&self) -> Arrival {
        match self {
            ReplyPath::Udp { peer, .. } => match peer {
                SocketAddr::V4(peer) => Arrival::UdpIpv4(*peer),
                SocketAddr::V6(peer) => match peer.ip().to_ipv4_mapped() {
                    Some(ip) => Arrival::UdpIpv4(std::net::SocketAddrV4::new(ip, peer.port())),
                    None => Arrival::Ipv6,
                },
            },
            ReplyPath::Native { .. } => Arrival::Ipv6,
        }
    }

    /// Sends `packet` back the way its message came; a failure is logged
    /// (the mobile router retransmits).
    pub async fn send(&self, packet: &[u8]) {
        match self {
            ReplyPath::Udp { socket, peer } => {
                if let Err(error) = socket.send_to(packet, peer).await {
                    tracing::warn!(%peer, %error, "sending reply failed");
                }
            }
            ReplyPath::Native { sender } => {
                if let Err(error) = sender.send(packet) {
                    tracing::warn!(%error, "sending reply on the raw socket failed");
                }
            }
        }
    }
}

/// A change as replicated: the binding upserted (its record), or the home
/// address of a binding removed (nothing else of it is needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replicated {
    /// This binding, created or updated.
    Upsert(Arc<Binding>),
    /// The binding of this home address, removed.
    Removed(Ipv6Addr),
}

impl Replicated {
    /// What the active replicates of one of its changes.
    pub fn of(change: &Change) -> Replicated {
        match change {
            Change::Upsert { binding, .. } => Replicated::Upsert(binding.clone()),
            Change::Remove { binding } => Replicated::Removed(binding.home_address),
        }
    }
}

impl BindingWrite for Replicated {
    fn home_address(&self) -> Ipv6Addr {
        match self {
            Replicated::Upsert(binding) => binding.home_address,
            Replicated::Removed(home_address) => *home_address,
        }
    }

    fn upserted(&self) -> Option<&Arc<Binding>> {
        match self {
            Replicated::Upsert(binding) => Some(binding),
            Replicated::Removed(_) => None,
        }
    }
}

/// Work for the core.
#[derive(Debug)]
pub enum CoreEvent {
    /// A packet from a transport: an IPv6 packet carrying a Mobility Header.
    Packet {
        /// The bytes.
        bytes: Vec<u8>,
        /// Where the answer goes.
        path: ReplyPath,
        /// When it was read.
        received_at: Instant,
    },
    /// The controller changed an authorization (`None`: revoked).
    Authorize {
        /// The home address.
        home_address: Ipv6Addr,
        /// Its authorization now.
        authorization: Option<nemo::ha::Authorization>,
    },
    /// Answered once everything answered so far is durable (and on the
    /// standby).
    Drain(oneshot::Sender<()>),
    /// As `Drain`, then the standby confirms it is in step.
    Confirm(oneshot::Sender<Result<(), crate::metrics::Unreplicated>>),
    /// Changes the active replicated, already on this standby's disk.
    Replicated(Vec<Replicated>),
    /// The active's whole cache, already on this standby's disk.
    Resync(Vec<Arc<Binding>>),
    /// The start's reconcile of the data plane, run beside the core, is
    /// done.
    Reconciled(Result<nemo_dataplane::ReconcileReport, nemo_dataplane::DataPlaneError>),
    /// The bindings a returning member offers (its whole cache) before it
    /// follows this active, after both were active: the newer ones are
    /// taken (`nemo::ha::merge`); answered once they are durable.
    Merge {
        /// Its bindings.
        offered: Vec<Binding>,
        /// Its newest registration that was on both members.
        in_step_until: SystemTime,
        /// Answered once the bindings taken are durable.
        respond: oneshot::Sender<()>,
    },
    /// An operator removes a binding; answered once the removal is durable.
    Delete {
        /// The home address.
        home_address: Ipv6Addr,
        /// What came of it.
        respond: oneshot::Sender<Deleted>,
    },
}

/// What an operator's delete came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// The binding removed (on disk, and on the standby's as replication
    /// promises, before this is answered).
    Removed(Arc<Binding>),
    /// No binding for that home address.
    NoBinding,
    /// This member is standby: bindings change on the active, which
    /// replicates them; a delete here would make the members disagree.
    NotActive,
}
