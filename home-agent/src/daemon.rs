//! The running home agent: transports, the engine, the store, forwarding.
//!
//! Tasks:
//! - one receiver per socket, handing packets to the core;
//! - the core, which owns the engine and the authorizations, decides, and
//!   programs forwarding before anything is acknowledged;
//! - the writer, which makes changes durable in batches (group commit) and
//!   only then sends the answers, publishes the change to watchers and
//!   updates the view the admin API reads;
//! - the admin gRPC server and the metrics server.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use anyhow::Context;
use nemo::ha::{AuthorizationTable, Binding, Change, HomeAgent, Outcome, Received, Reply};
use nemo::wire::{
    build_packet, parse_packet, BaStatus, DecodeError, MobilityHeader, PacketRepr,
    Type2RoutingHeader,
};
use nemo_dataplane::{BindingRoutes, HomeAgentDataPlane};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::FlushMode;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Largest datagram read: a Mobility Header is at most 2048 octets, plus
/// IPv6 and extension headers.
const MAX_DATAGRAM: usize = 4096;

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
    pub binding: Binding,
    /// Why: registration, deregistration, expiry, admin, snapshot.
    pub reason: &'static str,
}

/// What the admin API and the metrics read: the durable state.
#[derive(Debug)]
pub struct Shared {
    /// Bindings that are on disk.
    pub view: RwLock<BTreeMap<Ipv6Addr, Binding>>,
    /// Durable changes, as they happen.
    pub events: broadcast::Sender<BindingEvent>,
    /// Counters.
    pub metrics: Arc<Metrics>,
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
    /// An operator removes a binding; answered once the removal is durable.
    Delete {
        /// The home address.
        home_address: Ipv6Addr,
        /// The removed binding, or `None` when there was none.
        respond: oneshot::Sender<Option<Binding>>,
    },
}

/// A reply framed for its transport.
#[derive(Debug)]
struct Outgoing {
    packet: Vec<u8>,
    path: ReplyPath,
}

/// Work for the writer, done in order: what to make durable first, then
/// what to send or whom to tell.
#[derive(Debug)]
enum Pending {
    /// A reply that changes nothing (a Binding Error): sent in turn.
    Send(Outgoing),
    /// An answered Binding Update: its change, if any, made durable, then
    /// its acknowledgement sent and counted.
    Acknowledge {
        change: Option<(Change, &'static str)>,
        reply: Outgoing,
        status: BaStatus,
        received_at: Instant,
    },
    /// A binding expired: made durable.
    Expire(Change),
    /// An operator removed a binding: made durable, then the operator told.
    Remove {
        change: Change,
        respond: oneshot::Sender<Option<Binding>>,
    },
}

impl Pending {
    /// The change to make durable, and why.
    fn change(&self) -> Option<(&Change, &'static str)> {
        match self {
            Pending::Send(_) => None,
            Pending::Acknowledge { change, .. } => change.as_ref().map(|(c, why)| (c, *why)),
            Pending::Expire(change) => Some((change, "expiry")),
            Pending::Remove { change, .. } => Some((change, "admin")),
        }
    }
}

/// Where a reply goes inside its packet (RFC 6275 §6.4, §9.5.4): a Binding
/// Acknowledgement or Refresh Request carries the home address in a type 2
/// routing header; a Binding Error goes plainly to the packet's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addressing {
    /// To the care-of address, with the home address in a type 2 routing
    /// header.
    ViaType2RoutingHeader,
    /// To the source only.
    Plain,
}

fn routes(binding: &Binding) -> BindingRoutes {
    BindingRoutes {
        home_address: binding.home_address,
        care_of: binding.care_of,
        prefixes: binding.prefixes.clone(),
    }
}

fn decode_reason(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::Truncated { .. } => "truncated",
        DecodeError::TrailingBytes { .. } => "trailing_bytes",
        DecodeError::LengthMismatch { .. } => "length_mismatch",
        DecodeError::MessageTooShort { .. } => "message_too_short",
        DecodeError::OptionOverrun { .. } => "option_overrun",
        DecodeError::BadOptionLength { .. } => "bad_option_length",
        DecodeError::NotMobility(_) => "not_mobility",
        DecodeError::BadExtensionHeader { .. } => "bad_extension_header",
    }
}

