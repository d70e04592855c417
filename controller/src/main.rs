//! `nemo-controller`: the nemo controller. It allocates tenant prefixes
//! from pools and keeps a watchable history of every change, over gRPC.
//!
//! ```toml
//! listen = "[::1]:50051"
//! store = "/var/lib/nemo-controller"
//! token_file = "/etc/nemo/controller.token"   # or: insecure_no_token = true (labs)
//! quarantine_secs = 3600
//! ```
//!
//! Or, with its state in etcd instead of `store` (any number of replicas
//! on one prefix, all serving):
//!
//! ```toml
//! [etcd]
//! endpoints = ["http://[2001:db8::e1]:2379", "http://[2001:db8::e2]:2379"]
//! prefix = "/nemo/"
//! ```
//!
//! The history watchers resume from (optional; the defaults):
//!
//! ```toml
//! [history]
//! keep = 1000000
//! trim_every_secs = 300
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use nemo_controller::store::{Location, Store};
use nemo_daemon::serving::Servers;
use nemo_daemon::ConfigText;
use serde::Deserialize;

// mimalloc, as in nemo-ha: glibc's malloc and free were 15% of the
// controller's samples under concurrent allocations (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The nemo controller.
#[derive(Debug, Parser)]
#[command(name = "nemo-controller", version)]
struct Args {
    #[command(flatten)]
    daemon: nemo_daemon::DaemonArgs,
    #[command(subcommand)]
    tool: Option<Tool>,
}

/// What the controller does instead of serving.
#[derive(Debug, clap::Subcommand)]
enum Tool {
    /// Copies the store another config names (`store` or `[etcd]`) into the
    /// empty store this config names, then reads both back and compares
    /// them: moving a deployment from a directory to etcd, or back. Stop
    /// the controller using the source first.
    CopyFrom {
        /// The source controller's config file.
        source: PathBuf,
    },
}

/// The configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// gRPC listen address.
    listen: SocketAddr,
    /// Directory of the store (its file is `controller.redb`); or `[etcd]`.
    #[serde(default)]
    store: Option<toml::Spanned<PathBuf>>,
    /// The store in etcd instead of a directory.
    #[serde(default)]
    etcd: Option<toml::Spanned<nemo_controller::store::etcd::EtcdSettings>>,
    /// File holding the bearer token every call must carry.
    #[serde(default)]
    token_file: Option<toml::Spanned<PathBuf>>,
    /// Serve without a token (labs only; said loudly at start).
    #[serde(default)]
    insecure_no_token: bool,
    /// How long a released prefix is held back before reuse.
    #[serde(default = "default_quarantine")]
    quarantine_secs: u64,
    /// TLS: the certificate chain (PEM); with tls_key_file.
    #[serde(default)]
    tls_cert_file: Option<toml::Spanned<PathBuf>>,
    /// TLS: the private key (PEM).
    #[serde(default)]
    tls_key_file: Option<toml::Spanned<PathBuf>>,
    /// Client connections open at once; one more is closed at once. Keep
    /// it below the descriptor limit (the unit sets LimitNOFILE=65536).
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    /// Of those, open at once from one address (so that one host cannot
    /// take every slot before any token is checked).
    #[serde(default = "default_max_connections_per_source")]
    max_connections_per_source: usize,
    /// Prometheus metrics over HTTP (`GET /metrics`).
    #[serde(default)]
    metrics: Option<nemo_daemon::ListenSection>,
    /// Time a new connection has to make its first call with a valid token
    /// (or, with no token configured, any call to the API) before it is
    /// closed, in milliseconds: a client that connects and calls nothing,
    /// or only with a wrong token, holds no slot for longer.
    #[serde(default = "default_handshake_timeout_ms")]
    handshake_timeout_ms: u64,
    /// Whether a hypervisor that sees a placed tenant's VM arrive (after a
    /// live migration nobody reported) moves the tenant there: `refuse`
    /// (default) or `follow` (trusts every hypervisor's credential to move
    /// any placed tenant to itself).
    #[serde(default)]
    arrivals: nemo_controller::api::Arrivals,
    /// How far back the event history reaches.
    #[serde(default)]
    history: HistorySection,
}

