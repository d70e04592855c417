//! Arrivals (issue 29): what this hypervisor sees of tenants placed
//! elsewhere, told to the controller (`ReportArrival`), whose placement
//! follows when it follows arrivals; the placement then comes back through
//! `WatchPlacements` like any other.
//!
//! - **Incoming**: the port (named by `tenant_interface`) of a tenant
//!   placed elsewhere gets a carrier: QEMU attached it, as it does when a
//!   live migration to this hypervisor starts. The controller places the
//!   tenant here on its VM's announcement: the home agent copies its
//!   traffic to both sites while the VM still runs at the old one, and
//!   this one holds it until the VM announces itself here.
//! - **Announced**: the guest's first frame on such a port (QEMU's RARP as
//!   the VM resumes: a live migration nobody reported), and the
//!   announcement a held tenant was waiting for (from the driver).
//! - **Abandoned** (from the driver): a held tenant's port lost its carrier
//!   before its VM announced itself; the controller moves it back.
//!
//! A carrier that was up when the tenant left (the source of a migration,
//! its VM still running) is no incoming migration: only a change to up is.
//! An announcement the controller answers with a placement elsewhere,
//! awaiting the VM's announcement there (this is the migration's source,
//! the VM not yet paused), is watched for again after [`AGAIN_AFTER`]: if
//! the migration then fails and the VM runs on here, its frames move the
//! tenant back.
//!
//! Watching starts only once the controller's placements are known (a
//! port whose tenant is placed here is not watched), at most
//! [`MOST_WATCHED`] ports at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nemo_dataplane::guest::{wait_for_guest, GuestFrame};
use nemo_dataplane::links::Carrier;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

/// What the driver saw of a tenant it holds, for the controller.
#[derive(Debug, Clone)]
pub struct Sighting {
    /// The tenant.
    pub tenant: String,
    /// Announced or abandoned.
    pub kind: pb::ArrivalKind,
    /// What was seen ("RARP from 52:54:00:00:01:02 on t-acme").
    pub evidence: String,
}

/// How long a port whose announcement the controller answered "not now"
/// is left unwatched.
pub const AGAIN_AFTER: Duration = Duration::from_secs(1);

/// What the placements watch tells the arrivals: the tenants placed here,
/// and its connection to the controller (reports go on it: no connection
/// to set up when a VM arrives).
#[derive(Debug, Clone)]
pub struct PlacedHere {
    /// The tenants placed on this hypervisor.
    pub tenants: BTreeSet<String>,
    /// The watch's client.
    pub client: ControllerClient<Channel>,
}

/// Ports watched at once (a thread each; unplaced ports are transient:
/// VMs migrating in, or gone).
pub const MOST_WATCHED: usize = 256;

/// Who reports arrivals, and which interfaces are tenant ports.
#[derive(Debug, Clone)]
pub struct ArrivalSettings {
    /// The controller.
    pub link: nemo_daemon::ControllerLink,
    /// This hypervisor's name at the controller.
    pub hypervisor: String,
    /// The tenant port's name, `{tenant}` in it.
    pub tenant_interface: String,
}

/// The tenant whose port `interface` is, by `pattern` (`t-{tenant}`).
/// Names the kernel cut to 15 octets are ambiguous: a name that fills
/// the limit names nobody.
pub fn tenant_of(pattern: &str, interface: &str) -> Option<String> {
    let (before, after) = pattern.split_once("{tenant}")?;
    if interface.len() >= 15 {
        return None;
    }
    let tenant = interface.strip_prefix(before)?.strip_suffix(after)?;
    (!tenant.is_empty()).then(|| tenant.to_owned())
}

/// One watched port: its tenant and how to stop its thread.
struct Watched {
    tenant: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What was seen on a port.
enum Seen {
    /// The guest's first frame.
    Frame(GuestFrame),
    /// Its carrier came up.
    Carrier,
}

/// What was seen on a tenant's port.
struct Arrival {
    interface: String,
    tenant: String,
    seen: Seen,
}

impl Arrival {
    fn sighting(&self) -> Sighting {
        let (kind, what) = match &self.seen {
            Seen::Frame(frame) => (pb::ArrivalKind::ArrivalAnnounced, frame.describe()),
            Seen::Carrier => (
                pb::ArrivalKind::ArrivalIncoming,
                "carrier up (QEMU attached the port)".to_owned(),
            ),
        };
        Sighting {
            tenant: self.tenant.clone(),
            kind,
            evidence: format!("{what} on {}", self.interface),
        }
    }
}

/// Whether a port is watched for its guest's frames again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    /// Not until the placements or the ports change.
    Done,
    /// From this moment (the controller said "not now").
    Again(Instant),
}

