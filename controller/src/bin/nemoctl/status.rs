//! `nemoctl status`: where every tenant is, at a glance (what Cisco's
//! `show ipv6 mobile binding` and `birdc show route` give their
//! operators): the controller's view of each tenant, and the home agent's
//! binding for it when its admin API answers.

use std::collections::BTreeMap;

use crate::home_agent::HaAdmin;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use tonic::transport::Channel;

use crate::output::{print_report, report, seconds_until, utc, Output};
use crate::request;

/// How long the home agent's admin API has to answer before the overview
/// goes without bindings.
const ADMIN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

const COLUMNS: &[&str] = &[
    "tenant",
    "prefixes",
    "ipv4",
    "hypervisor",
    "since",
    "home agent",
    "home address",
    "care-of",
    "lifetime left",
];

/// Prints the overview.
pub async fn run(
    client: &mut ControllerClient<Channel>,
    token: &Option<String>,
    ha_admin: &HaAdmin,
    out: Output,
) -> anyhow::Result<()> {
    let home_agents = client
        .list_home_agents(request(pb::ListHomeAgentsRequest {}, token)?)
        .await
        .map(super::answer)?
        .home_agents;
    let hypervisors = client
        .list_hypervisors(request(pb::ListHypervisorsRequest {}, token)?)
        .await
        .map(super::answer)?
        .hypervisors;
    let tenants = client
        .list_tenants(request(pb::ListTenantsRequest {}, token)?)
        .await
        .map(super::answer)?
        .tenants;
    let placements: BTreeMap<String, pb::Placement> = client
        .list_placements(request(pb::ListPlacementsRequest {}, token)?)
        .await
        .map(super::answer)?
        .placements
        .into_iter()
        .map(|p| (p.tenant.clone(), p))
        .collect();
    let mut routers = BTreeMap::new();
    for tenant in &tenants {
        match client
            .get_mobile_router(request(
                pb::GetMobileRouterRequest {
                    tenant: tenant.name.clone(),
                },
                token,
            )?)
            .await
        {
            Ok(router) => {
                routers.insert(tenant.name.clone(), router.into_inner());
            }
            Err(status) if status.code() == tonic::Code::NotFound => {}
            Err(status) => return Err(status.into()),
        }
    }
    let (bindings, bindings_from) = bindings(ha_admin).await;
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = tenants
        .iter()
        .map(|tenant| {
            let placement = placements.get(&tenant.name);
            let router = routers.get(&tenant.name);
            let binding = router.and_then(|r| bindings.get(&r.home_address));
            vec![
                tenant.name.clone(),
                if tenant.prefixes.is_empty() {
                    dash()
                } else {
                    tenant.prefixes.join(",")
                },
                if tenant.ipv4_mappings.is_empty() {
                    dash()
                } else {
                    crate::ipv4::mapped_text(&tenant.ipv4_mappings)
                },
                placement.map_or_else(dash, |p| p.hypervisor.clone()),
                placement.map_or_else(dash, |p| utc(p.since_unix_ms)),
                router.map_or_else(dash, |r| r.home_agent.clone()),
                router.map_or_else(dash, |r| r.home_address.clone()),
                binding.map_or_else(dash, |b| b.care_of_address.clone()),
                binding.map_or_else(dash, |b| seconds_until(b.expires_at_unix_ms)),
            ]
        })
        .collect();
    let json = report([
        (
            "home_agents",
            serde_json::json!(home_agents
                .iter()
                .map(|h| serde_json::json!({
                    "name": h.name, "address": h.address, "home_prefix": h.home_prefix,
                }))
                .collect::<Vec<_>>()),
        ),
        (
            "hypervisors",
            serde_json::json!(hypervisors
                .iter()
                .map(|h| serde_json::json!({"name": h.name}))
                .collect::<Vec<_>>()),
        ),
        ("bindings_from", serde_json::json!(bindings_from)),
        (
            "tenants",
            serde_json::json!(tenants
                .iter()
                .map(|tenant| {
                    let placement = placements.get(&tenant.name);
                    let router = routers.get(&tenant.name);
                    let binding = router.and_then(|r| bindings.get(&r.home_address));
                    serde_json::json!({
                        "name": tenant.name,
                        "prefixes": tenant.prefixes,
                        "ipv4_mappings": crate::ipv4::mappings_json(&tenant.ipv4_mappings),
                        "hypervisor": placement.map(|p| p.hypervisor.clone()),
                        "placed_since_unix_ms": placement.map(|p| p.since_unix_ms),
                        "home_agent": router.map(|r| r.home_agent.clone()),
                        "home_address": router.map(|r| r.home_address.clone()),
                        "care_of_address": binding.map(|b| b.care_of_address.clone()),
                        "expires_at_unix_ms": binding.map(|b| b.expires_at_unix_ms),
                    })
                })
                .collect::<Vec<_>>()),
        ),
    ]);
    if out == Output::Table {
        let home_agents: Vec<String> = home_agents
            .iter()
            .map(|h| format!("{} ({})", h.name, h.address))
            .collect();
        let hypervisors: Vec<String> = hypervisors.iter().map(|h| h.name.clone()).collect();
        println!(
            "home agents: {}; hypervisors: {}; bindings: {bindings_from}",
            if home_agents.is_empty() {
                "none".to_owned()
            } else {
                home_agents.join(", ")
            },
            if hypervisors.is_empty() {
                "none".to_owned()
            } else {
                hypervisors.join(", ")
            },
        );
    }
    print_report(out, COLUMNS, rows, json);
    Ok(())
}

/// The home agent's bindings by home address, and where they came from
/// (or why there are none).
async fn bindings(admin: &HaAdmin) -> (BTreeMap<String, pb::Binding>, String) {
    let ha_admin = &admin.endpoint;
    let fetch = async {
        let list = admin
            .connect()
            .await?
            .list_bindings(pb::ListBindingsRequest {})
            .await?
            .into_inner();
        anyhow::Ok(list)
    };
    match tokio::time::timeout(ADMIN_WAIT, fetch).await {
        Ok(Ok(list)) => (
            list.bindings
                .into_iter()
                .map(|b| (b.home_address.clone(), b))
                .collect(),
            format!("{ha_admin} (data plane: {})", list.dataplane_backend),
        ),
        Ok(Err(error)) => (BTreeMap::new(), format!("none ({error:#})")),
        Err(_) => (
            BTreeMap::new(),
            format!("none ({ha_admin} did not answer within {ADMIN_WAIT:?})"),
        ),
    }
}
