//! The real `nemo-ha` process, driven over UDP on loopback and inspected
//! over its gRPC API and metrics.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::net::{Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv6Net;
use nemo::auth::{Algorithm, SecurityAssociation};
use nemo::registration::{check_binding_ack, Registration};
use nemo::wire::{
    build_packet, parse_packet, set_mh_checksum, BaStatus, BeStatus, BindingAck, Lifetime, Message,
    MhType, MobilityHeader, NtpTimestamp, PacketRepr, SequenceNumber,
};
use nemo_proto::v1 as pb;
use nemo_proto::v1::home_agent_admin_client::HomeAgentAdminClient;
use nemo_testkit::addr;
use tokio::net::UdpSocket;

const HA: &str = "2001:db8:1::1";
const COA: &str = "2001:db8:2::10";
const COA_NEW: &str = "2001:db8:3::10";

fn home(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100 + n)
}

fn prefix(n: u16) -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0x2001, 0xdb8, 0x100 + n, 0, 0, 0, 0, 0), 56).unwrap()
}

fn key(n: u16) -> Vec<u8> {
    let mut key = vec![0xa5; 32];
    key[..2].copy_from_slice(&n.to_be_bytes());
    key
}

fn sa(n: u16) -> SecurityAssociation {
    SecurityAssociation::new(0x1000 + u32::from(n), Algorithm::HmacSha256, key(n)).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A config with `count` mobile routers.
fn config(store: &std::path::Path, count: u16) -> String {
    let mut text = format!(
        "[home_agent]\nhome_prefixes = [\"2001:db8:1::/64\"]\nmax_lifetime_secs = 600\n\n\
         [store]\npath = \"{}\"\n\n[udp]\nlisten = [\"[::1]:0\"]\n\n\
         [dataplane]\nbackend = \"memory\"\n\n\
         [admin]\nlisten = \"[::1]:0\"\n\n[metrics]\nlisten = \"[::1]:0\"\n",
        store.display()
    );
    for n in 0..count {
        text.push_str(&format!(
            "\n[[mobile_router]]\nhome_address = \"{}\"\nspi = {}\nkey = \"{}\"\nprefixes = [\"{}\"]\n",
            home(n),
            0x1000 + u32::from(n),
            hex(&key(n)),
            prefix(n)
        ));
    }
    text
}

/// A running daemon; killed when dropped.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
    udp: SocketAddr,
    admin: SocketAddr,
    metrics: SocketAddr,
}

impl Daemon {
    fn start(dir: &std::path::Path, count: u16) -> Daemon {
        Daemon::start_with(dir, &config(&dir.join("store"), count))
    }

    fn start_with(dir: &std::path::Path, config_text: &str) -> Daemon {
        Daemon::start_under(dir, config_text, &[])
    }

