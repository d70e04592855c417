//! The driver of the mobile-router daemon: the tenant instances
//! (`nemo::mr::MobileRouter` owns their registrars and picks the tenant a
//! received packet belongs to), the care-of address from netlink, the data
//! plane following the registrations (attached before a tenant registers).
//! The transport to the home agents is `crate::transport`.

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use nemo::mr::{Delivery, MobileRouter, Receipt};
use nemo::registration::{Encapsulation, Event, InstanceConfig, Registrar, State, UdpOverIpv4};
use nemo::wire::SequenceNumber;
use nemo_dataplane::{MobileRouterDataPlane, TenantRoutes, Traffic};
use nemo_proto::v1 as pb;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, watch};

use crate::arrivals::Sighting;
use crate::config::Instance;
use crate::status::{Metrics, RejectionLabel, TenantLabel, Trigger};
use crate::transport::Transport;
use crate::uplink::Uplink;

/// How long a shutdown waits for deregistrations to be acknowledged.
const DEREGISTRATION_GRACE: Duration = Duration::from_secs(3);
/// How often the ports of lingering and held tenants are looked at for
/// their carrier.
const PORT_CHECK: Duration = Duration::from_millis(50);
/// How often a tenant whose data path cannot be attached yet (its port does
/// not exist: the orchestrator placed it before the VM's port was made) is
/// tried again.
const ATTACH_RETRY: Duration = Duration::from_millis(20);

/// What the daemon keeps beside each tenant's registrar.
#[derive(Debug)]
struct Host {
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
    /// Set when the tenant is leaving.
    leaving: Option<Leaving>,
    /// How its traffic should pass once attached: `Hold` for a placement
    /// made as its VM's live migration starts.
    wants: Traffic,
    /// Held now, until its VM announces itself.
    held: Option<Held>,
    /// How its tunnel is encapsulated, as its last acknowledgement at this
    /// care-of address said (`None` until then): from an IPv4 care-of
    /// address, UDP or IPv6 in IPv4 (RFC 5555 §4.2).
    encapsulation: Option<Encapsulation>,
}

/// A tenant held until its VM announces itself on its port (issue 29):
/// what arrives for it is dropped rather than queued in the paused VM's
/// port behind older packets, which the VM would answer first.
#[derive(Debug)]
struct Held {
    since: Instant,
    /// Passed anyway at this moment (`[mobile_router] hold_ms`).
    until: Instant,
    /// Ends the thread watching the port.
    stop: Arc<AtomicBool>,
    /// Whether its port had a carrier (QEMU attached it) during the hold:
    /// losing it then, before the VM announced itself, is the migration
    /// ending here.
    port: PortSeen,
}

/// What a held tenant's port has shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortSeen {
    /// No carrier yet (QEMU has not attached it).
    Unattached,
    /// A carrier.
    Attached,
    /// A carrier, then none: said to the controller.
    Abandoned,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A tenant's VM seen on its port, from the thread that watched for it.
#[derive(Debug)]
struct Announced {
    tenant: String,
    /// What was seen; or why the port cannot be watched (then the hold
    /// ends at once: nothing would end it before hold_ms).
    frame: Result<String, String>,
}

/// How a tenant leaves this hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    /// Removed once deregistered, or at this deadline.
    By(Instant),
    /// Moved to another hypervisor while its VM may still run here: the
    /// data path stays (the home agent's copies reach the VM through it),
    /// nothing is sent, until the port loses its carrier or goes, or this
    /// deadline (`[mobile_router] linger_ms`).
    Lingering(Instant),
}