/// `[history]`: the newest `keep` changes are kept for watchers that
/// resume (a daemon after a restart); older ones are trimmed every
/// `trim_every_secs` (with etcd, by one replica, which also compacts
/// etcd). A watcher resuming from before them takes the whole state again.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistorySection {
    #[serde(default = "default_history_keep")]
    keep: toml::Spanned<u64>,
    #[serde(default = "default_trim_every")]
    trim_every_secs: toml::Spanned<u64>,
}

impl Default for HistorySection {
    fn default() -> HistorySection {
        HistorySection {
            keep: default_history_keep(),
            trim_every_secs: default_trim_every(),
        }
    }
}

fn default_history_keep() -> toml::Spanned<u64> {
    toml::Spanned::new(0..0, 1_000_000)
}

fn default_trim_every() -> toml::Spanned<u64> {
    toml::Spanned::new(0..0, 300)
}

/// Where a config says the store is: `store` (a directory) or `[etcd]`.
fn store_location(
    file: &ConfigText,
    config: &Config,
) -> Result<Location, nemo_daemon::ConfigError> {
    match (&config.store, &config.etcd) {
        (Some(path), None) => Ok(Location::Directory(path.get_ref().clone())),
        (None, Some(etcd)) => match etcd.get_ref().problem() {
            Some((field, reason)) => {
                Err(file.invalid(etcd.span(), format!("etcd.{field}: {reason}")))
            }
            None => {
                let plain = etcd.get_ref().plain_remote_endpoints();
                if !plain.is_empty() {
                    tracing::warn!(
                        endpoints = ?plain,
                        "etcd reached in clear beyond this host: it holds every mobile router's \
                         key; use https:// with client certificates (cert_file, key_file)"
                    );
                }
                Ok(Location::Etcd(etcd.get_ref().clone()))
            }
        },
        (Some(path), Some(_)) => Err(file.invalid(
            path.span(),
            "store and [etcd] exclude each other: choose one",
        )),
        (None, None) => Err(file.invalid(0..0, "store (a directory) or [etcd] is required")),
    }
}

/// This replica's name among others: its host and gRPC address.
fn replica_name(listen: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!("{host} {listen} pid {}", std::process::id())
}

fn default_max_connections() -> usize {
    nemo_daemon::incoming::ConnectionLimits::default().max_connections
}

fn default_max_connections_per_source() -> usize {
    nemo_daemon::incoming::ConnectionLimits::default().max_per_source
}

fn default_handshake_timeout_ms() -> u64 {
    10_000
}

fn default_quarantine() -> u64 {
    3600
}