    /// Starts it through `wrapper` (a command that execs the rest, such as
    /// `prlimit --nofile=N --`), keeping its PID.
    fn start_under(dir: &std::path::Path, config_text: &str, wrapper: &[&str]) -> Daemon {
        let config_path = dir.join("ha.toml");
        std::fs::write(&config_path, config_text).unwrap();
        // One log per start in this directory.
        let log = (0..)
            .map(|i| dir.join(format!("ha-{i}.log")))
            .find(|p| !p.exists())
            .unwrap();
        let binary = env!("CARGO_BIN_EXE_nemo-ha");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .arg("--config")
            .arg(&config_path)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("nemo-ha did not get ready");
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .parse()
                .unwrap()
        };
        Daemon {
            log,
            udp: field("udp"),
            admin: field("admin"),
            metrics: field("metrics"),
            child,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn admin(&self) -> HomeAgentAdminClient<tonic::transport::Channel> {
        HomeAgentAdminClient::connect(format!("http://{}", self.admin))
            .await
            .unwrap()
    }

    fn metrics(&self) -> String {
        nemo_testkit::scrape_metrics(self.metrics)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn now() -> NtpTimestamp {
    NtpTimestamp::from_unix(SystemTime::now().duration_since(UNIX_EPOCH).unwrap())
}

fn registration(n: u16, sequence: u16) -> Registration {
    Registration {
        home_address: home(n),
        home_agent: addr(HA),
        care_of: std::net::IpAddr::V6(addr(COA)),
        prefixes: vec![prefix(n)],
        lifetime: Lifetime(100),
        sequence: SequenceNumber(sequence),
        timestamp: now(),
        mobile_router: true,
        nai: Some(format!("mr{n}@nemo.example")),
        udp_over_ipv4: nemo::registration::UdpOverIpv4::WhenNeeded,
    }
}

/// A mobile router over UDP.
struct Client {
    socket: UdpSocket,
    home_agent: SocketAddr,
}

impl Client {
    async fn new(daemon: &Daemon) -> Client {
        Client {
            socket: UdpSocket::bind("[::1]:0").await.unwrap(),
            home_agent: daemon.udp,
        }
    }

    async fn send(&self, packet: &[u8]) {
        self.socket.send_to(packet, self.home_agent).await.unwrap();
    }

    async fn receive(&self) -> Option<Vec<u8>> {
        let mut buffer = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(2), self.socket.recv(&mut buffer)).await {
            Ok(Ok(len)) => Some(buffer[..len].to_vec()),
            _ => None,
        }
    }

    /// Sends a registration signed with `signer` and checks the answer
    /// with the right association.
    async fn register_as(
        &self,
        reg: &Registration,
        signer: &SecurityAssociation,
        n: u16,
    ) -> BindingAck {
        self.send(&reg.packet(signer).unwrap()).await;
        let reply = self.receive().await.expect("no Binding Acknowledgement");
        check_binding_ack(&reply, reg.care_of, reg.home_address, &sa(n)).unwrap()
    }

    async fn register(&self, reg: &Registration, n: u16) -> BindingAck {
        self.register_as(reg, &sa(n), n).await
    }
}

#[tokio::test]
async fn registration_statuses_and_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), 2);
    // Before any traffic, the series an operator alerts on are there at
    // zero (and the scrape passes promtool's lint where it is installed).
    let fresh = daemon.metrics();
    for series in [
        "nemo_ha_dropped_total{reason=\"unknown_spi\"} 0",
        "nemo_ha_dropped_total{reason=\"standby\"} 0",
        "nemo_ha_malformed_total{reason=\"checksum\"} 0",
        "nemo_ha_unreplicated_batches_total{reason=\"no_standby\"} 0",
        "nemo_ha_binding_acks_total{status=\"0\"} 0",
        "nemo_ha_binding_acks_total{status=\"130\"} 0",
        "nemo_ha_binding_acks_total{status=\"141\"} 0",
    ] {
        assert!(fresh.contains(series), "{series} missing: {fresh}");
    }
    let client = Client::new(&daemon).await;
    let mut admin = daemon.admin().await;

    // Accepted, with R echoed; visible over gRPC.
    let ba = client.register(&registration(0, 10), 0).await;
    assert_eq!(ba.status, BaStatus::ACCEPTED);
    assert!(ba.flags.mobile_router);
    assert_eq!(ba.sequence, SequenceNumber(10));
    let binding = admin
        .get_binding(pb::GetBindingRequest {
            home_address: home(0).to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(binding.care_of_address, COA);
    assert_eq!(binding.prefixes, vec![prefix(0).to_string()]);
    assert_eq!(binding.lifetime_seconds, 400);

    // A prefix that belongs to the other mobile router: 142.
    let mut stolen = registration(0, 11);
    stolen.prefixes = vec![prefix(1)];
    assert_eq!(
        client.register(&stolen, 0).await.status,
        BaStatus::NOT_AUTHORIZED_FOR_PREFIX
    );

    // The wrong key under the right SPI: 146.
    let forged = SecurityAssociation::new(0x1000, Algorithm::HmacSha256, vec![0x11; 32]).unwrap();
    let ba = client.register_as(&registration(0, 12), &forged, 0).await;
    assert_eq!(ba.status, BaStatus::AUTH_FAIL);

    // An old sequence number: 135 with the last accepted one.
    let ba = client.register(&registration(0, 9), 0).await;
    assert_eq!(ba.status, BaStatus::SEQUENCE_OUT_OF_WINDOW);
    assert_eq!(ba.sequence, SequenceNumber(10));

    // A move to another care-of address.
    let mut moved = registration(0, 13);
    moved.care_of = std::net::IpAddr::V6(addr(COA_NEW));
    assert_eq!(client.register(&moved, 0).await.status, BaStatus::ACCEPTED);
    let listed = admin
        .list_bindings(pb::ListBindingsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.bindings.len(), 1);
    assert_eq!(listed.bindings[0].care_of_address, COA_NEW);
    // The data plane that forwards them, as configured ("memory" here).
    assert_eq!(listed.dataplane_backend, "memory");

    // Deregistration removes it.
    let mut leave = registration(0, 14);
    leave.care_of = std::net::IpAddr::V6(addr(COA_NEW));
    leave.lifetime = Lifetime::ZERO;
    assert_eq!(client.register(&leave, 0).await.status, BaStatus::ACCEPTED);
    let missing = admin
        .get_binding(pb::GetBindingRequest {
            home_address: home(0).to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Bad requests get a status that names the field.
    let bad = admin
        .get_binding(pb::GetBindingRequest {
            home_address: "not-an-address".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("home_address"), "{}", bad.message());

    let metrics = daemon.metrics();
    assert!(
        metrics.contains("nemo_ha_binding_acks_total{status=\"142\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nemo_ha_binding_acks_total{status=\"146\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nemo_ha_binding_acks_total{status=\"135\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nemo_ha_binding_acks_total{status=\"0\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn operator_delete_and_watch() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), 1);
    let client = Client::new(&daemon).await;
    let mut admin = daemon.admin().await;
    let mut watch = admin
        .watch_bindings(pb::WatchBindingsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        client.register(&registration(0, 1), 0).await.status,
        BaStatus::ACCEPTED
    );
    let event = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.kind, pb::binding_event::Kind::Upsert as i32);
    assert_eq!(event.reason, "registration");
    assert_eq!(event.binding.unwrap().home_address, home(0).to_string());

    let deleted = admin
        .delete_binding(pb::DeleteBindingRequest {
            home_address: home(0).to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.binding.unwrap().care_of_address, COA);
    let event = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.kind, pb::binding_event::Kind::Remove as i32);
    assert_eq!(event.reason, "admin");
    let again = admin
        .delete_binding(pb::DeleteBindingRequest {
            home_address: home(0).to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::NotFound);
}

/// Issue 32, item 7: with `[admin] token_file`, every admin call must
/// carry the token (a delete without it is refused and deletes nothing),
/// and nemoctl sends it from `--ha-admin-token-file`.
#[tokio::test]
async fn the_admin_api_answers_only_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "admin-token-0123456789\n").unwrap();
    let text = config(&dir.path().join("store"), 1).replace(
        "[admin]\nlisten = \"[::1]:0\"\n",
        &format!(
            "[admin]\nlisten = \"[::1]:0\"\ntoken_file = \"{}\"\n",
            token_file.display()
        ),
    );
    let daemon = Daemon::start_with(dir.path(), &text);
    let client = Client::new(&daemon).await;
    assert_eq!(
        client.register(&registration(0, 1), 0).await.status,
        BaStatus::ACCEPTED
    );
    let mut anonymous = daemon.admin().await;
    let refused = anonymous
        .delete_binding(pb::DeleteBindingRequest {
            home_address: home(0).to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let listed = anonymous
        .list_bindings(pb::ListBindingsRequest {})
        .await
        .unwrap_err();
    assert_eq!(listed.code(), tonic::Code::Unauthenticated);
    // nemoctl with the token file: the binding is still there.
    let nemoctl = |with_token: bool| {
        let mut command = Command::new(nemo_testkit::workspace_binary("nemoctl"));
        command
            .args(["--ha-admin", &format!("http://{}", daemon.admin)])
            .args(["--output", "json", "bindings", "list"]);
        if with_token {
            command.arg("--ha-admin-token-file").arg(&token_file);
        }
        command.output().unwrap()
    };
    let with_token = nemoctl(true);
    assert!(with_token.status.success(), "{with_token:?}");
    assert!(
        String::from_utf8_lossy(&with_token.stdout).contains(&home(0).to_string()),
        "{with_token:?}"
    );
    let without = nemoctl(false);
    assert!(!without.status.success());
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("token"),
        "{without:?}"
    );
}

/// A flood of idle connections to the metrics port, past the descriptor
/// limit, neither ends the home agent (an accept error used to end the
/// metrics server, and with it the daemon) nor stops registrations.
#[tokio::test]
async fn idle_metrics_connections_do_not_stop_the_home_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_under(
        dir.path(),
        &config(&dir.path().join("store"), 1),
        &["prlimit", "--nofile=96:96", "--"],
    );
    let mut idle = Vec::new();
    for _ in 0..200 {
        if let Ok(stream) = tokio::net::TcpStream::connect(daemon.metrics).await {
            idle.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "nemo-ha stopped: {}",
        daemon.log()
    );
    let client = Client::new(&daemon).await;
    assert_eq!(
        client.register(&registration(0, 1), 0).await.status,
        BaStatus::ACCEPTED,
        "{}",
        daemon.log()
    );
    drop(idle);
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "{}",
        daemon.log()
    );
}

#[tokio::test]
async fn malformed_packets_are_counted_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), 1);
    let client = Client::new(&daemon).await;
    let good = registration(0, 1).packet(&sa(0)).unwrap();

    let mut bad_checksum = good.clone();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] ^= 0xff;
    // With a correct checksum, so that the decoder itself must refuse them.
    let mut absurd_option = good.clone();
    // First option (the MNP) claims 255 octets.
    absurd_option[40 + 24 + 13] = 255;
    set_mh_checksum(home(0), addr(HA), &mut absurd_option[64..]);
    let mut wrong_length = good.clone();
    wrong_length[40 + 24 + 1] = 200;
    set_mh_checksum(home(0), addr(HA), &mut wrong_length[64..]);
    // A correctly signed Binding Update with bytes beyond the IPv6 Payload
    // Length: refused, not registered.
    let mut trailing = registration(0, 5).packet(&sa(0)).unwrap();
    trailing.extend_from_slice(b"appended");
    for packet in [
        trailing,
        vec![],
        vec![0x60],
        b"\x45 an IPv4 header, not IPv6, and longer than forty octets".to_vec(),
        good[..good.len() - 8].to_vec(),
        bad_checksum,
        absurd_option,
        wrong_length,
    ] {
        client.send(&packet).await;
    }
    assert_eq!(client.receive().await, None, "nothing answers garbage");
    // Still serving.
    assert_eq!(
        client.register(&registration(0, 2), 0).await.status,
        BaStatus::ACCEPTED
    );
    let metrics = daemon.metrics();
    for reason in [
        "trailing_bytes",
        "truncated",
        "checksum",
        "option_overrun",
        "length_mismatch",
        "not_mobility",
    ] {
        // Counted (every series exists from the start, at zero).
        let line = format!("nemo_ha_malformed_total{{reason=\"{reason}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(count >= 1, "{reason} not counted: {metrics}");
    }
}

#[tokio::test]
async fn unknown_message_types_get_a_binding_error() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), 1);
    let client = Client::new(&daemon).await;
    let hoti = MobilityHeader::new(Message::Other {
        mh_type: MhType::HOME_TEST_INIT,
        data: vec![0; 10],
    })
    .encode()
    .unwrap();
    let packet = build_packet(
        &PacketRepr {
            source: addr(COA),
            destination: addr(HA),
            hop_limit: 64,
            type2_routing: None,
            home_address_option: None,
        },
        &hoti,
    );
    client.send(&packet).await;
    let reply = client.receive().await.expect("a Binding Error");
    let parsed = parse_packet(&reply).unwrap();
    assert!(parsed.checksum_ok());
    assert_eq!(
        parsed.repr.source,
        addr(HA),
        "answered from the address it was sent to"
    );
    let Message::BindingError(be) = MobilityHeader::decode(parsed.mh).unwrap().message else {
        panic!("not a Binding Error");
    };
    assert_eq!(be.status, BeStatus::UNRECOGNIZED_MH_TYPE);
}

