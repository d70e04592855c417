//! `nemoctl ipv4`: tenants' IPv4 addresses, each mapped to an IPv6 address
//! inside one of the tenant's prefixes (RFC 7757), which the home site
//! translates (RFC 7915).

use clap::Subcommand;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use tonic::transport::Channel;

use crate::output::{print_records, Output};
use crate::{answer, request};

/// The columns of a mapping.
const MAPPING: &[&str] = &[
    "ipv4",
    "ipv6",
    "tenant",
    "pool",
    "translation prefix",
    "revision",
];

/// What `nemoctl ipv4` does.
#[derive(Debug, Subcommand)]
pub enum Ipv4Command {
    /// Gives a tenant an IPv4 address (or block) of an IPv4 pool, mapped
    /// to an IPv6 address (or prefix of as many addresses) inside one of
    /// its prefixes: the VM's.
    Allocate {
        /// The tenant.
        tenant: String,
        /// The IPv4 pool it comes from.
        #[arg(long)]
        pool: String,
        /// The IPv6 address it maps to, e.g. 2001:db8:100::10, or a
        /// prefix of as many addresses as the IPv4 block.
        #[arg(long)]
        to: String,
        /// This very IPv4 address or block instead of the pool's first free
        /// one, e.g. 192.0.2.10.
        #[arg(long)]
        address: Option<String>,
        /// A block shorter than the pool's tenant length, e.g. 30; 0, the
        /// default, means the pool's tenant length.
        #[arg(long, default_value_t = 0)]
        length: u32,
    },
    /// Ends a mapping (its IPv4 addresses held back for the quarantine).
    Release {
        /// The IPv4 address or block, e.g. 192.0.2.10.
        ipv4: String,
    },
    /// Lists mappings (of one tenant, or all).
    List {
        /// Only this tenant's.
        tenant: Option<String>,
    },
}

/// A tenant's mappings in a column: `192.0.2.10/32=2001:db8:100::10/128`,
/// comma-separated.
pub fn mapped_text(mappings: &[pb::Ipv4Mapping]) -> String {
    mappings
        .iter()
        .map(|m| format!("{}={}", m.ipv4, m.ipv6))
        .collect::<Vec<_>>()
        .join(",")
}

/// Mappings as JSON.
pub fn mappings_json(mappings: &[pb::Ipv4Mapping]) -> Vec<serde_json::Value> {
    mappings
        .iter()
        .map(|m| {
            serde_json::json!({
                "ipv4": m.ipv4, "ipv6": m.ipv6, "tenant": m.tenant, "pool": m.pool,
                "translation_prefix": m.translation_prefix,
                "allocated_at_unix_ms": m.allocated_at_unix_ms, "revision": m.revision,
            })
        })
        .collect()
}

fn mapping_rows(mappings: &[pb::Ipv4Mapping]) -> (Vec<Vec<String>>, Vec<serde_json::Value>) {
    let rows = mappings
        .iter()
        .map(|m| {
            vec![
                m.ipv4.clone(),
                m.ipv6.clone(),
                m.tenant.clone(),
                m.pool.clone(),
                m.translation_prefix.clone(),
                m.revision.to_string(),
            ]
        })
        .collect();
    (rows, mappings_json(mappings))
}

/// Runs `nemoctl ipv4 ...`.
pub async fn ipv4(
    client: &mut ControllerClient<Channel>,
    token: &Option<String>,
    command: Ipv4Command,
    out: Output,
) -> anyhow::Result<()> {
    let mappings = match command {
        Ipv4Command::Allocate {
            tenant,
            pool,
            to,
            address,
            length,
        } => vec![client
            .allocate_ipv4(request(
                pb::AllocateIpv4Request {
                    tenant,
                    pool,
                    length,
                    ipv4: address.unwrap_or_default(),
                    ipv6: to,
                },
                token,
            )?)
            .await
            .map(answer)?],
        Ipv4Command::Release { ipv4 } => client
            .release_ipv4(request(pb::ReleaseIpv4Request { ipv4 }, token)?)
            .await
            .map(answer)?
            .released
            .into_iter()
            .collect(),
        Ipv4Command::List { tenant } => {
            client
                .list_ipv4_mappings(request(
                    pb::ListIpv4MappingsRequest {
                        tenant: tenant.unwrap_or_default(),
                    },
                    token,
                )?)
                .await
                .map(answer)?
                .mappings
        }
    };
    let (rows, json) = mapping_rows(&mappings);
    print_records(out, MAPPING, rows, json);
    Ok(())
}