impl Leaving {
    fn deadline(self) -> Instant {
        match self {
            Leaving::By(at) | Leaving::Lingering(at) => at,
        }
    }
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

/// One tenant instance.
type Tenant = nemo::mr::Tenant<Host>;

/// A tenant instance as the controller or the config describes it, not yet
/// attached.
/// How every tenant's registrar is set: InitialBindackTimeoutFirstReg,
/// and whether it asks for UDP at an IPv4 care-of address without a NAT.
#[derive(Debug, Clone, Copy)]
pub struct Registering {
    /// The first wait for the answer to a first registration.
    pub first_registration_timeout: Duration,
    /// RFC 5555's F flag (`[transport] udp_over_ipv4`).
    pub udp_over_ipv4: UdpOverIpv4,
}

impl Registering {
    /// A registrar for `config`, starting after `sequence`, set so.
    fn registrar(&self, config: InstanceConfig, sequence: SequenceNumber) -> Registrar {
        let mut registrar = Registrar::new(config, sequence);
        registrar.set_first_registration_timeout(self.first_registration_timeout);
        registrar.set_udp_over_ipv4(self.udp_over_ipv4);
        registrar
    }
}

fn new_tenant(instance: Instance, registering: Registering) -> Tenant {
    Tenant {
        host: Host {
            routes: TenantRoutes {
                interface: instance.tenant_interface,
                prefixes: instance.registration.prefixes.clone(),
                home_agent: nemo_dataplane::Peer::Ipv6(instance.registration.home_agent),
                table: instance.table,
            },
            attached: false,
            attach_failing_since: None,
            reported_unauthenticated: None,
            counted_retransmissions: 0,
            leaving: None,
            wants: instance.delivery,
            held: None,
            encapsulation: None,
        },
        name: instance.name,
        // After the home agent's last accepted number when the
        // controller knows it (the first Binding Update after a
        // migration is then accepted at once); otherwise a random start
        // keeps a restarted router out of the window of its last run,
        // and a 135 corrects it anyway.
        registrar: registering.registrar(
            instance.registration,
            instance
                .last_sequence
                .unwrap_or_else(|| SequenceNumber(random_u16())),
        ),
    }
}

/// A tenant's status, as the status API shows it.
fn status(tenant: &Tenant, now: Instant) -> pb::InstanceStatus {
    let registrar = &tenant.registrar;
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
        name: tenant.name.clone(),
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
        tunnel: match tenant.host.encapsulation {
            None => String::new(),
            Some(Encapsulation::Ipv6) => "ipv6-in-ipv6".into(),
            Some(Encapsulation::Ipv4) => "ipv6-in-ipv4".into(),
            Some(Encapsulation::Udp { keepalive: None }) => "udp".into(),
            Some(Encapsulation::Udp {
                keepalive: Some(every),
            }) => format!("udp behind a nat, keepalive {} s", every.as_secs()),
        },
    }
}

/// The driver: wires the transport, the care-of address, the data plane
/// and the controller's commands to the tenants.
#[derive(Debug)]
pub struct Driver<D> {
    tenants: MobileRouter<Host>,
    /// How every tenant's registrar is set.
    registering: Registering,
    /// How long a tenant that moved away may keep its data path here.
    linger: Duration,
    /// The longest a tenant placed on its VM's announcement is held.
    hold: Duration,
    announced: (mpsc::Sender<Announced>, mpsc::Receiver<Announced>),
    /// Announcements and abandoned holds, for the controller.
    sightings: mpsc::Sender<Sighting>,
    /// The care-of address, and the home agent's IPv4 address.
    uplink: Uplink,
    transport: Transport,
    dataplane: Arc<D>,
    metrics: Arc<Metrics>,
    snapshot: Arc<RwLock<Vec<pb::InstanceStatus>>>,
}