#[tokio::test]
async fn acknowledged_bindings_survive_kill_9() {
    const COUNT: u16 = 200;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), COUNT);
    let client = Client::new(&daemon).await;
    // Send them all at once, then collect the acknowledgements, so that many
    // are in flight together (group commit batches them).
    for n in 0..COUNT {
        client
            .send(&registration(n, 1).packet(&sa(n)).unwrap())
            .await;
    }
    let mut acknowledged = std::collections::BTreeSet::new();
    while acknowledged.len() < usize::from(COUNT) {
        let reply = client.receive().await.expect("missing acknowledgements");
        let parsed = parse_packet(&reply).unwrap();
        let home_address = parsed.repr.type2_routing.unwrap().home_address;
        let n = (home_address.segments()[7] - 0x100) as u16;
        let ba = check_binding_ack(&reply, addr(COA), home_address, &sa(n)).unwrap();
        assert_eq!(ba.status, BaStatus::ACCEPTED);
        acknowledged.insert(n);
    }
    // SIGKILL right after the last acknowledgement: no clean shutdown.
    daemon.kill();

    let daemon = Daemon::start(dir.path(), COUNT);
    let mut admin = daemon.admin().await;
    let listed = admin
        .list_bindings(pb::ListBindingsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.bindings.len(), usize::from(COUNT));
    for binding in &listed.bindings {
        assert_eq!(binding.care_of_address, COA);
        assert_eq!(binding.prefixes.len(), 1);
    }
    // The sequence numbers came back too: a replayed old number is refused.
    let client = Client::new(&daemon).await;
    let ba = client.register(&registration(0, 1), 0).await;
    assert_eq!(ba.status, BaStatus::SEQUENCE_OUT_OF_WINDOW);
    // And forwarding was reinstalled for every one of them once the data
    // plane caught up (the memory data plane starts empty in a new process,
    // so all are new).
    let log = nemo_testkit::wait_for_text(&daemon.log, "data plane caught up", 1);
    assert!(
        log.contains(&format!("bindings={COUNT} expired=0")),
        "{log}"
    );
    let caught_up = log
        .lines()
        .find(|l| l.contains("data plane caught up"))
        .unwrap_or_default();
    assert!(
        caught_up.contains(&format!("installed={}", COUNT * 2)),
        "{log}"
    );
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_keeps_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), 1);
    let client = Client::new(&daemon).await;
    assert_eq!(
        client.register(&registration(0, 1), 0).await.status,
        BaStatus::ACCEPTED
    );
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(daemon.log().contains("stopped cleanly"));
    let daemon = Daemon::start(dir.path(), 1);
    let listed = daemon
        .admin()
        .await
        .list_bindings(pb::ListBindingsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.bindings.len(), 1);
}

