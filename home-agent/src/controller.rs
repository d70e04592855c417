//! Authorizations from the controller: the home agent watches its
//! mobile routers' identities (`WatchAuthorizations`), applies each change,
//! and keeps the latest state on disk so that it keeps working, and starts,
//! while the controller is down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nemo::auth::{Algorithm, SecurityAssociation};
use nemo::ha::Authorization;
use nemo_daemon::Watched;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::driver::CoreEvent;

/// Where the controller is and who this home agent is to it.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// The controller: endpoint, CA, token.
    pub link: nemo_daemon::ControllerLink,
    /// This home agent's name at the controller.
    pub home_agent: String,
    /// The on-disk copy of the authorizations.
    pub cache: PathBuf,
}

/// One authorization as cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cached {
    home_address: Ipv6Addr,
    spi: u32,
    algorithm: String,
    key: String,
    prefixes: Vec<ipnet::Ipv6Net>,
}

/// The cache file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Cache {
    revision: u64,
    entries: BTreeMap<Ipv6Addr, Cached>,
}

fn authorization(entry: &Cached) -> anyhow::Result<Authorization> {
    let algorithm: Algorithm = entry.algorithm.parse()?;
    let key = nemo_daemon::parse_hex_key(&entry.key).map_err(anyhow::Error::msg)?;
    Ok(Authorization {
        home_address: entry.home_address,
        security_associations: vec![SecurityAssociation::new(entry.spi, algorithm, key)?],
        mobile_router: true,
        prefixes: entry.prefixes.clone(),
    })
}

fn cached(mobile_router: &pb::MobileRouter) -> anyhow::Result<Cached> {
    let entry = Cached {
        home_address: mobile_router.home_address.parse().context("home_address")?,
        spi: mobile_router.spi,
        algorithm: mobile_router.algorithm.clone(),
        key: mobile_router.key.clone(),
        prefixes: mobile_router
            .prefixes
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()
            .context("prefixes")?,
    };
    authorization(&entry)?;
    Ok(entry)
}

fn load(path: &Path) -> anyhow::Result<Cache> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("{}: corrupt", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Cache::default()),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the cache so that a crash leaves the old or the new file, never a
/// half-written one: a temporary file, fsync, rename, fsync of the folder.
fn save(path: &Path, cache: &Cache) -> anyhow::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&serde_json::to_vec_pretty(cache)?)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(folder) = path.parent() {
        std::fs::File::open(folder)?.sync_all()?;
    }
    Ok(())
}

/// The cached authorizations, to start from.
pub fn cached_authorizations(path: &Path) -> anyhow::Result<Vec<Authorization>> {
    let cache = load(path)?;
    cache.entries.values().map(authorization).collect()
}

/// Follows the controller until the task is dropped: applies each update
/// (through the core) and saves it; reconnects with back-off when the
/// controller is away.
pub async fn follow(settings: ControllerSettings, core: mpsc::Sender<CoreEvent>) {
    let mut cache = match load(&settings.cache) {
        Ok(cache) => cache,
        Err(error) => {
            tracing::error!(%error, "authorization cache unreadable; starting over from the controller");
            Cache::default()
        }
    };
    let mut backoff = nemo_daemon::Backoff::default();
    loop {
        match watch(&settings, &core, &mut cache).await {
            Ok(Watched::StartOver) => continue,
            Err(error) => {
                backoff
                    .wait(
                        &error,
                        settings.link.endpoint(),
                        "working from the cached authorizations",
                    )
                    .await;
            }
        }
    }
}