impl<D: MobileRouterDataPlane> Driver<D> {
    /// A driver for these instances, talking over `transport`; each
    /// tenant's registrar set as `registering` says; a tenant that moved away keeps its data path
    /// up to `linger` while its VM may still run here; one placed on its
    /// VM's announcement is held up to `hold`; what the held tenants' ports
    /// show goes to `sightings`.
    pub fn new(
        instances: Vec<Instance>,
        transport: Transport,
        dataplane: Arc<D>,
        metrics: Arc<Metrics>,
        registering: Registering,
        (linger, hold): (Duration, Duration),
        sightings: mpsc::Sender<Sighting>,
    ) -> Driver<D> {
        let mut tenants = MobileRouter::new();
        for instance in instances {
            tenants.insert(new_tenant(instance, registering));
        }
        Driver {
            tenants,
            registering,
            linger,
            hold,
            announced: mpsc::channel(16),
            sightings,
            uplink: Uplink {
                care_of: None,
                ipv4_home_agent: transport.ipv4_home_agent(),
            },
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
        for tenant in self.tenants.iter_mut() {
            let total = tenant.registrar.retransmissions;
            if total > tenant.host.counted_retransmissions {
                self.metrics
                    .retransmissions
                    .get_or_create(&TenantLabel {
                        tenant: tenant.name.clone(),
                    })
                    .inc_by(total - tenant.host.counted_retransmissions);
                tenant.host.counted_retransmissions = total;
            }
        }
        let statuses = self.tenants.iter().map(|t| status(t, now)).collect();
        if let Ok(mut snapshot) = self.snapshot.write() {
            *snapshot = statuses;
        }
    }

    fn trigger(&mut self, name: Option<String>) -> Option<u32> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut told = 0;
        for tenant in self.tenants.iter_mut() {
            if name.as_ref().is_none_or(|n| *n == tenant.name)
                && !matches!(tenant.host.leaving, Some(Leaving::Lingering(_)))
            {
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
        mut care_of: watch::Receiver<Option<IpAddr>>,
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
                if self.tenants.all_deregistered() || Instant::now() >= end {
                    break;
                }
            }
            let attach_retry = self
                .tenants
                .iter()
                .any(|t| !t.host.attached && t.host.leaving.is_none())
                .then(|| Instant::now() + ATTACH_RETRY);
            let hold_ends = self
                .tenants
                .iter()
                .filter_map(|t| Some(t.host.held.as_ref()?.until))
                .min();
            let port_check = self
                .tenants
                .iter()
                .any(|t| {
                    matches!(t.host.leaving, Some(Leaving::Lingering(_))) || t.host.held.is_some()
                })
                .then(|| Instant::now() + PORT_CHECK);
            let next_timer = self
                .tenants
                .poll_timeout()
                .into_iter()
                .chain(deadline)
                .chain(attach_retry)
                .chain(port_check)
                .chain(hold_ends)
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
                Some(announced) = self.announced.1.recv() => match announced.frame {
                    Ok(frame) => {
                        if self.pass(&announced.tenant, &frame).await {
                            self.tell(&announced.tenant, pb::ArrivalKind::ArrivalAnnounced, frame);
                        }
                    }
                    Err(why) => {
                        self.pass(&announced.tenant, &why).await;
                    }
                },
                () = sleep => {
                    self.tenants.handle_timeout(Instant::now(), SystemTime::now());
                    self.attach_waiting().await;
                    self.pass_overdue().await;
                    self.check_held_ports();
                }
                () = &mut shutdown, if deadline.is_none() => {
                    tracing::info!("stopping: deregistering every instance");
                    let now = Instant::now();
                    self.tenants.deregister_all(now, SystemTime::now());
                    deadline = Some(now + DEREGISTRATION_GRACE);
                }
            }
        }
        for tenant in self.tenants.iter() {
            if tenant.host.attached {
                if let Err(error) = self.dataplane.detach(&tenant.host.routes).await {
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
                let reported_sequence = instance.last_sequence;
                let mut tenant = new_tenant(instance, self.registering);
                tenant.host.routes.home_agent =
                    self.uplink.peer(tenant.registrar.config().home_agent, None);
                let Some(old) = self.tenants.get(&tenant.name) else {
                    tracing::info!(instance = %tenant.name, "instance added");
                    // The tenant's retransmission series exists from the
                    // start, at zero: an alert on its rate needs it there.
                    let _ = self.metrics.retransmissions.get_or_create(&TenantLabel {
                        tenant: tenant.name.clone(),
                    });
                    attach_then_register(&*self.dataplane, &mut tenant, None, self.uplink).await;
                    self.hold_if_wanted(&mut tenant).await;
                    self.tenants.insert(tenant);
                    return;
                };
                if old.registrar.config() == tenant.registrar.config()
                    && old.host.routes == tenant.host.routes
                    && old.host.leaving.is_none()
                {
                    return;
                }
                tracing::info!(instance = %tenant.name, "instance changed; registering again");
                // A tenant already here is held only while it was: its VM
                // may run here already. One placed back while it lingered
                // is placed anew.
                let lingering = matches!(old.host.leaving, Some(Leaving::Lingering(_)));
                // After the newer of this instance's last number and the
                // home agent's last accepted one as the controller knows
                // it: another hypervisor may have registered since this
                // one last did (a tenant placed back after a failed
                // migration), and a 135 would cost a round trip.
                let own = old.registrar.sequence();
                let sequence = reported_sequence
                    .filter(|reported| reported.is_newer_than(own))
                    .unwrap_or(own);
                let previous = old.host.attached.then(|| old.host.routes.clone());
                tenant.host.encapsulation = old.host.encapsulation;
                let held = self
                    .tenants
                    .get_mut(&tenant.name)
                    .and_then(|old| old.host.held.take());
                // Keep the sequence and the data plane; register anew.
                tenant.registrar = self
                    .registering
                    .registrar(tenant.registrar.config().clone(), sequence);
                attach_then_register(
                    &*self.dataplane,
                    &mut tenant,
                    previous.as_ref(),
                    self.uplink,
                )
                .await;
                if !lingering {
                    tenant.host.wants = if held.is_some() {
                        Traffic::Hold
                    } else {
                        Traffic::Pass
                    };
                }
                // The attach above wrote the peer again: held anew, for
                // the routes as they are now (the old thread, which would
                // release the old ones, ends with `held`), until the same
                // deadline.
                self.hold_if_wanted(&mut tenant).await;
                if let (Some(now_held), Some(before)) = (tenant.host.held.as_mut(), held) {
                    now_held.since = before.since;
                    now_held.until = before.until;
                }
                self.tenants.insert(tenant);
            }
            InstanceCommand::Remove { name, deregister } => {
                let Some(tenant) = self.tenants.get_mut(&name) else {
                    return;
                };
                if !tenant.host.attached {
                    // Never attached, so never registered from here.
                    tracing::info!(instance = %name, "tenant left before its port appeared");
                    tenant.host.leaving = Some(Leaving::By(now));
                } else if deregister {
                    tracing::info!(instance = %name, "tenant left: deregistering");
                    tenant.registrar.deregister(now, wall);
                    tenant.host.leaving = Some(Leaving::By(now + DEREGISTRATION_GRACE));
                } else {
                    // Its new hypervisor registers it: a deregistration
                    // from here could race with that and remove the binding,
                    // and so could a refresh: nothing more is sent. The
                    // data path stays while the VM may still run here.
                    tracing::info!(
                        instance = %name,
                        linger_ms = self.linger.as_millis() as u64,
                        "tenant moved to another hypervisor; its data path stays while its port has a VM"
                    );
                    tenant.registrar.set_care_of(None, now, wall);
                    tenant.host.leaving = Some(Leaving::Lingering(now + self.linger));
                }
            }
        }
    }

