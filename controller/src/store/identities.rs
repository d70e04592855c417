//! Home agents, hypervisors and mobile-router identities.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::sync::atomic::Ordering;

use nemo::auth::Algorithm;

use super::model::OrNotFound;
use super::{
    check_name, encode, HomeAgentRecord, Hypervisor, MobileRouter, Store, StoreChange, StoreError,
};

/// 32 random octets from the kernel, hex.
pub(super) fn fresh_key() -> Result<String, StoreError> {
    let key = nemo_daemon::secret::random_octets::<32>()
        .map_err(|e| StoreError::Storage(format!("random key: {e}")))?;
    Ok(key.iter().map(|b| format!("{b:02x}")).collect())
}

impl Store {
    /// Registers (or updates) a home agent.
    pub async fn register_home_agent(
        &self,
        home_agent: HomeAgentRecord,
    ) -> Result<HomeAgentRecord, StoreError> {
        self.retrying(|| self.register_home_agent_once(home_agent.clone()))
            .await
    }

    async fn register_home_agent_once(
        &self,
        home_agent: HomeAgentRecord,
    ) -> Result<HomeAgentRecord, StoreError> {
        check_name("home_agent.name", &home_agent.name)?;
        // Empty: the home agent serves the native transport only.
        if !home_agent.udp_endpoint.is_empty()
            && home_agent
                .udp_endpoint
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(StoreError::Invalid {
                field: "home_agent.udp_endpoint",
                reason: format!(
                    "{:?} is not an address and port like [2001:db8:1::1]:4191",
                    home_agent.udp_endpoint
                ),
            });
        }
        if !home_agent.home_prefix.contains(&home_agent.address) {
            return Err(StoreError::Invalid {
                field: "home_agent.address",
                reason: format!(
                    "{} is outside the home prefix {}",
                    home_agent.address, home_agent.home_prefix
                ),
            });
        }
        if home_agent.home_prefix.prefix_len() > 120 {
            return Err(StoreError::Invalid {
                field: "home_agent.home_prefix",
                reason: "too small for home addresses (at most /120)".into(),
            });
        }
        let state = self.state.lock().await;
        if let Some(other) = state.home_agents.values().find(|h| {
            h.name != home_agent.name
                && (h.home_prefix.contains(&home_agent.home_prefix.network())
                    || home_agent.home_prefix.contains(&h.home_prefix.network()))
        }) {
            return Err(StoreError::Precondition(format!(
                "home_agent.home_prefix: overlaps that of home agent {:?}",
                other.name
            )));
        }
        let record = encode(&home_agent)?;
        self.change(
            state,
            StoreChange::HomeAgentRegistered(home_agent.clone()),
            |t| {
                t.home_agents
                    .insert(home_agent.name.as_bytes(), record.clone());
                Ok(())
            },
            |state| {
                state
                    .home_agents
                    .insert(home_agent.name.clone(), home_agent.clone());
            },
        )
        .await?;
        Ok(home_agent)
    }

    /// Every home agent.
    pub async fn home_agents(&self) -> Vec<HomeAgentRecord> {
        self.state
            .lock()
            .await
            .home_agents
            .values()
            .cloned()
            .collect()
    }

    /// Registers a hypervisor (registering again is fine).
    pub async fn register_hypervisor(&self, name: &str) -> Result<Hypervisor, StoreError> {
        self.retrying(|| self.register_hypervisor_once(name)).await
    }

    async fn register_hypervisor_once(&self, name: &str) -> Result<Hypervisor, StoreError> {
        check_name("name", name)?;
        let state = self.state.lock().await;
        if let Some(existing) = state.hypervisors.get(name).cloned() {
            // Registered by a change that may still wait for its flush: the
            // answer waits too.
            let generation = self.log.generation.load(Ordering::Acquire);
            drop(state);
            self.settled(generation).await?;
            return Ok(existing);
        }
        let hypervisor = Hypervisor {
            name: name.to_owned(),
        };
        let record = encode(&hypervisor)?;
        self.change(
            state,
            StoreChange::HypervisorRegistered(hypervisor.clone()),
            |t| {
                t.hypervisors.insert(name.as_bytes(), record.clone());
                Ok(())
            },
            |state| {
                state
                    .hypervisors
                    .insert(name.to_owned(), hypervisor.clone());
            },
        )
        .await?;
        Ok(hypervisor)
    }

    /// Every hypervisor.
    pub async fn hypervisors(&self) -> Vec<Hypervisor> {
        self.state
            .lock()
            .await
            .hypervisors
            .values()
            .cloned()
            .collect()
    }

    /// Creates a tenant's mobile-router identity: the next free home address
    /// of the home agent's home prefix (from ::100), the next SPI, a fresh
    /// key.
    pub async fn create_mobile_router(
        &self,
        tenant: &str,
        home_agent: &str,
        algorithm: Algorithm,
        explicit_mode: bool,
    ) -> Result<MobileRouter, StoreError> {
        self.retrying(|| {
            self.create_mobile_router_once(tenant, home_agent, algorithm, explicit_mode)
        })
        .await
    }

    async fn create_mobile_router_once(
        &self,
        tenant: &str,
        home_agent: &str,
        algorithm: Algorithm,
        explicit_mode: bool,
    ) -> Result<MobileRouter, StoreError> {
        let state = self.state.lock().await;
        state.tenants.get(tenant).or_not_found("tenant", tenant)?;
        if state.mobile_routers.contains_key(tenant) {
            return Err(StoreError::Exists {
                what: "mobile router of tenant",
                name: tenant.to_owned(),
            });
        }
        let held = state.allocations.of_tenant(tenant);
        if held > nemo::ha::MAX_PREFIXES as u64 {
            return Err(StoreError::Precondition(format!(
                "tenant: {tenant:?} holds {held} prefixes, more than one mobile router's binding carries ({})",
                nemo::ha::MAX_PREFIXES
            )));
        }
        let ha = state
            .home_agents
            .get(home_agent)
            .cloned()
            .or_not_found("home agent", home_agent)?;
        let used: BTreeSet<Ipv6Addr> = state
            .mobile_routers
            .values()
            .map(|m| m.home_address)
            .collect();
        let base = u128::from(ha.home_prefix.network());
        let size = 1u128 << (128 - u32::from(ha.home_prefix.prefix_len()));
        let home_address = (0x100..size.saturating_sub(1))
            .map(|offset| Ipv6Addr::from(base + offset))
            .find(|a| !used.contains(a) && *a != ha.address)
            .ok_or_else(|| StoreError::Exhausted {
                pool: format!("home prefix of {home_agent}"),
                length: 128,
            })?;
        let spi = state
            .mobile_routers
            .values()
            .map(|m| m.spi)
            .max()
            .unwrap_or(0x0fff)
            .saturating_add(1)
            .max(0x1000);
        let mobile_router = MobileRouter {
            tenant: tenant.to_owned(),
            home_agent: home_agent.to_owned(),
            home_address,
            spi,
            algorithm,
            key: fresh_key()?,
            explicit_mode,
        };
        let record = encode(&mobile_router)?;
        self.change(
            state,
            StoreChange::MobileRouterCreated(mobile_router.redacted()),
            |t| {
                t.mobile_routers.insert(tenant.as_bytes(), record.clone());
                Ok(())
            },
            |state| {
                state
                    .mobile_routers
                    .insert(tenant.to_owned(), mobile_router.clone());
            },
        )
        .await?;
        Ok(mobile_router)
    }

    /// A tenant's mobile router, key included (for the watch streams) or
    /// redacted.
    pub async fn mobile_router(
        &self,
        tenant: &str,
        with_key: bool,
    ) -> Result<MobileRouter, StoreError> {
        let state = self.state.lock().await;
        let mr = state
            .mobile_routers
            .get(tenant)
            .or_not_found("mobile router of tenant", tenant)?;
        Ok(if with_key { mr.clone() } else { mr.redacted() })
    }

    /// Gives a tenant's mobile router a new key.
    pub async fn rotate_key(&self, tenant: &str) -> Result<MobileRouter, StoreError> {
        self.retrying(|| self.rotate_key_once(tenant)).await
    }

    async fn rotate_key_once(&self, tenant: &str) -> Result<MobileRouter, StoreError> {
        let state = self.state.lock().await;
        let mut mr = state
            .mobile_routers
            .get(tenant)
            .cloned()
            .or_not_found("mobile router of tenant", tenant)?;
        mr.key = fresh_key()?;
        let record = encode(&mr)?;
        self.change(
            state,
            StoreChange::KeyRotated(mr.redacted()),
            |t| {
                t.mobile_routers.insert(tenant.as_bytes(), record.clone());
                Ok(())
            },
            |state| {
                state.mobile_routers.insert(tenant.to_owned(), mr.clone());
            },
        )
        .await?;
        Ok(mr)
    }

    /// Deletes a tenant's mobile router (not while it is placed).
    pub async fn delete_mobile_router(&self, tenant: &str) -> Result<(), StoreError> {
        self.retrying(|| self.delete_mobile_router_once(tenant))
            .await
    }

    async fn delete_mobile_router_once(&self, tenant: &str) -> Result<(), StoreError> {
        let state = self.state.lock().await;
        let mr = state
            .mobile_routers
            .get(tenant)
            .cloned()
            .or_not_found("mobile router of tenant", tenant)?;
        if state.placements.contains_key(tenant) {
            return Err(StoreError::Precondition(format!(
                "tenant: {tenant:?} is placed; unplace it first"
            )));
        }
        self.change(
            state,
            StoreChange::MobileRouterDeleted(mr.redacted()),
            |t| {
                t.mobile_routers.remove(tenant.as_bytes());
                Ok(())
            },
            |state| {
                state.mobile_routers.remove(tenant);
            },
        )
        .await?;
        Ok(())
    }
}
