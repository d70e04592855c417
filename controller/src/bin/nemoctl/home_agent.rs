//! A home agent's own admin API (`nemo.v1.HomeAgentAdmin`, `[admin]` in its
//! configuration): the bindings in its cache and its part in a pair. Not
//! the controller: these commands go to `--ha-admin`.

use clap::Subcommand;
use nemo_daemon::bearer::BearerToken;
use nemo_proto::v1 as pb;
use nemo_proto::v1::home_agent_admin_client::HomeAgentAdminClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::output::{now_unix_ms, print_records, print_report, report, seconds_until, Output};
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum PairCommand {
    /// This member's role, priority, standby, replication and last takeover.
    Status,
    /// Hands the active role to the standby, for maintenance (run it against
    /// the active): it stops answering, waits until every answered
    /// registration is on the standby's disk, and resigns; it then stands by
    /// at priority 1 until restarted.
    HandOver,
}

#[derive(Debug, Subcommand)]
pub enum BindingsCommand {
    /// Every binding in the cache.
    List,
    /// One binding, by home address.
    Show { home_address: String },
    /// Removes a binding and its forwarding, as a deregistration would.
    Delete { home_address: String },
}

/// What nemoctl asks of a home agent.
#[derive(Debug)]
pub enum AdminCommand {
    Pair(PairCommand),
    Bindings(BindingsCommand),
}

const BINDING: &[&str] = &[
    "home address",
    "care-of",
    "prefixes",
    "sequence",
    "lifetime",
    "expires in",
];

/// A home agent's admin API: where (`--ha-admin`), and the token its
/// `[admin] token_file` holds, if any (`--ha-admin-token-file`).
#[derive(Debug, Clone)]
pub struct HaAdmin {
    /// The endpoint.
    pub endpoint: String,
    /// The bearer token.
    pub token: Option<String>,
}

/// A client of the admin API that sends the token with every call.
pub type AdminClient = HomeAgentAdminClient<InterceptedService<Channel, BearerToken>>;

impl HaAdmin {
    /// A client connected to the admin API.
    pub async fn connect(&self) -> anyhow::Result<AdminClient> {
        crate::check_endpoint("--ha-admin", &self.endpoint)?;
        let channel: Channel =
            crate::connect("the home agent's admin API", &self.endpoint, None).await?;
        let token = BearerToken::new(self.token.as_deref())
            .map_err(|_| anyhow::anyhow!("--ha-admin-token-file: not a valid token"))?;
        Ok(HomeAgentAdminClient::with_interceptor(channel, token))
    }
}

/// Runs `command` against the admin API `admin`.
pub async fn run(admin: &HaAdmin, command: AdminCommand, out: Output) -> anyhow::Result<()> {
    let mut client = admin.connect().await?;
    match command {
        AdminCommand::Pair(PairCommand::Status) => {
            let status = client
                .get_pair_status(pb::GetPairStatusRequest {})
                .await?
                .into_inner();
            print_pair_status(&status, out);
        }
        AdminCommand::Pair(PairCommand::HandOver) => {
            client.hand_over(pb::HandOverRequest {}).await?;
            let status = client
                .get_pair_status(pb::GetPairStatusRequest {})
                .await?
                .into_inner();
            match out {
                Output::Json => print_pair_status(&status, out),
                Output::Table => println!(
                    "handed over: this member is {} at priority {}; the standby takes over within its Skew_Time",
                    status.role, status.priority
                ),
            }
        }
        AdminCommand::Bindings(BindingsCommand::List) => {
            let list = client
                .list_bindings(pb::ListBindingsRequest {})
                .await?
                .into_inner();
            print_bindings(&list.bindings, out);
        }
        AdminCommand::Bindings(BindingsCommand::Show { home_address }) => {
            let binding = client
                .get_binding(pb::GetBindingRequest { home_address })
                .await?
                .into_inner();
            print_bindings(&[binding], out);
        }
        AdminCommand::Bindings(BindingsCommand::Delete { home_address }) => {
            let removed = client
                .delete_binding(pb::DeleteBindingRequest { home_address })
                .await?
                .into_inner();
            print_bindings(removed.binding.as_slice(), out);
        }
    }
    Ok(())
}

fn print_bindings(bindings: &[pb::Binding], out: Output) {
    let rows = bindings
        .iter()
        .map(|b| {
            vec![
                b.home_address.clone(),
                b.care_of_address.clone(),
                b.prefixes.join(","),
                b.sequence.to_string(),
                format!("{} s", b.lifetime_seconds),
                seconds_until(b.expires_at_unix_ms),
            ]
        })
        .collect();
    let json = bindings
        .iter()
        .map(|b| {
            serde_json::json!({
                "home_address": b.home_address,
                "care_of_address": b.care_of_address,
                "prefixes": b.prefixes,
                "mobile_router": b.mobile_router,
                "sequence": b.sequence,
                "spi": b.spi,
                "lifetime_seconds": b.lifetime_seconds,
                "registered_at_unix_ms": b.registered_at_unix_ms,
                "expires_at_unix_ms": b.expires_at_unix_ms,
            })
        })
        .collect();
    print_records(out, BINDING, rows, json);
}

fn print_pair_status(status: &pb::PairStatus, out: Output) {
    let last_takeover = if status.last_takeover_unix_ms == 0 {
        "never".to_owned()
    } else {
        format!(
            "{} s ago ({})",
            (now_unix_ms() - status.last_takeover_unix_ms).max(0) / 1000,
            status.last_takeover_reason
        )
    };
    let rows = [
        ("role", status.role.clone()),
        ("vrid", status.vrid.to_string()),
        ("priority", status.priority.to_string()),
        ("standby attached", status.standby_attached.to_string()),
        ("replicated batches", status.replicated_batches.to_string()),
        (
            "unreplicated batches",
            status.unreplicated_batches.to_string(),
        ),
        ("takeovers", status.takeovers.to_string()),
        ("last takeover", last_takeover),
    ]
    .into_iter()
    .map(|(field, value)| vec![field.to_owned(), value])
    .collect();
    let json = report([
        ("role", json!(status.role)),
        ("vrid", json!(status.vrid)),
        ("priority", json!(status.priority)),
        ("standby_attached", json!(status.standby_attached)),
        ("replicated_batches", json!(status.replicated_batches)),
        ("unreplicated_batches", json!(status.unreplicated_batches)),
        ("takeovers", json!(status.takeovers)),
        ("last_takeover_unix_ms", json!(status.last_takeover_unix_ms)),
        ("last_takeover_reason", json!(status.last_takeover_reason)),
    ]);
    print_report(out, &["field", "value"], rows, json);
}
