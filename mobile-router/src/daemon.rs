//! The running mobile-router daemon: one registrar per tenant instance, the
//! care-of address from netlink, the data plane following the registrations
//! (attached before a tenant registers). The transport to the home agents
//! is `crate::transport`.

use std::future::Future;
use std::net::Ipv6Addr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use nemo::registration::{Event, Registrar, State};
use nemo::wire::{parse_packet, MhType, MobilityHeader, SequenceNumber};
use nemo_dataplane::{MobileRouterDataPlane, TenantRoutes};
use nemo_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use crate::config::Instance;
use crate::status::{InstanceLabel, Metrics, RejectionLabel, Trigger};
use crate::transport::Transport;

/// How long a shutdown waits for deregistrations to be acknowledged.
const DEREGISTRATION_GRACE: Duration = Duration::from_secs(3);
/// How often a tenant whose data path cannot be attached yet (its port does
/// not exist: the orchestrator placed it before the VM's port was made) is
/// tried again.
const ATTACH_RETRY: Duration = Duration::from_millis(20);

/// One tenant instance.
#[derive(Debug)]
struct Tenant {
    name: String,
    registrar: Registrar,
    routes: TenantRoutes,
    /// True once its data path is in the kernel. A tenant registers only
    /// then: a binding whose decapsulation cannot work would have the home
    /// agent tunnel its traffic into nothing.
    attached: bool,
    /// Since when attaching has failed (logged once, then retried).
    attach_failing_since: Option<Instant>,
    reported_unauthenticated: Option<nemo::wire::BaStatus>,
    /// Retransmissions already counted in the metrics.
    counted_retransmissions: u64,
    /// Set when the tenant is leaving: removed once deregistered, or at
    /// this deadline.
    leaving: Option<Instant>,
}

/// A change to the instances, from the controller's placement stream.
#[derive(Debug)]
pub enum InstanceCommand {
    /// Host this instance (or update it: a new key, other prefixes).
    Upsert(Instance),
    /// Stop hosting it; deregister unless it moved to another hypervisor
    /// (whose registration takes over).
    Remove {
        /// The instance's name.
        name: String,
        /// Send a deregistration first.
        deregister: bool,
    },
}

impl Tenant {
    fn new(instance: Instance) -> Tenant {
        Tenant {
            routes: TenantRoutes {
                interface: instance.tenant_interface,
                prefixes: instance.registration.prefixes.clone(),
                home_agent: instance.registration.home_agent,
                table: instance.table,
            },
            name: instance.name,
            // After the home agent's last accepted number when the
            // controller knows it (the first Binding Update after a
            // migration is then accepted at once); otherwise a random start
            // keeps a restarted router out of the window of its last run,
            // and a 135 corrects it anyway.
            registrar: Registrar::new(
                instance.registration,
                instance
                    .last_sequence
                    .unwrap_or_else(|| SequenceNumber(random_u16())),
            ),
            attached: false,
            attach_failing_since: None,
            reported_unauthenticated: None,
            counted_retransmissions: 0,
            leaving: None,
        }
    }

    fn status(&self, now: Instant) -> pb::InstanceStatus {
        let registrar = &self.registrar;
        let (state, left) = match registrar.state() {
            State::Detached => ("detached", 0),
            State::Registering => ("registering", 0),
            State::Registered { expires } => (
                "registered",
                u32::try_from(expires.saturating_duration_since(now).as_secs()).unwrap_or(u32::MAX),
            ),
            State::Rejected { .. } => ("rejected", 0),
            State::Deregistering => ("deregistering", 0),
            State::Deregistered => ("deregistered", 0),
        };
        pb::InstanceStatus {
            name: self.name.clone(),
            home_address: registrar.config().home_address.to_string(),
            home_agent: registrar.config().home_agent.to_string(),
            prefixes: registrar
                .config()
                .prefixes
                .iter()
                .map(ToString::to_string)
                .collect(),
            state: state.to_owned(),
            care_of_address: registrar
                .care_of()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            last_status: registrar.last_status.map(|s| u32::from(s.0)),
            last_unauthenticated_status: registrar
                .last_unauthenticated_status
                .map(|s| u32::from(s.0)),
            lifetime_left_seconds: left,
            registrations: registrar.registrations,
            retransmissions: registrar.retransmissions,
        }
    }
}

/// The daemon.
#[derive(Debug)]
pub struct Daemon<D> {
    tenants: Vec<Tenant>,
    care_of: Option<Ipv6Addr>,
    transport: Transport,
    dataplane: Arc<D>,
    metrics: Arc<Metrics>,
    snapshot: Arc<RwLock<Vec<pb::InstanceStatus>>>,
}

