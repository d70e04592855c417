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
    /// A tenant's VM seen on the hypervisor: only a placed tenant moves
    /// (a first placement is the orchestrator's).
    Arrival,
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

    /// Places a tenant on a hypervisor, as `placing` allows.
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
        if placing == Placing::Arrival && !state.placements.contains_key(tenant) {
            return Err(StoreError::Precondition(format!(
                "tenant: {tenant:?} is placed nowhere; an arrival moves a placed tenant \
                 (place it first)"
            )));
        }
        state
            .hypervisors
            .get(hypervisor)
            .or_not_found("hypervisor", hypervisor)?;
        // Already there: nothing changes, and the caller hears where it is
        // (an orchestrator that retries a placement must not see it fail).
        if let Some(placed) = state
            .placements
            .get(tenant)
            .filter(|p| p.hypervisor == hypervisor)
        {
            return Ok(placed.clone());
        }
        let from = state.placements.get(tenant).map(|p| p.hypervisor.clone());
        let placement = Placement {
            tenant: tenant.to_owned(),
            hypervisor: hypervisor.to_owned(),
            since_unix_ms: unix_ms(SystemTime::now()),
            reason: reason.to_owned(),
            delivery: match placing {
                Placing::Ordered(delivery) => delivery,
                // The VM runs there: it was seen.
                Placing::Arrival => Delivery::Now,
            },
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
            prefixes: state
                .allocations
                .values()
                .filter(|a| a.tenant == tenant)
                .map(|a| a.prefix)
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
