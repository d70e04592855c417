//! nemo's daemons as real processes for tests: their TOML written into the
//! test's directory, started through [`Process`] (ready line read, log to a
//! file, killed on drop), and the controller-side world most tests need.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use tonic::transport::Channel;

use crate::{workspace_binary, Process};

/// The bearer token every test controller takes.
pub const TOKEN: &str = "a-token-for-tests-0123456789";

/// A request carrying [`TOKEN`].
pub fn authed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}")
            .parse()
            .expect("an ASCII header value"),
    );
    request
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// The token file in `dir`, written with [`TOKEN`].
pub fn token_file(dir: &Path) -> PathBuf {
    write(dir, "token", format!("{TOKEN}\n"))
}

/// `dir/<stem>-<n>.log` for the first `n` not taken: a restarted daemon
/// keeps the log of its previous run.
pub fn next_log(dir: &Path, stem: &str) -> PathBuf {
    (0..)
        .map(|n| dir.join(format!("{stem}-{n}.log")))
        .find(|path| !path.exists())
        .unwrap_or_else(|| dir.join(format!("{stem}.log")))
}

/// Starts a workspace binary with `--config config`, its log in `log`.
pub fn start(binary: &str, config: &Path, log: PathBuf) -> Process {
    let mut command = Command::new(workspace_binary(binary));
    command.arg("--config").arg(config);
    Process::start(command, log)
}

/// Starts `nemo-controller` listening on loopback, its store in
/// `dir/controller-store`, with [`TOKEN`], and `extra` lines appended to
/// its config.
pub fn controller(dir: &Path, extra: &str) -> Process {
    let store = format!("store = \"{}\"\n", dir.join("controller-store").display());
    controller_with_tables(dir, &format!("{store}{extra}"), "")
}

/// Starts `nemo-controller` as [`controller`] does, with `top` (top-level
/// keys, the store's among them unless `tables` names it) and `tables`
/// (TOML tables after the keys, e.g. `[etcd]`).
pub fn controller_with_tables(dir: &Path, top: &str, tables: &str) -> Process {
    let token = token_file(dir);
    let config = write(
        dir,
        "controller.toml",
        format!(
            "listen = \"[::1]:0\"\ntoken_file = \"{}\"\n{top}\n{tables}",
            token.display()
        ),
    );
    start("nemo-controller", &config, next_log(dir, "controller"))
}

/// Starts `nemo-ha` serving 2001:db8:1::/64 over UDP on loopback, its
/// store in `dir/ha-store`, with the config `sections` appended (an
/// `[admin]`, `[[mobile_router]]` entries, [`controller_section`]).
pub fn home_agent(dir: &Path, sections: &str) -> Process {
    let config = write(
        dir,
        "ha.toml",
        format!(
            "[home_agent]\nhome_prefixes = [\"2001:db8:1::/64\"]\n\n[store]\npath = \"{}\"\n\n\
             [udp]\nlisten = [\"[::1]:0\"]\n\n[dataplane]\nbackend = \"memory\"\n\n{sections}",
            dir.join("ha-store").display()
        ),
    );
    start("nemo-ha", &config, next_log(dir, "ha"))
}

/// Starts `nemo-mr` on loopback: uplink `lo`, care-of address `care_of`,
/// the UDP transport to the home agent at `home_agent_udp`, with the config
/// `sections` appended (`[[instance]]` entries, a `[controller]`, `[admin]`);
/// its config is `dir/<tag>.toml`, its log `dir/<tag>-<n>.log`.
pub fn mobile_router(
    dir: &Path,
    tag: &str,
    care_of: &str,
    home_agent_udp: &str,
    sections: &str,
) -> Process {
    mobile_router_tuned(dir, tag, care_of, home_agent_udp, "", sections)
}

/// [`mobile_router`] with more lines in its `[mobile_router]` section
/// (`tuning`, e.g. `hold_ms = 300`).
pub fn mobile_router_tuned(
    dir: &Path,
    tag: &str,
    care_of: &str,
    home_agent_udp: &str,
    tuning: &str,
    sections: &str,
) -> Process {
    let config = write(
        dir,
        &format!("{tag}.toml"),
        format!(
            "[mobile_router]\nuplink = \"lo\"\ncare_of = \"{care_of}\"\n{tuning}\n\n\
             [transport]\nhome_agent_udp = \"{home_agent_udp}\"\nbind = \"[::1]:0\"\n\n\
             [dataplane]\nbackend = \"memory\"\n\n{sections}"
        ),
    );
    start("nemo-mr", &config, next_log(dir, tag))
}

