//! The API's streams: the event history, and each daemon's authorization
//! and placement updates, resumed where the client left off or refused when
//! the history no longer reaches back that far.

use std::pin::Pin;
use std::sync::Arc;

use nemo_proto::v1 as pb;
use tonic::Status;

use super::convert::{home_agent_proto, ipv4_mapping_proto, mobile_router_proto};
use crate::store;
use crate::store::{Store, StoreChange};

/// What a home agent must hear after `change`: the current authorization
/// of each home address the change touched.
pub(super) async fn authorization_updates(
    store: &Store,
    home_agent: &str,
    revision: u64,
    change: &StoreChange,
) -> Vec<pb::AuthorizationUpdate> {
    let (tenant, touched) = match change {
        StoreChange::MobileRouterCreated(m)
        | StoreChange::KeyRotated(m)
        | StoreChange::MobileRouterDeleted(m) => (
            m.tenant.as_str(),
            (m.home_agent == home_agent).then_some(m.home_address),
        ),
        StoreChange::PrefixAllocated(_)
        | StoreChange::PrefixReleased { .. }
        | StoreChange::Ipv4Mapped(_)
        | StoreChange::Ipv4Released { .. } => match change.tenant() {
            Some(tenant) => (tenant, None),
            None => return Vec::new(),
        },
        _ => return Vec::new(),
    };
    let view = store.tenant_view(tenant).await;
    match view.mobile_router {
        Some(m) if m.home_agent == home_agent => vec![pb::AuthorizationUpdate {
            revision,
            home_address: m.home_address.to_string(),
            mobile_router: Some(mobile_router_proto(&m, &view.prefixes)),
            snapshot_end: false,
            ipv4_mappings: view.ipv4_mappings.iter().map(ipv4_mapping_proto).collect(),
        }],
        _ => touched
            .map(|address| pb::AuthorizationUpdate {
                revision,
                home_address: address.to_string(),
                mobile_router: None,
                snapshot_end: false,
                ipv4_mappings: Vec::new(),
            })
            .into_iter()
            .collect(),
    }
}

/// What a hypervisor must hear about `tenant` now.
pub(super) async fn placement_update(
    store: &Store,
    hypervisor: &str,
    revision: u64,
    tenant: &str,
) -> pb::PlacementUpdate {
    let view = store.tenant_view(tenant).await;
    let here = view
        .placement
        .as_ref()
        .is_some_and(|p| p.hypervisor == hypervisor);
    match (here, view.mobile_router, view.home_agent) {
        (true, Some(m), Some(h)) => pb::PlacementUpdate {
            revision,
            tenant: tenant.to_owned(),
            mobile_router: Some(mobile_router_proto(&m, &view.prefixes)),
            home_agent: Some(home_agent_proto(&h)),
            moved_away: false,
            last_sequence: view.last_sequence.map(u32::from),
            snapshot_end: false,
            delivery: view
                .placement
                .as_ref()
                .map_or(pb::Delivery::Now, |p| {
                    super::convert::delivery_proto(p.delivery)
                })
                .into(),
        },
        _ => pb::PlacementUpdate {
            revision,
            tenant: tenant.to_owned(),
            mobile_router: None,
            home_agent: None,
            moved_away: !here && view.placement.is_some(),
            last_sequence: None,
            snapshot_end: false,
            delivery: pb::Delivery::Now.into(),
        },
    }
}

pub(super) type Updates<U> = Pin<Box<dyn std::future::Future<Output = Vec<U>> + Send>>;

/// A watch resumes after `from_revision` only if the history, read
/// through `through`, still holds the change right after it: the upkeep
/// trims the oldest changes, and a watcher resuming before them would miss
/// them.
pub(super) fn resumable(
    history: &[store::Event],
    from_revision: u64,
    through: u64,
) -> Result<(), Status> {
    let starts = match history.first() {
        Some(first) => first.revision,
        // Nothing read where changes were due: all trimmed (this replica
        // lags the one that trimmed).
        None if from_revision < through => through + 1,
        None => return Ok(()),
    };
    if from_revision > 0 && starts > from_revision + 1 {
        return Err(Status::out_of_range(format!(
            "from_revision: the history now starts at revision {starts}, the changes after \
             {from_revision} were trimmed; watch again from 0 (the current state first)"
        )));
    }
    Ok(())
}

