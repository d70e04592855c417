//! `nemoctl credential`: tokens per role (issue 32). A home agent's may
//! watch its own authorizations and report its own bindings; a
//! hypervisor's may register itself and watch its own placements; an
//! operator's may do everything. The token is printed once, when issued:
//! put it in the daemon's `[controller] token_file`.

use clap::Subcommand;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use tonic::transport::Channel;

use crate::output::{print_records, utc, Output};
use crate::{answer, request};

/// What `nemoctl credential` does.
#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Issues a credential; prints its token once.
    Issue {
        /// operator, home_agent or hypervisor.
        role: String,
        /// The home agent's or hypervisor's name (as in its config's
        /// `[controller]`); none for an operator.
        #[arg(default_value = "")]
        name: String,
    },
    /// Lists credentials (without tokens).
    List,
    /// Revokes a credential: its token is refused from the next call.
    Revoke {
        /// Its id (`cred-...`).
        id: String,
    },
}

const COLUMNS: &[&str] = &["id", "role", "name", "issued"];

fn record(c: &pb::Credential) -> (Vec<String>, serde_json::Value) {
    (
        vec![
            c.id.clone(),
            c.role.clone(),
            c.name.clone(),
            utc(c.issued_unix_ms),
        ],
        serde_json::json!({"id": c.id, "role": c.role, "name": c.name, "issued_unix_ms": c.issued_unix_ms}),
    )
}

pub async fn credential(
    client: &mut ControllerClient<Channel>,
    token: &Option<String>,
    command: CredentialCommand,
    out: Output,
) -> anyhow::Result<()> {
    let credentials = match command {
        CredentialCommand::Issue { role, name } => {
            let issued = client
                .issue_credential(request(pb::IssueCredentialRequest { role, name }, token)?)
                .await
                .map(answer)?;
            let credential = issued.credential.unwrap_or_default();
            let (mut row, mut json) = record(&credential);
            row.push(issued.token.clone());
            json["token"] = serde_json::Value::String(issued.token);
            let mut columns = COLUMNS.to_vec();
            columns.push("token (shown once)");
            print_records(out, &columns, vec![row], vec![json]);
            return Ok(());
        }
        CredentialCommand::List => {
            client
                .list_credentials(request(pb::ListCredentialsRequest {}, token)?)
                .await
                .map(answer)?
                .credentials
        }
        CredentialCommand::Revoke { id } => {
            vec![client
                .revoke_credential(request(pb::RevokeCredentialRequest { id }, token)?)
                .await
                .map(answer)?]
        }
    };
    let (rows, json) = credentials.iter().map(record).unzip();
    print_records(out, COLUMNS, rows, json);
    Ok(())
}
