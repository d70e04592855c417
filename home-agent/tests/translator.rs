//! `nemo-ha` with `[translator]` (issue 31), fed by a real
//! `nemo-controller`, in network namespaces: the operator gives the
//! tenant's VM an IPv4 address at the controller (RFC 7757 mapping into
//! its prefix); the home agent routes its pool and the translation prefix
//! to its device and translates (RFC 7915): an IPv4 host pings the VM at
//! its IPv4 address and the VM pings the host in the translation prefix.
//! Released at the controller, the address reaches nobody; given again and
//! the home agent restarted with the controller down, the home agent
//! translates from its cache.
//!
//! Needs root, iproute2, ping and a kernel running the BPF data plane:
//! skips loudly without them unless NEMO_REQUIRE_NETNS is set (CI sets it).
//! Only 192.0.2.0/24 and 2001:db8::/32.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use nemo_testkit::daemons::{self, authed};
use nemo_testkit::{link, netns_available, require, runs, veth, BpfFs, Netns, Process};

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";
const PEER: &str = "192.0.2.1";
const TENANT_IPV4: &str = "192.0.2.130";
const VM: &str = "2001:db8:100::10";
const PEER_IN_PREFIX: &str = "2001:db8:64::c000:201";

fn pings(from: &Netns, to: &str) -> bool {
    from.command("ping")
        .args(["-c", "1", "-W", "1", to])
        .output()
        .unwrap()
        .status
        .success()
}

/// Whether `check` holds within 15 s.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn start_controller(ha: &Netns, dir: &Path) -> Process {
    let token = daemons::token_file(dir);
    let config = daemons::write(
        dir,
        "controller.toml",
        format!(
            "listen = \"[::1]:0\"\ntoken_file = \"{}\"\nstore = \"{}\"\nquarantine_secs = 0\n",
            token.display(),
            dir.join("controller-store").display()
        ),
    );
    let mut command = ha.command(
        nemo_testkit::workspace_binary("nemo-controller")
            .to_str()
            .unwrap(),
    );
    command.arg("--config").arg(&config);
    Process::start(command, daemons::next_log(dir, "controller"))
}

fn start_home_agent(ha: &Netns, dir: &Path, bpffs: &BpfFs, endpoint: &str) -> Process {
    let config = daemons::write(
        dir,
        "ha.toml",
        format!(
            "[home_agent]\nhome_prefixes = [\"2001:db8:1::/64\"]\n\n\
             [store]\npath = \"{}\"\n\n\
             [udp]\nlisten = [\"[2001:db8:1::1]:4191\"]\n\n\
             [dataplane]\nbackend = \"bpf\"\nuplink = \"h1\"\nlocal_address = \"2001:db8:1::1\"\n\
             pin_dir = \"{}\"\n\n\
             [translator]\nipv4_pools = [\"192.0.2.128/25\"]\n\
             arrival_interfaces = [\"h4\", \"h6\"]\n\n{}",
            dir.join("ha-store").display(),
            bpffs.path("ha").display(),
            daemons::controller_section(dir, endpoint, "ha1"),
        ),
    );
    let mut command = ha.command(env!("CARGO_BIN_EXE_nemo-ha"));
    command.arg("--config").arg(&config);
    Process::start(command, daemons::next_log(dir, "ha"))
}

/// Runs `calls` with a client of the controller, inside the namespace
/// (where its loopback address is).
fn at_controller<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
    ha: &Netns,
    endpoint: &str,
    calls: impl FnOnce(ControllerClient<tonic::transport::Channel>) -> F + Send + 'static,
) -> T {
    let endpoint = endpoint.to_owned();
    ha.block_on(move || async move {
        let client = ControllerClient::connect(endpoint).await.unwrap();
        calls(client).await
    })
}

fn route_list(ns: &Netns, family: &str) -> String {
    String::from_utf8_lossy(&ns.ip(&[family, "route", "show", "dev", "nemo-xlat"]).stdout)
        .into_owned()
}