/// The `[controller]` section of a home agent named `home_agent` that
/// follows the controller at `endpoint` with the token in `dir`.
pub fn controller_section(dir: &Path, endpoint: &str, home_agent: &str) -> String {
    format!(
        "[controller]\nendpoint = \"{endpoint}\"\ntoken_file = \"{}\"\nhome_agent = \"{home_agent}\"\n",
        dir.join("token").display()
    )
}

/// A gRPC client of a test controller.
pub async fn controller_client(controller: &Process) -> ControllerClient<Channel> {
    ControllerClient::connect(format!("http://{}", controller.field("grpc")))
        .await
        .expect("connecting to the test controller")
}

/// What most tests need at the controller: home agent `ha1` (2001:db8:1::1,
/// home prefix 2001:db8:1::/64, reachable at `udp_endpoint`, empty for
/// none), pool `core` (2001:db8:100::/40 in /56s), tenant `acme` with one
/// prefix, and its mobile router in explicit mode. Returns the mobile
/// router's identity.
pub async fn provision_tenant(
    client: &mut ControllerClient<Channel>,
    udp_endpoint: &str,
) -> pb::MobileRouter {
    client
        .register_home_agent(authed(pb::RegisterHomeAgentRequest {
            home_agent: Some(pb::HomeAgent {
                name: "ha1".into(),
                address: "2001:db8:1::1".into(),
                home_prefix: "2001:db8:1::/64".into(),
                udp_endpoint: udp_endpoint.into(),
            }),
        }))
        .await
        .expect("register_home_agent");
    client
        .create_pool(authed(pb::CreatePoolRequest {
            name: "core".into(),
            prefix: "2001:db8:100::/40".into(),
            tenant_length: 56,
            translation_prefix: String::new(),
        }))
        .await
        .expect("create_pool");
    client
        .create_tenant(authed(pb::CreateTenantRequest {
            name: "acme".into(),
        }))
        .await
        .expect("create_tenant");
    client
        .allocate_prefix(authed(pb::AllocatePrefixRequest {
            tenant: "acme".into(),
            pool: "core".into(),
            length: 0,
            prefix: String::new(),
        }))
        .await
        .expect("allocate_prefix");
    client
        .create_mobile_router(authed(pb::CreateMobileRouterRequest {
            tenant: "acme".into(),
            home_agent: "ha1".into(),
            algorithm: String::new(),
            explicit_mode: true,
        }))
        .await
        .expect("create_mobile_router")
        .into_inner()
}

/// Places `tenant` on `hypervisor` once the hypervisor's nemo-mr has
/// registered it (a placement on an unknown hypervisor is refused); false
/// when that never happened.
pub async fn place_once_registered(
    client: &ControllerClient<Channel>,
    tenant: &str,
    hypervisor: &str,
) -> bool {
    eventually(|| async move { place(client, tenant, hypervisor, "initial").await.is_ok() }).await
}

/// Places `tenant` on `hypervisor` for `reason`, as an orchestrator does.
pub async fn place(
    client: &ControllerClient<Channel>,
    tenant: &str,
    hypervisor: &str,
    reason: &str,
) -> Result<(), tonic::Status> {
    client
        .clone()
        .place_tenant(authed(pb::PlaceTenantRequest {
            tenant: tenant.into(),
            hypervisor: hypervisor.into(),
            reason: reason.into(),
            delivery: pb::Delivery::Now.into(),
        }))
        .await
        .map(drop)
}

/// The oldest change the controller's history still holds (its upkeep
/// trims older ones).
pub async fn oldest_event(client: &ControllerClient<Channel>) -> Option<pb::Event> {
    let mut history = client
        .clone()
        .watch_events(authed(pb::WatchEventsRequest {
            from_revision: 0,
            history_only: true,
        }))
        .await
        .expect("watch_events")
        .into_inner();
    history.message().await.expect("the history")
}

/// Waits until `check` holds, polling every 50 ms for up to 10 s; false
/// when it never did.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    mut check: impl FnMut() -> F,
) -> bool {
    for _ in 0..200 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
