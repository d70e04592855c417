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
//!   dataplane-set xlat PIN_DIR POOL PREFIX IPV4 IPV6 [COUNT [ARRIVAL,...]]
//! ```
//!
//! `xlat` sets up the translator (issue 31) as nemo-ha's `[translator]`
//! does: its device, POOL and the /96 PREFIX routed to it, COUNT mappings
//! (default one) from IPV4/IPV6 on, one address each, and the common case
//! translated at arrival on the interfaces ARRIVAL (comma-separated).
//!
//! A peer (CARE_OF of `ha`, HOME_AGENT of `mr`) may be IPv4 (`192.0.2.10`:
//! IPv6 in IPv4) or an IPv4 address and port (`192.0.2.10:4191`: IPv6 in
//! UDP, RFC 5555); the host's own IPv4 end is then LOCAL_IPV4 or
//! CARE_OF_IPV4 (`192.0.2.1:4191`).

use nemo_dataplane::bpf::translator::{Mapping, Translator};
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
        [role, pin_dir, pool, prefix, ipv4, ipv6, rest @ ..] if role == "xlat" && rest.len() <= 2 => {
            let (device, _) = nemo_dataplane::xlat::ensure_device(&handle).await?;
            nemo_dataplane::xlat::route_pool(
                &handle,
                device,
                pool.parse()?,
                nemo_dataplane::xlat::LOWEST_IPV6_MTU,
            )
            .await?;
            let prefix = prefix.parse()?;
            nemo_dataplane::xlat::route_translation_prefix(&handle, device, prefix).await?;
            let translator = Translator::load(Some(std::path::Path::new(pin_dir)))?;
            translator.attach(device)?;
            translator.add_translation_prefix(prefix)?;
            for name in rest.get(1).iter().flat_map(|names| names.split(',')) {
                let index = nemo_dataplane::addresses::interface_index(&handle, name).await?;
                translator.attach_at_arrival(index)?;
            }
            let count: u32 = rest.first().map_or(Ok(1), |c| c.parse())?;
            let (ipv4, ipv6): (std::net::Ipv4Addr, std::net::Ipv6Addr) = (ipv4.parse()?, ipv6.parse()?);
            let started = std::time::Instant::now();
            for n in 0..count {
                let v4 = std::net::Ipv4Addr::from(u32::from(ipv4).wrapping_add(n));
                let v6 = std::net::Ipv6Addr::from(u128::from(ipv6).wrapping_add(u128::from(n)));
                translator.map(&Mapping::new(v4.into(), v6.into(), prefix)?)?;
            }
            println!(
                "mapped {count} in {:.3} s",
                started.elapsed().as_secs_f64()
            );
        }
        _ => {
            return Err(
                "usage: dataplane-set ha UPLINK LOCAL PIN_DIR AGGREGATE HOME_ADDRESS CARE_OF MNP [LOCAL_IPV4] \
                        | dataplane-set mr UPLINK CARE_OF PIN_DIR TENANT_IF MNP HOME_AGENT TABLE [CARE_OF_IPV4] \
                        | dataplane-set xlat PIN_DIR POOL PREFIX IPV4 IPV6 [COUNT [ARRIVAL,...]]"
                    .into(),
            )
        }
    }
    Ok(())
}
