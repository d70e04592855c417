//! Instances from the controller: the daemon registers its hypervisor and
//! follows the tenants placed on it (`WatchPlacements`), turning each update
//! into an instance to host, change or let go.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use nemo::auth::SecurityAssociation;
use nemo::registration::InstanceConfig;
use nemo_daemon::Watched;
use nemo_proto::v1 as pb;
use tokio::sync::mpsc;

use crate::arrivals::PlacedHere;
use crate::config::Instance;
use crate::driver::InstanceCommand;

/// Where the controller is and who this hypervisor is to it.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// The controller: endpoint, CA, token.
    pub link: nemo_daemon::ControllerLink,
    /// This hypervisor's name at the controller.
    pub hypervisor: String,
    /// The tenant interface name, `{tenant}` replaced (cut to 15 octets,
    /// the kernel's limit).
    pub tenant_interface: String,
    /// Tenant tables are allocated from here.
    pub table_base: u32,
    /// Lifetime to ask for.
    pub lifetime: Duration,
}

/// The instance a placement describes.
fn instance(
    settings: &ControllerSettings,
    table: u32,
    update: &pb::PlacementUpdate,
    mobile_router: &pb::MobileRouter,
    home_agent: &pb::HomeAgent,
) -> anyhow::Result<Instance> {
    let key = nemo_daemon::parse_hex_key(&mobile_router.key).map_err(anyhow::Error::msg)?;
    let sa = SecurityAssociation::new(mobile_router.spi, mobile_router.algorithm.parse()?, key)?;
    let prefixes = if mobile_router.explicit_mode {
        mobile_router
            .prefixes
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()
            .context("prefixes")?
    } else {
        Vec::new()
    };
    let mut interface = settings
        .tenant_interface
        .replace("{tenant}", &mobile_router.tenant);
    interface.truncate(15);
    Ok(Instance {
        name: mobile_router.tenant.clone(),
        registration: InstanceConfig {
            home_address: mobile_router.home_address.parse().context("home_address")?,
            home_agent: home_agent.address.parse().context("home agent address")?,
            prefixes,
            lifetime: settings.lifetime,
            sa,
            nai: Some(format!("{}@nemo", mobile_router.tenant)),
        },
        tenant_interface: interface,
        last_sequence: update
            .last_sequence
            .and_then(|s| u16::try_from(s).ok())
            .map(nemo::wire::SequenceNumber),
        table,
        delivery: match pb::Delivery::try_from(update.delivery) {
            Ok(pb::Delivery::OnAnnouncement) => nemo_dataplane::Traffic::Hold,
            // At once, or a value this version does not know: passing is
            // what every earlier version did.
            _ => nemo_dataplane::Traffic::Pass,
        },
    })
}

/// Follows the controller until the daemon goes away; reconnects with
/// back-off, resuming from the last revision seen.
/// `placed` gets the tenants placed here once the controller's snapshot is
/// in, then after each change (for [`crate::arrivals`]).
pub async fn follow(
    settings: ControllerSettings,
    commands: mpsc::Sender<InstanceCommand>,
    placed: tokio::sync::watch::Sender<Option<PlacedHere>>,
) {
    let mut revision = 0;
    let mut tables: BTreeMap<String, u32> = BTreeMap::new();
    let mut backoff = nemo_daemon::Backoff::default();
    loop {
        match watch(&settings, &commands, &mut revision, &mut tables, &placed).await {
            Ok(Watched::StartOver) => {
                revision = 0;
                continue;
            }
            Err(error) => {
                backoff
                    .wait(
                        &error,
                        settings.link.endpoint(),
                        "keeping the current instances",
                    )
                    .await;
            }
        }
    }
}

