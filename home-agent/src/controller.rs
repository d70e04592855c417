//! Authorizations from the controller: the home agent watches its
//! mobile routers' identities (`WatchAuthorizations`), applies each change,
//! and keeps them on disk ([`AuthorizationCache`]) so that it keeps
//! working, and starts, while the controller is down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nemo::auth::{Algorithm, SecurityAssociation};
use nemo::ha::Authorization;
use nemo_daemon::Watched;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::authorization_cache::{AuthorizationCache, CacheChange};
use crate::messages::CoreEvent;
use crate::translator::mappings_of;
use nemo_dataplane::bpf::translator::Mapping;

/// Where the controller is and who this home agent is to it.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// The controller: endpoint, CA, token.
    pub link: nemo_daemon::ControllerLink,
    /// This home agent's name at the controller.
    pub home_agent: String,
    /// The on-disk copy of the authorizations.
    pub cache: AuthorizationCache,
    /// Where each home address's IPv4 mappings go (`[translator]`).
    pub translator: Option<mpsc::Sender<(Ipv6Addr, Vec<Mapping>)>>,
}

/// Changes written to the cache in one transaction at most; a snapshot of
/// a million entries is written in bursts of this many.
const MOST_CHANGES_A_WRITE: usize = 4096;

fn security_association(
    spi: u32,
    algorithm: &str,
    key: &str,
) -> anyhow::Result<SecurityAssociation> {
    let algorithm: Algorithm = algorithm.parse()?;
    let key = nemo_daemon::parse_hex_key(key).map_err(anyhow::Error::msg)?;
    Ok(SecurityAssociation::new(spi, algorithm, key)?)
}

/// A mobile router's authorization as the controller sends it, checked.
fn authorization(
    home_address: Ipv6Addr,
    mobile_router: &pb::MobileRouter,
) -> anyhow::Result<Authorization> {
    Ok(Authorization {
        home_address,
        security_associations: vec![security_association(
            mobile_router.spi,
            &mobile_router.algorithm,
            &mobile_router.key,
        )?],
        mobile_router: true,
        prefixes: mobile_router
            .prefixes
            .iter()
            .map(|p| p.parse())
            .collect::<Result<_, _>>()
            .context("prefixes")?,
    })
}

/// One authorization in the JSON file of earlier versions.
#[derive(Debug, Deserialize)]
struct LegacyEntry {
    home_address: Ipv6Addr,
    spi: u32,
    algorithm: String,
    key: String,
    prefixes: Vec<ipnet::Ipv6Net>,
}

/// The JSON file of earlier versions.
#[derive(Debug, Deserialize)]
struct LegacyFile {
    revision: u64,
    entries: BTreeMap<Ipv6Addr, LegacyEntry>,
}

