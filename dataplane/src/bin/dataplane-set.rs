//! `dataplane-set`: programs one binding through nemo's bpf data plane in
//! the current network namespace and exits, leaving it in place (the maps
//! pinned, the routes and the tc filter attached), as a killed daemon
//! would: for the data-plane recipe and its benchmark
//! (deploy/lab/dataplane-recipe.sh MODE=nemo), so that they measure the
//! code the daemons run.
//!
//! usage:
//! ```text
//!   dataplane-set ha UPLINK LOCAL PIN_DIR AGGREGATE HOME_ADDRESS CARE_OF MNP [LOCAL_IPV4]
//!   dataplane-set mr UPLINK CARE_OF PIN_DIR TENANT_IF MNP HOME_AGENT TABLE [CARE_OF_IPV4]
//! ```
//!
//! A peer (CARE_OF of `ha`, HOME_AGENT of `mr`) may be IPv4 (`192.0.2.10`:
//! IPv6 in IPv4) or an IPv4 address and port (`192.0.2.10:4191`: IPv6 in
//! UDP, RFC 5555); the host's own IPv4 end is then LOCAL_IPV4 or
//! CARE_OF_IPV4 (`192.0.2.1:4191`).

use nemo_dataplane::bpf::{
    BpfHomeAgent, BpfHomeAgentConfig, BpfMobileRouter, BpfMobileRouterConfig,
};
use nemo_dataplane::{BindingRoutes, HomeAgentDataPlane, MobileRouterDataPlane, TenantRoutes};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    match args.as_slice() {
        [role, uplink, local, pin_dir, aggregate, home_address, care_of, mnp, rest @ ..]
            if role == "ha" && rest.len() <= 1 =>
        {
            let plane = BpfHomeAgent::new(
                handle,
                BpfHomeAgentConfig {
                    uplink: uplink.clone(),
                    local_address: local.parse()?,
                    local_ipv4: rest.first().map(|l| l.parse()).transpose()?,
                    pin_dir: Some(pin_dir.into()),
                    aggregates: vec![aggregate.parse()?],
                },
            )
            .await?;
            let binding = BindingRoutes {
                home_address: home_address.parse()?,
                care_of: care_of.parse()?,
                prefixes: vec![mnp.parse()?],
            };
            plane.set(&binding, None).await?;
        }
        [role, uplink, care_of, pin_dir, interface, mnp, home_agent, table, rest @ ..]
            if role == "mr" && rest.len() <= 1 =>
        {
            let plane = BpfMobileRouter::new(
                handle,
                BpfMobileRouterConfig {
                    uplink: uplink.clone(),
                    local_address: care_of.parse()?,
                    pin_dir: Some(pin_dir.into()),
                },
            )
            .await?;
            if let Some(local) = rest.first() {
                plane.set_ipv4_care_of(Some(local.parse()?)).await?;
            }
            let tenant = TenantRoutes {
                interface: interface.clone(),
                prefixes: vec![mnp.parse()?],
                home_agent: home_agent.parse()?,
                table: table.parse()?,
            };
            plane.attach(&tenant, None).await?;
        }
        _ => {
            return Err(
                "usage: dataplane-set ha UPLINK LOCAL PIN_DIR AGGREGATE HOME_ADDRESS CARE_OF MNP [LOCAL_IPV4] \
                        | dataplane-set mr UPLINK CARE_OF PIN_DIR TENANT_IF MNP HOME_AGENT TABLE [CARE_OF_IPV4]"
                    .into(),
            )
        }
    }
    Ok(())
}
