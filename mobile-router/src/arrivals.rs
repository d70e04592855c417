//! Arrivals (issue 29): a tenant's VM that starts sending on this
//! hypervisor's port for it while the tenant is placed elsewhere has
//! arrived here (a live migration nobody reported: QEMU's RARP as the VM
//! resumes). The daemon watches each tenant port (named by
//! `tenant_interface`) whose tenant is not placed here, and on the guest's
//! first frame tells the controller (`ReportArrival`), which places the
//! tenant here when it follows arrivals; the placement then comes back
//! through `WatchPlacements` like any other and the tenant registers.
//!
//! Watching starts only once the controller's placements are known (a
//! port whose tenant is placed here is not watched), at most
//! [`MOST_WATCHED`] ports at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nemo_dataplane::guest::{wait_for_guest, GuestFrame};
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

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

/// What a port's thread saw.
struct Arrival {
    interface: String,
    tenant: String,
    frame: GuestFrame,
}

/// Watches tenant ports and reports arrivals until the daemon stops.
/// `placed`: `None` until the controller's snapshot is in.
pub async fn run(
    settings: ArrivalSettings,
    mut placed: watch::Receiver<Option<PlacedHere>>,
) -> anyhow::Result<()> {
    let (mut names, _links) = nemo_dataplane::links::watch_interface_names().await?;
    let (arrived, mut arrivals) = mpsc::channel::<Arrival>(16);
    let mut watched: BTreeMap<String, Watched> = BTreeMap::new();
    // Ports reported on, not watched again until the placements or the
    // ports change (a controller that refuses must not hear every frame).
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut warned_full = false;
    loop {
        let wanted: BTreeMap<String, String> = match &*placed.borrow() {
            None => BTreeMap::new(),
            Some(here) => names
                .borrow()
                .iter()
                .filter_map(|name| {
                    Some((name.clone(), tenant_of(&settings.tenant_interface, name)?))
                })
                .filter(|(interface, tenant)| {
                    !here.tenants.contains(tenant) && !reported.contains(interface)
                })
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
        tokio::select! {
            changed = placed.changed() => {
                changed?;
                reported.clear();
            }
            changed = names.changed() => {
                changed?;
                reported.clear();
            }
            Some(arrival) = arrivals.recv() => {
                watched.remove(&arrival.interface);
                reported.insert(arrival.interface.clone());
                let client = placed.borrow().as_ref().map(|p| p.client.clone());
                report(&settings, client, &arrival).await;
            }
        }
    }
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
                    frame,
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

/// Tells the controller, with a request id of its own (sent again when
/// unanswered).
async fn report(
    settings: &ArrivalSettings,
    mut client: Option<ControllerClient<Channel>>,
    arrival: &Arrival,
) {
    let evidence = format!("{} on {}", arrival.frame.describe(), arrival.interface);
    tracing::info!(tenant = %arrival.tenant, %evidence, "the tenant's VM arrived here; telling the controller");
    let request = pb::ReportArrivalRequest {
        hypervisor: settings.hypervisor.clone(),
        tenant: arrival.tenant.clone(),
        evidence,
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
        Ok(placement) => {
            tracing::info!(tenant = %placement.tenant, hypervisor = %placement.hypervisor, "placed here on its arrival");
        }
        Err(nemo_daemon::CallError::Answered(status))
            if status.code() == tonic::Code::FailedPrecondition =>
        {
            tracing::info!(tenant = %arrival.tenant, reason = status.message(), "the controller does not move the tenant on its arrival");
        }
        Err(error) => {
            tracing::warn!(tenant = %arrival.tenant, %error, "reporting the arrival failed");
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
}
