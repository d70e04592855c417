//! The core task: hands each packet to the engine (`nemo::ha::HomeAgent`),
//! sets up the forwarding the engine asks for and reports the result back,
//! and queues the answer for the writer. No protocol decision is made here.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use nemo::ha::{
    Bicasts, Binding, CareOf, Change, ChangeKind, Copying, Decision, Forwarding, ForwardingFailure,
    Handled, HomeAgent,
};
use nemo_dataplane::{BindingRoutes, DataPlaneError, HomeAgentDataPlane, Peer};
use tokio::sync::{mpsc, oneshot, watch};

use super::Pending;
use crate::messages::{CoreEvent, Deleted, Replicated, ReplyPath, Role};
use crate::metrics::Metrics;

/// A binding's routes in the data plane: the tunnel goes to its care-of
/// address, or, through a NAT, to the mapping its Binding Update came from
/// (RFC 5555 §4.2).
pub(super) fn routes(binding: &Binding) -> BindingRoutes {
    BindingRoutes {
        home_address: binding.home_address,
        care_of: peer(binding.care_of),
        prefixes: binding.prefixes.to_vec(),
    }
}

/// The data plane's peer for a care-of address.
pub(super) fn peer(care_of: CareOf) -> Peer {
    match care_of {
        CareOf::Ipv6(address) => Peer::Ipv6(address),
        CareOf::Ipv4(address) => Peer::Ipv4(address),
        CareOf::Udp { outer, .. } => Peer::Udp(outer),
    }
}

/// The core: owns the engine.
pub struct Core<D> {
    pub(super) engine: HomeAgent<ReplyPath>,
    pub(super) dataplane: Arc<D>,
    pub(super) writer: mpsc::Sender<Pending>,
    pub(super) metrics: Arc<Metrics>,
    /// Active or standby (a home agent alone is always active).
    pub(super) role: watch::Receiver<Role>,
    /// While the start's reconcile runs beside the core (`None` after).
    /// A lock only because `forward` takes `&self`; the core alone uses it.
    pub(super) catching_up: std::sync::Mutex<Option<CatchingUp>>,
    /// Moved bindings whose old care-of address still gets copies (the
    /// active only).
    pub(super) bicasts: Bicasts,
}

/// What the core changed in the data plane while the start's reconcile
/// ran from the list it was given before: settled when it is done.
#[derive(Debug)]
pub(super) struct CatchingUp {
    /// Each binding changed meanwhile, with its routes before its first
    /// change (what the reconcile may have installed again).
    touched: HashMap<Ipv6Addr, Option<BindingRoutes>>,
    /// The active's whole cache replaced this one meanwhile.
    resynced: bool,
    since: Instant,
}

impl CatchingUp {
    pub(super) fn new() -> CatchingUp {
        CatchingUp {
            touched: HashMap::new(),
            resynced: false,
            since: Instant::now(),
        }
    }
}

impl<D> std::fmt::Debug for Core<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("bindings", &self.engine.cache().len())
            .finish_non_exhaustive()
    }
}

