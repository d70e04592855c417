//! The native transport in network namespaces: a Binding Update built by
//! Scapy (Home Address option and all) reaches `nemo-ha` through its packet
//! socket, and the Binding Acknowledgement (type 2 routing header) that comes
//! back is checked by nemo, by Scapy and by tshark.
//!
//! Needs root, iproute2, Debian's python3-scapy and tshark; skips loudly
//! without them unless NEMO_REQUIRE_NETNS is set (CI sets it).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use nemo::auth::{Algorithm, SecurityAssociation};
use nemo::registration::check_binding_ack;
use nemo::wire::BaStatus;
use nemo_testkit::addr;
use nemo_testkit::{netns_available, require, runs, veth, Netns};
use serde_json::Value;

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";
const HA: &str = "2001:db8:1::1";
const HOA: &str = "2001:db8:1::100";
const COA: &str = "2001:db8:2::10";
const SPI: u32 = 0x1000;
const KEY: &str = "6e656d6f2d6e61746976652d746573742d6b65792d3332206f6374657473212e";
const MNP: &str = "2001:db8:100::/56";

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Kills the daemon when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scapy_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/native/mr_scapy.py")
}

fn xcheck_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nemo/tests/xcheck/scapy_cases.py")
}

/// Runs the Scapy mobile router in `mr` with `key`, returning its JSON.
fn scapy_registration(mr: &Netns, key: &str, seq: u16, pcap: &std::path::Path) -> Value {
    let output = mr
        .command("/usr/bin/python3")
        .arg(scapy_script())
        .args([
            "vb",
            COA,
            HA,
            HOA,
            &SPI.to_string(),
            key,
            MNP,
            &seq.to_string(),
        ])
        .arg(pcap)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scapy mobile router failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn scapy_binding_update_over_raw_ipv6() {
    if !netns_available(MUST_RUN)
        || !require(
            runs("/usr/bin/python3", &["-c", "import scapy.layers.inet6"]),
            "python3-scapy missing",
            MUST_RUN,
        )
        || !require(runs("tshark", &["--version"]), "tshark missing", MUST_RUN)
    {
        return;
    }
    let ha = Netns::new("native-ha");
    let mr = Netns::new("native-mr");
    veth(
        &ha,
        "va",
        &format!("{HA}/64"),
        &mr,
        "vb",
        &format!("{COA}/64"),
    );
    ha.ip(&["-6", "route", "add", "2001:db8:2::/64", "dev", "va"]);
    mr.ip(&["-6", "route", "add", "2001:db8:1::/64", "dev", "vb"]);

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ha.toml");
    std::fs::write(
        &config,
        format!(
            "[home_agent]\nhome_prefixes = [\"2001:db8:1::/64\"]\n\n\
             [store]\npath = \"{}\"\n\n\
             [dataplane]\nbackend = \"memory\"\n\n\
             [native]\ninterfaces = [\"va\"]\naddresses = [\"{HA}\"]\n\n\
             [[mobile_router]]\nhome_address = \"{HOA}\"\nspi = {SPI}\nkey = \"{KEY}\"\n\
             prefixes = [\"{MNP}\"]\n",
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let (_daemon, _) = start_home_agent(&ha, &config);

    let pcap = dir.path().join("ba.pcap");
    let result = scapy_registration(&mr, KEY, 1, &pcap);
    let ba_hex = result["ba_hex"]
        .as_str()
        .expect("no Binding Acknowledgement came back");
    let packet = unhex(ba_hex);

    // nemo checks it: checksum, routing header, authenticator, status, R.
    let sa = SecurityAssociation::new(SPI, Algorithm::HmacSha256, unhex(KEY)).unwrap();
    let ba = check_binding_ack(&packet, addr(COA), addr(HOA), &sa).unwrap();
    assert_eq!(ba.status, BaStatus::ACCEPTED);
    assert!(ba.flags.mobile_router);

    // Scapy checks it: fields, its own checksum, Python's HMAC.
    let output = std::process::Command::new("/usr/bin/python3")
        .arg(xcheck_script())
        .args(["dissect", KEY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{ba_hex}\n").as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let facts: Value = serde_json::from_slice(&output.stdout).unwrap();
    let facts = &facts[0];
    assert_eq!(facts["mh_type"], 6);
    assert_eq!(facts["status"], 0);
    assert_eq!(facts["flags"], "R");
    assert_eq!(facts["checksum_ok"], true);
    assert_eq!(facts["auth_ok"], true);
    assert_eq!(facts["type2_home_address"], HOA);
    assert_eq!(facts["source"], HA);
    assert_eq!(facts["destination"], COA);

    // tshark dissects the captured acknowledgement the same way.
    let tshark = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-T", "fields", "-E", "separator=,"])
        .args([
            "-e",
            "mip6.mhtype",
            "-e",
            "mip6.ba.status",
            "-e",
            "mip6.nemo.ba.r_flag",
        ])
        .args([
            "-e",
            "ipv6.routing.mipv6.home_address",
            "-e",
            "mip6.auth.mobility_spi",
        ])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&tshark.stdout);
    let fields: Vec<&str> = line.trim().split(',').collect();
    assert_eq!(fields[0], "6", "{line}");
    assert_eq!(fields[1], "0", "{line}");
    assert!(matches!(fields[2], "1" | "True"), "{line}");
    assert_eq!(fields[3], HOA, "{line}");
    assert_eq!(fields[4], SPI.to_string(), "{line}");

    // The home agent's kernel stayed quiet: no Parameter Problem for the
    // Home Address option (the tc ingress filter dropped its copy).
    assert_eq!(
        result["param_problem"], false,
        "kernel answered with Parameter Problem"
    );

    // A Binding Update under the wrong key gets 146 over this transport too.
    let wrong_key = "00".repeat(32);
    let result = scapy_registration(&mr, &wrong_key, 2, &pcap);
    let packet = unhex(
        result["ba_hex"]
            .as_str()
            .expect("no answer to the forged BU"),
    );
    let ba = check_binding_ack(&packet, addr(COA), addr(HOA), &sa).unwrap();
    assert_eq!(ba.status, BaStatus::AUTH_FAIL);
    std::thread::sleep(Duration::from_millis(10));
}

/// Runs `nemo-ha` with the seg6 data plane in `ns`; returns the child and
/// its UDP address.
/// Starts `nemo-ha` in a namespace; returns it and its ready line.
fn start_home_agent(ns: &Netns, config: &std::path::Path) -> (Killed, String) {
    let (daemon, ready) = spawn_until_ready(
        ns.command(env!("CARGO_BIN_EXE_nemo-ha"))
            .arg("--config")
            .arg(config),
    );
    assert!(ready.starts_with("nemo-ha ready"), "{ready:?}");
    (daemon, ready)
}

/// Spawns a daemon and reads its first line (its ready line, or nothing
/// when it ended first).
fn spawn_until_ready(command: &mut std::process::Command) -> (Killed, String) {
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let daemon = Killed(child);
    let mut ready = String::new();
    BufReader::new(stdout).read_line(&mut ready).unwrap();
    (daemon, ready)
}

fn start_forwarding_daemon(ns: &Netns, config: &std::path::Path) -> (Killed, String) {
    let (daemon, ready) = start_home_agent(ns, config);
    (daemon, nemo_testkit::field(&ready, "udp"))
}

/// A kernel data plane under test, and where its state lives.
enum Backend {
    Seg6,
    /// Its maps pinned in a folder of this bpf filesystem.
    Bpf(nemo_testkit::BpfFs),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Seg6 => "seg6",
            Backend::Bpf(_) => "bpf",
        }
    }

    /// Whether this kernel runs it; a loud skip when it does not, a
    /// failure when it runs neither backend (NEMO_REQUIRE_DATAPLANE).
    fn here(kernel: nemo_dataplane::KernelBackend, test: &str) -> bool {
        netns_available(MUST_RUN)
            && nemo_testkit::require_backend(
                kernel.probe(),
                kernel.other().probe(),
                test,
                "NEMO_REQUIRE_DATAPLANE",
            )
    }

    fn config_lines(&self) -> String {
        let common = format!("uplink = \"h1\"\nlocal_address = \"{HA}\"");
        match self {
            Backend::Seg6 => format!("backend = \"seg6\"\n{common}"),
            Backend::Bpf(fs) => format!(
                "backend = \"bpf\"\n{common}\npin_dir = \"{}\"\naggregates = [\"2001:db8:100::/40\"]",
                fs.path("ha").display()
            ),
        }
    }

    /// The destinations forwarded to COA: seg6's encapsulation routes, or
    /// the entries of the bpf backend's bindings map.
    fn forwarded(&self, ns: &Netns) -> usize {
        match self {
            Backend::Seg6 => {
                let output = ns.ip(&["-6", "route", "show", "table", "4192"]);
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter(|l| l.contains("segs 1 [ 2001:db8:2::10 ]"))
                    .count()
            }
            Backend::Bpf(fs) => nemo_dataplane::bpf::pinned_entries(
                &fs.path("ha"),
                nemo_dataplane::bpf::maps::BINDINGS,
            )
            .unwrap_or(0),
        }
    }

    /// Loses the kernel's forwarding state, as a reboot would: seg6's
    /// routes flushed; bpf's pins removed (the maps go with the programs
    /// the next start replaces) and its routes flushed.
    fn reboot(&self, ns: &Netns) {
        let tables: &[&str] = match self {
            Backend::Seg6 => &["4191", "4192"],
            Backend::Bpf(_) => &["4191"],
        };
        for table in tables {
            ns.ip(&["-6", "route", "flush", "table", table]);
        }
        if let Backend::Bpf(fs) = self {
            std::fs::remove_dir_all(fs.path("ha")).unwrap();
        }
        assert_eq!(self.forwarded(ns), 0);
    }
}

/// A home agent's namespace with a kernel data plane on `h1`, a peer
/// namespace holding the care-of address, and a config (in `dir`) for
/// `routers` of ha-loadgen's mobile routers.
struct ForwardingSite {
    ha: Netns,
    _peer: Netns,
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn forwarding_site(name: &str, routers: usize, backend: &Backend) -> ForwardingSite {
    let ha = Netns::new(name);
    let peer = Netns::new(&format!("{name}-peer"));
    veth(
        &ha,
        "h1",
        &format!("{HA}/64"),
        &peer,
        "p0",
        &format!("{COA}/64"),
    );
    let _ = ha
        .command("sysctl")
        .args(["-qw", "net.ipv6.conf.all.forwarding=1"])
        .status();
    let dir = tempfile::tempdir().unwrap();
    let generated = std::process::Command::new(env!("CARGO_BIN_EXE_ha-loadgen"))
        .args([
            "config",
            "--routers",
            &routers.to_string(),
            "--listen",
            "[::1]:0",
            "--store",
        ])
        .arg(dir.path().join("store"))
        .output()
        .unwrap();
    let config = dir.path().join("ha.toml");
    std::fs::write(
        &config,
        String::from_utf8(generated.stdout)
            .unwrap()
            .replace("backend = \"memory\"", &backend.config_lines()),
    )
    .unwrap();
    ForwardingSite {
        ha,
        _peer: peer,
        dir,
        config,
    }
}

/// Runs ha-loadgen against `udp` from inside the home agent's namespace;
/// returns its report.
fn load(ns: &Netns, udp: &str, routers: usize, seconds: u64, first_sequence: u16) -> String {
    let run = ns
        .command(env!("CARGO_BIN_EXE_ha-loadgen"))
        .args([
            "run",
            "--routers",
            &routers.to_string(),
            "--seconds",
            &seconds.to_string(),
            "--window",
            "256",
            "--first-sequence",
            &first_sequence.to_string(),
            "--target",
            udp,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&run.stdout).into_owned()
}

/// Waits up to `seconds` for `count` forwarded destinations.
fn wait_for_forwarding(backend: &Backend, ns: &Netns, count: usize, seconds: u64) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let found = backend.forwarded(ns);
        if found >= count || std::time::Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn seg6_forwarding_follows_bindings_across_kill_9() {
    use nemo_dataplane::KernelBackend;
    if Backend::here(
        KernelBackend::Seg6,
        "nemo-ha seg6 forwarding across kill -9",
    ) {
        forwarding_follows_bindings_across_kill_9(Backend::Seg6);
    }
}

#[test]
fn bpf_forwarding_follows_bindings_across_kill_9() {
    use nemo_dataplane::KernelBackend;
    if Backend::here(KernelBackend::Bpf, "nemo-ha bpf forwarding across kill -9") {
        forwarding_follows_bindings_across_kill_9(Backend::Bpf(nemo_testkit::BpfFs::mount()));
    }
}

fn forwarding_follows_bindings_across_kill_9(backend: Backend) {
    const ROUTERS: usize = 50;
    let site = forwarding_site(&format!("{}-ha", backend.name()), ROUTERS, &backend);
    let ha = &site.ha;
    let (mut daemon, udp) = start_forwarding_daemon(ha, &site.config);
    let report = load(ha, &udp, ROUTERS, 1, 0);
    assert!(report.contains("rejected=0"), "{report}");
    // Each binding: its home address and its MNP, tunnelled to the care-of
    // address.
    assert_eq!(backend.forwarded(ha), 2 * ROUTERS, "after registration");

    // kill -9: forwarding stays as it was (the kernel holds it).
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();
    assert_eq!(backend.forwarded(ha), 2 * ROUTERS, "after kill -9");
    // Then the kernel state goes too (a reboot): the restarted daemon
    // reinstalls forwarding for every durable binding.
    backend.reboot(ha);
    let (_daemon, _) = start_forwarding_daemon(ha, &site.config);
    // It serves at once; forwarding follows within seconds (the reconcile
    // runs beside the core).
    assert_eq!(
        wait_for_forwarding(&backend, ha, 2 * ROUTERS, 10),
        2 * ROUTERS,
        "after restart"
    );
    match backend {
        Backend::Seg6 => {
            // Decapsulation of the care-of address's reverse tunnel came
            // back too.
            let decap =
                String::from_utf8_lossy(&ha.ip(&["-6", "route", "show", "table", "4193"]).stdout)
                    .into_owned();
            assert!(decap.starts_with(&format!("{HA} from {COA} ")), "{decap}");
        }
        Backend::Bpf(_) => {
            // The decapsulation program is at the uplink's ingress again
            // (the reverse tunnel's peers are the bindings map's entries,
            // counted above).
            let filters = ha
                .command("tc")
                .args(["filter", "show", "dev", "h1", "ingress"])
                .output()
                .unwrap();
            let filters = String::from_utf8_lossy(&filters.stdout).into_owned();
            assert!(filters.contains("nemo_decap_src"), "{filters}");
        }
    }
}

/// The capabilities `deploy/systemd/<unit>` gives its daemon
/// (`AmbientCapabilities=`), as setpriv names them (`net_admin`, ...).
fn unit_capabilities(unit: &str) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/systemd/");
    let text = std::fs::read_to_string(format!("{path}{unit}")).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .unwrap_or_else(|| panic!("{unit} has no AmbientCapabilities="));
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// Issue 32, item 8: `nemo-ha` runs as a user of its own with only the
/// capabilities its unit gives (here uid 65534, `setpriv` dropping every
/// other one, no new privileges): it loads the bpf data plane, binds,
/// answers and forwards as root does.
#[test]
fn bpf_forwarding_as_a_user_with_only_the_units_capabilities() {
    use nemo_dataplane::KernelBackend;
    use std::os::unix::fs::PermissionsExt;
    const ROUTERS: usize = 50;
    const NOBODY: u32 = 65534;
    if !Backend::here(KernelBackend::Bpf, "nemo-ha bpf as an unprivileged user")
        || !require(
            runs("setpriv", &["--version"]),
            "setpriv missing (util-linux)",
            MUST_RUN,
        )
    {
        return;
    }
    let backend = Backend::Bpf(nemo_testkit::BpfFs::mount());
    let site = forwarding_site("bpf-user", ROUTERS, &backend);
    // What the unit's StateDirectory= and the pin folder's owner give it;
    // the config readable, as the package's 0640 root:nemo-ha is.
    std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&site.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let Backend::Bpf(fs) = &backend else {
        unreachable!()
    };
    for owned in [site.dir.path().join("store"), fs.path("ha")] {
        std::fs::create_dir_all(&owned).unwrap();
        std::os::unix::fs::chown(&owned, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let capabilities = unit_capabilities("nemo-ha.service");
    let only: String = std::iter::once("-all".to_owned())
        .chain(capabilities.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    // The binary where that user can reach it (the build's folder may
    // sit under one only root may enter).
    let binary = site.dir.path().join("nemo-ha");
    std::fs::hard_link(env!("CARGO_BIN_EXE_nemo-ha"), &binary)
        .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_nemo-ha"), &binary).map(drop))
        .unwrap();
    let (daemon, ready) = spawn_until_ready(
        site.ha
            .command("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "--no-new-privs",
                &format!("--inh-caps={only}"),
                &format!("--ambient-caps={only}"),
                &format!("--bounding-set={only}"),
                "--",
                binary.to_str().unwrap(),
                "--config",
            ])
            .arg(&site.config)
            .stderr(std::fs::File::create(site.dir.path().join("ha.log")).unwrap()),
    );
    let log = || std::fs::read_to_string(site.dir.path().join("ha.log")).unwrap_or_default();
    assert!(
        ready.starts_with("nemo-ha ready"),
        "{ready:?} with {capabilities:?}: {}",
        log()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.0.id())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&NOBODY.to_string())),
        "{status}"
    );
    let udp = nemo_testkit::field(&ready, "udp");
    let report = load(&site.ha, &udp, ROUTERS, 1, 0);
    assert!(report.contains("rejected=0"), "{report}");
    assert_eq!(
        wait_for_forwarding(&backend, &site.ha, 2 * ROUTERS, 5),
        2 * ROUTERS,
        "forwarded as uid {NOBODY} with {capabilities:?}: {}",
        log()
    );
    drop(daemon);
}

/// A restarted home agent serves before its kernel state is back: the
/// registrations it accepts while the reconcile still works (refreshes of
/// every router, the forwarding state lost as after a reboot) are noted
/// and settled, and when it says it caught up every binding is forwarded.
#[test]
fn a_restart_serves_registrations_while_seg6_catches_up() {
    use nemo_dataplane::KernelBackend;
    if Backend::here(KernelBackend::Seg6, "nemo-ha seg6 restart catches up") {
        restart_serves_registrations_while_the_kernel_catches_up(Backend::Seg6);
    }
}

#[test]
fn a_restart_serves_registrations_while_bpf_catches_up() {
    use nemo_dataplane::KernelBackend;
    if Backend::here(KernelBackend::Bpf, "nemo-ha bpf restart catches up") {
        restart_serves_registrations_while_the_kernel_catches_up(Backend::Bpf(
            nemo_testkit::BpfFs::mount(),
        ));
    }
}

fn restart_serves_registrations_while_the_kernel_catches_up(backend: Backend) {
    const ROUTERS: usize = 4_000;
    let site = forwarding_site(&format!("{}-late", backend.name()), ROUTERS, &backend);
    let ha = &site.ha;
    let (mut daemon, udp) = start_forwarding_daemon(ha, &site.config);
    let report = load(ha, &udp, ROUTERS, 5, 0);
    assert!(report.contains("rejected=0"), "{report}");
    assert_eq!(
        wait_for_forwarding(&backend, ha, 2 * ROUTERS, 5),
        2 * ROUTERS,
        "after registration: {report}"
    );
    let _ = daemon.0.kill();
    let _ = daemon.0.wait();
    backend.reboot(ha);
    // Restarted with its log kept; the load starts at the ready line, its
    // sequence numbers past the first run's (every update a refresh).
    let log = site.dir.path().join("restart.log");
    let (_daemon, ready) = spawn_until_ready(
        ha.command(env!("CARGO_BIN_EXE_nemo-ha"))
            .arg("--config")
            .arg(&site.config)
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let udp = nemo_testkit::field(&ready, "udp");
    let report = load(ha, &udp, ROUTERS, 2, 1000);
    assert!(report.contains("rejected=0"), "{report}");
    let log = nemo_testkit::wait_for_text(&log, "data plane caught up", 1);
    let caught_up = log
        .lines()
        .find(|l| l.contains("data plane caught up"))
        .unwrap_or_default();
    eprintln!("{caught_up}");
    let meanwhile: usize = nemo_testkit::field(caught_up, "changed_meanwhile")
        .parse()
        .unwrap_or(0);
    // The bpf backend refills 8,000 map entries in milliseconds: the
    // reconcile may be done before the first refresh lands.
    if backend.name() == "seg6" {
        assert!(
            meanwhile > 0,
            "no registration landed while the reconcile ran: {caught_up}"
        );
    }
    assert_eq!(
        wait_for_forwarding(&backend, ha, 2 * ROUTERS, 5),
        2 * ROUTERS,
        "after catching up: {caught_up}"
    );
}

/// The native-transport load generator (`bench/ha-native.sh`) still works:
/// a smoke run between two namespaces, no timing asserted.
#[test]
fn native_load_generator_smoke() {
    if !netns_available(MUST_RUN) {
        return;
    }
    let ha = Netns::new("native-lg-ha");
    let lg = Netns::new("native-lg");
    veth(
        &ha,
        "ha0",
        &format!("{HA}/64"),
        &lg,
        "lg0",
        &format!("{COA}/64"),
    );
    ha.ip(&["-6", "route", "add", "2001:db8:2::/64", "dev", "ha0"]);
    lg.ip(&["-6", "route", "add", "2001:db8:1::/64", "dev", "lg0"]);
    let dir = tempfile::tempdir().unwrap();
    let loadgen = env!("CARGO_BIN_EXE_ha-loadgen");
    let config = std::process::Command::new(loadgen)
        .args([
            "config",
            "--routers",
            "20",
            "--native-interface",
            "ha0",
            "--store",
        ])
        .arg(dir.path().join("store"))
        .output()
        .unwrap();
    assert!(config.status.success());
    let config_path = dir.path().join("ha.toml");
    std::fs::write(&config_path, &config.stdout).unwrap();
    let (_daemon, _) = start_home_agent(&ha, &config_path);
    let run = lg
        .command(loadgen)
        .args([
            "run",
            "--native",
            "lg0",
            "--routers",
            "20",
            "--seconds",
            "1",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let field = |name: &str| -> u64 { nemo_testkit::field(&report, name).parse().unwrap() };
    assert!(field("acknowledged") > 20, "{report}");
    assert_eq!(field("rejected"), 0, "{report}");
    // The generator removed its tc filter on the way out.
    let filters = lg
        .command("tc")
        .args(["filter", "show", "dev", "lg0", "ingress"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&filters.stdout).trim().is_empty(),
        "{filters:?}"
    );
}