impl<D: MobileRouterDataPlane> Daemon<D> {
    /// A daemon for these instances, talking over `transport`.
    pub fn new(
        instances: Vec<Instance>,
        transport: Transport,
        dataplane: Arc<D>,
        metrics: Arc<Metrics>,
    ) -> Daemon<D> {
        let tenants = instances.into_iter().map(Tenant::new).collect();
        Daemon {
            tenants,
            care_of: None,
            transport,
            dataplane,
            metrics,
            snapshot: Arc::new(RwLock::new(Vec::new())),
        }
    }

    /// Where the transport listens, for the ready line.
    pub fn local_addr(&self) -> String {
        self.transport.local_addr()
    }

    /// What the status API reads; updated as the daemon runs.
    pub fn snapshot(&self) -> Arc<RwLock<Vec<pb::InstanceStatus>>> {
        self.snapshot.clone()
    }

    fn publish(&mut self) {
        let now = Instant::now();
        for tenant in &mut self.tenants {
            let total = tenant.registrar.retransmissions;
            if total > tenant.counted_retransmissions {
                self.metrics
                    .retransmissions
                    .get_or_create(&InstanceLabel {
                        instance: tenant.name.clone(),
                    })
                    .inc_by(total - tenant.counted_retransmissions);
                tenant.counted_retransmissions = total;
            }
        }
        let statuses = self.tenants.iter().map(|t| t.status(now)).collect();
        if let Ok(mut snapshot) = self.snapshot.write() {
            *snapshot = statuses;
        }
    }

