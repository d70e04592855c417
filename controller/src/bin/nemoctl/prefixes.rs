//! `nemoctl prefix`: the prefixes allocated to tenants.

use clap::Subcommand;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use tonic::transport::Channel;

use crate::output::{print_records, Output};
use crate::{answer, request};

/// The columns of an allocation.
const PREFIX: &[&str] = &["prefix", "tenant", "pool", "revision"];

/// What `nemoctl prefix` does.
#[derive(Debug, Subcommand)]
pub enum PrefixCommand {
    /// Allocates a prefix for a tenant.
    Allocate {
        /// The tenant.
        tenant: String,
        /// The pool it comes from.
        #[arg(long)]
        pool: String,
        /// A shorter (larger) prefix than the pool's tenant length; 0, the
        /// default, means the pool's tenant length.
        #[arg(long, default_value_t = 0)]
        length: u32,
        /// This very prefix instead of one the pool picks (a tenant that
        /// keeps its addresses), e.g. 2001:db8:100:300::/56.
        #[arg(long, conflicts_with = "length")]
        prefix: Option<String>,
    },
    /// Releases a prefix (held back from reuse for the quarantine time).
    Release {
        /// The prefix, e.g. 2001:db8:100::/56.
        prefix: String,
    },
    /// Lists prefixes (of one tenant, or all).
    List {
        /// Only this tenant's.
        tenant: Option<String>,
    },
}

pub fn allocation_rows(
    allocations: &[pb::Allocation],
) -> (Vec<Vec<String>>, Vec<serde_json::Value>) {
    let rows = allocations
        .iter()
        .map(|a| {
            vec![
                a.prefix.clone(),
                a.tenant.clone(),
                a.pool.clone(),
                a.revision.to_string(),
            ]
        })
        .collect();
    let json = allocations
        .iter()
        .map(|a| {
            serde_json::json!({
                "prefix": a.prefix, "tenant": a.tenant, "pool": a.pool,
                "allocated_at_unix_ms": a.allocated_at_unix_ms, "revision": a.revision,
            })
        })
        .collect();
    (rows, json)
}

/// Runs `nemoctl prefix ...`.
pub async fn prefix(
    client: &mut ControllerClient<Channel>,
    token: &Option<String>,
    command: PrefixCommand,
    out: Output,
) -> anyhow::Result<()> {
    match command {
        PrefixCommand::Allocate {
            tenant,
            pool,
            length,
            prefix,
        } => {
            let allocation = client
                .allocate_prefix(request(
                    pb::AllocatePrefixRequest {
                        tenant,
                        pool,
                        length,
                        prefix: prefix.unwrap_or_default(),
                    },
                    token,
                )?)
                .await
                .map(answer)?;
            let (rows, json) = allocation_rows(&[allocation]);
            print_records(out, PREFIX, rows, json);
        }
        PrefixCommand::Release { prefix } => {
            let released = client
                .release_prefix(request(pb::ReleasePrefixRequest { prefix }, token)?)
                .await
                .map(answer)?
                .released
                .into_iter()
                .collect::<Vec<_>>();
            let (rows, json) = allocation_rows(&released);
            print_records(out, PREFIX, rows, json);
        }
        PrefixCommand::List { tenant } => {
            let allocations = client
                .list_prefixes(request(
                    pb::ListPrefixesRequest {
                        tenant: tenant.unwrap_or_default(),
                    },
                    token,
                )?)
                .await
                .map(answer)?
                .allocations;
            let (rows, json) = allocation_rows(&allocations);
            print_records(out, PREFIX, rows, json);
        }
    }
    Ok(())
}
