//! `nemoctl`: every call of the nemo controller's API from the command line.
//!
//! ```sh
//! nemoctl pool create core 2001:db8:100::/40 --tenant-length 56
//! nemoctl tenant create acme
//! nemoctl prefix allocate acme --pool core
//! nemoctl events --follow
//! nemoctl pair status                      # a home agent's admin API
//! nemoctl --ha-admin 'http://[::1]:50052' pair hand-over
//! nemoctl bindings list
//! ```
//!
//! The controller's endpoint and token come from `--endpoint`/`--token` or
//! the NEMO_ENDPOINT/NEMO_TOKEN environment variables; a home agent's admin
//! API from `--ha-admin` or NEMO_HA_ADMIN. Output is a table, or
//! JSON with `--output json`.

mod credentials;
mod handovers;
mod home_agent;
mod identities;
mod ipv4;
mod output;
mod pools;
mod prefixes;
mod qmp;
mod request_ids;
mod status;
mod tenants;

use clap::{Parser, Subcommand};
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use tonic::transport::Channel;
use tonic::Request;

use home_agent::{BindingsCommand, PairCommand};
use identities::{HomeAgentCommand, HypervisorCommand, MobileRouterCommand};
use output::{print_records, print_streamed, Output};
use pools::PoolCommand;
use prefixes::PrefixCommand;
use tenants::TenantCommand;

#[derive(Debug, Parser)]
#[command(
    name = "nemoctl",
    version,
    about = "Drive nemo: the controller's API, and a home agent's admin API"
)]
struct Args {
    /// The controller's address (http:// or https://); replicas as a
    /// comma-separated list, tried in order until one answers.
    #[arg(
        long,
        global = true,
        env = "NEMO_ENDPOINT",
        default_value = "http://[::1]:50051"
    )]
    endpoint: String,
    /// The bearer token (visible to other users in `ps`: prefer
    /// --token-file).
    #[arg(long, global = true, env = "NEMO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the bearer token (as the daemons' token_file).
    #[arg(long, global = true, env = "NEMO_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
    /// CA certificate (PEM) that signed the controller's TLS certificate;
    /// use with an https:// endpoint.
    #[arg(long, global = true, env = "NEMO_CA")]
    ca: Option<std::path::PathBuf>,
    /// A home agent's admin API (`[admin] listen` in its configuration),
    /// for `pair` and `bindings`.
    #[arg(
        long,
        global = true,
        env = "NEMO_HA_ADMIN",
        default_value = "http://[::1]:50052"
    )]
    ha_admin: String,
    /// A file holding the token of the home agent's admin API (its
    /// `[admin] token_file`).
    #[arg(long, global = true, env = "NEMO_HA_ADMIN_TOKEN_FILE")]
    ha_admin_token_file: Option<std::path::PathBuf>,
    /// Seconds a command may take, connecting included (`events --follow`:
    /// connecting only).
    #[arg(long, global = true, env = "NEMO_TIMEOUT", default_value_t = 10.0)]
    timeout: f64,
    /// Output format: a table, or JSON (records as an array of objects,
    /// `--follow` streams as JSON Lines, `status` reports as one object).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// The request id of this command's changes (gRPC metadata
    /// nemo-request-id; its second call gets ID.2, and so on). A command
    /// run again with the id a failed run printed is made at most once.
    /// Default: a fresh one per run.
    #[arg(long, global = true, env = "NEMO_REQUEST_ID")]
    request_id: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Controller(ControllerCommand),
    /// A home agent's part in a pair (its admin API, --ha-admin).
    #[command(subcommand)]
    Pair(PairCommand),
    /// The bindings in a home agent's cache (its admin API, --ha-admin).
    #[command(subcommand)]
    Bindings(BindingsCommand),
    /// Prints nemoctl's shell completion script, e.g.
    /// `nemoctl completions bash > /etc/bash_completion.d/nemoctl`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Prints nemoctl's manual page (roff, for man(1)); each daemon prints
    /// its own with --man-page.
    Man,
}

