//! `ha-loadgen`: plays many mobile routers against a `nemo-ha` over its UDP
//! transport and measures registrations per second and BU-to-BA latency.
//!
//! ```sh
//! ha-loadgen config --routers 1000 --store /tmp/ha-bench > ha.toml
//! nemo-ha --config ha.toml &          # prints its UDP address
//! ha-loadgen run --target '[::1]:4191' --routers 1000 --seconds 10            # saturation
//! ha-loadgen run --target '[::1]:4191' --routers 1000 --seconds 10 --rate 10000
//! ha-loadgen run --native lg0 --routers 1000 --seconds 10   # raw IPv6, root
//! ha-loadgen controller --routers 1000000 --listen '[::1]:50051' &   # a stand-in
//! ha-loadgen config --routers 1000000 --store /tmp/ha-bench \
//!     --controller 'http://[::1]:50051' --token-file /tmp/token > ha.toml
//! ```
//!
//! `controller` serves the same identities as `WatchAuthorizations`, and
//! `config --controller` writes a home agent that takes them from there:
//! the production path at a million, without a controller holding them.
//!
//! `--native IFACE` speaks RFC 6275's own form instead of UDP: Binding
//! Updates with a Home Address option out of a raw IPv6 socket, from the
//! care-of address 2001:db8:2::10 to the home agent 2001:db8:1::1, and
//! acknowledgements (type 2 routing header) read from a packet socket on
//! IFACE, with the kernel kept quiet about them (`nemo_dataplane::quiet`), as
//! `nemo-mr` does. `bench/ha-native.sh` builds the namespaces for it.
//!
//! Every Binding Update is authenticated (HMAC-SHA256, RFC 4285), carries a
//! Mobile Network Prefix and a fresh timestamp, and is checked when its
//! acknowledgement comes back. Each mobile router has at most one Binding
//! Update outstanding, so the offered load is closed-loop at saturation and
//! open-loop (paced) with `--rate`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ipnet::Ipv6Net;
use nemo::auth::{Algorithm, SecurityAssociation};
use nemo::registration::{check_binding_ack, Registration};
use nemo::wire::{parse_packet, BaStatus, Lifetime, NtpTimestamp, SequenceNumber};
use nemo_dataplane::quiet;
use nemo_dataplane::transport::{self, RawSender};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Mutex};

mod controller;

#[derive(Debug, Parser)]
#[command(name = "ha-loadgen", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints a nemo-ha config authorizing the simulated mobile routers.
    Config {
        /// Number of mobile routers.
        #[arg(long, default_value_t = 1000)]
        routers: u32,
        /// Store directory for the home agent.
        #[arg(long)]
        store: String,
        /// UDP listen address of the home agent.
        #[arg(long, default_value = "[::1]:4191")]
        listen: String,
        /// Flush mode: group or each-binding.
        #[arg(long, default_value = "group")]
        flush: String,
        /// Serve the native transport on this interface (for 2001:db8:1::1)
        /// instead of UDP.
        #[arg(long)]
        native_interface: Option<String>,
        /// Take the authorizations from this controller (`ha-loadgen
        /// controller`) instead of writing them into the config.
        #[arg(long, requires = "token_file")]
        controller: Option<String>,
        /// The controller's token file (any readable file for the stand-in).
        #[arg(long)]
        token_file: Option<String>,
        /// The home agent's IPv4 address: an `[ipv4]` section, so that it
        /// takes IPv4 care-of addresses (RFC 5555); `--listen` must be on it.
        #[arg(long)]
        ipv4: Option<std::net::Ipv4Addr>,
    },
    /// Stands in for nemo-controller: streams the routers' authorizations
    /// to a home agent that watches them, accepts its binding reports.
    Controller {
        /// Number of mobile routers.
        #[arg(long, default_value_t = 1000)]
        routers: u32,
        /// gRPC listen address (port 0: any; the ready line names it).
        #[arg(long, default_value = "[::1]:0")]
        listen: SocketAddr,
    },
    /// Sends load and reports.
    Run {
        /// The home agent's UDP address.
        #[arg(long, required_unless_present = "native", conflicts_with = "native")]
        target: Option<SocketAddr>,
        /// Use the native transport through this interface (root).
        #[arg(long)]
        native: Option<String>,
        /// Number of mobile routers.
        #[arg(long, default_value_t = 1000)]
        routers: u32,
        /// Duration of the measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Offered load in Binding Updates per second; saturation if absent.
        #[arg(long)]
        rate: Option<u64>,
        /// At saturation, Binding Updates in flight at once (routers take
        /// turns); all routers if absent.
        #[arg(long)]
        window: Option<u32>,
        /// At saturation, print a line to stderr each time every router has
        /// had its turn (the first pass creates bindings, later ones refresh).
        #[arg(long)]
        passes: bool,
        /// Sequence number the routers start after: a run that follows
        /// another against the same home agent passes one ahead of the
        /// earlier run's, so its first updates are refreshes, not 135s.
        #[arg(long, default_value_t = 0)]
        first_sequence: u16,
        /// At the end, write the home address of every router whose Binding
        /// Update was accepted to this file, one a line (what a power-loss
        /// test checks the restarted home agent against).
        #[arg(long)]
        acknowledged: Option<std::path::PathBuf>,
        /// Register this IPv4 care-of address (RFC 5555: an IPv4 Care-of
        /// Address option, sent from it over IPv4 to an IPv4 `--target`)
        /// instead of 2001:db8:2::10.
        #[arg(long)]
        care_of_ipv4: Option<std::net::Ipv4Addr>,
    },
}

