//! Test support shared by nemo's crates.
//!
//! - [`Netns`]: a network namespace made for one test and deleted when the
//!   value is dropped, also when the test panics.
//! - [`require`]: skip a test loudly when a prerequisite is missing, or fail
//!   it when the environment variable named says it must run (CI sets them);
//!   [`require_backend`] the same for what the kernel forwards with.
//! - [`power_loss`]: an ext4 disk on a loop device whose copy, taken without
//!   `sync`, is what a power loss would leave.
//! - [`daemons`]: the controller, home agent and mobile router as processes
//!   with their configs, and the tenant most tests provision.
//! - [`etcd`]: real etcd servers, one member or a cluster, on loopback.
//! - [`relay`]: a UDP relay that delays datagrams and loses answers (the
//!   lab's WAN for control traffic; `nemo-delay-relay` is its command).
//!
//! Tests that use namespaces must use only 2001:db8::/32, 192.0.2.0/24 or
//! loopback addresses.

pub mod daemons;
pub mod etcd;
pub mod power_loss;
pub mod relay;

use std::process::{Command, Output, Stdio};

/// An IPv6 address from a test's text; panics (failing the test), naming
/// the text, when it is not one.
pub fn addr(text: &str) -> std::net::Ipv6Addr {
    text.parse()
        .unwrap_or_else(|_| panic!("{text:?} is not an IPv6 address"))
}

/// An IPv6 prefix from a test's text; panics, naming the text, when it is
/// not one.
pub fn net(text: &str) -> ipnet::Ipv6Net {
    text.parse()
        .unwrap_or_else(|_| panic!("{text:?} is not an IPv6 prefix"))
}

/// Checks a prerequisite. Returns true when it holds. When it does not:
/// panics if `must_run_var` is set in the environment, otherwise prints a
/// loud SKIPPED line (and records it, see [`record_skip`]) and returns false.
pub fn require(ok: bool, what: &str, must_run_var: &str) -> bool {
    if !ok {
        assert!(
            std::env::var_os(must_run_var).is_none(),
            "{what}, and {must_run_var} is set: this test must run here"
        );
        record_skip(&format!(
            "{what} (set {must_run_var}=1 to make this a failure)"
        ));
    }
    ok
}

/// Checks that the kernel runs the data plane backend a test is for
/// (`this`, a probe's answer). When it does not, the test skips loudly,
/// provided the kernel runs the other backend (`other`), whose tests then
/// cover it; a kernel that runs neither fails the test when `must_run_var`
/// is set (deploy/test.sh sets NEMO_REQUIRE_DATAPLANE): nemo forwards
/// nothing there, and CI must not pass over it quietly.
pub fn require_backend(
    this: Result<(), String>,
    other: Result<(), String>,
    test: &str,
    must_run_var: &str,
) -> bool {
    match backend_skip(this, other, test, must_run_var) {
        None => true,
        Some(skip) => {
            record_skip(&skip);
            false
        }
    }
}

/// [`require_backend`]'s decision without recording it: `None` to run,
/// or the skip line to record (its own unit tests use this, so that their
/// made-up skips stay out of the run's skip log).
fn backend_skip(
    this: Result<(), String>,
    other: Result<(), String>,
    test: &str,
    must_run_var: &str,
) -> Option<String> {
    let Err(missing) = this else {
        return None;
    };
    if let Err(neither) = other {
        assert!(
            std::env::var_os(must_run_var).is_none(),
            "{test}: this kernel runs no data plane backend ({missing}; the other: {neither}), \
             and {must_run_var} is set"
        );
    }
    Some(format!("{test}: not on this kernel: {missing}"))
}

/// Prints a skip on stderr as `SKIPPED: what`, and appends it to the file
/// `NEMO_SKIP_LOG` names, if set: cargo test shows a passing test's output
/// only with --nocapture, so deploy/test.sh gathers the skips from there and
/// prints them after the run.
pub fn record_skip(what: &str) {
    eprintln!("SKIPPED: {what}");
    if let Some(path) = std::env::var_os("NEMO_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(log, "SKIPPED: {what}");
        }
    }
}

