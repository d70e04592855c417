//! `nemo-ha`: the nemo home agent. It keeps the NEMO binding cache, answers
//! Binding Updates (RFC 6275, RFC 3963, RFC 4285) and steers each tenant's
//! Mobile Network Prefixes to the mobile router's care-of address.

use std::net::Ipv6Addr;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use nemo_daemon::serving::Servers;
use nemo_daemon::BackendLabel;
use nemo_dataplane::bpf::{BpfHomeAgent, BpfHomeAgentConfig};
use nemo_dataplane::linux::{Seg6Config, Seg6HomeAgent};
use nemo_dataplane::{HomeAgentDataPlane, KernelBackend, MemoryDataPlane};
use nemo_ha::admin::{self, Admin};
use nemo_ha::config::{Config, OnShutdown};
use nemo_ha::driver::{self, Setup};
use nemo_ha::metrics::Metrics;
use nemo_ha::store::Store;

// mimalloc: 20% more registrations per second than glibc's allocator at
// saturation (52.8-53.8k/s against 43.1-45.2k/s, 8-second runs of
// ha-loadgen with 2000 routers) and about the same memory (231 against 222
// MiB with 100,000 bindings); docs/BENCHMARKS.md. The feature
// `system-allocator` keeps glibc's, for heap profilers that interpose
// malloc (heaptrack: bench/ha-heap.sh).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The nemo home agent.
#[derive(Debug, Parser)]
#[command(
    name = "nemo-ha",
    version,
    after_long_help = "Signals: SIGTERM stops cleanly. SIGHUP re-reads the static authorizations ([[mobile_router]]) and applies what changed, without touching the controller's; a file that does not load, or whose entries collide with the controller's, is refused whole and the running ones stay. Every other setting takes effect at the next start."
)]
struct Args {
    #[command(flatten)]
    daemon: nemo_daemon::DaemonArgs,
}

fn main() -> anyhow::Result<()> {
    let args = match nemo_daemon::start(|args: &Args| &args.daemon)? {
        nemo_daemon::Invocation::ManPagePrinted => return Ok(()),
        nemo_daemon::Invocation::Run(args) => args.daemon,
    };
    let validated = Config::load(&args.config)?;
    if args.check {
        println!(
            "{}: ok ({} mobile routers)",
            args.config.display(),
            validated.authorizations.len()
        );
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(validated, args.config))
}

