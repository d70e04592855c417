//! `nemoctl tenant`: the tenants.

use clap::Subcommand;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use tonic::transport::Channel;

use crate::output::{print_records, Output};
use crate::{answer, request};

/// The columns of a tenant.
const TENANT: &[&str] = &["name", "prefixes", "ipv4"];

/// What `nemoctl tenant` does.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Creates a tenant.
    Create {
        /// Its name (letters, digits, '-', '_', '.').
        name: String,
    },
    /// Shows a tenant.
    Show {
        /// The tenant.
        name: String,
    },
    /// Lists tenants.
    List,
    /// Deletes a tenant.
    Delete {
        /// The tenant.
        name: String,
        /// Release its prefixes too.
        #[arg(long)]
        cascade: bool,
    },
}

pub fn tenant_rows(tenants: &[pb::Tenant]) -> (Vec<Vec<String>>, Vec<serde_json::Value>) {
    let rows = tenants
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.prefixes.join(","),
                crate::ipv4::mapped_text(&t.ipv4_mappings),
            ]
        })
        .collect();
    let json = tenants
        .iter()
        .map(|t| serde_json::json!({"name": t.name, "prefixes": t.prefixes, "ipv4_mappings": crate::ipv4::mappings_json(&t.ipv4_mappings), "created_at_unix_ms": t.created_at_unix_ms}))
        .collect();
    (rows, json)
}

/// Runs `nemoctl tenant ...`.
pub async fn tenant(
    client: &mut ControllerClient<Channel>,
    token: &Option<String>,
    command: TenantCommand,
    out: Output,
) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create { name } => {
            let tenant = client
                .create_tenant(request(pb::CreateTenantRequest { name }, token)?)
                .await
                .map(answer)?;
            let (rows, json) = tenant_rows(&[tenant]);
            print_records(out, TENANT, rows, json);
        }
        TenantCommand::Show { name } => {
            let tenant = client
                .get_tenant(request(pb::GetTenantRequest { name }, token)?)
                .await
                .map(answer)?;
            let (rows, json) = tenant_rows(&[tenant]);
            print_records(out, TENANT, rows, json);
        }
        TenantCommand::List => {
            let tenants = client
                .list_tenants(request(pb::ListTenantsRequest {}, token)?)
                .await
                .map(answer)?
                .tenants;
            let (rows, json) = tenant_rows(&tenants);
            print_records(out, TENANT, rows, json);
        }
        TenantCommand::Delete { name, cascade } => {
            let released = client
                .delete_tenant(request(
                    pb::DeleteTenantRequest {
                        name: name.clone(),
                        cascade,
                    },
                    token,
                )?)
                .await
                .map(answer)?
                .released;
            print_records(
                out,
                &["deleted", "released"],
                vec![vec![name.clone(), released.join(",")]],
                vec![serde_json::json!({"deleted": name, "released": released})],
            );
        }
    }
    Ok(())
}
