//! `nemo-ha` taking its authorizations from a real `nemo-controller`:
//! a mobile router created at the controller can register, a rotated key
//! takes effect, and the home agent keeps working from its on-disk copy
//! while the controller is down.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nemo::auth::{Algorithm, SecurityAssociation};
use nemo::registration::{check_binding_ack, Registration};
use nemo::wire::{BaStatus, Lifetime, NtpTimestamp, SequenceNumber};
use nemo_proto::v1 as pb;
use nemo_testkit::daemons::{self, authed, eventually};
use nemo_testkit::Process;
use tokio::net::UdpSocket;

fn home_agent(dir: &Path, endpoint: &str) -> Process {
    daemons::home_agent(dir, &daemons::controller_section(dir, endpoint, "ha1"))
}

/// Registers with the identity `mr` and returns the status (`None`: no
/// answer, as for an SPI the home agent does not know yet).
async fn register(ha: SocketAddr, mr: &pb::MobileRouter, sequence: u16) -> Option<BaStatus> {
    let key = nemo_daemon::parse_hex_key(&mr.key).unwrap();
    let sa = SecurityAssociation::new(mr.spi, Algorithm::HmacSha256, key).unwrap();
    let home: Ipv6Addr = mr.home_address.parse().unwrap();
    let care_of: Ipv6Addr = "2001:db8:2::10".parse().unwrap();
    let registration = Registration {
        home_address: home,
        home_agent: "2001:db8:1::1".parse().unwrap(),
        care_of: std::net::IpAddr::V6(care_of),
        prefixes: mr.prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        lifetime: Lifetime(100),
        sequence: SequenceNumber(sequence),
        timestamp: NtpTimestamp::from_unix(SystemTime::now().duration_since(UNIX_EPOCH).unwrap()),
        mobile_router: true,
        nai: None,
        udp_over_ipv4: nemo::registration::UdpOverIpv4::WhenNeeded,
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

/// Registers with `mr` again and again, each time with the next sequence
/// number, until the home agent answers `wanted`; false when it never does.
async fn answered_eventually(
    ha: SocketAddr,
    mr: &pb::MobileRouter,
    sequence: &mut u16,
    wanted: BaStatus,
) -> bool {
    eventually(|| {
        *sequence += 1;
        let (mr, s) = (mr.clone(), *sequence);
        async move { register(ha, &mr, s).await == Some(wanted) }
    })
    .await
}

#[tokio::test]
async fn authorizations_follow_the_controller_and_survive_its_absence() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctl = daemons::controller(dir.path(), "");
    let endpoint = format!("http://{}", ctl.field("grpc"));
    let mut c = daemons::controller_client(&ctl).await;
    let mr = daemons::provision_tenant(&mut c, "").await;

    let ha = home_agent(dir.path(), &endpoint);
    let udp: SocketAddr = ha.field("udp").parse().unwrap();
    let mut sequence = 1;
    assert!(
        answered_eventually(udp, &mr, &mut sequence, BaStatus::ACCEPTED).await,
        "the controller's mobile router never got accepted: {}",
        ha.log()
    );

    // The home agent reported the binding to the controller's history.
    let mut events = c
        .watch_events(authed(pb::WatchEventsRequest {
            from_revision: 0,
            history_only: false,
        }))
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
    // Sent with its own request id (made once if sent again).
    assert!(reported.request_id.starts_with("nemo-ha-"), "{reported:?}");
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
    assert!(answered_eventually(udp, &mr, &mut sequence, BaStatus::AUTH_FAIL).await);
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

/// A home agent given two controller replicas (on one etcd) follows the
/// first; killed, it moves to the second and goes on following: a key
/// rotated there takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_agent_moves_to_another_controller_replica() {
    if !nemo_testkit::require(
        nemo_testkit::etcd::available(),
        "etcd missing (etcd-server)",
        "NEMO_REQUIRE_ETCD",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etcd = nemo_testkit::etcd::Etcd::start(1);
    let replica = || {
        daemons::controller_with_tables(
            dir.path(),
            "",
            &format!(
                "[etcd]\nendpoints = {:?}\nprefix = \"/nemo-ha-replicas/\"\n",
                etcd.endpoints()
            ),
        )
    };
    let (mut first, second) = (replica(), replica());
    let endpoints = [&first, &second].map(|p| format!("http://{}", p.field("grpc")));
    let mut c = daemons::controller_client(&first).await;
    let mr = daemons::provision_tenant(&mut c, "").await;
    let ha = daemons::home_agent(
        dir.path(),
        &format!(
            "[controller]\nendpoint = {endpoints:?}\ntoken_file = \"{}\"\nhome_agent = \"ha1\"\n",
            dir.path().join("token").display()
        ),
    );
    let udp: SocketAddr = ha.field("udp").parse().unwrap();
    let mut sequence = 1;
    assert!(
        answered_eventually(udp, &mr, &mut sequence, BaStatus::ACCEPTED).await,
        "{}",
        ha.log()
    );
    first.kill();
    let mut c = daemons::controller_client(&second).await;
    let rotated = c
        .rotate_key(authed(pb::RotateKeyRequest {
            tenant: "acme".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        answered_eventually(udp, &rotated, &mut sequence, BaStatus::ACCEPTED).await,
        "the home agent never took the key rotated at the second replica: {}",
        ha.log()
    );
    assert!(
        ha.log().contains("moved to another endpoint"),
        "{}",
        ha.log()
    );
}

/// A home agent away while the controller's history moved past its
/// revision (trimmed) takes the whole state again when it comes back: a
/// mobile router deleted meanwhile is no longer authorized, though the
/// home agent's own copy still held it.
#[tokio::test]
async fn a_home_agent_whose_revision_was_trimmed_takes_the_whole_state_again() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = daemons::controller(dir.path(), "[history]\nkeep = 3\ntrim_every_secs = 1\n");
    let endpoint = format!("http://{}", ctl.field("grpc"));
    let mut c = daemons::controller_client(&ctl).await;
    let mr = daemons::provision_tenant(&mut c, "").await;
    let ha = home_agent(dir.path(), &endpoint);
    let udp: SocketAddr = ha.field("udp").parse().unwrap();
    let mut sequence = 1;
    assert!(
        answered_eventually(udp, &mr, &mut sequence, BaStatus::ACCEPTED).await,
        "{}",
        ha.log()
    );
    drop(ha);
    // Meanwhile: the mobile router is deleted, and enough happens after
    // that the history no longer holds the deletion.
    c.delete_mobile_router(authed(pb::DeleteMobileRouterRequest {
        tenant: "acme".into(),
    }))
    .await
    .unwrap();
    for n in 0..10 {
        c.create_tenant(authed(pb::CreateTenantRequest {
            name: format!("t{n}"),
        }))
        .await
        .unwrap();
    }
    assert!(
        eventually(|| async {
            daemons::oldest_event(&c)
                .await
                .is_some_and(|first| first.kind == "tenant_created" && first.subject != "acme")
        })
        .await,
        "the history was not trimmed past the deletion: {}",
        ctl.log()
    );
    let ha = home_agent(dir.path(), &endpoint);
    let udp: SocketAddr = ha.field("udp").parse().unwrap();
    assert!(
        eventually(|| {
            let logged = ha.log().contains("no longer authorized");
            async move { logged }
        })
        .await,
        "{}",
        ha.log()
    );
    assert!(ha.log().contains("history moved past us"), "{}", ha.log());
    sequence += 1;
    assert_eq!(register(udp, &mr, sequence).await, None, "{}", ha.log());
}
