//! `nemo-ha` taking its authorizations from a real `nemo-controller`:
//! a mobile router created at the controller can register, a rotated key
//! takes effect, and the home agent keeps working from its on-disk copy
//! while the controller is down.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nemo::auth::{Algorithm, SecurityAssociation};
use nemo::mr::{check_binding_ack, Registration};
use nemo::wire::{BaStatus, Lifetime, NtpTimestamp, SequenceNumber};
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use nemo_testkit::{workspace_binary, Process};
use tokio::net::UdpSocket;
use tonic::Request;

const TOKEN: &str = "home-agent-test-token-0123456789";

fn authed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

fn controller(dir: &Path) -> Process {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let config = dir.join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"[::1]:0\"\nstore = \"{}\"\ntoken_file = \"{}\"\n",
            dir.join("controller-store").display(),
            dir.join("token").display()
        ),
    )
    .unwrap();
    let log = (0..)
        .map(|i| dir.join(format!("controller-{i}.log")))
        .find(|p| !p.exists())
        .unwrap();
    let mut command = Command::new(workspace_binary("nemo-controller"));
    command.arg("--config").arg(&config);
    Process::start(command, log)
}

fn home_agent(dir: &Path, endpoint: &str) -> Process {
    let config = dir.join("ha.toml");
    std::fs::write(
        &config,
        format!(
            "[home_agent]\nhome_prefixes = [\"2001:db8:1::/64\"]\n\n[store]\npath = \"{}\"\n\n\
             [udp]\nlisten = [\"[::1]:0\"]\n\n\
             [controller]\nendpoint = \"{endpoint}\"\ntoken_file = \"{}\"\nhome_agent = \"ha1\"\n",
            dir.join("ha-store").display(),
            dir.join("token").display()
        ),
    )
    .unwrap();
    let log = (0..)
        .map(|i| dir.join(format!("ha-{i}.log")))
        .find(|p| !p.exists())
        .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_nemo-ha"));
    command.arg("--config").arg(&config);
    Process::start(command, log)
}

/// Registers with the identity `mr` and returns the status (`None`: no
/// answer, as for an SPI the home agent does not know yet).
async fn register(ha: SocketAddr, mr: &pb::MobileRouter, sequence: u16) -> Option<BaStatus> {
    let key = nemo_daemon_key(&mr.key);
    let sa = SecurityAssociation::new(mr.spi, Algorithm::HmacSha256, key).unwrap();
    let home: Ipv6Addr = mr.home_address.parse().unwrap();
    let care_of: Ipv6Addr = "2001:db8:2::10".parse().unwrap();
    let registration = Registration {
        home_address: home,
        home_agent: "2001:db8:1::1".parse().unwrap(),
        care_of,
        prefixes: mr.prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        lifetime: Lifetime(100),
        sequence: SequenceNumber(sequence),
        timestamp: NtpTimestamp::from_unix(SystemTime::now().duration_since(UNIX_EPOCH).unwrap()),
        mobile_router: true,
        nai: None,
    };
    let socket = UdpSocket::bind("[::1]:0").await.unwrap();
    socket
        .send_to(&registration.packet(&sa).unwrap(), ha)
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let len = tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buffer))
        .await
        .ok()?
        .ok()?;
    match check_binding_ack(&buffer[..len], care_of, home, &sa) {
        Ok(ba) => Some(ba.status),
        // After a key rotation the home agent signs its 146 with the new
        // key, which the old identity cannot verify: read the claim.
        Err(_) => {
            let parsed = nemo::wire::parse_packet(&buffer[..len]).unwrap();
            match nemo::wire::MobilityHeader::decode(parsed.mh)
                .unwrap()
                .message
            {
                nemo::wire::Message::BindingAck(ba) => Some(ba.status),
                _ => None,
            }
        }
    }
}

fn nemo_daemon_key(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Waits until `check` holds, up to 10 s.
async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    for _ in 0..200 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn authorizations_follow_the_controller_and_survive_its_absence() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctl = controller(dir.path());
    let endpoint = format!("http://{}", ctl.field("grpc"));
    let mut c = ControllerClient::connect(endpoint.clone()).await.unwrap();
    c.register_home_agent(authed(pb::RegisterHomeAgentRequest {
        home_agent: Some(pb::HomeAgent {
            name: "ha1".into(),
            address: "2001:db8:1::1".into(),
            home_prefix: "2001:db8:1::/64".into(),
            udp_endpoint: String::new(),
        }),
    }))
    .await
    .unwrap();
    c.create_pool(authed(pb::CreatePoolRequest {
        name: "core".into(),
        prefix: "2001:db8:100::/40".into(),
        tenant_length: 56,
    }))
    .await
    .unwrap();
    c.create_tenant(authed(pb::CreateTenantRequest {
        name: "acme".into(),
    }))
    .await
    .unwrap();
    c.allocate_prefix(authed(pb::AllocatePrefixRequest {
        tenant: "acme".into(),
        pool: "core".into(),
        length: 0,
    }))
    .await
    .unwrap();
    let mr = c
        .create_mobile_router(authed(pb::CreateMobileRouterRequest {
            tenant: "acme".into(),
            home_agent: "ha1".into(),
            algorithm: String::new(),
            explicit_mode: true,
        }))
        .await
        .unwrap()
        .into_inner();

    let ha = home_agent(dir.path(), &endpoint);
    let udp: SocketAddr = ha.field("udp").parse().unwrap();
    let mut sequence = 1;
    assert!(
        eventually(|| {
            sequence += 1;
            let (mr, s) = (mr.clone(), sequence);
            async move { register(udp, &mr, s).await == Some(BaStatus::ACCEPTED) }
        })
        .await,
        "the controller's mobile router never got accepted: {}",
        ha.log()
    );

    // The home agent reported the binding to the controller's history.
    let mut events = c
        .watch_events(authed(pb::WatchEventsRequest { from_revision: 0 }))
        .await
        .unwrap()
        .into_inner();
    let reported = loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.message())
            .await
            .unwrap_or_else(|_| panic!("no binding report: {}", ha.log()))
            .unwrap()
            .unwrap();
        if event.kind == "binding_reported" {
            break event;
        }
    };
    assert_eq!(reported.subject, "2001:db8:1::100");
    assert!(
        reported.detail_json.contains("2001:db8:2::10"),
        "{}",
        reported.detail_json
    );

    // A rotated key: the old one stops working, the new one works.
    let rotated = c
        .rotate_key(authed(pb::RotateKeyRequest {
            tenant: "acme".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        eventually(|| {
            sequence += 1;
            let (mr, s) = (mr.clone(), sequence);
            async move { register(udp, &mr, s).await == Some(BaStatus::AUTH_FAIL) }
        })
        .await
    );
    sequence += 1;
    assert_eq!(
        register(udp, &rotated, sequence).await,
        Some(BaStatus::ACCEPTED)
    );

    // The controller goes away; a restarted home agent works from its copy.
    ctl.kill();
    drop(ha);
    let ha = home_agent(dir.path(), &endpoint);
    let udp: SocketAddr = ha.field("udp").parse().unwrap();
    sequence += 1;
    assert_eq!(
        register(udp, &rotated, sequence).await,
        Some(BaStatus::ACCEPTED)
    );
    // The watch task logs its failed connection on its own schedule.
    assert!(
        eventually(|| {
            let logged = ha.log().contains("controller unavailable");
            async move { logged }
        })
        .await,
        "{}",
        ha.log()
    );
}