    /// Removes instances that finished leaving, and their data plane.
    async fn reap(&mut self) {
        let now = Instant::now();
        let gone = self.tenants.take_where(|tenant| match tenant.host.leaving {
            None => false,
            Some(leaving) if now >= leaving.deadline() => true,
            Some(Leaving::By(_)) => matches!(tenant.registrar.state(), State::Deregistered),
            // QEMU closed the tap (the VM is gone from here), or the port
            // itself went.
            Some(Leaving::Lingering(_)) => {
                nemo_dataplane::links::has_carrier(&tenant.host.routes.interface) != Some(true)
            }
        });
        for tenant in gone {
            if tenant.host.attached {
                if let Err(error) = self.dataplane.detach(&tenant.host.routes).await {
                    tracing::warn!(instance = %tenant.name, %error, "detaching failed");
                }
            }
            tracing::info!(instance = %tenant.name, "instance removed");
        }
    }

    async fn care_of_changed(&mut self, address: Option<IpAddr>) {
        let family_changed =
            address.map(|a| a.is_ipv4()) != self.uplink.care_of.map(|a| a.is_ipv4());
        self.uplink.care_of = address;
        self.metrics.care_of_changes.inc();
        let ipv6 = match address {
            Some(IpAddr::V6(address)) => Some(address),
            _ => None,
        };
        self.transport.care_of_changed(ipv6).await;
        if let Some(address) = ipv6 {
            if let Err(error) = self.dataplane.set_care_of(address).await {
                tracing::error!(%error, "data plane refused the new care-of address");
            }
        }
        let ipv4_local = self.uplink.ipv4_local(self.transport.ipv4_port());
        if let Err(error) = self.dataplane.set_ipv4_care_of(ipv4_local).await {
            tracing::error!(%error, "data plane refused the IPv4 care-of address");
        }
        match address {
            Some(address) => {
                tracing::info!(care_of = %address, "registering at the new care-of address")
            }
            None => tracing::warn!("no usable care-of address: registrations paused"),
        }
        let (now, wall) = (Instant::now(), SystemTime::now());
        // A tenant still waiting for its data path registers once attached;
        // one leaving sends nothing more.
        for tenant in self
            .tenants
            .iter_mut()
            .filter(|t| t.host.attached && t.host.leaving.is_none())
        {
            if tenant.host.held.is_some() && address.is_some_and(|a| a.is_ipv4()) {
                // Registers at its VM's announcement (`hold_if_wanted`).
                tenant.registrar.set_care_of(None, now, wall);
                continue;
            }
            if family_changed {
                // Another address family: another tunnel peer (RFC 5555
                // §4.1), and the acknowledgement here has yet to say how.
                tenant.host.encapsulation = None;
                retunnel(&*self.dataplane, tenant, self.uplink).await;
            }
            tenant.registrar.set_care_of(address, now, wall);
        }
    }

