//! What nemo ships for monitoring, against the daemons themselves: the
//! Prometheus alerting rules (`deploy/prometheus/nemo-alerts.yml`) pass
//! `promtool check rules`, and every metric they and the Grafana dashboard
//! (`deploy/grafana/nemo.json`) name is one that a real `nemo-controller`,
//! `nemo-ha` and `nemo-mr` export (a renamed metric fails here, not in an
//! operator's silent alert).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use nemo_testkit::daemons;
use nemo_testkit::{require, runs, scrape_metrics};

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// A metric's family name: without the suffixes its samples carry.
fn family(name: &str) -> String {
    ["_total", "_bucket", "_sum", "_count", "_created"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
        .to_owned()
}

/// The families a metrics body describes or samples.
fn families(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter_map(|line| match line.strip_prefix("# HELP ") {
            Some(help) => help.split_whitespace().next(),
            None if line.starts_with("nemo_") => line.split(['{', ' ']).next(),
            None => None,
        })
        .map(family)
        .collect()
}

/// The nemo metrics an expression text names.
fn named(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("nemo_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(family(&name));
    }
    names
}

#[tokio::test]
async fn the_alerts_and_the_dashboard_name_only_metrics_the_daemons_export() {
    let rules = deploy("prometheus/nemo-alerts.yml");
    if require(
        runs("promtool", &["--version"]),
        "promtool missing (Debian's prometheus)",
        "NEMO_REQUIRE_PROMTOOL",
    ) {
        let checked = Command::new("promtool")
            .args(["check", "rules"])
            .arg(&rules)
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    // The three daemons, a tenant placed so that the mobile router runs an
    // instance.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ctl = daemons::controller(d, "[metrics]\nlisten = \"[::1]:0\"\n");
    let endpoint = format!("http://{}", ctl.field("grpc"));
    let mut c = daemons::controller_client(&ctl).await;
    let ha = daemons::home_agent(
        d,
        &format!(
            "[metrics]\nlisten = \"[::1]:0\"\n\n{}",
            daemons::controller_section(d, &endpoint, "ha1")
        ),
    );
    daemons::provision_tenant(&mut c, &ha.field("udp")).await;
    let mr = daemons::mobile_router(
        d,
        "hv-a",
        "2001:db8:2::10",
        &ha.field("udp"),
        &format!(
            "[metrics]\nlisten = \"[::1]:0\"\n\n[controller]\nendpoint = \"{endpoint}\"\ntoken_file = \"{}\"\nhypervisor = \"hv-a\"\n",
            d.join("token").display()
        ),
    );
    assert!(
        daemons::place_once_registered(&c, "acme", "hv-a").await,
        "{}",
        mr.log()
    );
    mr.wait_for("registered", 1);
    let mut exported = BTreeSet::new();
    for process in [&ctl, &ha, &mr] {
        let address = process.field("metrics");
        let body = tokio::task::spawn_blocking(move || scrape_metrics(address))
            .await
            .unwrap();
        exported.extend(families(&body));
    }
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(deploy("grafana/nemo.json")).unwrap()).unwrap();
    let mut expressions = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "a panel without a query: {panel}");
        for target in targets {
            expressions.push_str(target["expr"].as_str().unwrap());
            expressions.push('\n');
        }
    }
    // Labelled by the status the home agent refused with: no series
    // exists before a refusal, so none can be scraped here; it must at
    // least be what the daemon registers.
    let status_rs =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/status.rs"))
            .unwrap();
    assert!(status_rs.contains("\"rejections\""));
    exported.insert("nemo_mr_rejections".to_owned());
    for (what, text) in [
        (
            "the alerting rules",
            std::fs::read_to_string(&rules).unwrap(),
        ),
        ("the dashboard", expressions),
    ] {
        let wanted = named(&text);
        assert!(wanted.len() > 10, "{what} name only {wanted:?}");
        let missing: Vec<&String> = wanted.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{what} name metrics no daemon exports: {missing:?}\nexported: {exported:?}"
        );
    }
}
