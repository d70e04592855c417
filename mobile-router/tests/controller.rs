//! The whole control plane as real processes on loopback: `nemo-controller`,
//! `nemo-ha` taking its authorizations from it, and two `nemo-mr` daemons
//! (two hypervisors) taking their tenants from it. A tenant placed on one
//! hypervisor and then migrated to the other: the binding follows, and the
//! hypervisor it left does not deregister it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use nemo_proto::v1 as pb;
use nemo_proto::v1::home_agent_admin_client::HomeAgentAdminClient;
use nemo_testkit::daemons::{self, authed};

async fn care_of(admin: &mut HomeAgentAdminClient<tonic::transport::Channel>) -> Option<String> {
    admin
        .get_binding(pb::GetBindingRequest {
            home_address: "2001:db8:1::100".into(),
        })
        .await
        .ok()
        .map(|b| b.into_inner().care_of_address)
}

async fn wait_for_care_of(
    admin: &mut HomeAgentAdminClient<tonic::transport::Channel>,
    wanted: Option<&str>,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = care_of(admin).await;
        if now.as_deref() == wanted || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_tenant_follows_its_placement_between_hypervisors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ctl = daemons::controller(d, "");
    let endpoint = format!("http://{}", ctl.field("grpc"));
    let mut c = daemons::controller_client(&ctl).await;
    // Each daemon with a credential of its own (issue 32): the home
    // agent's may watch ha1's authorizations and report its bindings, a
    // hypervisor's its own placements.
    let issuer = c.clone();
    let credential = |role: &'static str, name: &'static str| {
        let mut c = issuer.clone();
        async move {
            let issued = c
                .issue_credential(authed(pb::IssueCredentialRequest {
                    role: role.into(),
                    name: name.into(),
                }))
                .await
                .unwrap()
                .into_inner();
            let file = d.join(format!("{name}.token"));
            std::fs::write(&file, format!("{}\n", issued.token)).unwrap();
            file
        }
    };
    let ha_token = credential("home_agent", "ha1").await;
    let ha = daemons::home_agent(
        d,
        &format!(
            "[admin]\nlisten = \"[::1]:0\"\n\n[metrics]\nlisten = \"[::1]:0\"\n\n[controller]\n\
             endpoint = \"{endpoint}\"\ntoken_file = \"{}\"\nhome_agent = \"ha1\"\n",
            ha_token.display()
        ),
    );
    let ha_udp = ha.field("udp");
    daemons::provision_tenant(&mut c, &ha_udp).await;

    let mut routers = Vec::new();
    for (hypervisor, care_of) in [("hv-a", "2001:db8:2::10"), ("hv-b", "2001:db8:3::10")] {
        let token = credential("hypervisor", hypervisor).await;
        routers.push(daemons::mobile_router(
            d,
            hypervisor,
            care_of,
            &ha_udp,
            &format!(
                "[controller]\nendpoint = \"{endpoint}\"\ntoken_file = \"{}\"\nhypervisor = \"{hypervisor}\"\n",
                token.display()
            ),
        ));
    }
    // Both daemons registered their hypervisors.
    assert!(
        daemons::eventually(|| {
            let mut c = c.clone();
            async move {
                c.list_hypervisors(authed(pb::ListHypervisorsRequest {}))
                    .await
                    .is_ok_and(|list| list.into_inner().hypervisors.len() == 2)
            }
        })
        .await,
        "hypervisors never registered"
    );

    let mut admin = HomeAgentAdminClient::connect(format!("http://{}", ha.field("admin")))
        .await
        .unwrap();
    daemons::place(&c, "acme", "hv-a", "initial").await.unwrap();
    assert_eq!(
        wait_for_care_of(&mut admin, Some("2001:db8:2::10"))
            .await
            .as_deref(),
        Some("2001:db8:2::10"),
        "hv-a: {}\nha: {}",
        routers[0].log(),
        ha.log()
    );

    // The home agent's report of that registration, with its sequence
    // number, reached the controller before the migration is told.
    let mut events = c
        .watch_events(authed(pb::WatchEventsRequest {
            from_revision: 0,
            history_only: false,
        }))
        .await
        .unwrap()
        .into_inner();
    // Each hypervisor's registration was made with its mobile router's
    // request id (made once if sent again).
    let mut registrations = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = events.message().await.unwrap() {
            match event.kind.as_str() {
                "hypervisor_registered" => registrations.push(event),
                "binding_reported" => break,
                _ => {}
            }
        }
    })
    .await
    .expect("the home agent never reported the binding");
    assert_eq!(registrations.len(), 2, "{registrations:?}");
    assert!(
        registrations
            .iter()
            .all(|event| event.request_id.starts_with("nemo-mr-")),
        "{registrations:?}"
    );

    // Migration: the binding moves to hv-b's care-of address and stays.
    let started = Instant::now();
    daemons::place(&c, "acme", "hv-b", "migration")
        .await
        .unwrap();
    assert_eq!(
        wait_for_care_of(&mut admin, Some("2001:db8:3::10"))
            .await
            .as_deref(),
        Some("2001:db8:3::10"),
        "hv-b: {}",
        routers[1].log()
    );
    eprintln!("placement change to binding moved: {:?}", started.elapsed());
    // hv-b's instance started after the sequence number the home agent
    // reported: its first Binding Update was accepted, no 135 on the way.
    let metrics = nemo_testkit::scrape_metrics(ha.field("metrics"));
    let acks = |status: &str| {
        nemo_testkit::metric_value(
            &metrics,
            &format!("nemo_ha_binding_acks_total{{status=\"{status}\"}}"),
        )
    };
    assert!(acks("0") >= 1.0, "{metrics}");
    assert_eq!(
        acks("135"),
        0.0,
        "the new instance's first Binding Update was refused with 135:\n{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(care_of(&mut admin).await.as_deref(), Some("2001:db8:3::10"));
    // The operator's overview says the same: placed on hv-b, bound to hv-b's
    // care-of address (from the home agent's admin API).
    let status = std::process::Command::new(nemo_testkit::workspace_binary("nemoctl"))
        .args(["status", "--output", "json", "--endpoint", &endpoint])
        .arg("--ha-admin")
        .arg(format!("http://{}", ha.field("admin")))
        .env("NEMO_TOKEN", daemons::TOKEN)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let overview: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let acme = &overview["tenants"][0];
    assert_eq!(
        (&acme["hypervisor"], &acme["care_of_address"]),
        (&"hv-b".into(), &"2001:db8:3::10".into()),
        "{overview}"
    );
    assert!(
        acme["expires_at_unix_ms"].as_i64().unwrap() > 0,
        "{overview}"
    );
    assert!(
        routers[0].log().contains("moved to another hypervisor"),
        "{}",
        routers[0].log()
    );
    // The handovers view: registered at hv-a, then moved to hv-b, some
    // milliseconds after the placement.
    let view = std::process::Command::new(nemo_testkit::workspace_binary("nemoctl"))
        .args(["--output", "json", "handovers", "--endpoint", &endpoint])
        .env("NEMO_TOKEN", daemons::TOKEN)
        .output()
        .unwrap();
    assert!(view.status.success(), "{view:?}");
    let handovers: serde_json::Value = serde_json::from_slice(&view.stdout).unwrap();
    let moves: Vec<(&str, &str)> = handovers
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["what"].as_str().unwrap(), h["care_of"].as_str().unwrap()))
        .collect();
    assert_eq!(
        moves,
        [
            ("registered", "2001:db8:2::10"),
            ("moved", "2001:db8:3::10")
        ],
        "{handovers}"
    );
    let moved = &handovers[1];
    assert_eq!(moved["tenant"], "acme");
    assert_eq!(moved["from_care_of"], "2001:db8:2::10");
    assert!(
        moved["after_placement_ms"].as_i64().unwrap() >= 0,
        "{moved}"
    );

    // The tenant leaves: hv-b deregisters it.
    c.unplace_tenant(authed(pb::UnplaceTenantRequest {
        tenant: "acme".into(),
        reason: "gone".into(),
    }))
    .await
    .unwrap();
    assert_eq!(
        wait_for_care_of(&mut admin, None).await,
        None,
        "hv-b: {}",
        routers[1].log()
    );
}