#[tokio::test]
async fn health_and_reflection_answer() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), 1);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", daemon.admin))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "nemo.v1.HomeAgentAdmin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let unknown = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "nemo.v1.NoSuchService".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"nemo.v1.HomeAgentAdmin".to_owned()),
        "{names:?}"
    );
}

/// The load generator still works against the daemon (a smoke run, not a
/// measurement: nothing here depends on timing).
#[test]
fn load_generator_smoke() {
    let dir = tempfile::tempdir().unwrap();
    let loadgen = env!("CARGO_BIN_EXE_ha-loadgen");
    let config = Command::new(loadgen)
        .args([
            "config",
            "--routers",
            "20",
            "--listen",
            "[::1]:0",
            "--store",
        ])
        .arg(dir.path().join("store"))
        .output()
        .unwrap();
    assert!(config.status.success());
    let config = String::from_utf8(config.stdout).unwrap()
        + "\n[admin]\nlisten = \"[::1]:0\"\n\n[metrics]\nlisten = \"[::1]:0\"\n";
    let daemon = Daemon::start_with(dir.path(), &config);
    let run = Command::new(loadgen)
        .args(["run", "--routers", "20", "--seconds", "1", "--target"])
        .arg(daemon.udp.to_string())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = String::from_utf8(run.stdout).unwrap();
    let field = |name: &str| -> u64 { nemo_testkit::field(&report, name).parse().unwrap() };
    assert!(field("acknowledged") > 20, "{report}");
    assert_eq!(field("rejected"), 0, "{report}");
}

