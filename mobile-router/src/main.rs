//! `nemo-mr`: the nemo mobile-router daemon. One per hypervisor, hosting a
//! mobile-router instance per tenant: each registers its tenant's prefixes
//! with the home agent (RFC 3963) and re-registers the moment the host's
//! care-of address changes.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use nemo_daemon::serving::Servers;
use nemo_dataplane::bpf::{BpfMobileRouter, BpfMobileRouterConfig};
use nemo_dataplane::linux::{Seg6Config, Seg6MobileRouter};
use nemo_dataplane::{KernelBackend, MemoryDataPlane, MobileRouterDataPlane};
use nemo_mr::config::{Config, Instance, TransportKind};
use nemo_mr::driver::{Driver, Registering};
use nemo_mr::status::{self, Metrics, StatusService};
use nemo_mr::transport::{self, Transport};
use tokio::sync::{mpsc, watch};

/// The nemo mobile-router daemon.
#[derive(Debug, Parser)]
#[command(
    name = "nemo-mr",
    version,
    after_long_help = "Signals: SIGTERM stops cleanly. SIGHUP re-reads the static instances ([[instance]]): new ones register, changed ones register again, ones no longer named deregister; a file that does not load is refused whole and the running ones stay. Every other setting takes effect at the next start."
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
    let (config, instances) = Config::load(&args.config)?;
    if args.check {
        println!(
            "{}: ok ({} instances)",
            args.config.display(),
            instances.len()
        );
        return Ok(());
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(config, instances, args.config))
}

