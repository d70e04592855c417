//! Tenants.

use std::time::SystemTime;

use ipnet::{IpNet, Ipv6Net};
use nemo_daemon::clock::unix_ms;

use super::model::OrNotFound;
use super::{check_name, encode, Store, StoreChange, StoreError, Tenant};

impl Store {
    /// Creates a tenant.
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        self.retrying(|| self.create_tenant_once(name)).await
    }

    async fn create_tenant_once(&self, name: &str) -> Result<Tenant, StoreError> {
        check_name("name", name)?;
        let state = self.state.lock().await;
        if state.tenants.contains_key(name) {
            return Err(StoreError::Exists {
                what: "tenant",
                name: name.to_owned(),
            });
        }
        let tenant = Tenant {
            name: name.to_owned(),
            created_at_unix_ms: unix_ms(SystemTime::now()),
        };
        let record = encode(&tenant)?;
        self.change(
            state,
            StoreChange::TenantCreated(tenant.clone()),
            |t| {
                t.tenants.insert(tenant.name.as_bytes(), record.clone());
                Ok(())
            },
            |state| {
                state.tenants.insert(tenant.name.clone(), tenant.clone());
            },
        )
        .await?;
        Ok(tenant)
    }

    /// A tenant and its prefixes.
    pub async fn tenant(&self, name: &str) -> Result<(Tenant, Vec<Ipv6Net>), StoreError> {
        let state = self.state.lock().await;
        let tenant = state
            .tenants
            .get(name)
            .cloned()
            .or_not_found("tenant", name)?;
        let prefixes = state.allocations.prefixes_of(name).collect();
        Ok((tenant, prefixes))
    }

    /// Every tenant's name.
    pub async fn tenant_names(&self) -> Vec<String> {
        self.state.lock().await.tenants.keys().cloned().collect()
    }

    /// Deletes a tenant; with `cascade` its IPv4 mappings and prefixes are
    /// released first (and returned, in that order).
    pub async fn delete_tenant(&self, name: &str, cascade: bool) -> Result<Vec<IpNet>, StoreError> {
        self.retrying(|| self.delete_tenant_once(name, cascade))
            .await
    }

    async fn delete_tenant_once(
        &self,
        name: &str,
        cascade: bool,
    ) -> Result<Vec<IpNet>, StoreError> {
        let (tenant, prefixes) = self.tenant(name).await?;
        let mappings = self.ipv4_mappings(Some(name)).await?;
        let holds_nothing = prefixes.is_empty() && mappings.is_empty();
        if !holds_nothing && !cascade {
            return Err(StoreError::Precondition(format!(
                "name: tenant {name:?} still has {} prefixes and {} IPv4 mappings (release them or use cascade)",
                prefixes.len(),
                mappings.len()
            )));
        }
        let mut released = Vec::new();
        for (mapping, _) in &mappings {
            super::requests::apart(self.release_ipv4(&mapping.ipv4.to_string())).await?;
            released.push(IpNet::V4(mapping.ipv4));
        }
        for prefix in &prefixes {
            super::requests::apart(self.release(&prefix.to_string())).await?;
            released.push(IpNet::V6(*prefix));
        }
        let state = self.state.lock().await;
        if state.mobile_routers.contains_key(name) || state.placements.contains_key(name) {
            return Err(StoreError::Precondition(format!(
                "name: tenant {name:?} still has a mobile router or a placement"
            )));
        }
        // A mapping lies inside a prefix of its tenant's: no prefix, none.
        if state.allocations.of_tenant(name) > 0 {
            return Err(StoreError::Precondition(format!(
                "name: tenant {name:?} was given a prefix or an IPv4 mapping meanwhile"
            )));
        }
        self.change(
            state,
            StoreChange::TenantDeleted(tenant),
            |t| {
                t.tenants.remove(name.as_bytes());
                Ok(())
            },
            |state| {
                state.tenants.remove(name);
            },
        )
        .await?;
        Ok(released)
    }
}
