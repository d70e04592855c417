//! The real `nemo-mr` against the real `nemo-ha`, over UDP on loopback.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use nemo_proto::v1 as pb;
use nemo_proto::v1::home_agent_admin_client::HomeAgentAdminClient;
use nemo_testkit::daemons;
use nemo_testkit::Process;

const KEY: &str = "6d6f62696c652d726f757465722d746573742d6b65792d33322d6f6374657473";
const HOA: &str = "2001:db8:1::100";
const COA: &str = "2001:db8:2::10";

fn home_agent(dir: &Path) -> Process {
    daemons::home_agent(
        dir,
        &format!(
            "[admin]\nlisten = \"[::1]:0\"\n\n[metrics]\nlisten = \"[::1]:0\"\n\n\
             [[mobile_router]]\nhome_address = \"{HOA}\"\nspi = 4096\nkey = \"{KEY}\"\n\
             prefixes = [\"2001:db8:100::/56\"]\n"
        ),
    )
}

/// The text of a daemon's Prometheus endpoint.
async fn scrape(address: String) -> String {
    tokio::task::spawn_blocking(move || nemo_testkit::scrape_metrics(address))
        .await
        .unwrap()
}

fn mobile_router(dir: &Path, ha_udp: &str, key: &str, tag: &str) -> Process {
    daemons::mobile_router(
        dir,
        &format!("mr-{tag}"),
        COA,
        ha_udp,
        &format!(
            "[admin]\nlisten = \"[::1]:0\"\n\n[metrics]\nlisten = \"[::1]:0\"\n\n\
             [[instance]]\nname = \"acme\"\nhome_address = \"{HOA}\"\nhome_agent = \"2001:db8:1::1\"\n\
             spi = 4096\nkey = \"{key}\"\nprefixes = [\"2001:db8:100::/56\"]\n\
             tenant_interface = \"t-acme\"\ntable = 100\n"
        ),
    )
}

type Admin = HomeAgentAdminClient<tonic::transport::Channel>;