/// A binary of another workspace package, from the target directory this
/// test runs from. `cargo test --workspace` builds every package's binaries
/// before it runs any test; running one package's tests alone needs the
/// other binary built first, and this says so.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let test = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = test
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name))
        .expect("test binary inside a target directory");
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` (cargo test --workspace does it)",
        path.display()
    );
    path
}

/// The value of a `name=value` word in a line the daemons, load generators
/// and probes print (ready lines, reports); panics, naming the line, when
/// it is missing.
pub fn field(line: &str, name: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        .to_owned()
}

/// The text a daemon's Prometheus endpoint (`GET /metrics`) answers at
/// `address`, its body checked by [`promtool_check`]. Blocking.
pub fn scrape_metrics(address: impl std::net::ToSocketAddrs) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("metrics request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("metrics response");
    if let Some((_, body)) = text.split_once("\r\n\r\n") {
        promtool_check(body);
    }
    text
}

/// Writes `text` to `config` and has `program` check it (`--config CONFIG
/// --check`): panics unless the check refuses it with `expected` in what it
/// says (a bad config names its file and line).
pub fn refused_at_check(
    program: &std::path::Path,
    config: &std::path::Path,
    text: &str,
    expected: &str,
) {
    std::fs::write(config, text).expect("write the config");
    let output = Command::new(program)
        .arg("--config")
        .arg(config)
        .arg("--check")
        .output()
        .expect("run the check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "accepted:\n{text}");
    assert!(stderr.contains(expected), "{text}\n{stderr}");
}

/// The value of one series (`name{labels}` exactly as exposed) in a
/// metrics text, 0 when it is not there: series that are exported at zero
/// from the start and those created at first use read alike.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs Prometheus' linter (`promtool check metrics`, from Debian's
/// `prometheus`) on a metrics body and panics with what it says, if
/// anything. Without promtool it skips loudly, unless NEMO_REQUIRE_PROMTOOL
/// is set (CI sets it).
pub fn promtool_check(body: &str) {
    use std::io::Write;
    if !require(
        runs("promtool", &["--version"]),
        "promtool missing (Debian's prometheus)",
        "NEMO_REQUIRE_PROMTOOL",
    ) {
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(body.as_bytes())
        .expect("writing to promtool");
    let output = child.wait_with_output().expect("promtool's answer");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{body}"
    );
}

/// A daemon started for a test: its stdout's first line is its ready line,
/// its stderr goes to a log file, and it is killed when the value is
/// dropped, however the test ends.
#[derive(Debug)]
pub struct Process {
    child: std::process::Child,
    ready: String,
    log: std::path::PathBuf,
}

impl Process {
    /// Starts `command`, waiting for its ready line (which must contain
    /// "ready"); stderr goes to `log`.
    pub fn start(mut command: Command, log: std::path::PathBuf) -> Process {
        use std::io::BufRead;
        let mut child = command
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        let mut ready = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = std::io::BufReader::new(stdout).read_line(&mut ready);
        }
        assert!(
            ready.contains("ready"),
            "{command:?} did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Process { child, ready, log }
    }

    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `name=value` field of the ready line.
    pub fn field(&self, name: &str) -> String {
        field(&self.ready, name)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to 15 s until the log holds `text` `count` times, and
    /// returns the log.
    pub fn wait_for(&self, text: &str, count: usize) -> String {
        wait_for_text(&self.log, text, count)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait")
    }

    /// SIGKILL, no clean shutdown.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits up to 15 s until the file at `path` (a daemon's log) holds
/// `text` `count` times, and returns what it holds.
pub fn wait_for_text(path: &std::path::Path, text: &str, count: usize) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.matches(text).count() >= count || std::time::Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// True when the process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// True when `program args` runs successfully.
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The prerequisites of a namespace test: root and iproute2.
pub fn netns_available(must_run_var: &str) -> bool {
    require(
        is_root(),
        "not root: network namespace tests need root",
        must_run_var,
    ) && require(runs("ip", &["-V"]), "iproute2 (ip) missing", must_run_var)
}

/// Runs a command, panicking with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {}: {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `ip` with these arguments.
pub fn ip(args: &[&str]) -> Output {
    run("ip", args)
}

/// A network namespace owned by a test.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `nemo-<tag>-<pid>` with loopback up. A leftover of the same
    /// name (an earlier run killed hard) is removed first.
    pub fn new(tag: &str) -> Netns {
        let name = format!("nemo-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `work` on a new thread that has entered this namespace, so that
    /// the sockets it opens (netlink included) belong to the namespace.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            work()
        })
    }

    /// Runs the future `work` makes to completion on a thread inside this
    /// namespace, on a runtime of its own (its sockets, netlink included,
    /// belong to the namespace); returns what it returns.
    pub fn block_on<T, F>(&self, work: impl FnOnce() -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T>,
    {
        self.spawn_in(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
                .block_on(work())
        })
        .join()
        .expect("the namespace's thread panicked")
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its interfaces (and their veth
        // peers) and ends nothing else: processes started in it are the
        // test's to kill first.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Connects two namespaces with a veth pair, brings both ends up, then adds
/// the addresses (up first, so the first neighbour solicitation is not
/// lost), with DAD off so they are usable at once.
pub fn veth(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    link(a, a_if, b, b_if);
    a.ip(&["addr", "add", a_addr, "dev", a_if, "nodad"]);
    b.ip(&["addr", "add", b_addr, "dev", b_if, "nodad"]);
}

/// Connects two namespaces with a veth pair and brings both ends up, no
/// address (IPv4 ones, which take no `nodad`, or a bridge port).
pub fn link(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    ip(&[
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// Makes `router` a NAT towards its interface `outside`, as clouds put in
/// front of hosts: nftables masquerade, UDP mapped to other ports
/// (40000-40099: a mapping's port tells it apart from the host's own, as
/// with most NATs), other protocols to the outside address. Needs nft.
pub fn masquerade(router: &Netns, outside: &str) {
    use std::io::Write;
    let rules = format!(
        "table ip nemo_nat {{\n chain out {{\n type nat hook postrouting priority srcnat;\n \
         oifname \"{outside}\" meta l4proto udp masquerade to :40000-40099\n \
         oifname \"{outside}\" masquerade\n }}\n}}\n"
    );
    let mut nft = router
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    if let Some(mut stdin) = nft.stdin.take() {
        stdin.write_all(rules.as_bytes()).expect("nft's input");
    }
    assert!(nft.wait().expect("nft").success(), "nft refused the NAT");
}

/// A bpf filesystem mounted on a temporary folder for one test (pinned BPF
/// maps live there), unmounted and removed when dropped. Its own mount,
/// not /sys/fs/bpf: `ip netns exec` mounts a fresh /sys, where the host's
/// bpffs is not, but other mounts stay visible.
#[derive(Debug)]
pub struct BpfFs {
    dir: tempfile::TempDir,
}

impl BpfFs {
    /// Mounts one (needs root).
    pub fn mount() -> BpfFs {
        let dir = tempfile::Builder::new()
            .prefix("nemo-bpffs-")
            .tempdir()
            .expect("a temporary folder");
        let path = dir.path().to_str().expect("a UTF-8 path").to_owned();
        run("mount", &["-t", "bpf", "bpf", &path]);
        BpfFs { dir }
    }

    /// A folder in it (not created: the daemon creates its pin folder).
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        // Lazy: a pinned map still open elsewhere does not keep the
        // folder; the filesystem goes once nothing uses it.
        let _ = Command::new("umount")
            .args(["-l"])
            .arg(self.dir.path())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_the_kernel_lacks_skips_when_the_other_runs() {
        // PATH is always set: were it asked, the call would fail.
        assert_eq!(backend_skip(Ok(()), Err("x".into()), "t", "PATH"), None);
        assert_eq!(
            backend_skip(Err("x".into()), Ok(()), "t", "PATH").as_deref(),
            Some("t: not on this kernel: x")
        );
        assert!(
            backend_skip(Err("x".into()), Err("y".into()), "t", "NEMO_TEST_NEVER_SET").is_some()
        );
    }

    #[test]
    #[should_panic(expected = "runs no data plane backend")]
    fn a_kernel_that_runs_neither_backend_fails_when_required() {
        backend_skip(Err("x".into()), Err("y".into()), "t", "PATH");
    }
}