#[test]
fn a_tenants_ipv4_address_from_the_controller_is_translated_by_the_home_agent() {
    if !netns_available(MUST_RUN) || !require(runs("ping", &["-V"]), "ping missing", MUST_RUN) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bpffs = BpfFs::mount();
    let peer = Netns::new("xlatha-peer");
    let ha = Netns::new("xlatha-ha");
    let vm = Netns::new("xlatha-vm");
    link(&peer, "p0", &ha, "h4");
    peer.ip(&["addr", "add", &format!("{PEER}/30"), "dev", "p0"]);
    ha.ip(&["addr", "add", "192.0.2.2/30", "dev", "h4"]);
    peer.ip(&["route", "add", "192.0.2.128/25", "via", "192.0.2.2"]);
    veth(
        &vm,
        "t0",
        &format!("{VM}/64"),
        &ha,
        "h6",
        "2001:db8:100::1/64",
    );
    vm.ip(&["-6", "route", "add", "default", "via", "2001:db8:100::1"]);
    // The home agent's uplink (its tunnels: none in this test).
    veth(&vm, "u1", "2001:db8:1::2/64", &ha, "h1", "2001:db8:1::1/64");
    for setting in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        assert!(ha
            .command("sysctl")
            .args(["-qw", setting])
            .status()
            .unwrap()
            .success());
    }

    let mut controller = start_controller(&ha, dir.path());
    let endpoint = format!("http://{}", controller.field("grpc"));
    let mut home_agent = start_home_agent(&ha, dir.path(), &bpffs, &endpoint);
    // The operator: the tenant with its prefix and mobile router, an IPv4
    // pool whose peers are written in 2001:db8:64::/96 (192.0.2.1 is not
    // global: the well-known prefix may not carry it, RFC 6052 §3.1), and
    // the VM's IPv4 address.
    let allocate = |client: &mut ControllerClient<tonic::transport::Channel>| {
        let mut client = client.clone();
        async move {
            client
                .allocate_ipv4(authed(pb::AllocateIpv4Request {
                    tenant: "acme".into(),
                    pool: "v4".into(),
                    length: 0,
                    ipv4: TENANT_IPV4.into(),
                    ipv6: VM.into(),
                }))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mapped = at_controller(&ha, &endpoint, move |mut client| async move {
        daemons::provision_tenant(&mut client, "").await;
        client
            .create_pool(authed(pb::CreatePoolRequest {
                name: "v4".into(),
                prefix: "192.0.2.128/25".into(),
                tenant_length: 0,
                translation_prefix: "2001:db8:64::/96".into(),
            }))
            .await
            .unwrap();
        allocate(&mut client).await
    });
    assert_eq!(mapped.ipv6, format!("{VM}/128"));

    assert!(
        eventually(|| pings(&peer, TENANT_IPV4)),
        "the IPv4 host never reached the VM at {TENANT_IPV4}: {}",
        home_agent.log()
    );
    assert!(
        pings(&vm, PEER_IN_PREFIX),
        "the VM cannot reach {PEER_IN_PREFIX}"
    );
    let routes4 = route_list(&ha, "-4");
    assert!(
        routes4.contains("192.0.2.128/25") && routes4.contains("mtu lock 1252"),
        "{routes4}"
    );
    assert!(route_list(&ha, "-6").contains("2001:db8:64::/96"));
    // The common case translated where it arrives, on both sides (the
    // kernel shows a program's name cut to 15 characters).
    for interface in ["h4", "h6"] {
        let filters = ha.ip(&["-d", "link", "show", interface]);
        let tc = ha
            .command("tc")
            .args(["filter", "show", "dev", interface, "ingress"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&tc.stdout).contains("name nemo_translate_ "),
            "{interface}: {} {}",
            String::from_utf8_lossy(&tc.stdout),
            String::from_utf8_lossy(&filters.stdout)
        );
    }
    assert!(
        home_agent.log().contains("translating"),
        "{}",
        home_agent.log()
    );

    // Released at the controller: unreachable, the prefix's route gone
    // with its last mapping.
    at_controller(&ha, &endpoint, |mut client| async move {
        client
            .release_ipv4(authed(pb::ReleaseIpv4Request {
                ipv4: TENANT_IPV4.into(),
            }))
            .await
            .unwrap();
    });
    assert!(eventually(|| !pings(&peer, TENANT_IPV4)));
    assert!(eventually(
        || !route_list(&ha, "-6").contains("2001:db8:64::/96")
    ));

    // Given again (no quarantine in this controller), then the home agent
    // restarted while the controller is down: it translates from its
    // cache.
    at_controller(&ha, &endpoint, move |mut client| async move {
        allocate(&mut client).await
    });
    assert!(eventually(|| pings(&peer, TENANT_IPV4)));
    controller.kill();
    home_agent.kill();
    ha.ip(&["link", "del", "nemo-xlat"]);
    let home_agent = start_home_agent(&ha, dir.path(), &bpffs, &endpoint);
    assert!(
        eventually(|| pings(&peer, TENANT_IPV4)),
        "not translated from the cache: {}",
        home_agent.log()
    );
    assert!(pings(&vm, PEER_IN_PREFIX));
}