/// The core: owns the engine.
pub struct Core<D> {
    engine: HomeAgent,
    authorizations: AuthorizationTable,
    dataplane: Arc<D>,
    writer: mpsc::Sender<Pending>,
    metrics: Arc<Metrics>,
    /// Where each home address was last answered from and to, for Binding
    /// Refresh Requests.
    last_path: HashMap<Ipv6Addr, (ReplyPath, Ipv6Addr)>,
}

impl<D> std::fmt::Debug for Core<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("bindings", &self.engine.len())
            .finish_non_exhaustive()
    }
}

impl<D: HomeAgentDataPlane> Core<D> {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<CoreEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let deadline = self.engine.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => {
                        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                        tokio::time::sleep(wait).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.recv() => match event {
                    Some(CoreEvent::Packet { bytes, path, received_at }) => {
                        self.packet(&bytes, path, received_at).await;
                    }
                    Some(CoreEvent::Delete { home_address, respond }) => {
                        self.delete(home_address, respond).await;
                    }
                    Some(CoreEvent::Authorize { home_address, authorization }) => {
                        self.authorize(home_address, authorization);
                    }
                    None => break,
                },
                () = sleep => self.timers().await,
                _ = shutdown.changed() => break,
            }
        }
        tracing::info!("core stopped");
    }

    async fn packet(&mut self, bytes: &[u8], path: ReplyPath, received_at: Instant) {
        let parsed = match parse_packet(bytes) {
            Ok(parsed) => parsed,
            Err(error) => {
                Metrics::count(&self.metrics.malformed, decode_reason(&error));
                tracing::debug!(%error, "malformed packet");
                return;
            }
        };
        if !parsed.checksum_ok() {
            Metrics::count(&self.metrics.malformed, "checksum");
            tracing::debug!(source = %parsed.repr.source, "bad Mobility Header checksum");
            return;
        }
        let header = match MobilityHeader::decode(parsed.mh) {
            Ok(header) => header,
            Err(error) => {
                Metrics::count(&self.metrics.malformed, decode_reason(&error));
                tracing::debug!(%error, source = %parsed.repr.source, "malformed Mobility Header");
                return;
            }
        };
        let received = Received {
            mh: parsed.mh,
            source: parsed.repr.source,
            home_address: parsed.repr.home_address_option.map(|hao| hao.home_address),
        };
        // The answer leaves from the address the message was sent to.
        let local = parsed.repr.destination;
        let now = SystemTime::now();
        let mut outcome = self
            .engine
            .process(received, &header, now, &self.authorizations);
        if let Outcome::Acknowledge {
            change: Some(change),
            ..
        } = &outcome
        {
            if let Err(error) = self.forward(change).await {
                self.metrics.forwarding_failures.inc();
                tracing::error!(%error, "forwarding failed; refusing the registration");
                outcome = self.engine.forwarding_failed(
                    change,
                    received,
                    &header,
                    now,
                    &self.authorizations,
                );
            }
        }
        match outcome {
            Outcome::Drop(reason) => {
                Metrics::count(&self.metrics.dropped, reason.name());
                tracing::debug!(reason = reason.name(), source = %received.source, "dropped");
            }
            Outcome::BindingError { reply, status } => {
                self.metrics.binding_errors.inc();
                tracing::debug!(%status, to = %reply.care_of, "binding error");
                let packet = frame(&reply, local, Addressing::Plain);
                self.queue(Pending::Send(Outgoing { packet, path })).await;
            }
            Outcome::Acknowledge {
                reply,
                status,
                change,
            } => {
                // A refresh (same care-of address and prefixes) is routine:
                // at tens of thousands a second, an info line each would
                // flood the log. New bindings, moves, removals and
                // rejections stay at info.
                let refresh = matches!(
                    &change,
                    Some(Change::Upsert { binding, previous: Some(previous) })
                        if previous.care_of == binding.care_of && previous.prefixes == binding.prefixes
                );
                if refresh {
                    tracing::debug!(
                        home_address = %reply.home_address,
                        care_of = %reply.care_of,
                        %status,
                        "binding refreshed"
                    );
                } else {
                    tracing::info!(
                        home_address = %reply.home_address,
                        care_of = %reply.care_of,
                        %status,
                        "binding update"
                    );
                }
                if status.is_accepted() {
                    self.last_path
                        .insert(reply.home_address, (path.clone(), local));
                }
                let reason = match &change {
                    Some(Change::Remove { .. }) => "deregistration",
                    _ => "registration",
                };
                let packet = frame(&reply, local, Addressing::ViaType2RoutingHeader);
                self.queue(Pending::Acknowledge {
                    change: change.map(|c| (c, reason)),
                    reply: Outgoing { packet, path },
                    status,
                    received_at,
                })
                .await;
            }
        }
    }

    async fn forward(&self, change: &Change) -> Result<(), nemo_dataplane::DataPlaneError> {
        match change {
            Change::Upsert { binding, previous } => {
                let previous = previous.as_ref().map(routes);
                self.dataplane
                    .set(&routes(binding), previous.as_ref())
                    .await
            }
            Change::Remove { binding } => self.dataplane.clear(&routes(binding)).await,
        }
    }

    /// Removes forwarding for a change that cannot be refused (expiry, an
    /// operator's delete): a failure is logged and counted, reconciliation
    /// at the next start cleans up.
    async fn unforward(&self, change: &Change) {
        if let Err(error) = self.forward(change).await {
            self.metrics.forwarding_failures.inc();
            tracing::error!(%error, "removing forwarding failed");
        }
    }

    async fn timers(&mut self) {
        let now = SystemTime::now();
        for reply in self.engine.refresh_requests(now, &self.authorizations) {
            let Some((path, local)) = self.last_path.get(&reply.home_address).cloned() else {
                continue;
            };
            self.metrics.refresh_requests.inc();
            let packet = frame(&reply, local, Addressing::ViaType2RoutingHeader);
            self.queue(Pending::Send(Outgoing { packet, path })).await;
        }
        for change in self.engine.expire(now) {
            self.metrics.expired.inc();
            if let Change::Remove { binding } = &change {
                tracing::info!(home_address = %binding.home_address, "binding expired");
                self.last_path.remove(&binding.home_address);
            }
            self.unforward(&change).await;
            self.queue(Pending::Expire(change)).await;
        }
    }

    /// Applies an authorization change. A revoked home address keeps its
    /// binding until it expires or deregisters (its next Binding Update is
    /// dropped for want of a security association); an operator can delete
    /// it at once.
    fn authorize(
        &mut self,
        home_address: Ipv6Addr,
        authorization: Option<nemo::ha::Authorization>,
    ) {
        match authorization {
            Some(entry) => match self.authorizations.insert(entry) {
                Ok(()) => tracing::info!(%home_address, "authorization updated"),
                Err(error) => tracing::error!(%home_address, %error, "authorization refused"),
            },
            None => {
                if self.authorizations.remove(home_address).is_some() {
                    tracing::info!(%home_address, "authorization revoked");
                }
            }
        }
    }

    async fn delete(&mut self, home_address: Ipv6Addr, respond: oneshot::Sender<Option<Binding>>) {
        let Some(change) = self.engine.remove(home_address) else {
            let _ = respond.send(None);
            return;
        };
        tracing::info!(%home_address, "binding deleted by operator");
        self.last_path.remove(&home_address);
        self.unforward(&change).await;
        self.queue(Pending::Remove { change, respond }).await;
    }

    async fn queue(&self, pending: Pending) {
        if self.writer.send(pending).await.is_err() {
            tracing::error!("writer stopped; answer not sent");
        }
    }
}

