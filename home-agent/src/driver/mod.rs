//! The driver of the home-agent daemon: transports, the engine, the store,
//! forwarding.
//!
//! One Binding Update, from the socket to the kernel route and back:
//! 1. `transport` (or a native receiver thread) reads it, sends it to the core;
//! 2. `core` calls the engine once, `nemo::ha::HomeAgent::handle`;
//! 3. `core` sets up the forwarding the engine asks for and reports back;
//! 4. `writer` makes the change durable with its batch (group commit);
//! 5. `writer` sends the acknowledgement, tells watchers, updates the view.
//!
//! Here: what the tasks share, and `start`, which wires them; the admin
//! gRPC server and the metrics server are `crate::admin` and `nemo_daemon`.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use anyhow::Context;
use nemo::ha::{AuthorizationTable, Binding, BindingCache, Change, HomeAgent};
use nemo_dataplane::{BindingRoutes, HomeAgentDataPlane};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::FlushMode;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

mod core;
mod transport;
mod writer;

use self::core::routes;
pub use self::core::Core;
use self::transport::udp_receiver;
use self::writer::Pending;
use crate::replication::Primary;

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
    pub fn mirror(&self, change: &Change) {
        if let Ok(mut view) = self.view.write() {
            match change {
                Change::Upsert { binding, .. } => {
                    view.insert(binding.home_address, binding.clone());
                }
                Change::Remove { binding } => {
                    view.remove(&binding.home_address);
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
    async fn send(&self, packet: &[u8]) {
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
    /// Changes the active replicated, already on this standby's disk.
    Replicated(Vec<Change>),
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
        /// The removed binding, or `None` when there was none.
        respond: oneshot::Sender<Option<Arc<Binding>>>,
    },
}

/// What `start` hands back: the handles to run and stop the daemon.
#[derive(Debug)]
pub struct Running {
    /// Sends work to the core (the admin API uses it).
    pub core: mpsc::Sender<CoreEvent>,
    /// The durable state.
    pub shared: Arc<Shared>,
    /// The UDP addresses actually bound.
    pub udp_addresses: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    /// Keeps a lone home agent's role channel open.
    _alone: watch::Sender<Role>,
    core_task: tokio::task::JoinHandle<()>,
    writer_task: tokio::task::JoinHandle<Result<(), StoreError>>,
    receivers: Vec<tokio::task::JoinHandle<()>>,
    native_stop: Arc<AtomicBool>,
    native_threads: Vec<std::thread::JoinHandle<()>>,
    suppression: Option<nemo_dataplane::quiet::Suppression>,
}

/// Everything `start` needs.
#[derive(Debug)]
pub struct Setup<D> {
    /// The engine's settings.
    pub engine: nemo::ha::HomeAgentConfig,
    /// The authorizations, being loaded (the controller's cache) while the
    /// store's bindings load: a million of each in about the time of one.
    pub authorizations: tokio::task::JoinHandle<anyhow::Result<AuthorizationTable>>,
    /// The open store.
    pub store: Store,
    /// Group commit or not.
    pub flush_mode: FlushMode,
    /// The data plane.
    pub dataplane: Arc<D>,
    /// UDP listen addresses.
    pub udp: Vec<SocketAddr>,
    /// Receive buffer asked for on each UDP socket, in bytes.
    pub udp_receive_buffer: usize,
    /// The native transport: interfaces to read and home-agent addresses.
    pub native: Option<(Vec<String>, Vec<Ipv6Addr>)>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The daemon's rtnetlink connection (the native transport's tc
    /// filter).
    pub netlink: rtnetlink::Handle,
    /// Membership of a home-agent pair, if any.
    pub pair: Option<PairSetup>,
}

/// What a member of a home-agent pair needs besides a home agent's setup.
#[derive(Debug)]
pub struct PairSetup {
    /// The role, as the election decides it.
    pub role: watch::Receiver<Role>,
    /// Where standbys attach (bound).
    pub listener: tokio::net::TcpListener,
    /// The other member's replication address.
    pub peer: SocketAddr,
    /// The pair's shared secret.
    pub token: String,
    /// Whether answers wait for the standby.
    pub mode: crate::replication::Mode,
    /// How long an answer waits for the standby.
    pub timeout: std::time::Duration,
}

/// Loads the store, reconciles forwarding, binds the sockets and starts the
/// core and the writer.
pub async fn start<D: HomeAgentDataPlane>(setup: Setup<D>) -> anyhow::Result<Running> {
    let now = SystemTime::now();
    let (store, engine_config) = (setup.store.clone(), setup.engine);
    let loading = tokio::task::spawn_blocking(move || {
        let mut cache = BindingCache::new(engine_config);
        cache.reserve(usize::try_from(store.count()?).unwrap_or(0));
        let mut expired = Vec::new();
        store.for_each(|binding| {
            expired.extend(cache.load([binding], now));
            Ok::<_, crate::store::StoreError>(())
        })?;
        Ok::<_, crate::store::StoreError>((cache, expired))
    });
    let (bindings, authorizations) = tokio::join!(loading, setup.authorizations);
    let (cache, expired) = bindings
        .context("loading bindings")?
        .context("loading bindings")?;
    let authorizations = authorizations.context("loading authorizations")??;
    let engine = HomeAgent::with_cache(cache, authorizations);
    let removals: Vec<Change> = expired
        .iter()
        .map(|binding| Change::Remove {
            binding: binding.clone(),
        })
        .collect();
    setup
        .store
        .commit(&removals)
        .await
        .context("removing expired bindings")?;
    let live: Vec<Arc<Binding>> = engine.cache().shared_bindings().cloned().collect();
    // The kernel's routes are checked against the cache beside the core,
    // which serves at once: a million bindings kept in the kernel take
    // seconds to verify. What the core changes meanwhile it notes, and
    // settles when the reconcile is done (`Core::caught_up`).
    let wanted: Vec<BindingRoutes> = live.iter().map(|binding| routes(binding)).collect();
    tracing::info!(
        bindings = live.len(),
        expired = expired.len(),
        dataplane = setup.dataplane.name(),
        "binding cache loaded; serving while the data plane catches up"
    );

    let (events, _) = broadcast::channel(4096);
    let shared = Arc::new(Shared {
        view: RwLock::new(live.into_iter().map(|b| (b.home_address, b)).collect()),
        events,
        metrics: setup.metrics.clone(),
        in_step_until: std::sync::Mutex::new(SystemTime::UNIX_EPOCH),
    });
    if let Ok(view) = shared.view.read() {
        setup.metrics.bindings.set(view.len() as i64);
    }

    let (core_tx, core_rx) = mpsc::channel(65536);
    // A home agent alone is active for good.
    let (alone, role) = watch::channel(Role::Active);
    let (role, replica) = match setup.pair {
        Some(pair) => {
            let local = pair.listener.local_addr()?.ip();
            let replica = Primary::start(
                pair.listener,
                pair.token.clone(),
                pair.mode,
                pair.timeout,
                shared.clone(),
                core_tx.clone(),
                pair.role.clone(),
            );
            tokio::spawn(crate::replication::standby::follow(
                local,
                pair.peer,
                pair.token,
                setup.store.clone(),
                shared.clone(),
                core_tx.clone(),
                pair.role.clone(),
            ));
            (pair.role, Some(replica))
        }
        None => (role, None),
    };
    let (writer_tx, writer_rx) = mpsc::channel(65536);
    let writer_task = tokio::spawn(writer::writer(
        setup.store.clone(),
        setup.flush_mode,
        writer_rx,
        shared.clone(),
        replica,
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let core = Core {
        engine,
        dataplane: setup.dataplane.clone(),
        writer: writer_tx,
        metrics: setup.metrics,
        role,
        catching_up: std::sync::Mutex::new(Some(core::CatchingUp::new())),
    };
    let core_task = tokio::spawn(core.run(core_rx, shutdown_rx));
    let reconciled_to = core_tx.clone();
    tokio::spawn(async move {
        let reconciled = setup.dataplane.reconcile(&wanted).await;
        drop(wanted);
        let _ = reconciled_to.send(CoreEvent::Reconciled(reconciled)).await;
    });

    let mut receivers = Vec::new();
    let mut udp_addresses = Vec::new();
    for listen in &setup.udp {
        let (socket, receive_buffer) = nemo_daemon::udp_socket(*listen, setup.udp_receive_buffer)
            .with_context(|| format!("binding UDP {listen}"))?;
        let bound = socket.local_addr()?;
        tracing::info!(listen = %bound, receive_buffer, "UDP transport listening");
        udp_addresses.push(bound);
        receivers.push(tokio::spawn(udp_receiver(
            Arc::new(socket),
            core_tx.clone(),
        )));
    }
    let native_stop = Arc::new(AtomicBool::new(false));
    let mut native_threads = Vec::new();
    let mut suppression = None;
    if let Some((interfaces, addresses)) = &setup.native {
        // Keep the kernel from answering the Home Address option with a
        // Parameter Problem (the packet socket still sees the packet).
        suppression = Some(
            nemo_dataplane::quiet::suppress(
                &setup.netlink,
                interfaces,
                addresses,
                nemo_dataplane::quiet::Signalling::BindingUpdates,
            )
            .await
            .context("native transport: installing the tc ingress filter")?,
        );
        let sender = Arc::new(nemo_dataplane::transport::RawSender::open()?);
        let core = core_tx.clone();
        native_threads = nemo_dataplane::transport::start_receivers(
            interfaces,
            Arc::new(RwLock::new(addresses.clone())),
            move |bytes| {
                let event = CoreEvent::Packet {
                    bytes,
                    path: ReplyPath::Native {
                        sender: sender.clone(),
                    },
                    received_at: Instant::now(),
                };
                core.blocking_send(event).is_ok()
            },
            native_stop.clone(),
        )?;
    }
    Ok(Running {
        core: core_tx,
        shared,
        udp_addresses,
        shutdown,
        _alone: alone,
        core_task,
        writer_task,
        receivers,
        native_stop,
        native_threads,
        suppression,
    })
}

impl Running {
    /// Stops receiving, lets the core finish, and waits for the writer to
    /// flush everything it was given.
    pub async fn stop(self) -> anyhow::Result<()> {
        for receiver in &self.receivers {
            receiver.abort();
        }
        self.native_stop.store(true, Ordering::Relaxed);
        for thread in self.native_threads {
            // The threads notice within one read timeout.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Some(suppression) = self.suppression {
            if let Err(error) = suppression.remove().await {
                tracing::warn!(%error, "removing the tc ingress filter failed");
            }
        }
        let _ = self.shutdown.send(true);
        drop(self.core);
        self.core_task.await.context("core task")?;
        self.writer_task.await.context("writer task")??;
        Ok(())
    }

    /// Waits until the writer fails (a store error: the daemon must stop,
    /// since it can no longer keep its promises).
    pub fn writer_failed(&mut self) -> &mut tokio::task::JoinHandle<Result<(), StoreError>> {
        &mut self.writer_task
    }
}