async fn binding(admin: &mut Admin) -> Option<pb::Binding> {
    admin
        .get_binding(pb::GetBindingRequest {
            home_address: HOA.into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// Waits until the binding is present (or absent) on the home agent.
async fn wait_for(admin: &mut Admin, present: bool) -> Option<pb::Binding> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = binding(admin).await;
        if found.is_some() == present || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn registers_and_deregisters_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ha = home_agent(dir.path());
    let mut admin = Admin::connect(format!("http://{}", ha.field("admin")))
        .await
        .unwrap();
    let mut mr = mobile_router(dir.path(), &ha.field("udp"), KEY, "a");
    let registered = wait_for(&mut admin, true).await.expect("never registered");
    assert_eq!(registered.care_of_address, COA);
    assert_eq!(registered.prefixes, vec!["2001:db8:100::/56".to_owned()]);
    assert!(registered.mobile_router);
    let log = mr.wait_for("registered", 1);
    assert!(log.contains("registered"), "{log}");

    let status = mr.terminate();
    assert!(status.success(), "{status}");
    assert!(
        wait_for(&mut admin, false).await.is_none(),
        "still bound after SIGTERM"
    );
    assert!(mr.log().contains("deregistered"), "{}", mr.log());
}

#[tokio::test]
async fn a_restarted_mobile_router_registers_again() {
    // Whatever sequence number the new process starts from (random), it
    // ends up registered: directly, or after the home agent's 135.
    let dir = tempfile::tempdir().unwrap();
    let ha = home_agent(dir.path());
    let mut admin = Admin::connect(format!("http://{}", ha.field("admin")))
        .await
        .unwrap();
    let first = mobile_router(dir.path(), &ha.field("udp"), KEY, "first");
    let before = wait_for(&mut admin, true).await.unwrap();
    drop(first); // SIGKILL: no deregistration
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = mobile_router(dir.path(), &ha.field("udp"), KEY, "second");
    let log = second.wait_for("registered", 1);
    assert!(log.contains("registered"), "{log}");
    let after = binding(&mut admin).await.unwrap();
    assert!(after.registered_at_unix_ms > before.registered_at_unix_ms);
}

#[tokio::test]
async fn a_wrong_key_is_reported_and_nothing_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let ha = home_agent(dir.path());
    let mut admin = Admin::connect(format!("http://{}", ha.field("admin")))
        .await
        .unwrap();
    let wrong = "11".repeat(32);
    let mr = mobile_router(dir.path(), &ha.field("udp"), &wrong, "wrong");
    let log = mr.wait_for("does not authenticate", 1);
    assert!(log.contains("does not authenticate with our key"), "{log}");
    assert!(log.contains("146"), "{log}");
    assert!(binding(&mut admin).await.is_none());
}

#[tokio::test]
async fn lost_acknowledgements_are_recovered_by_retransmission() {
    let dir = tempfile::tempdir().unwrap();
    let ha = home_agent(dir.path());
    // A relay that loses the first two answers.
    let relay = nemo_testkit::relay::start(
        "[::1]:0".parse().unwrap(),
        ha.field("udp").parse().unwrap(),
        nemo_testkit::relay::RelaySettings {
            lose_first_answers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let mr = mobile_router(dir.path(), &relay.to_string(), KEY, "lossy");
    let log = mr.wait_for("registered", 1);
    let line = log
        .lines()
        .find(|l| l.contains("registered"))
        .unwrap_or_else(|| panic!("never registered: {log}"));
    let took_ms: f64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("took_ms="))
        .unwrap()
        .parse()
        .unwrap();
    // Two answers lost: retransmissions at 1.5 s and 1.5 + 3 s (RFC 6275
    // §11.8 back-off), the third answered.
    assert!(
        took_ms >= 4400.0,
        "took {took_ms} ms: retransmission did not back off"
    );
    // The home agent accepted all three (the first registration and two
    // refreshes; only the first is logged at info).
    let metrics = scrape(ha.field("metrics")).await;
    assert!(
        metrics.contains("nemo_ha_binding_acks_total{status=\"0\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn status_api_and_reregistration_trigger() {
    use nemo_proto::v1::mobile_router_status_client::MobileRouterStatusClient;
    let dir = tempfile::tempdir().unwrap();
    let ha = home_agent(dir.path());
    let mr = mobile_router(dir.path(), &ha.field("udp"), KEY, "status");
    mr.wait_for("registered", 1);
    let mut status = MobileRouterStatusClient::connect(format!("http://{}", mr.field("admin")))
        .await
        .unwrap();
    let list = status
        .list_instances(pb::ListInstancesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.instances.len(), 1);
    let instance = &list.instances[0];
    assert_eq!(instance.name, "acme");
    assert_eq!(instance.state, "registered");
    assert_eq!(instance.care_of_address, COA);
    assert_eq!(instance.tunnel, "ipv6-in-ipv6");
    assert_eq!(instance.last_status, Some(0));
    assert_eq!(instance.registrations, 1);
    assert!(instance.lifetime_left_seconds > 500 && instance.lifetime_left_seconds <= 600);

    // The orchestrator's hook: register again now.
    let told = status
        .reregister(pb::ReregisterRequest {
            name: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(told.instances, 1);
    mr.wait_for("registered", 2);
    let unknown = status
        .reregister(pb::ReregisterRequest {
            name: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(unknown.message().contains("name"), "{}", unknown.message());

    let metrics = scrape(mr.field("metrics")).await;
    assert!(
        metrics.contains("nemo_mr_registrations_total{tenant=\"acme\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nemo_mr_registration_seconds_count 2"),
        "{metrics}"
    );
}

/// `kill -HUP`, as systemd's `ExecReload` does.
fn hang_up(process: &Process) {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &process.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[tokio::test]
async fn sighup_reloads_the_static_entries_of_both_daemons() {
    let dir = tempfile::tempdir().unwrap();
    let other = "[[mobile_router]]\nhome_address = \"2001:db8:1::200\"\nspi = 4097\n\
                 key = \"22222222222222222222222222222222\"\nprefixes = [\"2001:db8:200::/56\"]\n";
    let ha = daemons::home_agent(
        dir.path(),
        &format!("[admin]\nlisten = \"[::1]:0\"\n\n{other}"),
    );
    let ha_config = dir.path().join("ha.toml");
    let without = std::fs::read_to_string(&ha_config).unwrap();
    let mut admin = Admin::connect(format!("http://{}", ha.field("admin")))
        .await
        .unwrap();
    // The home agent does not know this mobile router yet: its Binding
    // Updates go unanswered.
    let mr = mobile_router(dir.path(), &ha.field("udp"), KEY, "reload");
    let mr_config = dir.path().join("mr-reload.toml");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(binding(&mut admin).await.is_none());

    // Authorized by a reload: the next retransmission is accepted.
    let with = format!(
        "{without}\n[[mobile_router]]\nhome_address = \"{HOA}\"\nspi = 4096\nkey = \"{KEY}\"\n\
         prefixes = [\"2001:db8:100::/56\"]\n"
    );
    std::fs::write(&ha_config, &with).unwrap();
    hang_up(&ha);
    let log = ha.wait_for("reloaded the static authorizations", 1);
    assert!(log.contains("authorized=2 withdrawn=0"), "{log}");
    assert!(wait_for(&mut admin, true).await.is_some(), "{}", mr.log());

    // A file that does not load is refused, naming its line; nothing
    // changes.
    std::fs::write(
        &ha_config,
        format!("{with}\n[[mobile_router]]\nspi = \"x\"\n"),
    )
    .unwrap();
    hang_up(&ha);
    let log = ha.wait_for("reload refused", 1);
    assert!(log.contains("ha.toml:"), "{log}");
    assert!(binding(&mut admin).await.is_some());

    // The mobile router's reload: the instance no longer named
    // deregisters and goes; a new one starts.
    let mr_text = std::fs::read_to_string(&mr_config).unwrap();
    let kept = &mr_text[..mr_text.find("[[instance]]").unwrap()];
    std::fs::write(
        &mr_config,
        format!(
            "{kept}[[instance]]\nname = \"other\"\nhome_address = \"2001:db8:1::200\"\n\
             home_agent = \"2001:db8:1::1\"\nspi = 4097\nkey = \"22222222222222222222222222222222\"\n\
             prefixes = [\"2001:db8:200::/56\"]\ntenant_interface = \"t-other\"\ntable = 101\n"
        ),
    )
    .unwrap();
    hang_up(&mr);
    let log = mr.wait_for("reloaded the static instances", 1);
    assert!(log.contains("instances=1 removed=1"), "{log}");
    assert!(wait_for(&mut admin, false).await.is_none(), "{}", mr.log());
    let log = mr.wait_for("instance added", 1);
    assert!(log.contains("other"), "{log}");

    // Withdrawn on the home agent: revoked, the other entry kept.
    std::fs::write(&ha_config, &without).unwrap();
    hang_up(&ha);
    let log = ha.wait_for("authorized=1 withdrawn=1", 1);
    assert!(log.contains("authorization revoked"), "{log}");
    assert!(ha.log().contains(HOA), "{log}");
}
