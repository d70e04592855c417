//! `nemoctl home-agent`, `hypervisor`, `mobile-router`: who the controller
//! knows, and each mobile router's association with its home agent.

use clap::Subcommand;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use tonic::transport::Channel;

use crate::output::{print_deleted, print_records, Output};
use crate::{answer, request};

/// What `nemoctl home-agent` does.
#[derive(Debug, Subcommand)]
pub enum HomeAgentCommand {
    /// Registers (or updates) a home agent.
    Register {
        /// Its name, as its nemo-ha config's `[controller]` home_agent.
        name: String,
        /// The address Binding Updates go to.
        #[arg(long)]
        address: String,
        /// The home prefix home addresses come from.
        #[arg(long)]
        home_prefix: String,
        /// Its UDP transport, `[address]:port`.
        #[arg(long, default_value = "")]
        udp: String,
    },
    /// Lists home agents.
    List,
}

/// What `nemoctl hypervisor` does.
#[derive(Debug, Subcommand)]
pub enum HypervisorCommand {
    /// Registers a hypervisor.
    Register {
        /// Its name, as its nemo-mr config's `[controller]` hypervisor.
        name: String,
    },
    /// Lists hypervisors.
    List,
}

/// What `nemoctl mobile-router` does.
#[derive(Debug, Subcommand)]
pub enum MobileRouterCommand {
    /// Creates a tenant's mobile-router identity; prints its key once.
    Create {
        /// The tenant.
        tenant: String,
        /// The home agent that serves it (registered: `nemoctl ha list`).
        #[arg(long)]
        home_agent: String,
        /// hmac-sha256 (default) or hmac-sha1-96.
        #[arg(long, default_value = "")]
        algorithm: String,
        /// Send the prefixes in the Binding Updates (explicit mode).
        #[arg(long)]
        explicit: bool,
    },
    /// Shows a tenant's mobile router (without its key).
    Show {
        /// The tenant.
        tenant: String,
    },
    /// Gives it a new key; prints the key once.
    RotateKey {
        /// The tenant.
        tenant: String,
    },
    /// Deletes it.
    Delete {
        /// The tenant.
        tenant: String,
    },
}

pub fn mobile_router_rows(m: &pb::MobileRouter) -> (Vec<Vec<String>>, Vec<serde_json::Value>) {
    let rows = vec![vec![
        m.tenant.clone(),
        m.home_agent.clone(),
        m.home_address.clone(),
        m.spi.to_string(),
        m.algorithm.clone(),
        if m.key.is_empty() {
            "-".into()
        } else {
            m.key.clone()
        },
    ]];
    let json = vec![serde_json::json!({
        "tenant": m.tenant, "home_agent": m.home_agent, "home_address": m.home_address,
        "spi": m.spi, "algorithm": m.algorithm, "key": m.key, "explicit_mode": m.explicit_mode,
        "prefixes": m.prefixes,
    })];
    (rows, json)
}

pub fn home_agent_record(h: &pb::HomeAgent) -> serde_json::Value {
    serde_json::json!({"name": h.name, "address": h.address, "home_prefix": h.home_prefix, "udp": h.udp_endpoint})
}

/// Runs `nemoctl home-agent ...`.
pub async fn home_agent(
    client: &mut ControllerClient<Channel>,
    token: &Option<String>,
    command: HomeAgentCommand,
    out: Output,
) -> anyhow::Result<()> {
    match command {
        HomeAgentCommand::Register {
            name,
            address,
            home_prefix,
            udp,
        } => {
            let h = client
                .register_home_agent(request(
                    pb::RegisterHomeAgentRequest {
                        home_agent: Some(pb::HomeAgent {
                            name,
                            address,
                            home_prefix,
                            udp_endpoint: udp,
                        }),
                    },
                    token,
                )?)
                .await
                .map(answer)?;
            print_records(
                out,
                &["name", "address", "home_prefix", "udp"],
                vec![vec![
                    h.name.clone(),
                    h.address.clone(),
                    h.home_prefix.clone(),
                    h.udp_endpoint.clone(),
                ]],
                vec![home_agent_record(&h)],
            );
        }
        HomeAgentCommand::List => {
            let list = client
                .list_home_agents(request(pb::ListHomeAgentsRequest {}, token)?)
                .await
                .map(answer)?;
            let rows = list
                .home_agents
                .iter()
                .map(|h| {
                    vec![
                        h.name.clone(),
                        h.address.clone(),
                        h.home_prefix.clone(),
                        h.udp_endpoint.clone(),
                    ]
                })
                .collect();
            let json = list.home_agents.iter().map(home_agent_record).collect();
            print_records(out, &["name", "address", "home_prefix", "udp"], rows, json);
        }
    }
    Ok(())
}

/// Runs `nemoctl hypervisor ...`.
pub async fn hypervisor(
    client: &mut ControllerClient<Channel>,
    token: &Option<String>,
    command: HypervisorCommand,
    out: Output,
) -> anyhow::Result<()> {
    match command {
        HypervisorCommand::Register { name } => {
            let h = client
                .register_hypervisor(request(pb::RegisterHypervisorRequest { name }, token)?)
                .await
                .map(answer)?;
            print_records(
                out,
                &["name"],
                vec![vec![h.name.clone()]],
                vec![serde_json::json!({"name": h.name})],
            );
        }
        HypervisorCommand::List => {
            let list = client
                .list_hypervisors(request(pb::ListHypervisorsRequest {}, token)?)
                .await
                .map(answer)?;
            let names: Vec<String> = list.hypervisors.into_iter().map(|h| h.name).collect();
            print_records(
                out,
                &["name"],
                names.iter().map(|n| vec![n.clone()]).collect(),
                names
                    .iter()
                    .map(|n| serde_json::json!({"name": n}))
                    .collect(),
            );
        }
    }
    Ok(())
}

/// Runs `nemoctl mobile-router ...`.
pub async fn mobile_router(
    client: &mut ControllerClient<Channel>,
    token: &Option<String>,
    command: MobileRouterCommand,
    out: Output,
) -> anyhow::Result<()> {
    const MR: &[&str] = &[
        "tenant",
        "home_agent",
        "home_address",
        "spi",
        "algorithm",
        "key",
    ];
    let mr = match command {
        MobileRouterCommand::Create {
            tenant,
            home_agent,
            algorithm,
            explicit,
        } => client
            .create_mobile_router(request(
                pb::CreateMobileRouterRequest {
                    tenant,
                    home_agent,
                    algorithm,
                    explicit_mode: explicit,
                },
                token,
            )?)
            .await
            .map(answer)?,
        MobileRouterCommand::Show { tenant } => client
            .get_mobile_router(request(pb::GetMobileRouterRequest { tenant }, token)?)
            .await
            .map(answer)?,
        MobileRouterCommand::RotateKey { tenant } => client
            .rotate_key(request(pb::RotateKeyRequest { tenant }, token)?)
            .await
            .map(answer)?,
        MobileRouterCommand::Delete { tenant } => {
            client
                .delete_mobile_router(request(
                    pb::DeleteMobileRouterRequest {
                        tenant: tenant.clone(),
                    },
                    token,
                )?)
                .await?;
            print_deleted(out, &tenant);
            return Ok(());
        }
    };
    let (rows, json) = mobile_router_rows(&mr);
    print_records(out, MR, rows, json);
    Ok(())
}