/// Frames an engine reply as an IPv6 packet from `local`.
fn frame(reply: &Reply, local: Ipv6Addr, addressing: Addressing) -> Vec<u8> {
    let repr = PacketRepr {
        source: local,
        destination: reply.care_of,
        hop_limit: 64,
        type2_routing: (addressing == Addressing::ViaType2RoutingHeader).then_some(
            Type2RoutingHeader {
                home_address: reply.home_address,
            },
        ),
        home_address_option: None,
    };
    build_packet(&repr, &reply.mh)
}

/// The writer: group commit, then answers.
async fn writer(
    store: Store,
    flush_mode: FlushMode,
    mut queue: mpsc::Receiver<Pending>,
    shared: Arc<Shared>,
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
        match flush_mode {
            FlushMode::Group if !changes.is_empty() => {
                timed_commit(&store, &shared.metrics, &changes).await?;
            }
            FlushMode::Group => {}
            FlushMode::EachBinding => {
                for change in &changes {
                    timed_commit(&store, &shared.metrics, &[change]).await?;
                }
            }
        }
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
                Pending::Expire(_) => {}
                Pending::Remove { change, respond } => {
                    let removed = match change {
                        Change::Remove { binding } => Some(binding),
                        Change::Upsert { .. } => None,
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

/// Updates the durable view and tells watchers.
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
    if let Ok(mut view) = shared.view.write() {
        match event.change {
            BindingChange::Upserted => {
                view.insert(event.binding.home_address, event.binding.clone());
            }
            BindingChange::Removed => {
                view.remove(&event.binding.home_address);
            }
        }
        shared.metrics.bindings.set(view.len() as i64);
    }
    // No watcher is fine.
    let _ = shared.events.send(event);
}

/// Receives datagrams on a UDP socket and hands them to the core.
async fn udp_receiver(socket: Arc<UdpSocket>, core: mpsc::Sender<CoreEvent>) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((len, peer)) => {
                let event = CoreEvent::Packet {
                    bytes: buffer[..len].to_vec(),
                    path: ReplyPath::Udp {
                        socket: socket.clone(),
                        peer,
                    },
                    received_at: Instant::now(),
                };
                if core.send(event).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                // ICMP errors from earlier sends surface here; keep serving.
                tracing::debug!(%error, "udp receive error");
            }
        }
    }
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
    /// The authorizations.
    pub authorizations: AuthorizationTable,
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
}