    fn trigger(&mut self, name: Option<String>) -> Option<u32> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut told = 0;
        for tenant in &mut self.tenants {
            if name.as_ref().is_none_or(|n| *n == tenant.name) {
                tracing::info!(instance = %tenant.name, "registering again on request");
                tenant.registrar.reregister(now, wall);
                told += 1;
            }
        }
        (name.is_none() || told > 0).then_some(told)
    }

    /// Runs until `shutdown` resolves, then deregisters every instance
    /// (waiting a little for the acknowledgements) and detaches it.
    pub async fn run(
        mut self,
        mut care_of: watch::Receiver<Option<Ipv6Addr>>,
        mut triggers: mpsc::Receiver<Trigger>,
        mut commands: mpsc::Receiver<InstanceCommand>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let initial = *care_of.borrow_and_update();
        self.care_of_changed(initial).await;
        self.attach_waiting().await;
        tokio::pin!(shutdown);
        let mut buffer = vec![0u8; 4096];
        let mut deadline: Option<Instant> = None;
        loop {
            self.flush().await;
            self.reap().await;
            self.publish();
            if let Some(end) = deadline {
                let done = self
                    .tenants
                    .iter()
                    .all(|t| matches!(t.registrar.state(), State::Deregistered));
                if done || Instant::now() >= end {
                    break;
                }
            }
            let attach_retry = self
                .tenants
                .iter()
                .any(|t| !t.attached && t.leaving.is_none())
                .then(|| Instant::now() + ATTACH_RETRY);
            let next_timer = self
                .tenants
                .iter()
                .filter_map(|t| t.registrar.poll_timeout())
                .chain(deadline)
                .chain(attach_retry)
                .min();
            let sleep = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = self.transport.receive(&mut buffer) => match received {
                    Ok(packet) => self.packet(&packet),
                    Err(error) => tracing::debug!(%error, "receive error"),
                },
                changed = care_of.changed(), if deadline.is_none() => {
                    if changed.is_err() {
                        anyhow::bail!("care-of address watcher stopped");
                    }
                    let address = *care_of.borrow_and_update();
                    self.care_of_changed(address).await;
                }
                Some((name, respond)) = triggers.recv() => {
                    let _ = respond.send(self.trigger(name));
                }
                Some(command) = commands.recv(), if deadline.is_none() => {
                    self.command(command).await;
                }
                () = sleep => {
                    let (now, wall) = (Instant::now(), SystemTime::now());
                    for tenant in &mut self.tenants {
                        tenant.registrar.handle_timeout(now, wall);
                    }
                    self.attach_waiting().await;
                }
                () = &mut shutdown, if deadline.is_none() => {
                    tracing::info!("stopping: deregistering every instance");
                    let (now, wall) = (Instant::now(), SystemTime::now());
                    for tenant in &mut self.tenants {
                        tenant.registrar.deregister(now, wall);
                    }
                    deadline = Some(now + DEREGISTRATION_GRACE);
                }
            }
        }
        for tenant in &mut self.tenants {
            if tenant.attached {
                if let Err(error) = self.dataplane.detach(&tenant.routes).await {
                    tracing::warn!(instance = %tenant.name, %error, "detaching failed");
                }
            }
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Applies a change of instances.
    async fn command(&mut self, command: InstanceCommand) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        match command {
            InstanceCommand::Upsert(instance) => {
                let position = self.tenants.iter().position(|t| t.name == instance.name);
                let Some(position) = position else {
                    tracing::info!(instance = %instance.name, "instance added");
                    let mut tenant = Tenant::new(instance);
                    attach_then_register(&*self.dataplane, &mut tenant, None, self.care_of).await;
                    self.tenants.push(tenant);
                    return;
                };
                let mut tenant = Tenant::new(instance);
                let old = &self.tenants[position];
                if old.registrar.config() == tenant.registrar.config()
                    && old.routes == tenant.routes
                    && old.leaving.is_none()
                {
                    return;
                }
                tracing::info!(instance = %tenant.name, "instance changed; registering again");
                // Keep the sequence and the data plane; register anew.
                tenant.registrar =
                    Registrar::new(tenant.registrar.config().clone(), old.registrar.sequence());
                let previous = old.attached.then(|| old.routes.clone());
                attach_then_register(
                    &*self.dataplane,
                    &mut tenant,
                    previous.as_ref(),
                    self.care_of,
                )
                .await;
                self.tenants[position] = tenant;
            }
            InstanceCommand::Remove { name, deregister } => {
                let Some(tenant) = self.tenants.iter_mut().find(|t| t.name == name) else {
                    return;
                };
                if !tenant.attached {
                    // Never attached, so never registered from here.
                    tracing::info!(instance = %name, "tenant left before its port appeared");
                    tenant.leaving = Some(now);
                } else if deregister {
                    tracing::info!(instance = %name, "tenant left: deregistering");
                    tenant.registrar.deregister(now, wall);
                    tenant.leaving = Some(now + DEREGISTRATION_GRACE);
                } else {
                    // Its new hypervisor registers it: a deregistration
                    // from here could race with that and remove the binding.
                    tracing::info!(instance = %name, "tenant moved to another hypervisor");
                    tenant.leaving = Some(now);
                }
            }
        }
    }

    /// Removes instances that finished leaving, and their data plane.
    async fn reap(&mut self) {
        let now = Instant::now();
        let mut index = 0;
        while index < self.tenants.len() {
            let tenant = &self.tenants[index];
            let done = tenant.leaving.is_some_and(|deadline| {
                now >= deadline || matches!(tenant.registrar.state(), State::Deregistered)
            });
            if !done {
                index += 1;
                continue;
            }
            let tenant = self.tenants.remove(index);
            if tenant.attached {
                if let Err(error) = self.dataplane.detach(&tenant.routes).await {
                    tracing::warn!(instance = %tenant.name, %error, "detaching failed");
                }
            }
            tracing::info!(instance = %tenant.name, "instance removed");
        }
    }

    async fn care_of_changed(&mut self, address: Option<Ipv6Addr>) {
        self.care_of = address;
        self.metrics.care_of_changes.inc();
        self.transport.care_of_changed(address).await;
        match address {
            Some(address) => {
                if let Err(error) = self.dataplane.set_care_of(address).await {
                    tracing::error!(%error, "data plane refused the new care-of address");
                }
                tracing::info!(care_of = %address, "registering at the new care-of address");
            }
            None => tracing::warn!("no usable care-of address: registrations paused"),
        }
        let (now, wall) = (Instant::now(), SystemTime::now());
        // A tenant still waiting for its data path registers once attached.
        for tenant in self.tenants.iter_mut().filter(|t| t.attached) {
            tenant.registrar.set_care_of(address, now, wall);
        }
    }

    /// Tries again to attach every tenant waiting for its port.
    async fn attach_waiting(&mut self) {
        for tenant in &mut self.tenants {
            if !tenant.attached && tenant.leaving.is_none() {
                attach_then_register(&*self.dataplane, tenant, None, self.care_of).await;
            }
        }
    }

    /// A packet from a home agent: an IPv6 packet carrying a Binding
    /// Acknowledgement or Binding Refresh Request for one of the instances.
    fn packet(&mut self, packet: &[u8]) {
        let parsed = match parse_packet(packet) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::debug!(%error, "malformed packet from the home agent side");
                return;
            }
        };
        let home = parsed
            .repr
            .type2_routing
            .map(|rh| rh.home_address)
            .unwrap_or(parsed.repr.destination);
        let Some(tenant) = self
            .tenants
            .iter_mut()
            .find(|t| t.registrar.config().home_address == home)
        else {
            tracing::debug!(%home, "packet for no instance of ours");
            return;
        };
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mh_type = MobilityHeader::decode(parsed.mh).map(|h| h.message.mh_type());
        match mh_type {
            Ok(MhType::BINDING_REFRESH_REQUEST) => {
                if !parsed.checksum_ok()
                    || !tenant
                        .registrar
                        .handle_refresh_request(parsed.mh, now, wall)
                {
                    tracing::warn!(instance = %tenant.name, "ignored an unauthenticated Binding Refresh Request");
                }
            }
            Ok(MhType::BINDING_ACK) => {
                if let Err(error) = tenant.registrar.handle_ack(packet, now, wall) {
                    tracing::warn!(instance = %tenant.name, %error, "ignored a Binding Acknowledgement");
                }
                let claimed = tenant.registrar.last_unauthenticated_status;
                if claimed.is_some() && claimed != tenant.reported_unauthenticated {
                    tenant.reported_unauthenticated = claimed;
                    if let Some(status) = claimed {
                        tracing::error!(
                            instance = %tenant.name,
                            %status,
                            "the home agent's answer does not authenticate with our key: wrong key or SPI?"
                        );
                    }
                }
            }
            Ok(other) => tracing::debug!(instance = %tenant.name, %other, "ignored"),
            Err(error) => tracing::debug!(%error, "malformed Mobility Header"),
        }
    }

    /// Sends what the registrars have queued and acts on their events.
    async fn flush(&mut self) {
        for tenant in &mut self.tenants {
            while let Some(packet) = tenant.registrar.poll_transmit() {
                if let Err(error) = self.transport.send(&packet).await {
                    tracing::warn!(instance = %tenant.name, %error, "sending a Binding Update failed");
                }
            }
            while let Some(event) = tenant.registrar.poll_event() {
                match event {
                    Event::Registered {
                        care_of,
                        lifetime,
                        took,
                    } => {
                        tracing::info!(
                            instance = %tenant.name,
                            %care_of,
                            lifetime_secs = lifetime.as_secs(),
                            took_ms = took.as_secs_f64() * 1000.0,
                            "registered"
                        );
                        self.metrics
                            .registrations
                            .get_or_create(&InstanceLabel {
                                instance: tenant.name.clone(),
                            })
                            .inc();
                        self.metrics
                            .registration_seconds
                            .observe(took.as_secs_f64());
                    }
                    Event::Rejected { status } => {
                        tracing::error!(instance = %tenant.name, %status, "registration refused");
                        self.metrics
                            .rejections
                            .get_or_create(&RejectionLabel {
                                instance: tenant.name.clone(),
                                status: status.0.to_string(),
                            })
                            .inc();
                    }
                    Event::Deregistered => {
                        tracing::info!(instance = %tenant.name, "deregistered")
                    }
                }
            }
        }
    }
}