const HOME_AGENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const CARE_OF: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10);

fn home(n: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, 0)) + u128::from(n))
}

fn prefix(n: u32) -> Ipv6Net {
    // One /64 per router under 2001:db8:8000::/33.
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0x8000, 0, 0, 0, 0, 0));
    Ipv6Net::new(Ipv6Addr::from(base + (u128::from(n) << 64)), 64).unwrap_or_default()
}

fn key(n: u32) -> Vec<u8> {
    let mut key = vec![0x5a; 32];
    key[..4].copy_from_slice(&n.to_be_bytes());
    key
}

fn spi(n: u32) -> u32 {
    0x1_0000 + n
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the home agent's authorizations come from.
enum Authorizations<'a> {
    /// `[[mobile_router]]` tables in the config.
    Static,
    /// A controller: its endpoint and token file.
    Controller {
        endpoint: &'a str,
        token_file: &'a str,
    },
}

fn config(
    routers: u32,
    store: &str,
    (listen, ipv4): (&str, Option<std::net::Ipv4Addr>),
    flush: &str,
    native_interface: Option<&str>,
    authorizations: Authorizations,
) -> String {
    let transport = match native_interface {
        Some(interface) => {
            format!("[native]\ninterfaces = [\"{interface}\"]\naddresses = [\"{HOME_AGENT}\"]\n")
        }
        None => format!("[udp]\nlisten = [\"{listen}\"]\n"),
    };
    let mut text = format!(
        "[home_agent]\nhome_prefixes = [\"2001:db8:1::/64\"]\nmax_lifetime_secs = 600\n\n\
         [store]\npath = \"{store}\"\nflush = \"{flush}\"\n\n\
         [dataplane]\nbackend = \"memory\"\n\n{transport}"
    );
    if let Some(address) = ipv4 {
        text.push_str(&format!("\n[ipv4]\naddress = \"{address}\"\n"));
    }
    if let Authorizations::Controller {
        endpoint,
        token_file,
    } = authorizations
    {
        text.push_str(&format!(
            "\n[controller]\nendpoint = \"{endpoint}\"\ntoken_file = \"{token_file}\"\nhome_agent = \"ha1\"\n"
        ));
        return text;
    }
    for n in 0..routers {
        text.push_str(&format!(
            "\n[[mobile_router]]\nhome_address = \"{}\"\nspi = {}\nkey = \"{}\"\nprefixes = [\"{}\"]\n",
            home(n),
            spi(n),
            hex(&key(n)),
            prefix(n)
        ));
    }
    text
}