/// Sends `signal` (STOP, CONT) to a test daemon.
fn signal(process: &nemo_testkit::Process, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &process.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A mobile-router daemon that lost the controller while its history moved
/// past the daemon's revision (trimmed) takes the whole state again when it
/// is back: the instance of a tenant that left this hypervisor meanwhile
/// goes (not deregistered: it may be registered from elsewhere).
#[tokio::test]
async fn a_mobile_router_whose_revision_was_trimmed_takes_the_whole_state_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The controller restarts on the same port (the daemon's endpoint).
    let port = std::net::TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = daemons::write(
        d,
        "controller.toml",
        format!(
            "listen = \"[::1]:{port}\"\ntoken_file = \"{}\"\nstore = \"{}\"\n[history]\nkeep = 3\ntrim_every_secs = 1\n",
            daemons::token_file(d).display(),
            d.join("controller-store").display()
        ),
    );
    let mut ctl = daemons::start(
        "nemo-controller",
        &config,
        daemons::next_log(d, "controller"),
    );
    let endpoint = format!("http://[::1]:{port}");
    let mut c = daemons::controller_client(&ctl).await;
    daemons::provision_tenant(&mut c, "[::1]:9").await;
    let mr = daemons::mobile_router(
        d,
        "hv-a",
        "2001:db8:2::10",
        "[::1]:9",
        &format!(
            "[admin]\nlisten = \"[::1]:0\"\n\n[controller]\nendpoint = \"{endpoint}\"\ntoken_file = \"{}\"\nhypervisor = \"hv-a\"\n",
            d.join("token").display()
        ),
    );
    let instances = || async {
        let mut status =
            nemo_proto::v1::mobile_router_status_client::MobileRouterStatusClient::connect(
                format!("http://{}", mr.field("admin")),
            )
            .await
            .unwrap();
        status
            .list_instances(pb::ListInstancesRequest {})
            .await
            .unwrap()
            .into_inner()
            .instances
            .into_iter()
            .map(|i| i.name)
            .collect::<Vec<_>>()
    };
    assert!(
        daemons::place_once_registered(&c, "acme", "hv-a").await,
        "hv-a never registered: {}",
        mr.log()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while instances().await != ["acme"] {
        assert!(Instant::now() < deadline, "{}", mr.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The daemon is paused, the controller restarts, the tenant moves to
    // hv-b and enough happens after that the history no longer holds it.
    signal(&mr, "STOP");
    ctl.kill();
    let ctl = daemons::start(
        "nemo-controller",
        &config,
        daemons::next_log(d, "controller"),
    );
    let mut c = daemons::controller_client(&ctl).await;
    c.register_hypervisor(authed(pb::RegisterHypervisorRequest {
        name: "hv-b".into(),
    }))
    .await
    .unwrap();
    daemons::place(&c, "acme", "hv-b", "migration")
        .await
        .unwrap();
    for n in 0..10 {
        c.create_tenant(authed(pb::CreateTenantRequest {
            name: format!("t{n}"),
        }))
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !daemons::oldest_event(&c)
        .await
        .is_some_and(|first| first.kind == "tenant_created" && first.subject.starts_with('t'))
    {
        assert!(Instant::now() < deadline, "never trimmed: {}", ctl.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&mr, "CONT");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !instances().await.is_empty() {
        assert!(Instant::now() < deadline, "{}", mr.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = mr.log();
    assert!(log.contains("history moved past us"), "{log}");
    assert!(log.contains("no longer placed here"), "{log}");
}

/// Issue 29: a tenant placed on its VM's announcement (as a live migration
/// starts) registers at once, so that the home agent's binding and copies
/// are in place, but its traffic is held here until the VM announces itself
/// on its port; with no announcement (here no port at all to watch) it
/// passes after `hold_ms`, so a VM that never announces still gets its
/// network.
#[tokio::test]
async fn a_tenant_placed_on_its_announcement_registers_at_once_and_passes_at_hold_ms_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ctl = daemons::controller(d, "");
    let endpoint = format!("http://{}", ctl.field("grpc"));
    let mut c = daemons::controller_client(&ctl).await;
    let ha = daemons::home_agent(
        d,
        &format!(
            "[admin]\nlisten = \"[::1]:0\"\n\n{}",
            daemons::controller_section(d, &endpoint, "ha1")
        ),
    );
    let ha_udp = ha.field("udp");
    daemons::provision_tenant(&mut c, &ha_udp).await;
    let mr = daemons::mobile_router_tuned(
        d,
        "hv-a",
        "2001:db8:2::10",
        &ha_udp,
        // Longer than a first registration that must be sent again (the
        // home agent may hear of the tenant's authorization after its
        // first Binding Update: one more InitialBindackTimeoutFirstReg,
        // 1.5 s, seen in CI), so that the binding is there before the
        // hold ends.
        "hold_ms = 4000",
        &format!(
            "[controller]\nendpoint = \"{endpoint}\"\ntoken_file = \"{}\"\nhypervisor = \"hv-a\"\n",
            d.join("token").display()
        ),
    );
    mr.wait_for("watching placements", 1);
    let placed = c
        .place_tenant(authed(pb::PlaceTenantRequest {
            tenant: "acme".into(),
            hypervisor: "hv-a".into(),
            reason: "migration".into(),
            delivery: pb::Delivery::OnAnnouncement.into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(placed.delivery(), pb::Delivery::OnAnnouncement);
    let held_at = Instant::now();
    let log = mr.wait_for("held until the VM announces itself", 1);
    assert!(log.contains("hold_ms=4000"), "{log}");
    // Registered while held: the binding is there before the VM is.
    let mut admin = HomeAgentAdminClient::connect(format!("http://{}", ha.field("admin")))
        .await
        .unwrap();
    assert_eq!(
        wait_for_care_of(&mut admin, Some("2001:db8:2::10"))
            .await
            .as_deref(),
        Some("2001:db8:2::10"),
        "{}",
        mr.log()
    );
    assert!(
        !mr.log().contains("the tenant's traffic passes"),
        "passed before hold_ms: {}",
        mr.log()
    );
    let log = mr.wait_for("the tenant's traffic passes", 1);
    assert!(
        held_at.elapsed() >= Duration::from_millis(3900),
        "passed after {:?}: {log}",
        held_at.elapsed()
    );
    assert!(log.contains("no announcement within hold_ms"), "{log}");
}