    /// Tries again to attach every tenant waiting for its port.
    async fn attach_waiting(&mut self) {
        let mut attached = Vec::new();
        for tenant in self.tenants.iter_mut() {
            if !tenant.host.attached && tenant.host.leaving.is_none() {
                attach_then_register(&*self.dataplane, tenant, None, self.uplink).await;
                if tenant.host.attached {
                    attached.push(tenant.name.clone());
                }
            }
        }
        for name in attached {
            for mut tenant in self.tenants.take_where(|t| t.name == name) {
                self.hold_if_wanted(&mut tenant).await;
                self.tenants.insert(tenant);
            }
        }
    }

    /// Holds a just-attached tenant placed on its VM's announcement, and
    /// watches its port for that announcement. Before its Binding Update
    /// leaves (the driver sends at the top of its loop): no packet reaches
    /// the port before the hold.
    async fn hold_if_wanted(&self, tenant: &mut Tenant) {
        if tenant.host.wants != Traffic::Hold || !tenant.host.attached || tenant.host.held.is_some()
        {
            return;
        }
        match self
            .dataplane
            .deliver(&tenant.host.routes, Traffic::Hold)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(instance = %tenant.name, dataplane = self.dataplane.name(), "this data plane cannot hold a tenant: its traffic passes at once");
                tenant.host.wants = Traffic::Pass;
                return;
            }
            Err(error) => {
                tracing::error!(instance = %tenant.name, %error, "could not hold the tenant: its traffic passes at once");
                tenant.host.wants = Traffic::Pass;
                return;
            }
        }
        let now = Instant::now();
        if self.uplink.care_of.is_some_and(|a| a.is_ipv4()) {
            // The home agent cannot copy a moving tenant's packets to or
            // from an IPv4 care-of address (tunnel.bpf.c: `nemo_bicast`
            // copies IPv6 tunnels only): registering now would cut the VM
            // still running at the source off until it resumes here. So the
            // Binding Update waits for the VM's announcement, as a
            // placement at RESUME would (issue 30).
            tenant.registrar.set_care_of(None, now, SystemTime::now());
            tracing::info!(
                instance = %tenant.name,
                "IPv4 care-of address: registering once the VM announces itself (no copies to the source)"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        watch_for_announcement(
            &tenant.host.routes.interface,
            &tenant.name,
            stop.clone(),
            self.dataplane.release(&tenant.host.routes),
            self.announced.0.clone(),
        );
        tracing::info!(
            instance = %tenant.name,
            interface = %tenant.host.routes.interface,
            hold_ms = self.hold.as_millis() as u64,
            "placed on its VM's announcement: held until the VM announces itself on its port"
        );
        tenant.host.held = Some(Held {
            since: now,
            until: now + self.hold,
            stop,
            port: PortSeen::Unattached,
        });
    }

    /// Tells the controller what a held tenant's port showed (when it
    /// listens: the arrivals task).
    fn tell(&self, tenant: &str, kind: pb::ArrivalKind, evidence: String) {
        let sighting = Sighting {
            tenant: tenant.to_owned(),
            kind,
            evidence,
        };
        if let Err(error) = self.sightings.try_send(sighting) {
            tracing::debug!(%tenant, %error, "not telling the controller");
        }
    }

    /// Looks at held tenants' ports: one that had a carrier and lost it
    /// before its VM announced itself is a migration that ended here (it
    /// failed, or was cancelled); the controller hears it and moves the
    /// tenant back. It stays held meanwhile.
    fn check_held_ports(&mut self) {
        let mut abandoned = Vec::new();
        for tenant in self.tenants.iter_mut() {
            let Some(held) = tenant.host.held.as_mut() else {
                continue;
            };
            let carrier = nemo_dataplane::links::has_carrier(&tenant.host.routes.interface);
            match (held.port, carrier) {
                (PortSeen::Unattached, Some(true)) => held.port = PortSeen::Attached,
                (PortSeen::Attached, Some(false) | None) => {
                    held.port = PortSeen::Abandoned;
                    tracing::warn!(
                        instance = %tenant.name,
                        interface = %tenant.host.routes.interface,
                        "the held tenant's port lost its carrier before its VM announced itself: \
                         the migration ended here; telling the controller"
                    );
                    abandoned.push((tenant.name.clone(), tenant.host.routes.interface.clone()));
                }
                _ => {}
            }
        }
        for (tenant, interface) in abandoned {
            self.tell(
                &tenant,
                pb::ArrivalKind::ArrivalAbandoned,
                format!("carrier lost before the VM announced itself on {interface}"),
            );
        }
    }

    /// The tenant's VM announced itself (or its hold is over): its traffic
    /// passes. False when it was not held.
    async fn pass(&mut self, name: &str, why: &str) -> bool {
        let Some(tenant) = self.tenants.get_mut(name) else {
            return false;
        };
        let Some(held) = tenant.host.held.take() else {
            return false;
        };
        tenant.host.wants = Traffic::Pass;
        if tenant.registrar.care_of().is_none()
            && tenant.host.attached
            && tenant.host.leaving.is_none()
        {
            // Its registration waited for this (an IPv4 care-of address).
            tenant
                .registrar
                .set_care_of(self.uplink.care_of, Instant::now(), SystemTime::now());
        }
        let waited_ms = held.since.elapsed().as_secs_f64() * 1000.0;
        match self
            .dataplane
            .deliver(&tenant.host.routes, Traffic::Pass)
            .await
        {
            Ok(_) => {
                tracing::info!(instance = %name, %why, waited_ms, "the tenant's traffic passes")
            }
            Err(error) => {
                tracing::error!(instance = %name, %error, "could not pass the held tenant's traffic; attaching it again");
                let routes = tenant.host.routes.clone();
                if let Err(error) = self.dataplane.attach(&routes, None).await {
                    tracing::error!(instance = %name, %error, "attaching again failed");
                }
            }
        }
        true
    }

    /// Passes every tenant whose hold is over without an announcement.
    async fn pass_overdue(&mut self) {
        let now = Instant::now();
        let overdue: Vec<String> = self
            .tenants
            .iter()
            .filter(|t| t.host.held.as_ref().is_some_and(|h| now >= h.until))
            .map(|t| t.name.clone())
            .collect();
        for name in overdue {
            self.pass(&name, "no announcement within hold_ms").await;
        }
    }

    /// A packet from a home agent, for one of the tenants (the engine picks
    /// which): logged here, acted on by its registrar.
    fn packet(&mut self, packet: &[u8]) {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let (name, receipt) = match self.tenants.handle(packet, now, wall) {
            Delivery::Malformed(error) => {
                tracing::debug!(%error, "malformed packet from the home agent side");
                return;
            }
            Delivery::NoTenant { home_address } => {
                tracing::debug!(home = %home_address, "packet for no instance of ours");
                return;
            }
            Delivery::Tenant { name, receipt } => (name, receipt),
        };
        match receipt {
            Receipt::Acknowledgement | Receipt::RefreshRequest => {}
            Receipt::UnauthenticatedRefreshRequest => {
                tracing::warn!(instance = %name, "ignored an unauthenticated Binding Refresh Request");
            }
            Receipt::IgnoredAcknowledgement(error) => {
                tracing::warn!(instance = %name, %error, "ignored a Binding Acknowledgement");
            }
            Receipt::Other(mh_type) => tracing::debug!(instance = %name, %mh_type, "ignored"),
            Receipt::Malformed(error) => tracing::debug!(%error, "malformed Mobility Header"),
        }
        // A wrong key shows as answers that do not verify: said once per
        // status, not per packet.
        let Some(tenant) = self.tenants.get_mut(&name) else {
            return;
        };
        let claimed = tenant.registrar.last_unauthenticated_status;
        if claimed.is_some() && claimed != tenant.host.reported_unauthenticated {
            tenant.host.reported_unauthenticated = claimed;
            if let Some(status) = claimed {
                tracing::error!(
                    instance = %tenant.name,
                    %status,
                    "the home agent's answer does not authenticate with our key: wrong key or SPI?"
                );
            }
        }
    }

    /// Sends what the registrars have queued and acts on their events.
    async fn flush(&mut self) {
        for tenant in self.tenants.iter_mut() {
            while let Some(packet) = tenant.registrar.poll_transmit() {
                let care_of = tenant.registrar.care_of();
                if let Err(error) = self.transport.send(&packet, care_of).await {
                    tracing::warn!(instance = %tenant.name, %error, "sending a Binding Update failed");
                }
            }
            while let Some(event) = tenant.registrar.poll_event() {
                match event {
                    Event::Registered {
                        care_of,
                        encapsulation,
                        lifetime,
                        took,
                    } => {
                        tracing::info!(
                            instance = %tenant.name,
                            %care_of,
                            ?encapsulation,
                            lifetime_secs = lifetime.as_secs(),
                            took_ms = took.as_secs_f64() * 1000.0,
                            "registered"
                        );
                        self.metrics
                            .registrations
                            .get_or_create(&TenantLabel {
                                tenant: tenant.name.clone(),
                            })
                            .inc();
                        self.metrics
                            .registration_seconds
                            .observe(took.as_secs_f64());
                        if tenant.host.encapsulation != Some(encapsulation) {
                            tenant.host.encapsulation = Some(encapsulation);
                            retunnel(&*self.dataplane, tenant, self.uplink).await;
                        }
                    }
                    Event::Rejected { status } => {
                        tracing::error!(instance = %tenant.name, %status, "registration refused");
                        self.metrics
                            .rejections
                            .get_or_create(&RejectionLabel {
                                tenant: tenant.name.clone(),
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
    uplink: Uplink,
) {
    let now = Instant::now();
    tenant.host.routes.home_agent = uplink.peer(
        tenant.registrar.config().home_agent,
        tenant.host.encapsulation,
    );
    match dataplane.attach(&tenant.host.routes, previous).await {
        Ok(()) => {
            tenant.host.attached = true;
            if let Some(since) = tenant.host.attach_failing_since.take() {
                tracing::info!(
                    instance = %tenant.name,
                    interface = %tenant.host.routes.interface,
                    waited_ms = now.saturating_duration_since(since).as_secs_f64() * 1000.0,
                    "tenant attached; registering"
                );
            }
            tenant
                .registrar
                .set_care_of(uplink.care_of, now, SystemTime::now());
        }
        Err(error) => {
            tenant.host.attached = false;
            if tenant.host.attach_failing_since.is_none() {
                tracing::warn!(
                    instance = %tenant.name,
                    interface = %tenant.host.routes.interface,
                    %error,
                    "cannot attach the tenant (does its port exist yet?): not registering until it can; retrying"
                );
                tenant.host.attach_failing_since = Some(now);
            }
        }
    }
}

/// Points an attached tenant's tunnel at the peer `uplink` and its last
/// acknowledgement say (RFC 5555 §4.1: another address family, or UDP
/// or not through a NAT), when that is another peer.
async fn retunnel<D: MobileRouterDataPlane>(dataplane: &D, tenant: &mut Tenant, uplink: Uplink) {
    let peer = uplink.peer(
        tenant.registrar.config().home_agent,
        tenant.host.encapsulation,
    );
    if !tenant.host.attached || tenant.host.routes.home_agent == peer {
        return;
    }
    let previous = tenant.host.routes.clone();
    tenant.host.routes.home_agent = peer;
    match dataplane.attach(&tenant.host.routes, Some(&previous)).await {
        Ok(()) => tracing::info!(instance = %tenant.name, %peer, "tunnel to the home agent now"),
        Err(error) => {
            tracing::error!(instance = %tenant.name, %peer, %error, "cannot point the tunnel at the home agent");
            tenant.host.routes = previous;
        }
    }
}

/// A thread reading `interface` for its VM's first frame (QEMU's RARP as
/// the VM resumes here): passes the tenant's traffic at once through
/// `release` (the daemon's loop, a millisecond later, is a probe lost in
/// the lab), then reports on `announced`.
fn watch_for_announcement(
    interface: &str,
    tenant: &str,
    stop: Arc<AtomicBool>,
    release: Option<nemo_dataplane::Release>,
    announced: mpsc::Sender<Announced>,
) {
    let (port, tenant) = (interface.to_owned(), tenant.to_owned());
    let spawned = std::thread::Builder::new()
        .name(format!("hold-{port}"))
        .spawn(move || {
            let read = nemo_dataplane::guest::wait_for_guest(&port, stop, |frame| {
                if let Some(release) = &release {
                    if let Err(error) = release.now() {
                        tracing::warn!(interface = %port, %error, "passing the tenant's traffic at its announcement failed; the daemon tries again");
                    }
                }
                let _ = announced.blocking_send(Announced {
                    tenant: tenant.clone(),
                    frame: Ok(format!("{} on {port}", frame.describe())),
                });
            });
            match read {
                Ok(()) => {}
                // The port is there and cannot be read (no CAP_NET_RAW):
                // nothing would end the hold before hold_ms.
                Err(error) if nemo_dataplane::links::has_carrier(&port).is_some() => {
                    tracing::warn!(interface = %port, %error, "cannot watch the port for the VM's announcement: its traffic passes now");
                    let _ = announced.blocking_send(Announced {
                        tenant,
                        frame: Err(format!("the port cannot be watched: {error}")),
                    });
                }
                Err(error) => {
                    tracing::warn!(interface = %port, %error, "the port to watch for the VM's announcement is gone: the hold ends at hold_ms");
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no thread to watch a port for the VM's announcement: the hold ends at hold_ms");
    }
}

/// A random 16-bit number from the kernel (0 if it cannot be read).
fn random_u16() -> u16 {
    u16::from_ne_bytes(nemo_daemon::secret::random_octets().unwrap_or_default())
}
