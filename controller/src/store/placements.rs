//! Where tenants run, and the per-tenant view the watch streams send.

use std::time::SystemTime;

use ipnet::Ipv6Net;
use nemo_daemon::clock::unix_ms;

use super::model::OrNotFound;
use super::{
    check_reason, encode, Delivery, HomeAgentRecord, MobileRouter, Placement, Store, StoreChange,
    StoreError,
};

/// A tenant as the watch streams see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantView {
    /// Its mobile router, key included.
    pub mobile_router: Option<MobileRouter>,
    /// Its home agent.
    pub home_agent: Option<HomeAgentRecord>,
    /// Its prefixes.
    pub prefixes: Vec<Ipv6Net>,
    /// Its IPv4 mappings, each with its translation prefix.
    pub ipv4_mappings: Vec<(super::Ipv4Mapping, Ipv6Net)>,
    /// Its placement.
    pub placement: Option<Placement>,
    /// The last sequence number its home agent reported accepting.
    pub last_sequence: Option<u16>,
}

/// What a placement may start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placing {
    /// An orchestrator's order: from anywhere, or nowhere; the traffic
    /// delivered as it says.
    Ordered(Delivery),
    /// A tenant's VM announced itself on the hypervisor: a placed tenant
    /// moves there (a first placement is the orchestrator's), or its
    /// placement there on the announcement is fulfilled. Not while it
    /// moves to another hypervisor on the announcement there: its VM
    /// still runs where it is seen, and the placement stays (the caller
    /// sees it elsewhere, awaiting the announcement there: again later).
    Announced,
    /// QEMU attached the tenant's port on the hypervisor (a live
    /// migration to it started): placed there on the VM's announcement,
    /// remembering where it came from.
    Incoming,
    /// The migration to the hypervisor ended before its VM announced
    /// itself there: back where it came from, at once.
    Abandoned,
}

/// What a placement call does to the tenant's current placement.
enum Outcome {
    /// Nothing: the answer is the current placement.
    Stays(Placement),
    /// The tenant is placed (on `hypervisor`, delivered as said, coming
    /// from where said).
    Moves {
        hypervisor: String,
        delivery: Delivery,
        came_from: Option<String>,
    },
}

/// What `placing` on `hypervisor` does to a tenant placed as `current`
/// (issue 29's rules for arrivals; an order always moves).
fn outcome(
    tenant: &str,
    hypervisor: &str,
    current: Option<&Placement>,
    placing: Placing,
) -> Result<Outcome, StoreError> {
    let moves = |delivery, came_from| Outcome::Moves {
        hypervisor: hypervisor.to_owned(),
        delivery,
        came_from,
    };
    let Some(current) = current else {
        return match placing {
            Placing::Ordered(delivery) => Ok(moves(delivery, None)),
            _ => Err(StoreError::Precondition(format!(
                "tenant: {tenant:?} is placed nowhere; an arrival moves a placed tenant \
                 (place it first)"
            ))),
        };
    };
    let here = current.hypervisor == hypervisor;
    // Moving to `current.hypervisor`, awaiting the VM's announcement there.
    let awaited = current.delivery == Delivery::OnAnnouncement;
    let came_from = (!here).then(|| current.hypervisor.clone());
    Ok(match placing {
        // Already there: nothing changes, and the caller hears where it
        // is (an orchestrator that retries must not see it fail).
        Placing::Ordered(_) if here => Outcome::Stays(current.clone()),
        Placing::Ordered(delivery) => moves(
            delivery,
            (delivery == Delivery::OnAnnouncement)
                .then_some(came_from)
                .flatten(),
        ),
        // The awaited announcement: from now on its traffic passes there,
        // and an announcement elsewhere is a move again.
        Placing::Announced if here && awaited => moves(Delivery::Now, None),
        Placing::Announced if here => Outcome::Stays(current.clone()),
        Placing::Announced if awaited => Outcome::Stays(current.clone()),
        Placing::Announced => moves(Delivery::Now, None),
        Placing::Incoming if here => Outcome::Stays(current.clone()),
        Placing::Incoming if awaited => {
            return Err(StoreError::Precondition(format!(
            "tenant: {tenant:?} is moving to {:?} already, awaiting its VM's announcement there",
            current.hypervisor
        )))
        }
        Placing::Incoming => moves(Delivery::OnAnnouncement, came_from),
        Placing::Abandoned => match (&current.came_from, here && awaited) {
            (Some(source), true) => Outcome::Moves {
                hypervisor: source.clone(),
                delivery: Delivery::Now,
                came_from: None,
            },
            _ => {
                return Err(StoreError::Precondition(format!(
                    "tenant: {tenant:?} is not awaiting its VM's announcement on {hypervisor:?} \
                     after a move from another hypervisor; nothing to go back from"
                )))
            }
        },
    })
}

