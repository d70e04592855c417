//! `nemoctl pool`: the pools tenants' prefixes (IPv6) and mapped addresses
//! (IPv4) come from.

use clap::Subcommand;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use tonic::transport::Channel;

use crate::output::{print_deleted, print_records, Output};
use crate::{answer, request};

/// The columns of a pool.
const POOL: &[&str] = &[
    "name",
    "prefix",
    "length",
    "allocated",
    "quarantined",
    "capacity",
    "translation prefix",
];

/// What `nemoctl pool` does.
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Creates a pool.
    Create {
        /// Its name (letters, digits, '-', '_', '.').
        name: String,
        /// The prefix tenants' prefixes come from, e.g. 2001:db8:100::/40;
        /// or an IPv4 prefix whose addresses are mapped to tenants'
        /// (`nemoctl ipv4`), e.g. 192.0.2.0/24.
        prefix: String,
        /// The length of each tenant's prefix, e.g. 56; an IPv4 pool's
        /// blocks, 32 (single addresses) when not given.
        #[arg(long)]
        tenant_length: Option<u32>,
        /// An IPv4 pool's translation prefix (RFC 6052, a /96): where its
        /// tenants see IPv4 peers; the well-known 64:ff9b::/96 when not
        /// given (which must not carry non-global IPv4 addresses).
        #[arg(long)]
        translation_prefix: Option<String>,
    },
    /// Shows a pool and its usage.
    Show {
        /// The pool.
        name: String,
    },
    /// Lists pools.
    List,
    /// Deletes an empty pool.
    Delete {
        /// The pool.
        name: String,
    },
}

pub fn pool_rows(pools: &[pb::Pool]) -> (Vec<Vec<String>>, Vec<serde_json::Value>) {
    let rows = pools
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.prefix.clone(),
                format!("/{}", p.tenant_length),
                p.allocated.to_string(),
                p.quarantined.to_string(),
                p.capacity.to_string(),
                if p.translation_prefix.is_empty() {
                    "-".to_owned()
                } else {
                    p.translation_prefix.clone()
                },
            ]
        })
        .collect();
    let json = pools
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name, "prefix": p.prefix, "tenant_length": p.tenant_length,
                "allocated": p.allocated, "quarantined": p.quarantined, "capacity": p.capacity,
                "translation_prefix": (!p.translation_prefix.is_empty()).then_some(&p.translation_prefix),
            })
        })
        .collect();
    (rows, json)
}

/// Runs `nemoctl pool ...`.
pub async fn pool(
    client: &mut ControllerClient<Channel>,
    token: &Option<String>,
    command: PoolCommand,
    out: Output,
) -> anyhow::Result<()> {
    match command {
        PoolCommand::Create {
            name,
            prefix,
            tenant_length,
            translation_prefix,
        } => {
            let pool = client
                .create_pool(request(
                    pb::CreatePoolRequest {
                        name,
                        prefix,
                        tenant_length: tenant_length.unwrap_or(0),
                        translation_prefix: translation_prefix.unwrap_or_default(),
                    },
                    token,
                )?)
                .await
                .map(answer)?;
            let (rows, json) = pool_rows(&[pool]);
            print_records(out, POOL, rows, json);
        }
        PoolCommand::Show { name } => {
            let pool = client
                .get_pool(request(pb::GetPoolRequest { name }, token)?)
                .await
                .map(answer)?;
            let (rows, json) = pool_rows(&[pool]);
            print_records(out, POOL, rows, json);
        }
        PoolCommand::List => {
            let pools = client
                .list_pools(request(pb::ListPoolsRequest {}, token)?)
                .await
                .map(answer)?
                .pools;
            let (rows, json) = pool_rows(&pools);
            print_records(out, POOL, rows, json);
        }
        PoolCommand::Delete { name } => {
            client
                .delete_pool(request(
                    pb::DeletePoolRequest { name: name.clone() },
                    token,
                )?)
                .await?;
            print_deleted(out, &name);
        }
    }
    Ok(())
}