struct Router {
    sa: SecurityAssociation,
    sequence: u16,
    sent_at: Option<Instant>,
}

fn ntp_now() -> NtpTimestamp {
    NtpTimestamp::from_unix(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

fn packet(n: u32, router: &mut Router, care_of: IpAddr) -> anyhow::Result<Vec<u8>> {
    router.sequence = router.sequence.wrapping_add(1);
    let registration = Registration {
        home_address: home(n),
        home_agent: HOME_AGENT,
        care_of,
        prefixes: vec![prefix(n)],
        lifetime: Lifetime(150),
        sequence: SequenceNumber(router.sequence),
        timestamp: ntp_now(),
        mobile_router: true,
        nai: None,
        udp_over_ipv4: nemo::registration::UdpOverIpv4::WhenNeeded,
    };
    Ok(registration.packet(&router.sa)?)
}

/// Latency percentile of sorted microseconds.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[index.min(sorted.len() - 1)]) / 1000.0
}

/// How Binding Updates reach the home agent.
enum Transport {
    /// IPv6 packets inside UDP datagrams.
    Udp {
        socket: Arc<UdpSocket>,
        target: SocketAddr,
    },
    /// Raw IPv6, as RFC 6275 sends it.
    Native {
        sender: RawSender,
        /// The filters keeping the kernel quiet, removed at the end.
        suppression: quiet::Suppression,
    },
}

impl Transport {
    async fn send(&self, packet: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Udp { socket, target } => socket.send_to(packet, target).await.map(drop),
            Transport::Native { sender, .. } => sender.send(packet),
        }
    }
}

/// The load to offer.
struct Load {
    routers: u32,
    seconds: u64,
    rate: Option<u64>,
    window: Option<u32>,
    report_passes: bool,
    first_sequence: u16,
    acknowledged: Option<std::path::PathBuf>,
    /// The care-of address registered.
    care_of: IpAddr,
}

/// Opens the transport and starts feeding the answers into a channel.
async fn open(
    target: Option<SocketAddr>,
    native: Option<String>,
    care_of: IpAddr,
) -> anyhow::Result<(Transport, mpsc::UnboundedReceiver<Vec<u8>>)> {
    let (answers, received) = mpsc::unbounded_channel();
    if let Some(interface) = native {
        let (connection, handle, _) = rtnetlink::new_connection().context("rtnetlink")?;
        tokio::spawn(connection);
        // The kernel would answer each acknowledgement's type 2 routing
        // header with a Parameter Problem; nemo-mr keeps it quiet the same way.
        let suppression = quiet::suppress(
            &handle,
            std::slice::from_ref(&interface),
            &[CARE_OF],
            quiet::Signalling::BindingAcks,
        )
        .await?;
        transport::start_receivers(
            &[interface],
            Arc::new(RwLock::new(vec![CARE_OF])),
            move |packet| answers.send(packet).is_ok(),
            Arc::new(AtomicBool::new(false)),
        )?;
        return Ok((
            Transport::Native {
                sender: RawSender::open()?,
                suppression,
            },
            received,
        ));
    }
    let target = target.context("--target or --native")?;
    // From the IPv4 care-of address itself: no NAT in between.
    let bind: SocketAddr = match (target.is_ipv6(), care_of) {
        (true, _) => "[::]:0".parse().context("bind address")?,
        (false, IpAddr::V4(care_of)) => SocketAddr::from((care_of, 0)),
        (false, IpAddr::V6(_)) => "0.0.0.0:0".parse().context("bind address")?,
    };
    let (socket, _) = nemo_daemon::udp_socket(bind, nemo_daemon::DEFAULT_UDP_RECEIVE_BUFFER)?;
    let socket = Arc::new(socket);
    let receiving = socket.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        while let Ok(len) = receiving.recv(&mut buffer).await {
            if answers.send(buffer[..len].to_vec()).is_err() {
                break;
            }
        }
    });
    Ok((Transport::Udp { socket, target }, received))
}