#[test]
fn load_generator_smoke_with_the_authorizations_from_a_controller() {
    // The stand-in controller (the benchmark's production path), the
    // home agent's redb copy of what it sent, and a restart from that copy
    // with the controller gone.
    let dir = tempfile::tempdir().unwrap();
    let loadgen = env!("CARGO_BIN_EXE_ha-loadgen");
    let mut controller = nemo_testkit::Process::start(
        {
            let mut command = Command::new(loadgen);
            command.args(["controller", "--routers", "30", "--listen", "[::1]:0"]);
            command
        },
        dir.path().join("controller.log"),
    );
    let token = dir.path().join("token");
    std::fs::write(&token, "stand-in\n").unwrap();
    let config = Command::new(loadgen)
        .args([
            "config",
            "--routers",
            "30",
            "--listen",
            "[::1]:0",
            "--store",
        ])
        .arg(dir.path().join("store"))
        .arg("--controller")
        .arg(format!("http://{}", controller.field("grpc")))
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert!(config.status.success());
    let config = String::from_utf8(config.stdout).unwrap()
        + "\n[admin]\nlisten = \"[::1]:0\"\n\n[metrics]\nlisten = \"[::1]:0\"\n";
    let mut daemon = Daemon::start_with(dir.path(), &config);
    let log = nemo_testkit::wait_for_text(&daemon.log, "whole state applied", 1);
    assert!(log.contains("authorizations=30"), "{log}");
    let run = |daemon: &Daemon| {
        let run = Command::new(loadgen)
            .args(["run", "--routers", "30", "--seconds", "1", "--target"])
            .arg(daemon.udp.to_string())
            .output()
            .unwrap();
        let report = String::from_utf8(run.stdout).unwrap();
        let field = |name: &str| -> u64 { nemo_testkit::field(&report, name).parse().unwrap() };
        assert!(field("acknowledged") > 30, "{report}");
        assert_eq!(field("rejected"), 0, "{report}");
    };
    run(&daemon);
    assert!(dir.path().join("store/authorizations.redb").exists());

    // Killed, and the controller gone: the copy serves the restart.
    daemon.kill();
    controller.kill();
    let restarted = Daemon::start_with(dir.path(), &config);
    let log = nemo_testkit::wait_for_text(&restarted.log, "loaded from the cache", 1);
    assert!(log.contains("authorizations=30"), "{log}");
    run(&restarted);
}

/// Issue 32, item 8: `--check` warns about a config file holding keys
/// that others may read, and says nothing once it is the owner's alone;
/// the store it creates is the owner's alone whatever the umask.
#[test]
fn files_holding_keys_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ha.toml");
    std::fs::write(&path, config(&dir.path().join("store"), 1)).unwrap();
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_nemo-ha"))
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loose = check();
    assert!(loose.status.success(), "{loose:?}");
    assert!(
        String::from_utf8_lossy(&loose.stderr).contains("chmod 600"),
        "{loose:?}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tight = check();
    assert!(
        !String::from_utf8_lossy(&tight.stderr).contains("chmod 600"),
        "{tight:?}"
    );
    // The store a start creates.
    let mut daemon = Daemon::start_with(dir.path(), &config(&dir.path().join("store"), 1));
    daemon.terminate();
    for entry in std::fs::read_dir(dir.path().join("store")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", entry.path().display());
        }
    }
}
