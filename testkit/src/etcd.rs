//! Real etcd servers for tests (Debian's `etcd-server`): one member, or a
//! cluster of several, on loopback ports, each member's data in a
//! temporary directory. Every member is killed by its own PID when the
//! value is dropped, also when the test fails; a member can be killed
//! (`kill -9`) and started again mid-test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a member may take to answer its health check.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// True when an `etcd` binary runs here.
pub fn available() -> bool {
    crate::runs("etcd", &["--version"])
}

/// One member: its ports, its data, its process.
#[derive(Debug)]
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    data: PathBuf,
    log: PathBuf,
    process: Option<Child>,
}

/// The files of a TLS set-up for etcd's client port: the CA, the members'
/// certificate and key (PEM), and clients must present a certificate the
/// CA signed (`--client-cert-auth`).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA certificate.
    pub ca: std::path::PathBuf,
    /// The members' certificate (subjectAltName IP:127.0.0.1).
    pub cert: std::path::PathBuf,
    /// Its key.
    pub key: std::path::PathBuf,
}

/// An etcd cluster for one test.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    tls: Option<EtcdTls>,
    dir: tempfile::TempDir,
}

/// A port free on loopback now (bound and released: a small race with
/// other tests, which pick theirs the same way).
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a loopback port");
    listener.local_addr().expect("its address")
}

impl Etcd {
    /// Starts a cluster of `size` members and waits until each answers.
    pub fn start(size: usize) -> Etcd {
        Etcd::start_with(size, None)
    }

    /// Starts a cluster whose client port speaks TLS with `tls`, and waits
    /// until each member's client port accepts connections (whether it
    /// serves is for the client to find out).
    pub fn start_tls(size: usize, tls: EtcdTls) -> Etcd {
        Etcd::start_with(size, Some(tls))
    }

    fn start_with(size: usize, tls: Option<EtcdTls>) -> Etcd {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                data: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                process: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members,
            initial_cluster,
            token: format!("nemo-test-{}", std::process::id()),
            tls,
            dir,
        };
        for index in 0..size {
            etcd.spawn(index);
        }
        for index in 0..size {
            etcd.wait_ready(index);
        }
        etcd
    }

    fn spawn(&mut self, index: usize) {
        let member = &mut self.members[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .expect("the member's log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data)
            .arg("--listen-client-urls")
            .arg(format!("{scheme}://{}", member.client))
            .arg("--advertise-client-urls")
            .arg(format!("{scheme}://{}", member.client))
            .arg("--listen-peer-urls")
            .arg(format!("http://{}", member.peer))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{}", member.peer))
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--initial-cluster-state")
            .arg("new")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        member.process = Some(child);
    }

    /// Waits until member `index` says it is healthy (which needs a quorum).
    fn wait_ready(&self, index: usize) {
        let member = &self.members[index];
        let started = Instant::now();
        while started.elapsed() < READY_WITHIN {
            let ready = match self.tls {
                Some(_) => {
                    TcpStream::connect_timeout(&member.client, Duration::from_millis(500)).is_ok()
                }
                None => healthy(member.client),
            };
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "etcd member {} not healthy within {READY_WITHIN:?}:\n{}",
            member.name,
            self.log(index)
        );
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The members' client URLs, `http://127.0.0.1:port` (`https://` with
    /// TLS).
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://{}", self.scheme(), m.client))
            .collect()
    }

    /// Member `index`'s client URL.
    pub fn endpoint(&self, index: usize) -> String {
        format!("{}://{}", self.scheme(), self.members[index].client)
    }

    /// Kills member `index` (`kill -9`: no clean shutdown).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `index` again, with its data, and waits until it is
    /// healthy.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        self.spawn(index);
        self.wait_ready(index);
    }

    /// What member `index` logged.
    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(&self.members[index].log).unwrap_or_default()
    }

    /// Where the members keep their data.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

/// Whether etcd at `client` answers `/health` with healthy.
fn healthy(client: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&client, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: {client}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}
