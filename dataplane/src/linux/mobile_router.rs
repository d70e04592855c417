//! The mobile router's seg6 data plane: each tenant's traffic tunnelled to
//! its home agent, the home agent's tunnel taken out.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use netlink_packet_route::route::{RouteMessage, RouteProtocol, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};
use tokio::sync::Mutex;

use super::host::Host;
use super::{
    add_rule, ipv6_peer, is_ours, priority, remove_rules, rule_source, tenant_tables, usable_port,
    Rule, Seg6Config, PREF_ENCAP, PREF_TENANT, PROTOCOL, RT_TABLE_MAIN, TABLE_DECAP,
    TABLE_TENANT_GATE,
};
use crate::{DataPlaneError, MobileRouterDataPlane, TenantRoutes};

/// The mobile router's data plane on a Linux kernel with seg6: one host
/// hosting any number of tenant instances, each with its own table.
#[derive(Debug)]
pub struct Seg6MobileRouter {
    host: Host,
    /// Tenants per home agent: the decapsulation route for a home agent
    /// lives while one of its tenants remains.
    home_agent_users: Mutex<HashMap<Ipv6Addr, usize>>,
}

impl Seg6MobileRouter {
    /// Sets up the host: the gate, the tenant gate table, the local rule
    /// moved, and decapsulation at the care-of address.
    pub async fn new(
        handle: Handle,
        config: Seg6Config,
    ) -> Result<Seg6MobileRouter, DataPlaneError> {
        let host = Host::prepare(handle, &config.uplink, config.gate.clone()).await?;
        let default = Ipv6Net::default();
        host.install(host.gate_route(default, TABLE_TENANT_GATE), default)
            .await?;
        host.set_decap_address(config.local_address).await?;
        tracing::info!(
            uplink = %config.uplink,
            gate_mtu = host.gate_mtu,
            care_of = %config.local_address,
            "seg6 mobile-router data plane ready"
        );
        Ok(Seg6MobileRouter {
            host,
            home_agent_users: Mutex::new(HashMap::new()),
        })
    }

    fn tenant_rules(&self, tenant: &TenantRoutes) -> Vec<Rule> {
        tenant
            .prefixes
            .iter()
            .flat_map(|prefix| {
                [
                    Rule {
                        preference: PREF_TENANT,
                        table: TABLE_TENANT_GATE,
                        input: Some(tenant.interface.clone()),
                        source: Some(*prefix),
                        tunnelled: false,
                    },
                    Rule {
                        preference: PREF_ENCAP,
                        table: tenant.table,
                        input: Some(self.host.gate.1.clone()),
                        source: Some(*prefix),
                        tunnelled: false,
                    },
                ]
            })
            .collect()
    }

    fn prefix_route(&self, prefix: Ipv6Net, interface: u32) -> RouteMessage {
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(prefix.network(), prefix.prefix_len())
            .output_interface(interface)
            .table_id(RT_TABLE_MAIN)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .build()
    }

    async fn remove_tenant(&self, tenant: &TenantRoutes) -> Result<(), DataPlaneError> {
        for prefix in &tenant.prefixes {
            let source = Some(prefix.network());
            remove_rules(&self.host.handle, |m| {
                is_ours(m)
                    && matches!(priority(m), PREF_TENANT | PREF_ENCAP)
                    && rule_source(m) == source
                    && m.header.src_len == prefix.prefix_len()
            })
            .await?;
            self.host.delete_route(RT_TABLE_MAIN, *prefix).await?;
        }
        for (destination, _) in self.host.owned_routes(tenant.table).await? {
            self.host.delete_route(tenant.table, destination).await?;
        }
        let Some(home_agent) = tenant.home_agent.ipv6() else {
            return Ok(()); // never attached here
        };
        let mut users = self.home_agent_users.lock().await;
        if let Some(count) = users.get_mut(&home_agent) {
            *count -= 1;
            if *count == 0 {
                users.remove(&home_agent);
                self.host.remove_decap_peer(home_agent).await?;
            }
        }
        Ok(())
    }
}

impl MobileRouterDataPlane for Seg6MobileRouter {
    fn name(&self) -> &'static str {
        "seg6 encap.red with MTU gate"
    }

    async fn set_care_of(&self, care_of: Ipv6Addr) -> Result<(), DataPlaneError> {
        self.host.set_decap_address(care_of).await
    }

    async fn attach(
        &self,
        tenant: &TenantRoutes,
        previous: Option<&TenantRoutes>,
    ) -> Result<(), DataPlaneError> {
        if let Some(previous) = previous {
            if previous != tenant {
                self.remove_tenant(previous).await?;
            }
        }
        let home_agent = ipv6_peer(tenant.home_agent, Ipv6Net::default())?;
        let host = &self.host;
        let interface = usable_port(&host.handle, &tenant.interface, &tenant.prefixes).await?;
        {
            let mut users = self.home_agent_users.lock().await;
            let count = users.entry(home_agent).or_insert(0);
            if *count == 0 {
                host.add_decap_peer(home_agent).await?;
            }
            *count += 1;
        }
        // The tenant's table: everything to the home agent, except the home
        // agent itself (the outer packet), which goes back to the main table.
        let default = Ipv6Net::default();
        host.install(host.encap_route(default, home_agent, tenant.table), default)
            .await?;
        let home_agent_route = Ipv6Net::from(home_agent);
        let mut throw = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(home_agent, 128)
            .table_id(tenant.table)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .kind(RouteType::Throw)
            .build();
        throw.header.scope = netlink_packet_route::route::RouteScope::Universe;
        host.install(throw, home_agent_route).await?;
        for prefix in &tenant.prefixes {
            host.install(self.prefix_route(*prefix, interface), *prefix)
                .await?;
        }
        for rule in self.tenant_rules(tenant) {
            add_rule(&host.handle, &rule).await?;
        }
        Ok(())
    }

    async fn detach(&self, tenant: &TenantRoutes) -> Result<(), DataPlaneError> {
        self.remove_tenant(tenant).await
    }

    async fn remove_all(&self) -> Result<(), DataPlaneError> {
        let mut tables = vec![TABLE_DECAP, TABLE_TENANT_GATE, RT_TABLE_MAIN];
        tables.extend(tenant_tables(&self.host.handle).await?);
        self.host.teardown(&tables).await?;
        self.home_agent_users.lock().await.clear();
        Ok(())
    }
}