/// Opens the cache at `path` (its extension made `.redb`); the JSON file
/// of an earlier version at the same path with `.json` is taken in once,
/// then renamed `.json.imported`.
pub async fn open_cache(path: &Path) -> anyhow::Result<AuthorizationCache> {
    let cache = AuthorizationCache::open(&path.with_extension("redb"))?;
    let legacy = path.with_extension("json");
    let bytes = match std::fs::read(&legacy) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(cache),
        Err(error) => return Err(error).with_context(|| format!("reading {}", legacy.display())),
    };
    let file: LegacyFile =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: corrupt", legacy.display()))?;
    let changes = file
        .entries
        .values()
        .map(|e| {
            Ok(CacheChange::Put(Authorization {
                home_address: e.home_address,
                security_associations: vec![security_association(e.spi, &e.algorithm, &e.key)?],
                mobile_router: true,
                prefixes: e.prefixes.clone().into(),
            }))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .with_context(|| format!("{}", legacy.display()))?;
    cache.write(&changes, Some(file.revision)).await?;
    let imported = PathBuf::from(format!("{}.imported", legacy.display()));
    std::fs::rename(&legacy, &imported)
        .with_context(|| format!("renaming {}", legacy.display()))?;
    tracing::info!(
        entries = changes.len(),
        revision = file.revision,
        from = %imported.display(),
        "authorization cache taken in from an earlier version's file"
    );
    Ok(cache)
}

/// Follows the controller until the task is dropped: applies each update
/// (through the core) and saves it; reconnects with back-off when the
/// controller is away.
pub async fn follow(settings: ControllerSettings, core: mpsc::Sender<CoreEvent>) {
    let mut backoff = nemo_daemon::Backoff::default();
    loop {
        match watch(&settings, &core).await {
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

/// Changes applied to the core, not yet in the cache.
#[derive(Default)]
struct Unwritten {
    changes: Vec<CacheChange>,
    /// The revision the cache is complete through once they are written.
    revision: Option<u64>,
}

impl Unwritten {
    async fn write(&mut self, cache: &AuthorizationCache) -> anyhow::Result<()> {
        cache.write(&self.changes, self.revision.take()).await?;
        self.changes.clear();
        Ok(())
    }
}

async fn watch(
    settings: &ControllerSettings,
    core: &mpsc::Sender<CoreEvent>,
) -> anyhow::Result<Watched> {
    let cache = &settings.cache;
    let from_revision = cache.revision()?;
    let mut client = settings.link.connect().await?;
    let request = settings.link.request(pb::WatchAuthorizationsRequest {
        home_agent: settings.home_agent.clone(),
        from_revision,
    })?;
    let mut stream = match client.watch_authorizations(request).await {
        Ok(stream) => stream.into_inner(),
        Err(status) if status.code() == tonic::Code::OutOfRange => {
            return start_over(cache, from_revision, &status).await;
        }
        Err(status) => return Err(status.into()),
    };
    tracing::info!(from_revision, "watching authorizations");
    // A watch from 0 starts with the whole current state: what the cache
    // holds and the snapshot does not name must go, once it has ended (not
    // before: a mobile router authorized all along stays so meanwhile).
    let mut unconfirmed: Option<BTreeSet<Ipv6Addr>> = if from_revision == 0 {
        Some(cache.home_addresses()?)
    } else {
        None
    };
    let mut unwritten = Unwritten::default();
    let (watched_at, mut in_snapshot) = (std::time::Instant::now(), 0u64);
    loop {
        // Updates already received are written together: one transaction
        // (one fdatasync) for a burst, not one each.
        let received = tokio::select! {
            biased;
            received = stream.message() => received,
            () = std::future::ready(()), if !unwritten.changes.is_empty() || unwritten.revision.is_some() => {
                unwritten.write(cache).await?;
                continue;
            }
        };
        let update = match received {
            Ok(Some(update)) => update,
            Ok(None) => break,
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                unwritten.write(cache).await?;
                return start_over(cache, from_revision, &status).await;
            }
            Err(status) => {
                unwritten.write(cache).await?;
                return Err(status.into());
            }
        };
        if update.snapshot_end {
            let gone = unconfirmed.take().unwrap_or_default();
            let removed = gone.len();
            for home_address in gone {
                tracing::info!(%home_address, "no longer authorized (not in the controller's state)");
                core.send(CoreEvent::Authorize {
                    home_address,
                    authorization: None,
                })
                .await?;
                if let Some(translator) = &settings.translator {
                    translator.send((home_address, Vec::new())).await?;
                }
                unwritten.changes.push(CacheChange::Remove(home_address));
                if unwritten.changes.len() >= MOST_CHANGES_A_WRITE {
                    unwritten.write(cache).await?;
                }
            }
            unwritten.revision = Some(update.revision);
            unwritten.write(cache).await?;
            tracing::info!(
                authorizations = in_snapshot,
                removed,
                revision = update.revision,
                took_ms = watched_at.elapsed().as_millis() as u64,
                "the controller's whole state applied and cached"
            );
            continue;
        }
        let home_address: Ipv6Addr = match update.home_address.parse() {
            Ok(address) => address,
            Err(_) => {
                tracing::error!(home_address = %update.home_address, "controller sent an unusable home address");
                continue;
            }
        };
        let authorization = match update
            .mobile_router
            .as_ref()
            .map(|m| authorization(home_address, m))
        {
            Some(Ok(entry)) => Some(entry),
            Some(Err(error)) => {
                tracing::error!(%home_address, error = format!("{error:#}"), "controller sent an unusable authorization; skipped");
                continue;
            }
            None => None,
        };
        // The tenant's IPv4 addresses: one that does not parse is skipped,
        // the rest translated.
        let mappings = match mappings_of(&update.ipv4_mappings) {
            Ok(mappings) => mappings,
            Err(error) => {
                tracing::error!(%home_address, error = format!("{error:#}"), "controller sent an unusable IPv4 mapping; the tenant's IPv4 addresses are not translated");
                Vec::new()
            }
        };
        if let Some(unconfirmed) = unconfirmed.as_mut() {
            unconfirmed.remove(&home_address);
            in_snapshot += 1;
        }
        match &authorization {
            Some(entry) => {
                unwritten.changes.push(CacheChange::Put(entry.clone()));
                unwritten
                    .changes
                    .push(CacheChange::Mappings(home_address, mappings.clone()));
            }
            None => unwritten.changes.push(CacheChange::Remove(home_address)),
        }
        if let Some(translator) = &settings.translator {
            let mappings = if authorization.is_some() {
                mappings
            } else {
                Vec::new()
            };
            translator.send((home_address, mappings)).await?;
        }
        core.send(CoreEvent::Authorize {
            home_address,
            authorization,
        })
        .await?;
        if unconfirmed.is_none() {
            // Within a snapshot the revision stays 0 until its end: a
            // restart half way takes the whole state again.
            unwritten.revision = Some(update.revision);
        }
        if unwritten.changes.len() >= MOST_CHANGES_A_WRITE {
            unwritten.write(cache).await?;
        }
    }
    unwritten.write(cache).await?;
    anyhow::bail!("the controller ended the watch")
}

/// Our revision's successors were trimmed from the controller's history:
/// start over from its current state, at once.
async fn start_over(
    cache: &AuthorizationCache,
    from_revision: u64,
    status: &tonic::Status,
) -> anyhow::Result<Watched> {
    tracing::warn!(
        from_revision,
        reason = status.message(),
        "the controller's history moved past us; taking its whole state again"
    );
    cache.write(&[], Some(0)).await?;
    Ok(Watched::StartOver)
}

/// Reports every durable binding change to the controller, best effort:
/// each report is sent with its own request id, again to the next replica
/// when unanswered ([`ControllerLink::call_once`](nemo_daemon::ControllerLink::call_once)),
/// so that it is recorded once; one that cannot be delivered is logged and
/// dropped (the binding itself is unaffected).
pub async fn report(
    settings: ControllerSettings,
    mut events: tokio::sync::broadcast::Receiver<crate::messages::BindingEvent>,
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
        let binding = &event.binding;
        let report = pb::ReportBindingRequest {
            home_agent: settings.home_agent.clone(),
            home_address: binding.home_address.to_string(),
            care_of_address: binding.care_of.address().to_string(),
            prefixes: binding.prefixes.iter().map(ToString::to_string).collect(),
            removed: event.change == crate::messages::BindingChange::Removed,
            reason: event.reason.to_owned(),
            sequence: u32::from(binding.sequence.0),
            outer_address: match binding.care_of {
                nemo::ha::CareOf::Udp { outer, .. } => outer.to_string(),
                nemo::ha::CareOf::Ipv6(_) | nemo::ha::CareOf::Ipv4(_) => String::new(),
            },
        };
        // One id per report: sent again (to the next replica) when its
        // outcome is unknown, it is recorded once.
        let id = nemo_daemon::fresh_request_id("nemo-ha");
        let reported = settings
            .link
            .call_once(&mut client, &id, report, |mut client, request| async move {
                client.report_binding(request).await
            })
            .await;
        match reported {
            Ok(_) => {
                tracing::debug!(home_address = %binding.home_address, request_id = id, "binding reported")
            }
            Err(error) => {
                tracing::warn!(%error, home_address = %binding.home_address, request_id = id, "binding report dropped");
                client = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;

    #[tokio::test]
    async fn an_earlier_versions_json_file_is_taken_in_once() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = serde_json::json!({"revision": 42, "entries": {"2001:db8:1::100": {
            "home_address": "2001:db8:1::100", "spi": 4096, "algorithm": "hmac-sha256",
            "key": "6d6f62696c652d726f757465722d746573742d6b65792d33322d6f6374657473",
            "prefixes": ["2001:db8:100::/56"]}}});
        std::fs::write(dir.path().join("authorizations.json"), legacy.to_string()).unwrap();
        let cache = open_cache(&dir.path().join("authorizations.redb"))
            .await
            .unwrap();
        assert_eq!(cache.revision().unwrap(), 42);
        let entries = cache.load().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].security_associations[0].spi(), 4096);
        assert_eq!(entries[0].prefixes[0].to_string(), "2001:db8:100::/56");
        assert!(!dir.path().join("authorizations.json").exists());
        assert!(dir.path().join("authorizations.json.imported").exists());
        drop(cache);
        // Opened again: the records stay, nothing is taken in twice.
        let again = open_cache(&dir.path().join("authorizations.redb"))
            .await
            .unwrap();
        assert_eq!(again.load().unwrap().len(), 1);
        // A damaged file is named, not skipped.
        std::fs::write(dir.path().join("authorizations.json"), "{").unwrap();
        drop(again);
        let error = open_cache(&dir.path().join("authorizations.redb"))
            .await
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("authorizations.json"),
            "{error:#}"
        );
    }
}