async fn watch(
    settings: &ControllerSettings,
    commands: &mpsc::Sender<InstanceCommand>,
    revision: &mut u64,
    tables: &mut BTreeMap<String, u32>,
    placed: &tokio::sync::watch::Sender<Option<PlacedHere>>,
) -> anyhow::Result<Watched> {
    // Registered with a request id, sent again (to the next replica) when
    // unanswered: made once (registering again is harmless too).
    let mut connected = None;
    let registration = pb::RegisterHypervisorRequest {
        name: settings.hypervisor.clone(),
    };
    settings
        .link
        .call_once(
            &mut connected,
            &nemo_daemon::fresh_request_id("nemo-mr"),
            registration,
            |mut client, request| async move { client.register_hypervisor(request).await },
        )
        .await?;
    let mut client = match connected {
        Some(client) => client,
        None => settings.link.connect().await?,
    };
    let mut stream = match client
        .watch_placements(settings.link.request(pb::WatchPlacementsRequest {
            hypervisor: settings.hypervisor.clone(),
            from_revision: *revision,
        })?)
        .await
    {
        Ok(stream) => stream.into_inner(),
        Err(status) if status.code() == tonic::Code::OutOfRange => {
            return Ok(start_over(*revision, &status));
        }
        Err(status) => return Err(status.into()),
    };
    tracing::info!(hypervisor = %settings.hypervisor, from_revision = *revision, "watching placements");
    // A watch from 0 starts with every tenant placed here: an instance
    // running for a tenant the snapshot does not name goes once it ended.
    let mut unconfirmed: Option<BTreeSet<String>> =
        (*revision == 0).then(|| tables.keys().cloned().collect());
    loop {
        let update = match stream.message().await {
            Ok(Some(update)) => update,
            Ok(None) => break,
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                return Ok(start_over(*revision, &status));
            }
            Err(status) => return Err(status.into()),
        };
        if update.snapshot_end {
            for tenant in unconfirmed.take().unwrap_or_default() {
                tracing::info!(%tenant, "no longer placed here (not in the controller's state)");
                tables.remove(&tenant);
                // Not deregistered: it may have moved to another
                // hypervisor, whose registration must stand.
                commands
                    .send(InstanceCommand::Remove {
                        name: tenant,
                        deregister: false,
                    })
                    .await?;
            }
            *revision = (*revision).max(update.revision);
            publish(placed, tables, &client);
            continue;
        }
        if let Some(unconfirmed) = unconfirmed.as_mut() {
            unconfirmed.remove(&update.tenant);
        } else {
            *revision = (*revision).max(update.revision);
        }
        let command = match (&update.mobile_router, &update.home_agent) {
            (Some(mobile_router), Some(home_agent)) => {
                let next_table = (settings.table_base..)
                    .find(|t| !tables.values().any(|used| used == t))
                    .unwrap_or(settings.table_base);
                let table = *tables.entry(update.tenant.clone()).or_insert(next_table);
                match instance(settings, table, &update, mobile_router, home_agent) {
                    Ok(instance) => InstanceCommand::Upsert(instance),
                    Err(error) => {
                        tracing::error!(tenant = %update.tenant, %error, "unusable placement; skipped");
                        continue;
                    }
                }
            }
            _ => {
                tables.remove(&update.tenant);
                InstanceCommand::Remove {
                    name: update.tenant.clone(),
                    deregister: !update.moved_away,
                }
            }
        };
        commands.send(command).await?;
        if unconfirmed.is_none() {
            publish(placed, tables, &client);
        }
    }
    anyhow::bail!("the controller ended the watch")
}

/// Tells [`crate::arrivals`] which tenants are placed here now, and the
/// watch's client to report on.
fn publish(
    placed: &tokio::sync::watch::Sender<Option<PlacedHere>>,
    tables: &BTreeMap<String, u32>,
    client: &nemo_proto::v1::controller_client::ControllerClient<tonic::transport::Channel>,
) {
    placed.send_replace(Some(PlacedHere {
        tenants: tables.keys().cloned().collect(),
        client: client.clone(),
    }));
}

/// Our revision's successors were trimmed from the controller's history:
/// start over from its current state, at once.
fn start_over(revision: u64, status: &tonic::Status) -> Watched {
    tracing::warn!(
        from_revision = revision,
        reason = status.message(),
        "the controller's history moved past us; taking its whole state again"
    );
    Watched::StartOver
}