/// Watches tenant ports and reports arrivals, and tells the controller what
/// the driver saw (`sightings`), until the daemon stops. `placed`: `None`
/// until the controller's snapshot is in.
pub async fn run(
    settings: ArrivalSettings,
    mut placed: watch::Receiver<Option<PlacedHere>>,
    mut sightings: mpsc::Receiver<Sighting>,
) -> anyhow::Result<()> {
    let (mut links, _links) = nemo_dataplane::links::watch_interfaces().await?;
    let (arrived, mut arrivals) = mpsc::channel::<Arrival>(16);
    let mut watched: BTreeMap<String, Watched> = BTreeMap::new();
    // Ports reported on, not watched again for a while (a controller that
    // refuses must not hear every frame).
    let mut reported: BTreeMap<String, Reported> = BTreeMap::new();
    // Each tenant port's carrier as last seen, for its changes; none on
    // the first look (a carrier up before the daemon looked is no sign of
    // a migration starting now).
    let mut carriers: Option<BTreeMap<String, Carrier>> = None;
    let mut warned_full = false;
    loop {
        let now = Instant::now();
        reported.retain(|_, r| !matches!(r, Reported::Again(at) if *at <= now));
        let ports: BTreeMap<String, (String, Carrier)> = links
            .borrow()
            .iter()
            .filter_map(|(name, carrier)| {
                Some((
                    name.clone(),
                    (tenant_of(&settings.tenant_interface, name)?, *carrier),
                ))
            })
            .collect();
        let here = placed.borrow().clone();
        let incoming = match &here {
            Some(here) => incoming(carriers.as_ref(), &ports, &here.tenants),
            None => Vec::new(),
        };
        carriers = Some(ports.iter().map(|(i, (_, c))| (i.clone(), *c)).collect());
        let wanted: BTreeMap<String, String> = match &here {
            None => BTreeMap::new(),
            Some(here) => ports
                .into_iter()
                .filter(|(interface, (tenant, _))| {
                    !here.tenants.contains(tenant) && !reported.contains_key(interface)
                })
                .map(|(interface, (tenant, _))| (interface, tenant))
                .collect(),
        };
        watched.retain(|interface, w| wanted.get(interface) == Some(&w.tenant));
        for (interface, tenant) in wanted {
            if watched.contains_key(&interface) {
                continue;
            }
            if watched.len() >= MOST_WATCHED {
                if !warned_full {
                    tracing::warn!(
                        most = MOST_WATCHED,
                        "too many unplaced tenant ports; not watching more for arrivals"
                    );
                    warned_full = true;
                }
                break;
            }
            let stop = Arc::new(AtomicBool::new(false));
            spawn_port_thread(&interface, &tenant, stop.clone(), arrived.clone());
            watched.insert(interface, Watched { tenant, stop });
        }
        let client = here.as_ref().map(|p| p.client.clone());
        for arrival in incoming {
            report(&settings, client.clone(), &arrival.sighting()).await;
        }
        let again = reported
            .values()
            .filter_map(|r| match r {
                Reported::Again(at) => Some(*at),
                Reported::Done => None,
            })
            .min();
        let sleep = async {
            match again {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = placed.changed() => {
                changed?;
                reported.clear();
            }
            changed = links.changed() => {
                changed?;
                reported.retain(|_, r| matches!(r, Reported::Again(_)));
            }
            Some(arrival) = arrivals.recv() => {
                watched.remove(&arrival.interface);
                let answer = report(&settings, client, &arrival.sighting()).await;
                reported.insert(arrival.interface.clone(), match answer {
                    Answer::NotNow => Reported::Again(Instant::now() + AGAIN_AFTER),
                    _ => Reported::Done,
                });
            }
            Some(sighting) = sightings.recv() => {
                report(&settings, client, &sighting).await;
            }
            () = sleep => {}
        }
    }
}

/// The ports whose carrier came up since `before` (none on the first
/// look) while their tenant is not placed here: QEMU attached them, as it
/// does when a migration to this hypervisor starts. `ports`: each tenant
/// port's tenant and carrier now.
fn incoming(
    before: Option<&BTreeMap<String, Carrier>>,
    ports: &BTreeMap<String, (String, Carrier)>,
    placed_here: &BTreeSet<String>,
) -> Vec<Arrival> {
    let Some(before) = before else {
        return Vec::new();
    };
    ports
        .iter()
        .filter(|(interface, (tenant, carrier))| {
            *carrier == Carrier::Up
                && before.get(*interface) != Some(&Carrier::Up)
                && !placed_here.contains(tenant)
        })
        .map(|(interface, (tenant, _))| Arrival {
            interface: interface.clone(),
            tenant: tenant.clone(),
            seen: Seen::Carrier,
        })
        .collect()
}

/// A thread reading `interface` for the guest's first frame.
fn spawn_port_thread(
    interface: &str,
    tenant: &str,
    stop: Arc<AtomicBool>,
    arrived: mpsc::Sender<Arrival>,
) {
    let (interface, tenant) = (interface.to_owned(), tenant.to_owned());
    tracing::debug!(%interface, %tenant, "watching the port for its VM's arrival");
    let spawned = std::thread::Builder::new()
        .name(format!("arrival-{interface}"))
        .spawn(move || {
            let port = interface.clone();
            let read = wait_for_guest(&port, stop, |frame| {
                let _ = arrived.blocking_send(Arrival {
                    interface,
                    tenant,
                    seen: Seen::Frame(frame),
                });
                tracing::debug!(interface = %port, frame = %frame.describe(), "the guest's first frame read");
            });
            if let Err(error) = read {
                tracing::warn!(interface = %port, %error, "cannot watch the port for arrivals");
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no thread to watch a port for arrivals");
    }
}

/// What the controller answered a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The tenant is placed as reported.
    Placed,
    /// Not now: report again later.
    NotNow,
    /// Refused, or not answered.
    Otherwise,
}

/// Tells the controller, with a request id of its own (sent again when
/// unanswered).
async fn report(
    settings: &ArrivalSettings,
    mut client: Option<ControllerClient<Channel>>,
    sighting: &Sighting,
) -> Answer {
    let kind = sighting.kind.as_str_name();
    tracing::info!(tenant = %sighting.tenant, kind, evidence = %sighting.evidence, "telling the controller");
    let request = pb::ReportArrivalRequest {
        hypervisor: settings.hypervisor.clone(),
        tenant: sighting.tenant.clone(),
        evidence: sighting.evidence.clone(),
        kind: sighting.kind.into(),
    };
    let answer = settings
        .link
        .call_once(
            &mut client,
            &nemo_daemon::fresh_request_id("nemo-mr"),
            request,
            |mut client, request| async move { client.report_arrival(request).await },
        )
        .await;
    match answer {
        // Abandoned: placed back where it came from, as asked.
        Ok(placement)
            if placement.hypervisor == settings.hypervisor
                || sighting.kind == pb::ArrivalKind::ArrivalAbandoned =>
        {
            tracing::info!(tenant = %placement.tenant, hypervisor = %placement.hypervisor, kind, "placed as reported");
            Answer::Placed
        }
        Ok(placement) => {
            tracing::info!(tenant = %placement.tenant, hypervisor = %placement.hypervisor, delivery = ?placement.delivery(), kind, "the tenant moves elsewhere, awaiting its VM there: telling the controller again later");
            Answer::NotNow
        }
        Err(nemo_daemon::CallError::Answered(status))
            if status.code() == tonic::Code::FailedPrecondition =>
        {
            tracing::info!(tenant = %sighting.tenant, kind, reason = status.message(), "the controller does not move the tenant on it");
            Answer::Otherwise
        }
        Err(error) => {
            tracing::warn!(tenant = %sighting.tenant, kind, %error, "reporting to the controller failed");
            Answer::Otherwise
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ports_by_their_names() {
        assert_eq!(tenant_of("t-{tenant}", "t-acme").as_deref(), Some("acme"));
        assert_eq!(
            tenant_of("vm-{tenant}-0", "vm-acme-0").as_deref(),
            Some("acme")
        );
        assert_eq!(tenant_of("t-{tenant}", "eth0"), None);
        assert_eq!(tenant_of("t-{tenant}", "t-"), None);
        // Cut by the kernel's limit: which tenant it was is not known.
        assert_eq!(tenant_of("t-{tenant}", "t-a-long-tenant"), None);
        assert_eq!(tenant_of("no-placeholder", "no-placeholder"), None);
    }

    #[test]
    fn a_carrier_coming_up_on_an_unplaced_tenants_port_is_an_incoming_migration() {
        use Carrier::{Down, Up};
        let ports = |list: &[(&str, Carrier)]| -> BTreeMap<String, (String, Carrier)> {
            list.iter()
                .map(|(i, c)| ((*i).to_owned(), (i.trim_start_matches("t-").to_owned(), *c)))
                .collect()
        };
        let carriers = |list: &[(&str, Carrier)]| -> BTreeMap<String, Carrier> {
            list.iter().map(|(i, c)| ((*i).to_owned(), *c)).collect()
        };
        let here: BTreeSet<String> = ["local".to_owned()].into();
        let reported = |before: Option<&BTreeMap<String, Carrier>>, now| -> Vec<String> {
            incoming(before, &now, &here)
                .into_iter()
                .map(|a| {
                    assert_eq!(a.sighting().kind, pb::ArrivalKind::ArrivalIncoming);
                    a.tenant
                })
                .collect()
        };
        let now = ports(&[
            ("t-acme", Up),
            ("t-left", Up),
            ("t-new", Up),
            ("t-idle", Down),
            ("t-local", Up),
        ]);
        // The first look: whatever is up was up before the daemon looked.
        assert!(reported(None, now.clone()).is_empty());
        let before = carriers(&[
            ("t-acme", Down),
            // The source of a migration: its VM still runs, the carrier
            // stays up as the tenant leaves.
            ("t-left", Up),
            ("t-idle", Down),
            ("t-local", Down),
        ]);
        // Down to up, and a port that appeared with its carrier; not the
        // source's, not a port still down, not a tenant placed here.
        assert_eq!(reported(Some(&before), now), ["acme", "new"]);
    }
}