async fn run(
    validated: nemo_ha::config::Validated,
    config_path: std::path::PathBuf,
) -> anyhow::Result<()> {
    let nemo_ha::config::Validated {
        mut config,
        engine,
        authorizations,
        ipv4_tunnel,
    } = validated;
    // The static authorizations now live in the table; the parsed entries
    // (a million of them on a large home agent) would only hold memory.
    config.mobile_routers = Vec::new();
    let store = Store::open(&config.store.path)
        .with_context(|| format!("opening store {}", config.store.path.display()))?;
    // One rtnetlink connection for the daemon: the data plane and the
    // native transport's tc filter.
    let (connection, netlink, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(connection);
    let requested = *config.dataplane.backend.get_ref();
    let backend = requested.resolve().map_err(anyhow::Error::msg)?;
    if config.translator.is_some() && backend != Some(KernelBackend::Bpf) {
        anyhow::bail!(
            "[translator] needs the bpf data plane, and backend \"{}\" found {} on this kernel",
            requested.name(),
            backend.map_or("memory", KernelBackend::name)
        );
    }
    if let (Some(ipv4), Some(KernelBackend::Seg6)) = (ipv4_tunnel, backend) {
        anyhow::bail!(
            "[ipv4] (IPv4 care-of addresses at {ipv4}) needs the bpf data plane, and backend \
             \"{}\" found seg6 on this kernel: the seg6 backend tunnels IPv6 in IPv6 only",
            requested.name()
        );
    }
    let uplink = config
        .dataplane
        .uplink
        .as_ref()
        .map(|u| u.get_ref().clone())
        .unwrap_or_default();
    let local = config
        .dataplane
        .local_address
        .unwrap_or(Ipv6Addr::UNSPECIFIED);
    match backend {
        None => {
            tracing::warn!(
                "dataplane backend \"memory\": bindings are kept but the kernel is NOT programmed; \
                 tenant traffic is not forwarded"
            );
            serve(
                (config, config_path),
                engine,
                authorizations,
                store,
                netlink,
                (Arc::new(MemoryDataPlane::new()), backend),
            )
            .await
        }
        Some(KernelBackend::Bpf) => {
            let settings = BpfHomeAgentConfig {
                uplink,
                local_address: local,
                local_ipv4: ipv4_tunnel,
                pin_dir: Some(config.dataplane.pin_dir.clone()),
                aggregates: config.dataplane.aggregates.clone(),
            };
            let dataplane = BpfHomeAgent::new(netlink.clone(), settings)
                .await
                .context("dataplane backend bpf unavailable")?;
            serve(
                (config, config_path),
                engine,
                authorizations,
                store,
                netlink,
                (Arc::new(dataplane), backend),
            )
            .await
        }
        Some(KernelBackend::Seg6) => {
            let dataplane = Seg6HomeAgent::new(netlink.clone(), Seg6Config::new(&uplink, local))
                .await
                .context("dataplane backend seg6 unavailable")?;
            serve(
                (config, config_path),
                engine,
                authorizations,
                store,
                netlink,
                (Arc::new(dataplane), backend),
            )
            .await
        }
    }
}

async fn serve<D: HomeAgentDataPlane>(
    (config, config_path): (Config, std::path::PathBuf),
    engine: nemo::ha::HomeAgentConfig,
    authorizations: nemo::ha::AuthorizationTable,
    store: Store,
    netlink: rtnetlink::Handle,
    (dataplane, backend): (Arc<D>, Option<KernelBackend>),
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let backend_name = backend.map_or("memory", KernelBackend::name);
    metrics
        .dataplane_backend
        .get_or_create(&BackendLabel {
            backend: backend_name.into(),
        })
        .set(1);
    let gauge = metrics.decapsulation_misses.clone();
    let counted = dataplane.clone();
    tokio::spawn(nemo_dataplane::watch_refused_tunnelled(
        backend,
        move || counted.refused_tunnelled(),
        move |refused| {
            gauge.set(refused);
        },
    ));
    let counted = dataplane.clone();
    tokio::spawn(nemo_daemon::publish_packet_counters(
        move || counted.packet_counters(),
        metrics.dataplane_packets.clone(),
    ));
    // The controller's authorizations as the last run kept them.
    let controller_cache = match &config.controller {
        Some(section) => {
            let path = section
                .cache
                .clone()
                .unwrap_or_else(|| config.store.path.join("authorizations.redb"));
            Some(nemo_ha::controller::open_cache(&path).await?)
        }
        None => None,
    };
    // SIGHUP re-reads the static authorizations; installed now, before
    // anybody may send it (its default action ends the daemon).
    let hangups = nemo_ha::reload::Hangups::install(
        config_path.clone(),
        &authorizations,
        controller_cache.clone(),
    )
    .context("installing the SIGHUP handler")?;
    // From the controller: what the last run cached (loaded beside the
    // store's bindings, on the other core), then its watch.
    let mut authorizations = authorizations;
    let controller = match (&config.controller, controller_cache) {
        (Some(section), Some(cache)) => {
            let link = nemo_daemon::ControllerLink::new(
                section.endpoint.get_ref(),
                section.ca_file.as_deref(),
                section.token_file.get_ref(),
            )
            .context("controller token_file")?;
            // The tenants' IPv4 addresses: translated from what the last
            // run cached, then as the controller says.
            let translator = match &config.translator {
                Some(section) => {
                    let settings = nemo_ha::translator::TranslatorSettings {
                        ipv4_pools: section.ipv4_pools.get_ref().clone(),
                        lowest_ipv6_mtu: *section.lowest_ipv6_mtu.get_ref(),
                        // Where the tenants' tunnels end, unless said.
                        arrival_interfaces: match &section.arrival_interfaces {
                            Some(names) => names.get_ref().clone(),
                            None => config
                                .dataplane
                                .uplink
                                .iter()
                                .map(|u| u.get_ref().clone())
                                .collect(),
                        },
                        xlat: nemo_dataplane::bpf::translator::XlatConfig {
                            icmp_source: section.icmp_source.as_ref().map(|s| *s.get_ref()),
                            udp_zero_checksum: section.udp_zero_checksum.dataplane(),
                        },
                        pin_dir: config.dataplane.pin_dir.clone(),
                    };
                    let cached = cache.load_mappings()?;
                    let translating =
                        nemo_ha::translator::Translating::start(&settings, netlink.clone(), cached)
                            .await
                            .context("[translator]")?;
                    let (updates, inbox) = tokio::sync::mpsc::channel(1024);
                    tokio::spawn(nemo_ha::translator::run(
                        translating,
                        inbox,
                        metrics.translator_packets.clone(),
                    ));
                    Some(updates)
                }
                None => None,
            };
            Some(nemo_ha::controller::ControllerSettings {
                link,
                home_agent: section.home_agent.clone(),
                cache,
                translator,
            })
        }
        _ => None,
    };
    // A member of a pair: the election decides the role; the driver
    // replicates (active) or follows (standby).
    let (election, pair) = match &config.pair {
        Some(section) => {
            let (election, pair) = pair(section, metrics.clone()).await?;
            (Some(election), Some(pair))
        }
        None => (None, None),
    };
    let cached = controller.as_ref().map(|settings| settings.cache.clone());
    let authorizations = tokio::task::spawn_blocking(move || {
        if let Some(cache) = cached {
            let started = std::time::Instant::now();
            authorizations.reserve(usize::try_from(cache.count()?).unwrap_or(0));
            let mut count = 0u64;
            cache.for_each(|entry| {
                count += 1;
                authorizations
                    .insert(entry)
                    .context("cached authorization conflicts with the configuration")
            })?;
            tracing::info!(
                authorizations = count,
                took_ms = started.elapsed().as_millis() as u64,
                "the controller's authorizations loaded from the cache"
            );
        }
        Ok(authorizations)
    });
    let mut running = driver::start(Setup {
        bicast: std::time::Duration::from_millis(*config.dataplane.bicast_ms.get_ref()),
        engine,
        authorizations,
        store,
        flush_mode: config.store.flush,
        dataplane: dataplane.clone(),
        udp: config
            .udp
            .as_ref()
            .map(|u| u.listen.clone())
            .unwrap_or_default(),
        udp_receive_buffer: config
            .udp
            .as_ref()
            .map_or(nemo_daemon::DEFAULT_UDP_RECEIVE_BUFFER, |u| {
                u.receive_buffer_bytes
            }),
        native: config.native.as_ref().map(|n| {
            (
                n.interfaces.get_ref().clone(),
                n.addresses.get_ref().clone(),
            )
        }),
        metrics: metrics.clone(),
        netlink,
        pair,
    })
    .await?;
    tokio::spawn(hangups.run(running.core.clone()));
    // Authorizations in, binding changes out.
    let _controller_tasks = controller.map(|settings| {
        (
            tokio::spawn(nemo_ha::controller::report(
                settings.clone(),
                running.shared.events.subscribe(),
            )),
            tokio::spawn(nemo_ha::controller::follow(settings, running.core.clone())),
        )
    });
    if running.udp_addresses.is_empty() && config.native.is_none() {
        tracing::warn!("no transport configured: nothing will be received");
    }
    // Bind before announcing readiness, so that port 0 works and the ready
    // line names the real addresses.
    let mut servers = Servers::new("nemo-ha ready");
    for address in &running.udp_addresses {
        servers.note("udp", address);
    }
    if let Some(section) = &config.admin {
        let token = section.token(&nemo_daemon::ConfigText::read(&config_path)?)?;
        let listener = servers.bind("admin", *section.listen.get_ref()).await?;
        let admin = Admin::new(
            running.shared.clone(),
            running.core.clone(),
            election.as_ref().map(|e| e.handle.clone()),
            backend_name,
        );
        servers.grpc(listener, admin::api(admin, token), Default::default());
    }
    if let Some(section) = &config.metrics {
        let metrics = metrics.clone();
        servers
            .metrics(section.listen, Arc::new(move || metrics.render()))
            .await?;
    }
    if let Some(election) = &election {
        servers.note("pair", election.describe());
    }
    let mut serving = servers.ready()?;
    let election_ended = async {
        match &election {
            Some(election) => election.ended().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        stop = serving.stopped() => {
            stop.context("server failed; stopping")?;
        }
        error = election_ended => {
            // Without its election a member could hold the home-agent
            // address with nobody to take it over, or answer as standby.
            return Err(error.context("election failed; stopping"));
        }
        result = running.writer_failed() => {
            // The store failed: stop at once rather than acknowledge
            // bindings that are not durable.
            let error = match result {
                Ok(Err(error)) => anyhow::Error::new(error),
                Ok(Ok(())) => anyhow::anyhow!("writer stopped unexpectedly"),
                Err(join) => anyhow::Error::new(join),
            };
            return Err(error.context("store failed; stopping"));
        }
    }
    serving.shutdown().await;
    if let Some(election) = election {
        // Resign first: the other member takes over within its Skew_Time.
        election.resign().await;
    }
    running.stop().await?;
    if config.dataplane.on_shutdown == OnShutdown::Remove {
        dataplane
            .remove_all()
            .await
            .context("removing forwarding at shutdown")?;
        tracing::info!("forwarding removed");
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The election task of a pair member, and how to stop it.
struct Election {
    /// What the admin API reads and asks of it.
    handle: nemo_ha::admin::PairHandle,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<anyhow::Result<()>>>>,
    summary: String,
}

impl Election {
    fn describe(&self) -> &str {
        &self.summary
    }

    /// Waits for the election task to end by itself: an error.
    async fn ended(&self) -> anyhow::Error {
        let mut task = self.task.lock().await;
        let Some(handle) = task.as_mut() else {
            return std::future::pending().await;
        };
        let result = handle.await;
        *task = None;
        match result {
            Ok(Ok(())) => anyhow::anyhow!("election stopped unexpectedly"),
            Ok(Err(error)) => error,
            Err(join) => anyhow::Error::new(join),
        }
    }

    async fn resign(self) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.task.lock().await.take() {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "election: resigning failed"),
                Err(error) => tracing::warn!(%error, "election task"),
            }
        }
    }
}

/// Starts a pair member's election and binds its replication listener.
async fn pair(
    section: &nemo_ha::config::PairSection,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Election, driver::PairSetup)> {
    // The election's own rtnetlink connection: it lists addresses while the
    // data plane lists rules and routes, and the kernel refuses a second
    // dump on a socket with one in progress (EBUSY), which failed a
    // standby's start in the failover lab.
    let (connection, netlink, _) =
        rtnetlink::new_connection().context("opening rtnetlink for the election")?;
    tokio::spawn(connection);
    let token = nemo_daemon::read_token(section.token_file.get_ref()).with_context(|| {
        format!(
            "pair: token_file {}",
            section.token_file.get_ref().display()
        )
    })?;
    let listener = tokio::net::TcpListener::bind(section.replication_listen.get_ref())
        .await
        .with_context(|| format!("pair: binding {}", section.replication_listen.get_ref()))?;
    let interval = u16::try_from(section.advert_interval_ms.get_ref() / 10)
        .ok()
        .and_then(nemo::vrrp::Centiseconds::new)
        .context("pair: advert_interval_ms")?;
    let router = nemo::vrrp::RouterConfig {
        vrid: *section.vrid.get_ref(),
        priority: *section.priority.get_ref(),
        advert_interval: interval,
        preempt: section.preempt,
        primary_address: *section.link_local.get_ref(),
        addresses: nemo::vrrp::virtual_addresses(
            *section.vrid.get_ref(),
            section.addresses.get_ref(),
        ),
        advertisers: match &section.peer_link_local {
            Some(peer) => nemo::vrrp::Advertisers::Only(vec![*peer.get_ref()]),
            None => {
                tracing::warn!(
                    "pair: no peer_link_local: VRRP advertisements from any host on the home \
                     link are heard (one with priority 255 deposes the active); name the other member"
                );
                nemo::vrrp::Advertisers::Any
            }
        },
    };
    let summary = format!(
        "vrid{}/priority{}/{}",
        router.vrid,
        router.priority,
        listener.local_addr()?
    );
    let (role_tx, role) = tokio::sync::watch::channel(nemo_ha::messages::Role::Standby);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (commands, command_rx) = tokio::sync::mpsc::channel(4);
    let state = Arc::new(std::sync::RwLock::new(
        nemo_ha::election::PairState::default(),
    ));
    let settings = nemo_ha::election::ElectionSettings {
        interface: section.interface.get_ref().clone(),
        router,
        ipv4_addresses: section.ipv4_addresses.get_ref().clone(),
    };
    let task = tokio::spawn(nemo_ha::election::run(
        settings,
        netlink,
        role_tx,
        metrics,
        state.clone(),
        command_rx,
        stop_rx,
    ));
    Ok((
        Election {
            handle: nemo_ha::admin::PairHandle {
                state,
                commands,
                role: role.clone(),
            },
            stop,
            task: tokio::sync::Mutex::new(Some(task)),
            summary,
        },
        driver::PairSetup {
            role,
            listener,
            peer: *section.peer.get_ref(),
            token,
            mode: section.replication,
            timeout: std::time::Duration::from_millis(*section.replication_timeout_ms.get_ref()),
        },
    ))
}