/// Attaches a tenant's data path (replacing `previous`), then lets its
/// registrar register at `care_of`. When the data path cannot be attached
/// (typically: its port does not exist yet), the registrar is not started:
/// the run loop tries again every [`ATTACH_RETRY`], so the tenant registers
/// as soon as both its placement and its port exist, in whichever order the
/// orchestrator made them.
async fn attach_then_register<D: MobileRouterDataPlane>(
    dataplane: &D,
    tenant: &mut Tenant,
    previous: Option<&TenantRoutes>,
    care_of: Option<Ipv6Addr>,
) {
    let now = Instant::now();
    match dataplane.attach(&tenant.routes, previous).await {
        Ok(()) => {
            tenant.attached = true;
            if let Some(since) = tenant.attach_failing_since.take() {
                tracing::info!(
                    instance = %tenant.name,
                    interface = %tenant.routes.interface,
                    waited_ms = now.saturating_duration_since(since).as_secs_f64() * 1000.0,
                    "tenant attached; registering"
                );
            }
            tenant
                .registrar
                .set_care_of(care_of, now, SystemTime::now());
        }
        Err(error) => {
            tenant.attached = false;
            if tenant.attach_failing_since.is_none() {
                tracing::warn!(
                    instance = %tenant.name,
                    interface = %tenant.routes.interface,
                    %error,
                    "cannot attach the tenant (does its port exist yet?): not registering until it can; retrying"
                );
                tenant.attach_failing_since = Some(now);
            }
        }
    }
}

/// A random 16-bit number from the kernel (no RNG crate needed for this).
fn random_u16() -> u16 {
    let mut bytes = [0u8; 2];
    if let Ok(mut file) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = file.read_exact(&mut bytes);
    }
    u16::from_ne_bytes(bytes)
}