/// A live change must follow the last one told: a gap means this replica
/// loaded anew past changes it could no longer tell.
pub(super) fn missed(last: u64, revision: u64) -> Status {
    Status::out_of_range(format!(
        "changes after revision {last} up to {revision} could not be told (the history was \
         trimmed meanwhile); watch again from {last}"
    ))
}

/// Feeds a daemon's watch: the current state (`snapshot`) for a fresh
/// watcher, or the history after its revision mapped by `map`, then every
/// later change mapped the same way. Each update says the current state of
/// what the change touched, so a watcher that resumes converges.
pub(super) async fn follow<U: Send + 'static>(
    history: Vec<store::Event>,
    mut live: tokio::sync::broadcast::Receiver<store::Event>,
    from_revision: u64,
    tx: tokio::sync::mpsc::Sender<Result<U, Status>>,
    map: impl Fn(Arc<Store>, u64, StoreChange) -> Updates<U> + Send + 'static,
    store: Arc<Store>,
    snapshot: impl Fn(Arc<Store>, u64) -> Updates<U> + Send + 'static,
) {
    let mut last = from_revision;
    let mut updates = Vec::new();
    if from_revision == 0 {
        last = history.last().map_or(0, |e| e.revision);
        updates.extend(snapshot(store.clone(), last).await);
    } else {
        for e in history {
            last = e.revision;
            updates.extend(map(store.clone(), e.revision, e.change).await);
        }
    }
    for update in updates {
        if tx.send(Ok(update)).await.is_err() {
            return;
        }
    }
    loop {
        match live.recv().await {
            Ok(e) if e.revision > last + 1 => {
                let _ = tx.send(Err(missed(last, e.revision))).await;
                return;
            }
            Ok(e) if e.revision > last => {
                last = e.revision;
                for update in map(store.clone(), e.revision, e.change).await {
                    if tx.send(Ok(update)).await.is_err() {
                        return;
                    }
                }
            }
            Ok(_) => {}
            Err(_) => {
                let _ = tx
                    .send(Err(Status::resource_exhausted(
                        "watcher fell behind; watch again",
                    )))
                    .await;
                return;
            }
        }
    }
}

/// The tenants a change may concern for a hypervisor.
pub(super) async fn placement_updates(
    store: &Store,
    hypervisor: &str,
    revision: u64,
    change: &StoreChange,
) -> Vec<pb::PlacementUpdate> {
    let tenants: Vec<String> = match change {
        StoreChange::TenantPlaced { placement, from } => {
            if placement.hypervisor == hypervisor || from.as_deref() == Some(hypervisor) {
                vec![placement.tenant.clone()]
            } else {
                Vec::new()
            }
        }
        StoreChange::TenantUnplaced { placement, .. } if placement.hypervisor == hypervisor => {
            vec![placement.tenant.clone()]
        }
        StoreChange::HomeAgentRegistered(h) => {
            store.tenants_of(Some(&h.name), Some(hypervisor)).await
        }
        other => match other.tenant() {
            Some(tenant)
                if store
                    .tenants_of(None, Some(hypervisor))
                    .await
                    .iter()
                    .any(|t| t == tenant) =>
            {
                vec![tenant.to_owned()]
            }
            _ => Vec::new(),
        },
    };
    let mut updates = Vec::new();
    for tenant in tenants {
        updates.push(placement_update(store, hypervisor, revision, &tenant).await);
    }
    updates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(revisions: std::ops::RangeInclusive<u64>) -> Vec<store::Event> {
        revisions
            .map(|revision| store::Event {
                request: None,
                revision,
                at_unix_ms: 0,
                change: StoreChange::TenantCreated(store::Tenant {
                    name: format!("t{revision}"),
                    created_at_unix_ms: 0,
                }),
            })
            .collect()
    }

    #[test]
    fn a_watch_resumes_only_where_the_history_still_reaches() {
        // Kept from 6: resuming after 5 is whole, after 3 misses 4 and 5.
        assert!(resumable(&history(6..=10), 5, 10).is_ok());
        let refused = resumable(&history(6..=10), 3, 10).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::OutOfRange);
        assert!(
            refused.message().contains("starts at revision 6"),
            "{refused:?}"
        );
        // Up to date, or from the oldest kept (0): nothing to miss.
        assert!(resumable(&[], 10, 10).is_ok());
        assert!(resumable(&history(6..=10), 0, 10).is_ok());
        // Changes due through 10 and none left: trimmed past them all.
        let refused = resumable(&[], 5, 10).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::OutOfRange);
    }
}
