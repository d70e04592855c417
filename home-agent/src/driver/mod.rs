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
//! Here: `start`, which wires them (what they say to each other is
//! `crate::messages`); the admin
//! gRPC server and the metrics server are `crate::admin` and `nemo_daemon`.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use anyhow::Context;
use nemo::ha::{AuthorizationTable, Binding, BindingCache, Change, HomeAgent};
use nemo_dataplane::{BindingRoutes, HomeAgentDataPlane};
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::FlushMode;
use crate::messages::{CoreEvent, ReplyPath, Role, Shared};
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
    /// How long a moved binding's old care-of address still gets copies
    /// (`[dataplane] bicast_ms`; zero: none).
    pub bicast: std::time::Duration,
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
                pair.peer.ip(),
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
        bicasts: nemo::ha::Bicasts::new(setup.bicast),
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