async fn watch(
    settings: &ControllerSettings,
    core: &mpsc::Sender<CoreEvent>,
    cache: &mut Cache,
) -> anyhow::Result<Watched> {
    let mut client = settings.link.connect().await?;
    let request = settings.link.request(pb::WatchAuthorizationsRequest {
        home_agent: settings.home_agent.clone(),
        from_revision: cache.revision,
    })?;
    let mut stream = match client.watch_authorizations(request).await {
        Ok(stream) => stream.into_inner(),
        Err(status) if status.code() == tonic::Code::OutOfRange => {
            return start_over(settings, cache, &status);
        }
        Err(status) => return Err(status.into()),
    };
    tracing::info!(from_revision = cache.revision, "watching authorizations");
    // A watch from 0 starts with the whole current state: what the cache
    // holds and the snapshot does not name must go, once it has ended (not
    // before: a mobile router authorized all along stays so meanwhile).
    let mut unconfirmed: Option<BTreeSet<Ipv6Addr>> =
        (cache.revision == 0).then(|| cache.entries.keys().copied().collect());
    loop {
        let update = match stream.message().await {
            Ok(Some(update)) => update,
            Ok(None) => break,
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                return start_over(settings, cache, &status);
            }
            Err(status) => return Err(status.into()),
        };
        if update.snapshot_end {
            for home_address in unconfirmed.take().unwrap_or_default() {
                tracing::info!(%home_address, "no longer authorized (not in the controller's state)");
                core.send(CoreEvent::Authorize {
                    home_address,
                    authorization: None,
                })
                .await?;
                cache.entries.remove(&home_address);
            }
            cache.revision = cache.revision.max(update.revision);
            save(&settings.cache, cache)?;
            continue;
        }
        let home_address: Ipv6Addr = match update.home_address.parse() {
            Ok(address) => address,
            Err(_) => {
                tracing::error!(home_address = %update.home_address, "controller sent an unusable home address");
                continue;
            }
        };
        let entry = match update.mobile_router.as_ref().map(cached) {
            Some(Ok(entry)) => Some(entry),
            Some(Err(error)) => {
                tracing::error!(%home_address, %error, "controller sent an unusable authorization; skipped");
                continue;
            }
            None => None,
        };
        if let Some(unconfirmed) = unconfirmed.as_mut() {
            unconfirmed.remove(&home_address);
        }
        let authorization = entry.as_ref().map(authorization).transpose()?;
        core.send(CoreEvent::Authorize {
            home_address,
            authorization,
        })
        .await?;
        match entry {
            Some(entry) => cache.entries.insert(home_address, entry),
            None => cache.entries.remove(&home_address),
        };
        if unconfirmed.is_none() {
            // Within a snapshot the revision stays 0 until its end: a
            // restart half way takes the whole state again.
            cache.revision = cache.revision.max(update.revision);
        }
        save(&settings.cache, cache)?;
    }
    anyhow::bail!("the controller ended the watch")
}

/// Our revision's successors were trimmed from the controller's history:
/// start over from its current state, at once.
fn start_over(
    settings: &ControllerSettings,
    cache: &mut Cache,
    status: &tonic::Status,
) -> anyhow::Result<Watched> {
    tracing::warn!(
        from_revision = cache.revision,
        reason = status.message(),
        "the controller's history moved past us; taking its whole state again"
    );
    cache.revision = 0;
    save(&settings.cache, cache)?;
    Ok(Watched::StartOver)
}

/// Reports every durable binding change to the controller, best effort:
/// a change that cannot be delivered is logged and dropped (the binding
/// itself is unaffected), and the connection is retried.
pub async fn report(
    settings: ControllerSettings,
    mut events: tokio::sync::broadcast::Receiver<crate::driver::BindingEvent>,
) {
    let mut client: Option<ControllerClient<tonic::transport::Channel>> = None;
    tracing::info!("reporting binding changes to the controller");
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "binding reports dropped: the controller link is too slow"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if client.is_none() {
            // The same channel as the watch: TLS with the configured CA.
            client = settings.link.connect().await.ok();
        }
        let Some(connected) = client.as_mut() else {
            tracing::warn!("controller unreachable; binding report dropped");
            continue;
        };
        let binding = &event.binding;
        let report = pb::ReportBindingRequest {
            home_agent: settings.home_agent.clone(),
            home_address: binding.home_address.to_string(),
            care_of_address: binding.care_of.to_string(),
            prefixes: binding.prefixes.iter().map(ToString::to_string).collect(),
            removed: event.change == crate::driver::BindingChange::Removed,
            reason: event.reason.to_owned(),
            sequence: u32::from(binding.sequence.0),
        };
        let Ok(request) = settings.link.request(report) else {
            tracing::error!("the controller token is not valid metadata; binding report dropped");
            continue;
        };
        match connected.report_binding(request).await {
            Ok(_) => tracing::debug!(home_address = %binding.home_address, "binding reported"),
            Err(status) => {
                tracing::warn!(%status, "binding report failed");
                client = None;
            }
        }
    }
}