impl<D: HomeAgentDataPlane> Core<D> {
    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<CoreEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            // A standby runs no timers: the active's expiries and refresh
            // requests reach it through replication.
            let active = *self.role.borrow() == Role::Active;
            self.metrics.active.set(i64::from(active));
            let deadline = if active {
                self.engine
                    .poll_timeout()
                    .into_iter()
                    .chain(self.bicasts.poll_timeout())
                    .min()
            } else {
                None
            };
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
                    Some(CoreEvent::Replicated(changes)) => self.replicated(&changes).await,
                    Some(CoreEvent::Drain(respond)) => self.queue(Pending::Drain(respond)).await,
                    Some(CoreEvent::Confirm(respond)) => self.queue(Pending::Confirm(respond)).await,
                    Some(CoreEvent::Resync(bindings)) => self.resync(bindings).await,
                    Some(CoreEvent::Reconciled(reconciled)) => self.caught_up(reconciled).await,
                    Some(CoreEvent::Merge { offered, in_step_until, respond }) => {
                        self.merge(offered, in_step_until, respond).await;
                    }
                    None => break,
                },
                changed = self.role.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let role = *self.role.borrow_and_update();
                    tracing::info!(?role, bindings = self.engine.cache().len(), "role changed");
                    if role != Role::Active {
                        // The other member forwards now; it copies nothing.
                        let ended = self.bicasts.close_all();
                        self.copy(ended).await;
                    }
                }
                () = sleep => self.timers().await,
                _ = shutdown.changed() => break,
            }
        }
        tracing::info!("core stopped");
    }

    async fn packet(&mut self, bytes: &[u8], path: ReplyPath, received_at: Instant) {
        if *self.role.borrow() != Role::Active {
            // The other member answers (RFC 5798: only the master owns the
            // home-agent address; this is a packet that raced the move).
            Metrics::count(&self.metrics.dropped, "standby");
            return;
        }
        let now = SystemTime::now();
        let arrival = path.arrival();
        let handled = match self.engine.handle(bytes, arrival, path, now) {
            Decision::Forward(forward) => {
                let forwarding = match self.forward(forward.change()).await {
                    Ok(()) => Forwarding::Installed,
                    Err(error) => {
                        self.metrics.forwarding_failures.inc();
                        let failure = match error {
                            DataPlaneError::Refused { .. } => ForwardingFailure::PrefixRefused,
                            DataPlaneError::Exhausted { .. } => ForwardingFailure::NoResources,
                            DataPlaneError::Unavailable { .. } => ForwardingFailure::Unavailable,
                        };
                        tracing::error!(
                            %error,
                            status = failure.status().0,
                            "forwarding failed; refusing the registration"
                        );
                        Forwarding::Failed(failure)
                    }
                };
                self.engine.forwarded(forward, forwarding, now)
            }
            Decision::Handled(handled) => handled,
        };
        match handled {
            Handled::Malformed(malformed) => {
                Metrics::count(&self.metrics.malformed, malformed.reason());
                tracing::debug!(?malformed, "malformed packet");
            }
            Handled::Dropped { reason, source } => {
                Metrics::count(&self.metrics.dropped, reason.name());
                tracing::debug!(reason = reason.name(), %source, "dropped");
            }
            Handled::BindingError { transmit, status } => {
                self.metrics.binding_errors.inc();
                tracing::debug!(%status, "binding error");
                self.queue(Pending::Send(transmit)).await;
            }
            Handled::Acknowledge(acknowledgement) => {
                let kind = acknowledgement.change.as_ref().map(Change::kind);
                if let Some(change) = &acknowledgement.change {
                    self.copies(change).await;
                }
                // Refreshes and new bindings are routine: at tens of
                // thousands a second (a fill after a restart of every
                // router, a region coming up), an info line each floods the
                // log and costs the daemon an eighth of its time (formatting
                // and a write each, measured in docs/BENCHMARKS.md); the
                // watch API and the metrics count them. Moves, removals and
                // rejections stay at info: those are what an operator reads.
                if matches!(kind, Some(ChangeKind::Refreshed | ChangeKind::Created)) {
                    tracing::debug!(
                        home_address = %acknowledgement.home_address,
                        care_of = %acknowledgement.care_of,
                        status = %acknowledgement.status,
                        ?kind,
                        "binding registered"
                    );
                } else {
                    tracing::info!(
                        home_address = %acknowledgement.home_address,
                        care_of = %acknowledgement.care_of,
                        status = %acknowledgement.status,
                        "binding update"
                    );
                }
                let reason = match kind {
                    Some(ChangeKind::Removed) => "deregistration",
                    _ => "registration",
                };
                self.queue(Pending::Acknowledge {
                    change: acknowledgement.change.map(|change| (change, reason)),
                    reply: acknowledgement.transmit,
                    status: acknowledgement.status,
                    received_at,
                })
                .await;
            }
        }
    }

    async fn forward(&self, change: &Change) -> Result<(), nemo_dataplane::DataPlaneError> {
        self.note_while_catching_up(change);
        match change {
            Change::Upsert { binding, previous } => {
                let wanted = routes(binding);
                let previous = previous.as_deref().map(routes);
                // A refresh from the same care-of address with the same
                // prefixes changes no route: the kernel is left alone (two
                // netlink route replacements per prefix otherwise, which
                // at 100,000 bindings held refreshes to 11k/s).
                if previous.as_ref() == Some(&wanted) {
                    return Ok(());
                }
                self.dataplane.set(&wanted, previous.as_ref()).await
            }
            Change::Remove { binding } => self.dataplane.clear(&routes(binding)).await,
        }
    }

    /// Notes a binding's routes before its first change while the start's
    /// reconcile runs.
    fn note_while_catching_up(&self, change: &Change) {
        if let Ok(mut catching_up) = self.catching_up.lock() {
            if let Some(catching_up) = catching_up.as_mut() {
                let before = match change {
                    Change::Upsert { previous, .. } => previous.as_deref().map(routes),
                    Change::Remove { binding } => Some(routes(binding)),
                };
                catching_up
                    .touched
                    .entry(change.binding().home_address)
                    .or_insert(before);
            }
        }
    }

    /// The start's reconcile is done: the bindings changed meanwhile are
    /// made what they are now, the decapsulation state counted anew from
    /// the whole cache. After a failed reconcile, or a standby's
    /// resynchronisation meanwhile, a whole reconcile from the cache as it
    /// is now instead.
    async fn caught_up(
        &mut self,
        reconciled: Result<nemo_dataplane::ReconcileReport, nemo_dataplane::DataPlaneError>,
    ) {
        let Some(catching_up) = self.catching_up.lock().ok().and_then(|mut c| c.take()) else {
            return;
        };
        let cache = self.engine.cache();
        let settled = match (reconciled, catching_up.resynced) {
            (Ok(report), false) => {
                let mut now = Vec::new();
                let mut gone = Vec::new();
                for (home_address, before) in &catching_up.touched {
                    now.extend(cache.binding(*home_address).map(routes));
                    gone.extend(before.clone());
                }
                let mut users: HashMap<Ipv6Addr, usize> = HashMap::new();
                for care_of in cache.bindings().filter_map(|b| b.care_of.ipv6()) {
                    *users.entry(care_of).or_default() += 1;
                }
                self.dataplane
                    .settle(&now, &gone, users)
                    .await
                    .map(|()| report)
            }
            (reconciled, _) => {
                if let Err(error) = reconciled {
                    tracing::error!(%error, "reconciling the data plane failed; once more, from the cache as it is now");
                }
                let all: Vec<BindingRoutes> = cache.bindings().map(routes).collect();
                self.dataplane.reconcile(&all).await
            }
        };
        match settled {
            Ok(report) => tracing::info!(
                installed = report.installed,
                kept = report.kept,
                removed = report.removed,
                changed_meanwhile = catching_up.touched.len(),
                took_ms = catching_up.since.elapsed().as_millis() as u64,
                "data plane caught up with the binding cache"
            ),
            Err(error) => {
                self.metrics.forwarding_failures.inc();
                tracing::error!(%error, "the data plane did not catch up with the binding cache; each new registration still sets its own routes");
            }
        }
    }

    /// Opens or closes the make-before-break window a change in
    /// forwarding means (`nemo::ha::bicast`).
    async fn copies(&mut self, change: &Change) {
        let actions = self.bicasts.changed(change, SystemTime::now());
        self.copy(actions).await;
    }

    /// Has the data plane start or stop copies.
    async fn copy(&mut self, actions: Vec<Copying>) {
        for action in actions {
            match action {
                Copying::Start(left) => self.start_copies(&left, &routes(&left)).await,
                Copying::End(left) => {
                    if let Err(error) = self.dataplane.end_bicast(&routes(&left)).await {
                        self.metrics.forwarding_failures.inc();
                        tracing::error!(%error, home_address = %left.home_address, "could not stop copies");
                    }
                }
            }
        }
        self.metrics.bicasts.set(self.bicasts.len() as i64);
    }

    /// Has the data plane copy `left`'s packets to the address it left.
    async fn start_copies(&mut self, left: &Binding, routes: &BindingRoutes) {
        match self.dataplane.bicast(routes).await {
            Ok(true) => {
                self.metrics.bicasts_started.inc();
                tracing::info!(
                    home_address = %left.home_address,
                    left = %left.care_of,
                    window_ms = self.bicasts.window().as_millis() as u64,
                    "binding moved: the care-of address it left gets copies while it sends, and for the window after"
                );
            }
            Ok(false) => {
                // Said once: a zero window opens no other.
                tracing::warn!(
                    dataplane = self.dataplane.name(),
                    "this data plane cannot copy packets: a moved binding's old \
                             care-of address gets nothing ([dataplane] bicast_ms needs the \
                             bpf backend)"
                );
                self.bicasts = Bicasts::new(std::time::Duration::ZERO);
            }
            Err(error) => {
                self.metrics.forwarding_failures.inc();
                tracing::warn!(
                    %error,
                    home_address = %left.home_address,
                    "could not copy packets to the care-of address the binding left"
                );
            }
        }
    }

    /// Makes forwarding follow a change that cannot be refused (an expiry,
    /// an operator's delete, a change the active replicated): a failure is
    /// logged and counted, reconciliation at the next start cleans up.
    async fn follow(&self, change: &Change) {
        if let Err(error) = self.forward(change).await {
            self.metrics.forwarding_failures.inc();
            tracing::error!(%error, "forwarding did not follow the change");
        }
    }

    async fn timers(&mut self) {
        let timeouts = self.engine.handle_timeout(SystemTime::now());
        for transmit in timeouts.refresh_requests {
            self.metrics.refresh_requests.inc();
            self.queue(Pending::Send(transmit)).await;
        }
        // A window's deadline: copies go on while the address the binding
        // left still sends (its VM still runs there).
        let now = SystemTime::now();
        let mut ended = Vec::new();
        for left in self.bicasts.due(now) {
            let heard_ago = self.dataplane.bicast_heard(&routes(&left)).await;
            ended.extend(self.bicasts.settle(left.home_address, heard_ago, now));
        }
        self.copy(ended).await;
        for change in timeouts.expired {
            self.metrics.expired.inc();
            tracing::info!(home_address = %change.binding().home_address, "binding expired");
            self.follow(&change).await;
            self.copies(&change).await;
            self.queue(Pending::Expire(change)).await;
        }
    }

    /// Follows a batch the active replicated (on this standby's disk
    /// already): the engine and the kernel's routes keep in step, so a
    /// takeover has nothing to install. A removal names only its home
    /// address, and removes the binding held for it, if any.
    async fn replicated(&mut self, changes: &[Replicated]) {
        for change in changes {
            let change = match change {
                Replicated::Upsert(binding) => Change::Upsert {
                    binding: binding.clone(),
                    previous: self.engine.cache().shared_binding(binding.home_address),
                },
                Replicated::Removed(home_address) => {
                    match self.engine.cache().shared_binding(*home_address) {
                        Some(held) => Change::Remove { binding: held },
                        None => continue,
                    }
                }
            };
            self.engine.apply(&change);
            self.follow(&change).await;
        }
    }

    /// Takes the active's whole cache (on this standby's disk already) and
    /// makes the kernel's routes match it.
    async fn resync(&mut self, bindings: Vec<Arc<Binding>>) {
        if let Ok(mut catching_up) = self.catching_up.lock() {
            if let Some(catching_up) = catching_up.as_mut() {
                catching_up.resynced = true;
            }
        }
        let expired = self.engine.replace(bindings, SystemTime::now());
        let live: Vec<BindingRoutes> = self.engine.cache().bindings().map(routes).collect();
        match self.dataplane.reconcile(&live).await {
            Ok(report) => tracing::info!(
                bindings = live.len(),
                expired = expired.len(),
                installed = report.installed,
                kept = report.kept,
                removed = report.removed,
                "standby in step with the active"
            ),
            Err(error) => {
                self.metrics.forwarding_failures.inc();
                tracing::error!(%error, "standby: reconciling forwarding failed");
            }
        }
    }

    /// Takes what the returning member offers where it is newer, forwards
    /// it and makes it durable; answers once it is. A change whose
    /// forwarding fails is undone (the member keeps its own binding).
    async fn merge(
        &mut self,
        offered: Vec<Binding>,
        in_step_until: SystemTime,
        respond: oneshot::Sender<()>,
    ) {
        let count = offered.len();
        let merged = self.engine.merge(offered, in_step_until, SystemTime::now());
        let mut failed = 0;
        for change in merged.changes {
            match self.forward(&change).await {
                Ok(()) => {
                    self.copies(&change).await;
                    self.queue(Pending::Merge(change)).await;
                }
                Err(error) => {
                    self.engine.revert(&change);
                    self.metrics.forwarding_failures.inc();
                    failed += 1;
                    tracing::error!(%error, home_address = %change.binding().home_address, "merge: forwarding failed; keeping this member's binding");
                }
            }
        }
        for (verdict, n) in &merged.verdicts {
            self.metrics
                .merge_offered
                .get_or_create(&crate::metrics::ReasonLabel {
                    reason: verdict.name().to_owned(),
                })
                .inc_by(*n as u64);
        }
        let taken = merged
            .verdicts
            .get(&nemo::ha::Verdict::Taken)
            .copied()
            .unwrap_or(0);
        let verdicts: Vec<String> = merged
            .verdicts
            .iter()
            .map(|(verdict, n)| format!("{}={n}", verdict.name()))
            .collect();
        if taken > 0 {
            // Both members were active: a partition, said loudly.
            tracing::warn!(offered = count, taken = taken - failed, verdicts = %verdicts.join(","), "merge: took the bindings the returning member acknowledged alone");
        } else {
            tracing::info!(offered = count, verdicts = %verdicts.join(","), "merge: nothing newer offered");
        }
        self.queue(Pending::Drain(respond)).await;
    }

    /// Applies an authorization change. A revoked home address keeps its
    /// binding until it expires or deregisters; an operator can delete it
    /// at once.
    fn authorize(
        &mut self,
        home_address: Ipv6Addr,
        authorization: Option<nemo::ha::Authorization>,
    ) {
        match authorization {
            // A reload names every static entry; most did not change.
            Some(entry) if self.engine.authorization(home_address) == Some(&entry) => {}
            Some(entry) => match self.engine.authorize(entry) {
                Ok(()) => tracing::info!(%home_address, "authorization updated"),
                Err(error) => tracing::error!(%home_address, %error, "authorization refused"),
            },
            None => {
                if self.engine.revoke(home_address).is_some() {
                    tracing::info!(%home_address, "authorization revoked");
                }
            }
        }
    }

    async fn delete(&mut self, home_address: Ipv6Addr, respond: oneshot::Sender<Deleted>) {
        if *self.role.borrow() != Role::Active {
            let _ = respond.send(Deleted::NotActive);
            return;
        }
        let Some(change) = self.engine.remove(home_address) else {
            let _ = respond.send(Deleted::NoBinding);
            return;
        };
        tracing::info!(%home_address, "binding deleted by operator");
        self.follow(&change).await;
        self.copies(&change).await;
        self.queue(Pending::Remove { change, respond }).await;
    }

    async fn queue(&self, pending: Pending) {
        if self.writer.send(pending).await.is_err() {
            tracing::error!("writer stopped; answer not sent");
        }
    }
}