async fn run(
    config: Config,
    instances: Vec<Instance>,
    config_path: std::path::PathBuf,
) -> anyhow::Result<()> {
    let admin_token = match &config.admin {
        Some(section) => section.token(&nemo_daemon::ConfigText::read(&config_path)?)?,
        None => None,
    };
    // SIGHUP re-reads the static instances; installed now, before anybody
    // may send it (its default action ends the daemon).
    let hangups = nemo_mr::reload::Hangups::install(config_path, &instances)
        .context("installing the SIGHUP handler")?;
    let uplink = config.mobile_router.uplink.get_ref().clone();
    // The care-of address: fixed, or the uplink's, watched through netlink.
    // A fixed address keeps its sender alive for the daemon's lifetime; a
    // watched one ends only if the watcher dies, which stops the daemon.
    let families = config.care_of_families();
    let (care_of, _fixed, _watcher) = match &config.mobile_router.care_of {
        Some(address) => {
            let (sender, receiver) = watch::channel(Some(*address.get_ref()));
            (receiver, Some(sender), None)
        }
        None => {
            let (receiver, task) = nemo_dataplane::addresses::watch_care_of(&uplink, families)
                .await
                .context("watching the uplink's addresses")?;
            (receiver, None, Some(task))
        }
    };
    let initial = *care_of.borrow();
    // One rtnetlink connection for the data plane and the native transport
    // (the care-of watcher has its own, subscribed to address events).
    let (connection, netlink, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(connection);
    let requested = config.dataplane.backend;
    let backend = requested.resolve().map_err(anyhow::Error::msg)?;
    match backend {
        None => {
            tracing::warn!(
                "dataplane backend \"memory\": registrations run but the kernel is NOT programmed"
            );
            serve(
                (config, admin_token),
                (instances, hangups),
                care_of,
                netlink,
                (Arc::new(MemoryDataPlane::new()), backend),
            )
            .await
        }
        Some(KernelBackend::Bpf) => {
            let local = initial.context("the bpf data plane needs a care-of address at start")?;
            let settings = BpfMobileRouterConfig {
                uplink: uplink.clone(),
                // An IPv4 care-of address: the driver sets the IPv4 end
                // (RFC 5555); the IPv6 one waits for an IPv6 address.
                local_address: match local {
                    std::net::IpAddr::V6(local) => local,
                    std::net::IpAddr::V4(_) => std::net::Ipv6Addr::UNSPECIFIED,
                },
                pin_dir: Some(config.dataplane.pin_dir.clone()),
            };
            let dataplane = BpfMobileRouter::new(netlink.clone(), settings)
                .await
                .context("dataplane backend bpf unavailable")?;
            serve(
                (config, admin_token),
                (instances, hangups),
                care_of,
                netlink,
                (Arc::new(dataplane), backend),
            )
            .await
        }
        Some(KernelBackend::Seg6) => {
            if families != nemo_mr::config::CareOfFamilies::Ipv6 {
                anyhow::bail!(
                    "[transport] home_agent_udp_ipv4 (IPv4 care-of addresses) needs the bpf data \
                     plane, and backend \"{}\" found seg6 on this kernel: the seg6 backend \
                     tunnels IPv6 in IPv6 only",
                    requested.name()
                );
            }
            let local = match initial.context("seg6 needs a care-of address at start")? {
                std::net::IpAddr::V6(local) => local,
                std::net::IpAddr::V4(local) => {
                    anyhow::bail!("seg6 cannot use the IPv4 care-of address {local}")
                }
            };
            let dataplane = Seg6MobileRouter::new(netlink.clone(), Seg6Config::new(&uplink, local))
                .await
                .context("dataplane backend seg6 unavailable")?;
            serve(
                (config, admin_token),
                (instances, hangups),
                care_of,
                netlink,
                (Arc::new(dataplane), backend),
            )
            .await
        }
    }
}

async fn serve<D: MobileRouterDataPlane>(
    (config, admin_token): (Config, Option<String>),
    (instances, hangups): (Vec<Instance>, nemo_mr::reload::Hangups),
    care_of: watch::Receiver<Option<std::net::IpAddr>>,
    netlink: rtnetlink::Handle,
    (dataplane, backend): (Arc<D>, Option<KernelBackend>),
) -> anyhow::Result<()> {
    let transport = match (
        config.transport.get_ref().kind,
        config.transport.get_ref().home_agent_udp,
    ) {
        (TransportKind::Udp, Some(home_agent)) => Transport::Udp {
            socket: transport::bind(config.transport.get_ref().bind).await?,
            home_agent,
            ipv4: match config.transport.get_ref().home_agent_udp_ipv4 {
                Some(home_agent) => Some((
                    transport::bind(config.transport.get_ref().bind_ipv4.into()).await?,
                    home_agent,
                )),
                None => None,
            },
        },
        (TransportKind::Udp, None) => anyhow::bail!("transport udp needs home_agent_udp"),
        (TransportKind::Native, _) => {
            Transport::native(config.mobile_router.uplink.get_ref(), netlink)
                .context("native transport")?
        }
    };
    let metrics = Arc::new(Metrics::new());
    metrics
        .dataplane_backend
        .get_or_create(&nemo_daemon::BackendLabel {
            backend: backend.map_or("memory", KernelBackend::name).into(),
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
    // What the driver sees of held tenants goes to the arrivals task (none
    // without a controller: then nobody listens).
    let (sightings, sightings_rx) = mpsc::channel(16);
    let driver = Driver::new(
        instances,
        transport,
        dataplane,
        metrics.clone(),
        Registering {
            first_registration_timeout: std::time::Duration::from_millis(
                *config.mobile_router.first_registration_timeout_ms.get_ref(),
            ),
            udp_over_ipv4: config.transport.get_ref().udp_over_ipv4.registration(),
        },
        (
            std::time::Duration::from_millis(*config.mobile_router.linger_ms.get_ref()),
            std::time::Duration::from_millis(*config.mobile_router.hold_ms.get_ref()),
        ),
        sightings,
    );
    let mut servers = Servers::new(format!("nemo-mr ready {}", driver.local_addr()));
    servers.note(
        "care_of",
        care_of
            .borrow()
            .map_or("none".to_owned(), |a| a.to_string()),
    );
    let (triggers, trigger_rx) = mpsc::channel(16);
    if let Some(section) = &config.admin {
        let listener = servers.bind("admin", *section.listen.get_ref()).await?;
        let service = StatusService::new(driver.snapshot(), triggers.clone());
        servers.grpc(
            listener,
            status::api(service, admin_token),
            Default::default(),
        );
    }
    if let Some(section) = &config.metrics {
        let metrics = metrics.clone();
        servers
            .metrics(section.listen, Arc::new(move || metrics.render()))
            .await?;
    }
    let mut serving = servers.ready()?;
    let mut failure = None;
    let shutdown = async {
        if let Err(error) = serving.stopped().await {
            failure = Some(error);
        }
    };
    let (commands, command_rx) = mpsc::channel(64);
    tokio::spawn(hangups.run(commands.clone()));
    let _controller_task = match &config.controller {
        Some(section) => {
            let link = nemo_daemon::ControllerLink::new(
                section.endpoint.get_ref(),
                section.ca_file.as_deref(),
                section.token_file.get_ref(),
            )
            .context("controller token_file")?;
            let arrivals = nemo_mr::arrivals::ArrivalSettings {
                link: link.clone(),
                hypervisor: section.hypervisor.clone(),
                tenant_interface: section.tenant_interface.clone(),
            };
            let settings = nemo_mr::controller::ControllerSettings {
                link,
                hypervisor: section.hypervisor.clone(),
                tenant_interface: section.tenant_interface.clone(),
                table_base: section.table_base,
                lifetime: std::time::Duration::from_secs(section.lifetime_secs),
            };
            let (placed, placed_rx) = tokio::sync::watch::channel(None);
            tokio::spawn(async move {
                if let Err(error) = nemo_mr::arrivals::run(arrivals, placed_rx, sightings_rx).await
                {
                    tracing::warn!(%error, "not watching tenant ports for arrivals");
                }
            });
            Some(tokio::spawn(nemo_mr::controller::follow(
                settings, commands, placed,
            )))
        }
        None => None,
    };
    let result = driver.run(care_of, trigger_rx, command_rx, shutdown).await;
    serving.shutdown().await;
    match failure {
        // A server failed: the instances deregistered, the daemon says why.
        Some(error) => Err(anyhow::Error::new(error).context("server failed; stopped")),
        None => result,
    }
}