fn main() -> anyhow::Result<()> {
    let Args { daemon: args, tool } = match nemo_daemon::start(|args: &Args| &args.daemon)? {
        nemo_daemon::Invocation::ManPagePrinted => return Ok(()),
        nemo_daemon::Invocation::Run(args) => args,
    };
    let file = ConfigText::read(&args.config)?;
    let config: Config = file.parse()?;
    let token = match (&config.token_file, config.insecure_no_token) {
        (Some(path), false) => {
            let token = nemo_daemon::read_token(path.get_ref())
                .map_err(|e| file.invalid(path.span(), format!("token_file: {e}")))?;
            if token.len() < 16 {
                return Err(file
                    .invalid(
                        path.span(),
                        "token_file: the token must be at least 16 characters",
                    )
                    .into());
            }
            Some(token)
        }
        (None, true) => None,
        (Some(path), true) => {
            return Err(file
                .invalid(
                    path.span(),
                    "token_file and insecure_no_token exclude each other",
                )
                .into())
        }
        (None, false) => {
            return Err(file
                .invalid(
                    0..0,
                    "token_file is required (or insecure_no_token = true for a lab)",
                )
                .into())
        }
    };
    let location = store_location(&file, &config)?;
    let tls =
        match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => {
                let read = |path: &PathBuf| {
                    std::fs::read(path)
                        .map_err(|e| file.invalid(cert.span(), format!("{}: {e}", path.display())))
                };
                let pem = (read(cert.get_ref())?, read(key.get_ref())?);
                // Parsed now, so that --check and the ready line mean it loads.
                Some(nemo_controller::api::tls(pem).map_err(|e| {
                    file.invalid(cert.span(), format!("TLS certificate or key: {e}"))
                })?)
            }
            (None, None) => None,
            (Some(cert), None) => {
                return Err(file
                    .invalid(cert.span(), "tls_cert_file needs tls_key_file")
                    .into())
            }
            (None, Some(key)) => {
                return Err(file
                    .invalid(key.span(), "tls_key_file needs tls_cert_file")
                    .into())
            }
        };
    if config.max_connections == 0
        || config.max_connections_per_source == 0
        || config.handshake_timeout_ms == 0
    {
        return Err(file
            .invalid(
                0..0,
                "max_connections, max_connections_per_source and handshake_timeout_ms must be above 0",
            )
            .into());
    }
    for (field, name) in [
        (&config.history.keep, "history.keep"),
        (&config.history.trim_every_secs, "history.trim_every_secs"),
    ] {
        if *field.get_ref() == 0 {
            return Err(file
                .invalid(field.span(), format!("{name} must be above 0"))
                .into());
        }
    }
    let limits = nemo_daemon::incoming::ConnectionLimits {
        max_connections: config.max_connections,
        max_per_source: config.max_connections_per_source,
        handshake_timeout: Duration::from_millis(config.handshake_timeout_ms),
        ..Default::default()
    };
    if args.check {
        println!("{}: ok", args.config.display());
        return Ok(());
    }
    if let Some(Tool::CopyFrom { source }) = tool {
        let text = ConfigText::read(&source)?;
        let from = store_location(&text, &text.parse()?)?;
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?
            .block_on(async {
                let copied = nemo_controller::store::copy(&from, &location)
                    .await
                    .with_context(|| format!("copying {from} into {location}"))?;
                let records: Vec<String> = copied
                    .records
                    .iter()
                    .map(|(table, n)| format!("{table}={n}"))
                    .collect();
                println!(
                    "copied {from} into {location}: revision {}, {}; read back and equal",
                    copied.revision,
                    records.join(" ")
                );
                Ok(())
            });
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(async move {
            if token.is_none() {
                tracing::warn!("insecure_no_token: every call is accepted without a token");
            }
            let quarantine = Duration::from_secs(config.quarantine_secs);
            let store = match &location {
                Location::Directory(path) => Store::open(path, quarantine).await.map(Arc::new),
                Location::Etcd(settings) => Store::open_etcd(settings, quarantine).await,
            }
            .with_context(|| format!("opening the store in {location}"))?;
            tracing::info!(store = %store.location(), revision = store.revision().await, "store loaded");
            store.start_upkeep(nemo_controller::store::Upkeep {
                keep: *config.history.keep.get_ref(),
                every: Duration::from_secs(*config.history.trim_every_secs.get_ref()),
                who: replica_name(config.listen),
            });
            if config.arrivals == nemo_controller::api::Arrivals::Follow {
                tracing::warn!(
                    "arrivals = \"follow\": a hypervisor that reports a placed tenant's VM on its \
                     port gets the tenant placed there (every hypervisor's credential can move \
                     any placed tenant to itself)"
                );
            }
            let mut servers = Servers::new("nemo-controller ready");
            let listener = servers.bind("grpc", config.listen).await?;
            servers.note("tls", if tls.is_some() { "on" } else { "off" });
            servers.note("revision", store.revision().await);
            let metrics = Arc::new(nemo_controller::metrics::Metrics::new(store.clone()));
            servers.grpc(
                listener,
                nemo_controller::api::api(store, token, tls, metrics.clone(), config.arrivals),
                limits,
            );
            if let Some(section) = &config.metrics {
                servers
                    .metrics(section.listen, Arc::new(move || metrics.render()))
                    .await?;
            }
            let mut serving = servers.ready()?;
            let stop = serving.stopped().await;
            serving.shutdown().await;
            stop.context("server failed; stopping")?;
            Ok(())
        })
}