/// Loads the store, reconciles forwarding, binds the sockets and starts the
/// core and the writer.
pub async fn start<D: HomeAgentDataPlane>(setup: Setup<D>) -> anyhow::Result<Running> {
    let now = SystemTime::now();
    let stored = setup.store.load().context("loading bindings")?;
    let mut engine = HomeAgent::new(setup.engine);
    let expired = engine.load(stored, now);
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
    let live: Vec<Binding> = engine.bindings().cloned().collect();
    let report = setup
        .dataplane
        .reconcile(&live.iter().map(routes).collect::<Vec<_>>())
        .await
        .context("reconciling forwarding")?;
    tracing::info!(
        bindings = live.len(),
        expired = expired.len(),
        installed = report.installed,
        kept = report.kept,
        removed = report.removed,
        dataplane = setup.dataplane.name(),
        "binding cache loaded"
    );

    let (events, _) = broadcast::channel(4096);
    let shared = Arc::new(Shared {
        view: RwLock::new(live.into_iter().map(|b| (b.home_address, b)).collect()),
        events,
        metrics: setup.metrics.clone(),
    });
    if let Ok(view) = shared.view.read() {
        setup.metrics.bindings.set(view.len() as i64);
    }

    let (writer_tx, writer_rx) = mpsc::channel(65536);
    let writer_task = tokio::spawn(writer(
        setup.store.clone(),
        setup.flush_mode,
        writer_rx,
        shared.clone(),
    ));
    let (core_tx, core_rx) = mpsc::channel(65536);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let core = Core {
        engine,
        authorizations: setup.authorizations,
        dataplane: setup.dataplane,
        writer: writer_tx,
        metrics: setup.metrics,
        last_path: HashMap::new(),
    };
    let core_task = tokio::spawn(core.run(core_rx, shutdown_rx));

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