impl Store {
    /// Places a tenant on a hypervisor (moving it if it was elsewhere).
    pub async fn place(
        &self,
        tenant: &str,
        hypervisor: &str,
        reason: &str,
        delivery: Delivery,
    ) -> Result<Placement, StoreError> {
        self.place_as(tenant, hypervisor, reason, Placing::Ordered(delivery))
            .await
    }

    /// Places a tenant as `placing` on `hypervisor` says (for
    /// [`Placing::Abandoned`], back where it came from).
    pub async fn place_as(
        &self,
        tenant: &str,
        hypervisor: &str,
        reason: &str,
        placing: Placing,
    ) -> Result<Placement, StoreError> {
        self.retrying(|| self.place_once(tenant, hypervisor, reason, placing))
            .await
    }

    async fn place_once(
        &self,
        tenant: &str,
        hypervisor: &str,
        reason: &str,
        placing: Placing,
    ) -> Result<Placement, StoreError> {
        check_reason("reason", reason)?;
        let state = self.state.lock().await;
        state.tenants.get(tenant).or_not_found("tenant", tenant)?;
        state
            .hypervisors
            .get(hypervisor)
            .or_not_found("hypervisor", hypervisor)?;
        let current = state.placements.get(tenant);
        let (hypervisor, delivery, came_from) = match outcome(tenant, hypervisor, current, placing)?
        {
            Outcome::Stays(placement) => return Ok(placement),
            Outcome::Moves {
                hypervisor,
                delivery,
                came_from,
            } => (hypervisor, delivery, came_from),
        };
        // Going back: the hypervisor it came from must still be one.
        state
            .hypervisors
            .get(&hypervisor)
            .or_not_found("hypervisor", &hypervisor)?;
        let from = current
            .map(|p| p.hypervisor.clone())
            .filter(|from| *from != hypervisor);
        let placement = Placement {
            tenant: tenant.to_owned(),
            hypervisor,
            since_unix_ms: unix_ms(SystemTime::now()),
            reason: reason.to_owned(),
            delivery,
            came_from,
        };
        let record = encode(&placement)?;
        self.change(
            state,
            StoreChange::TenantPlaced {
                placement: placement.clone(),
                from,
            },
            |t| {
                t.placements.insert(tenant.as_bytes(), record.clone());
                Ok(())
            },
            |state| {
                state
                    .placements
                    .insert(tenant.to_owned(), placement.clone());
            },
        )
        .await?;
        Ok(placement)
    }

    /// Takes a tenant off its hypervisor.
    pub async fn unplace(&self, tenant: &str, reason: &str) -> Result<(), StoreError> {
        self.retrying(|| self.unplace_once(tenant, reason)).await
    }

    async fn unplace_once(&self, tenant: &str, reason: &str) -> Result<(), StoreError> {
        check_reason("reason", reason)?;
        let state = self.state.lock().await;
        let placement = state
            .placements
            .get(tenant)
            .cloned()
            .or_not_found("placement of tenant", tenant)?;
        self.change(
            state,
            StoreChange::TenantUnplaced {
                placement,
                reason: reason.to_owned(),
            },
            |t| {
                t.placements.remove(tenant.as_bytes());
                Ok(())
            },
            |state| {
                state.placements.remove(tenant);
            },
        )
        .await?;
        Ok(())
    }

    /// Every placement.
    pub async fn placements(&self) -> Vec<Placement> {
        self.state
            .lock()
            .await
            .placements
            .values()
            .cloned()
            .collect()
    }

    /// The current view of one tenant for the watch streams: its mobile
    /// router (with key), its prefixes, its home agent and its placement.
    pub async fn tenant_view(&self, tenant: &str) -> TenantView {
        let state = self.state.lock().await;
        let mobile_router = state.mobile_routers.get(tenant).cloned();
        TenantView {
            home_agent: mobile_router
                .as_ref()
                .and_then(|m| state.home_agents.get(&m.home_agent).cloned()),
            prefixes: state.allocations.prefixes_of(tenant).collect(),
            ipv4_mappings: state
                .mappings_of(tenant)
                .map(|m| (m.clone(), state.translation_prefix_of(m)))
                .collect(),
            placement: state.placements.get(tenant).cloned(),
            last_sequence: mobile_router
                .as_ref()
                .and_then(|m| state.last_sequence.get(&m.home_address).copied()),
            mobile_router,
        }
    }

    /// Tenants whose mobile router registers with `home_agent`, and tenants
    /// placed on `hypervisor`, as of now.
    pub async fn tenants_of(
        &self,
        home_agent: Option<&str>,
        hypervisor: Option<&str>,
    ) -> Vec<String> {
        let state = self.state.lock().await;
        state
            .tenants
            .keys()
            .filter(|t| {
                home_agent.is_none_or(|h| {
                    state
                        .mobile_routers
                        .get(*t)
                        .is_some_and(|m| m.home_agent == h)
                }) && hypervisor
                    .is_none_or(|v| state.placements.get(*t).is_some_and(|p| p.hypervisor == v))
            })
            .cloned()
            .collect()
    }
}