/// What the controller is asked.
#[derive(Debug, Subcommand)]
enum ControllerCommand {
    /// Prefix pools.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Tenant prefixes (MNPs).
    #[command(subcommand)]
    Prefix(PrefixCommand),
    /// Tenants' IPv4 addresses, each mapped to an IPv6 address inside one
    /// of the tenant's prefixes (translated at the home site).
    #[command(subcommand)]
    Ipv4(ipv4::Ipv4Command),
    /// Home agents.
    #[command(subcommand, name = "ha")]
    HomeAgent(HomeAgentCommand),
    /// Hypervisors.
    #[command(subcommand, name = "hv")]
    Hypervisor(HypervisorCommand),
    /// Mobile-router identities.
    #[command(subcommand, name = "mr")]
    MobileRouter(MobileRouterCommand),
    /// Credentials per role: an operator's, a home agent's, a hypervisor's.
    #[command(subcommand)]
    Credential(credentials::CredentialCommand),
    /// Places (or moves) a tenant on a hypervisor; placing it where it is
    /// changes nothing.
    Place {
        /// The tenant.
        tenant: String,
        /// The hypervisor it runs on now (registered: `nemoctl hv list`).
        hypervisor: String,
        /// Why, for the event history (at most 256 octets).
        #[arg(long, default_value = "")]
        reason: String,
        /// A live migration's hook: connect to the controller, then wait
        /// on this QEMU monitor socket (QMP) for --qmp-event and place at
        /// that moment.
        #[arg(long)]
        when_qmp: Option<std::path::PathBuf>,
        /// The moment: `resume` (the destination's monitor: the VM runs
        /// there) or `stop` (the source's: the VM paused for the
        /// migration's last copy, about its downtime before it resumes).
        #[arg(long, value_enum, default_value_t = qmp::Moment::Resume)]
        qmp_event: qmp::Moment,
        /// Longest wait for the moment, in seconds.
        #[arg(long, default_value_t = 600.0)]
        qmp_timeout: f64,
        /// The VM is on its way (a live migration starting now): the new
        /// hypervisor passes the tenant's traffic once the VM announces
        /// itself there (QEMU's RARP), and the home agent copies it to the
        /// site it left meanwhile (make-before-break).
        #[arg(long, conflicts_with = "when_qmp")]
        on_announcement: bool,
    },
    /// Takes a tenant off its hypervisor.
    Unplace {
        /// The tenant.
        tenant: String,
        /// Why, for the event history (at most 256 octets).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lists placements.
    Placements,
    /// Where every tenant is, at a glance: its prefixes, its hypervisor and
    /// since when, its home agent and home address, and its binding (care-of
    /// address, lifetime left) when the home agent's admin API answers
    /// (--ha-admin).
    Status,
    /// The history of changes.
    Events {
        /// Start after this revision.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep watching for new changes.
        #[arg(long)]
        follow: bool,
    },
    /// The tenants' moves as the home agents reported them, one line each:
    /// when, tenant, home address, registered/moved/left, from which
    /// care-of address to which, sequence, and the time from the placement
    /// to the report.
    Handovers {
        /// Keep watching for new ones.
        #[arg(long)]
        follow: bool,
    },
}

/// An answer's message; says on stderr when the replica that answered a
/// read could not check it was up to date (its etcd has no quorum).
fn answer<T>(response: tonic::Response<T>) -> T {
    if let Some(why) = response
        .metadata()
        .get(nemo_controller::api::MAY_BE_STALE)
        .and_then(|v| v.to_str().ok())
    {
        eprintln!("nemoctl: warning: this answer may be stale: {why}");
    }
    response.into_inner()
}

fn request<T>(message: T, token: &Option<String>) -> anyhow::Result<Request<T>> {
    let mut request = match token {
        Some(token) => nemo_daemon::authorized(message, token)?,
        None => Request::new(message),
    };
    let id = request_ids::next();
    request.metadata_mut().insert(
        nemo_controller::api::REQUEST_ID,
        id.parse()
            .map_err(|_| anyhow::anyhow!("--request-id {id:?}: not printable ASCII"))?,
    );
    Ok(request)
}

fn placement_record(p: &pb::Placement) -> serde_json::Value {
    let delivery = match p.delivery() {
        pb::Delivery::Now => "now",
        pb::Delivery::OnAnnouncement => "on_announcement",
    };
    serde_json::json!({"tenant": p.tenant, "hypervisor": p.hypervisor, "reason": p.reason, "since_unix_ms": p.since_unix_ms, "delivery": delivery})
}

/// An event's table cells, padded to fixed widths (rows print as they
/// arrive, so widths cannot be measured first).
fn event_cells(revision: &str, at: &str, kind: &str, subject: &str, detail: &str) -> Vec<String> {
    vec![
        format!("{revision:>8}"),
        format!("{at:<24}"),
        format!("{kind:<18}"),
        format!("{subject:<16}"),
        detail.to_owned(),
    ]
}

/// An event's table row and its JSON object (the detail parsed, so that
/// scripts read it as JSON, not as a string holding JSON).
fn event_record(event: &pb::Event) -> (Vec<String>, serde_json::Value) {
    let row = event_cells(
        &event.revision.to_string(),
        &output::utc(event.at_unix_ms),
        &event.kind,
        &event.subject,
        &output::detail(&event.detail_json),
    );
    let record = serde_json::json!({
        "revision": event.revision, "at_unix_ms": event.at_unix_ms,
        "kind": event.kind, "subject": event.subject,
        "detail": serde_json::from_str::<serde_json::Value>(&event.detail_json).unwrap_or_default(),
        "request_id": event.request_id,
    });
    (row, record)
}

/// The gRPC status code as gRPC names it (`FAILED_PRECONDITION`).
fn canonical(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Refuses an endpoint without a scheme before trying it (the transport
/// would only say "transport error").
fn check_endpoint(flag: &str, endpoint: &str) -> anyhow::Result<()> {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        Ok(())
    } else {
        anyhow::bail!("{flag} {endpoint:?} needs http:// or https:// in front")
    }
}

/// Connects to `endpoint`, saying why not (connection refused, no route,
/// a certificate refused) instead of only "transport error".
async fn connect(
    what: &str,
    endpoint: &str,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<Channel> {
    nemo_daemon::controller_channel(endpoint, ca)
        .await
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot reach {what} at {endpoint}")))
}

/// Connects to the first of `endpoints` that answers (controller
/// replicas), saying why each did not when none does.
async fn connect_first(
    what: &str,
    endpoints: &[&str],
    ca: Option<&std::path::Path>,
) -> anyhow::Result<Channel> {
    let mut failures = Vec::new();
    for endpoint in endpoints {
        match connect(what, endpoint, ca).await {
            Ok(channel) => return Ok(channel),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    anyhow::bail!("{}", failures.join("; "))
}

async fn run(mut args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.token_file {
        args.token = Some(
            nemo_daemon::read_token(path)
                .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?,
        );
    }
    let ha_admin = home_agent::HaAdmin {
        endpoint: args.ha_admin.clone(),
        token: args
            .ha_admin_token_file
            .as_deref()
            .map(|path| {
                nemo_daemon::read_token(path)
                    .map_err(|e| anyhow::anyhow!("--ha-admin-token-file {}: {e}", path.display()))
            })
            .transpose()?,
    };
    let to_home_agent = match args.command {
        Command::Controller(command) => {
            return controller(
                &args.endpoint,
                args.ca.as_deref(),
                &args.token,
                &ha_admin,
                command,
                args.output,
            )
            .await
        }
        Command::Pair(command) => home_agent::AdminCommand::Pair(command),
        Command::Bindings(command) => home_agent::AdminCommand::Bindings(command),
        Command::Man => {
            use clap::CommandFactory;
            return Ok(nemo_daemon::print_man_page(
                Args::command(),
                nemo_daemon::ManSection::Commands,
            )?);
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            // Into memory first: clap_complete panics on a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Args::command(), "nemoctl", &mut script);
            let mut stdout = std::io::stdout();
            match stdout.write_all(&script).and_then(|()| stdout.flush()) {
                Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(error.into())
                }
                _ => {}
            }
            return Ok(());
        }
    };
    home_agent::run(&ha_admin, to_home_agent, args.output).await
}

/// Runs `command` against the controller at `endpoint`.
async fn controller(
    endpoint: &str,
    ca: Option<&std::path::Path>,
    token: &Option<String>,
    ha_admin: &home_agent::HaAdmin,
    command: ControllerCommand,
    out: Output,
) -> anyhow::Result<()> {
    let endpoints: Vec<&str> = endpoint.split(',').map(str::trim).collect();
    for endpoint in &endpoints {
        check_endpoint("--endpoint", endpoint)?;
    }
    let channel = connect_first("the controller", &endpoints, ca).await?;
    let mut client = ControllerClient::new(channel);
    match command {
        ControllerCommand::Pool(command) => pools::pool(&mut client, token, command, out).await?,
        ControllerCommand::Tenant(command) => {
            tenants::tenant(&mut client, token, command, out).await?
        }
        ControllerCommand::Prefix(command) => {
            prefixes::prefix(&mut client, token, command, out).await?
        }
        ControllerCommand::Ipv4(command) => ipv4::ipv4(&mut client, token, command, out).await?,
        ControllerCommand::HomeAgent(command) => {
            identities::home_agent(&mut client, token, command, out).await?
        }
        ControllerCommand::Hypervisor(command) => {
            identities::hypervisor(&mut client, token, command, out).await?
        }
        ControllerCommand::MobileRouter(command) => {
            identities::mobile_router(&mut client, token, command, out).await?
        }
        ControllerCommand::Credential(command) => {
            credentials::credential(&mut client, token, command, out).await?
        }
        ControllerCommand::Place {
            tenant,
            hypervisor,
            reason,
            when_qmp,
            qmp_event,
            qmp_timeout,
            on_announcement,
        } => {
            if let Some(socket) = &when_qmp {
                let limit = std::time::Duration::try_from_secs_f64(qmp_timeout).map_err(|_| {
                    anyhow::anyhow!("--qmp-timeout: {qmp_timeout} is not a duration")
                })?;
                qmp::wait_for(socket, qmp_event, limit).await?;
            }
            let p = client
                .place_tenant(request(
                    pb::PlaceTenantRequest {
                        tenant,
                        hypervisor,
                        reason,
                        delivery: if on_announcement {
                            pb::Delivery::OnAnnouncement
                        } else {
                            pb::Delivery::Now
                        }
                        .into(),
                    },
                    token,
                )?)
                .await
                .map(answer)?;
            print_records(
                out,
                &["tenant", "hypervisor", "reason"],
                vec![vec![
                    p.tenant.clone(),
                    p.hypervisor.clone(),
                    p.reason.clone(),
                ]],
                vec![placement_record(&p)],
            );
        }
        ControllerCommand::Unplace { tenant, reason } => {
            client
                .unplace_tenant(request(
                    pb::UnplaceTenantRequest {
                        tenant: tenant.clone(),
                        reason,
                    },
                    token,
                )?)
                .await?;
            print_records(
                out,
                &["unplaced"],
                vec![vec![tenant.clone()]],
                vec![serde_json::json!({"unplaced": tenant})],
            );
        }
        ControllerCommand::Status => {
            status::run(&mut client, token, ha_admin, out).await?;
        }
        ControllerCommand::Placements => {
            let list = client
                .list_placements(request(pb::ListPlacementsRequest {}, token)?)
                .await
                .map(answer)?;
            let rows = list
                .placements
                .iter()
                .map(|p| vec![p.tenant.clone(), p.hypervisor.clone(), p.reason.clone()])
                .collect();
            let json = list.placements.iter().map(placement_record).collect();
            print_records(out, &["tenant", "hypervisor", "reason"], rows, json);
        }
        ControllerCommand::Handovers { follow } => {
            let mut stream = client
                .watch_events(request(
                    pb::WatchEventsRequest {
                        from_revision: 0,
                        history_only: !follow,
                    },
                    token,
                )?)
                .await
                .map(answer)?;
            let mut view = handovers::Handovers::default();
            let mut rows = Vec::new();
            let mut json = Vec::new();
            while let Some(event) = stream.message().await? {
                let Some(handover) = view.hear(&event) else {
                    continue;
                };
                if follow {
                    print_streamed(out, handover.row(), &handover.json());
                } else {
                    json.push(handover.json());
                    rows.push(handover.row());
                }
            }
            if !follow {
                print_records(out, handovers::COLUMNS, rows, json);
            }
        }
        ControllerCommand::Events { from, follow } => {
            let mut stream = client
                .watch_events(request(
                    pb::WatchEventsRequest {
                        from_revision: from,
                        // Without --follow: the history up to now; the
                        // controller ends the stream there.
                        history_only: !follow,
                    },
                    token,
                )?)
                .await
                .map(answer)?;
            // Without --follow, the history's records as they arrive (it
            // may hold a million): one array, not one held in memory first.
            let mut history = (!follow).then(|| {
                output::RecordArray::start(
                    out,
                    &event_cells("revision", "at", "kind", "subject", "detail"),
                )
            });
            while let Some(event) = stream.message().await? {
                let (row, record) = event_record(&event);
                match history.as_mut() {
                    Some(history) => history.push(row, &record),
                    None => print_streamed(out, row, &record),
                }
            }
            if let Some(history) = history {
                history.end();
            }
        }
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    request_ids::start(args.request_id.clone());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("nemoctl: {error}");
            std::process::exit(1);
        }
    };
    // A stream followed runs until interrupted; everything else, and the
    // connection of a stream, within --timeout.
    // A placement waiting for a VM's moment (--when-qmp) bounds its own
    // wait (--qmp-timeout).
    let follows = matches!(
        args.command,
        Command::Controller(
            ControllerCommand::Events { follow: true, .. }
                | ControllerCommand::Handovers { follow: true }
                | ControllerCommand::Place {
                    when_qmp: Some(_),
                    ..
                }
        )
    );
    let limit = std::time::Duration::try_from_secs_f64(args.timeout)
        .unwrap_or(std::time::Duration::from_secs(10));
    let endpoint = args.endpoint.clone();
    let result = runtime.block_on(async move {
        if follows {
            run(args).await
        } else {
            tokio::time::timeout(limit, run(args))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "no answer within {} s (--timeout); is {endpoint} the controller?",
                        limit.as_secs_f64()
                    ))
                })
        }
    });
    if let Err(error) = result {
        // A gRPC status prints as gRPC names its code, and its message;
        // anything else with its causes ("connection refused").
        match error.downcast_ref::<tonic::Status>() {
            Some(status) => eprintln!(
                "nemoctl: {}: {}",
                canonical(status.code()),
                status.message()
            ),
            None => eprintln!("nemoctl: {error:#}"),
        }
        // Sent and unanswered: the change may have been made. The same
        // command with this id is answered as the first call, not made
        // again.
        let unanswered = error.downcast_ref::<tonic::Status>().is_none_or(|status| {
            matches!(
                status.code(),
                tonic::Code::Unknown | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            )
        });
        if unanswered && request_ids::sent() {
            eprintln!(
                "nemoctl: whether the change was made is not known: run the same command with \
                 --request-id {} to make it at most once",
                request_ids::command_id()
            );
        }
        std::process::exit(1);
    }
}