async fn run(
    transport: Arc<Transport>,
    mut answers: mpsc::UnboundedReceiver<Vec<u8>>,
    load: Load,
) -> anyhow::Result<()> {
    let Load {
        routers,
        seconds,
        rate,
        window,
        report_passes,
        first_sequence,
        acknowledged,
        care_of,
    } = load;
    let state: Arc<Mutex<HashMap<u32, Router>>> = Arc::new(Mutex::new(
        (0..routers)
            .map(|n| {
                let sa = SecurityAssociation::new(spi(n), Algorithm::HmacSha256, key(n))
                    .map_err(anyhow::Error::new)?;
                Ok((
                    n,
                    Router {
                        sa,
                        sequence: first_sequence,
                        sent_at: None,
                    },
                ))
            })
            .collect::<anyhow::Result<_>>()?,
    ));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    // (router, send it again at once): a router whose Binding Update was
    // answered, or that must resend after adopting the agent's sequence number.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(u32, bool)>();

    // Receiver: checks each acknowledgement, records its latency, and in
    // saturation mode lets that router send again.
    let receiver = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 20);
            let mut rejected = 0u64;
            let mut resynchronized = 0u64;
            let mut accepted = std::collections::BTreeSet::new();
            loop {
                let received = tokio::time::timeout_at(
                    tokio::time::Instant::from_std(deadline + Duration::from_secs(2)),
                    answers.recv(),
                )
                .await;
                let Ok(Some(packet)) = received else { break };
                let reply = packet.as_slice();
                // To an IPv4 care-of address the answer goes to the home
                // address itself (RFC 5555 §4.5).
                let Some(home_address) = parse_packet(reply).ok().map(|p| {
                    p.repr
                        .type2_routing
                        .map_or(p.repr.destination, |rh| rh.home_address)
                }) else {
                    continue;
                };
                let n = (u128::from(home_address) - u128::from(home(0))) as u32;
                let mut state = state.lock().await;
                let Some(router) = state.get_mut(&n) else {
                    continue;
                };
                let Some(sent) = router.sent_at.take() else {
                    // A late answer to a retransmitted Binding Update.
                    continue;
                };
                match check_binding_ack(reply, care_of, home_address, &router.sa) {
                    Ok(ba) if ba.status.is_accepted() => {
                        accepted.insert(home_address);
                    }
                    // A home agent that remembers a later sequence number
                    // (an earlier run): take its number and send again, as
                    // RFC 6275 §11.7.3 has a mobile node do; not a registration.
                    Ok(ba) if ba.status == BaStatus::SEQUENCE_OUT_OF_WINDOW => {
                        router.sequence = ba.sequence.0;
                        resynchronized += 1;
                        drop(state);
                        let _ = done_tx.send((n, true));
                        continue;
                    }
                    _ => rejected += 1,
                }
                if Instant::now() < deadline {
                    latencies.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                }
                drop(state);
                let _ = done_tx.send((n, false));
            }
            (latencies, rejected, resynchronized, accepted)
        })
    };

    let mut sent = 0u64;
    let mut retransmitted = 0u64;
    match rate {
        None => {
            // Saturation: `window` Binding Updates in flight; each answer
            // lets the next router in turn send (or the same one, when the
            // next is still waiting).
            let window = window.unwrap_or(routers).clamp(1, routers);
            for n in 0..window {
                send(&transport, &state, n, care_of).await?;
                sent += 1;
            }
            let mut next = window % routers;
            let mut passes = 0u32;
            let mut pass_started = started;
            let mut sweep = tokio::time::interval(Duration::from_millis(250));
            while Instant::now() < deadline {
                tokio::select! {
                    done = done_rx.recv() => {
                        let Some((answered, again)) = done else { break };
                        let n = if again || busy(&state, next).await {
                            answered
                        } else {
                            let n = next;
                            next = (next + 1) % routers;
                            if next == 0 && report_passes {
                                // Every router had its turn: the first pass
                                // creates the bindings, later ones refresh.
                                passes += 1;
                                let now = Instant::now();
                                eprintln!(
                                    "pass {passes}: {routers} routers in {:.1} s ({:.0}/s)",
                                    (now - pass_started).as_secs_f64(),
                                    f64::from(routers) / (now - pass_started).as_secs_f64()
                                );
                                pass_started = now;
                            }
                            n
                        };
                        send(&transport, &state, n, care_of).await?;
                        sent += 1;
                    }
                    _ = sweep.tick() => {
                        // A datagram lost on the way (a full socket buffer):
                        // send that router's Binding Update again.
                        let lost: Vec<u32> = state
                            .lock()
                            .await
                            .iter()
                            .filter(|(_, r)| r.sent_at.is_some_and(|at| at.elapsed() > RETRANSMIT_AFTER))
                            .map(|(n, _)| *n)
                            .collect();
                        for n in lost {
                            send(&transport, &state, n, care_of).await?;
                            sent += 1;
                            retransmitted += 1;
                        }
                    }
                }
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate as f64);
            let mut next = Instant::now();
            let mut n = 0u32;
            while Instant::now() < deadline {
                next += interval;
                // Routers still waiting for an answer are skipped.
                if !busy(&state, n).await {
                    send(&transport, &state, n, care_of).await?;
                    sent += 1;
                }
                n = (n + 1) % routers;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    let (mut latencies, rejected, resynchronized, accepted) = receiver.await?;
    if let Some(path) = acknowledged {
        let lines: String = accepted.iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(&path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    let elapsed = seconds as f64;
    latencies.sort_unstable();
    println!(
        "offered={} sent={sent} acknowledged={} rejected={rejected} resynchronized={resynchronized} retransmitted={retransmitted} rate={:.0}/s p50={:.3}ms p99={:.3}ms p99.9={:.3}ms max={:.3}ms",
        rate.map_or("saturation".to_owned(), |r| format!("{r}/s")),
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        percentile(&latencies, 1.0),
    );
    Ok(())
}

/// An unanswered Binding Update is taken as lost after this long.
const RETRANSMIT_AFTER: Duration = Duration::from_secs(1);

/// True while a router waits for an answer.
async fn busy(state: &Mutex<HashMap<u32, Router>>, n: u32) -> bool {
    state
        .lock()
        .await
        .get(&n)
        .is_some_and(|r| r.sent_at.is_some())
}

async fn send(
    transport: &Transport,
    state: &Mutex<HashMap<u32, Router>>,
    n: u32,
    care_of: IpAddr,
) -> anyhow::Result<()> {
    let bytes = {
        let mut state = state.lock().await;
        let router = state.get_mut(&n).context("unknown router")?;
        router.sent_at = Some(Instant::now());
        packet(n, router, care_of)?
    };
    transport.send(&bytes).await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Config {
            routers,
            store,
            listen,
            flush,
            native_interface,
            controller,
            token_file,
            ipv4,
        } => {
            let authorizations = match (&controller, &token_file) {
                (Some(endpoint), Some(token_file)) => Authorizations::Controller {
                    endpoint,
                    token_file,
                },
                _ => Authorizations::Static,
            };
            print!(
                "{}",
                config(
                    routers,
                    &store,
                    (&listen, ipv4),
                    &flush,
                    native_interface.as_deref(),
                    authorizations,
                )
            );
            Ok(())
        }
        Command::Controller { routers, listen } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(controller::serve(listen, routers)),
        Command::Run {
            target,
            native,
            routers,
            seconds,
            rate,
            window,
            passes,
            first_sequence,
            acknowledged,
            care_of_ipv4,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let care_of = care_of_ipv4.map_or(IpAddr::V6(CARE_OF), IpAddr::V4);
                let (transport, answers) = open(target, native, care_of).await?;
                let load = Load {
                    routers,
                    seconds,
                    rate,
                    window,
                    report_passes: passes,
                    first_sequence,
                    acknowledged,
                    care_of,
                };
                let transport = Arc::new(transport);
                run(transport.clone(), answers, load).await?;
                if let Ok(Transport::Native { suppression, .. }) = Arc::try_unwrap(transport) {
                    suppression.remove().await?;
                }
                Ok(())
            }),
    }
}
