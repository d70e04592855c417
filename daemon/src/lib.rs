//! What nemo's daemons share: configuration files whose errors name the
//! line, logging set up the same way, and the HTTP endpoint Prometheus
//! scrapes, and the durable tables they keep their state in ([`disk`]).

pub mod clock;
pub mod disk;
pub mod exposition;
pub mod incoming;
pub mod secret;
pub mod serving;

use std::io::IsTerminal;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// A configuration error, with the file and line it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or not the schema: the message names line and column.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A configuration file's text and path, to parse it and to name lines in
/// errors about it.
#[derive(Debug, Clone)]
pub struct ConfigText {
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

impl ConfigText {
    /// Reads a file.
    pub fn read(path: &Path) -> Result<ConfigText, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(ConfigText {
            path: path.to_owned(),
            text,
        })
    }

    /// Text that did not come from a file (tests).
    pub fn new(text: &str, path: &Path) -> ConfigText {
        ConfigText {
            path: path.to_owned(),
            text: text.to_owned(),
        }
    }

    /// Parses the TOML into `T` (which should deny unknown fields).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| ConfigError::Parse {
            path: self.path.clone(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// The error for a value at `span` (from `toml::Spanned`).
    pub fn invalid(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            line: self.text[..span.start.min(self.text.len())]
                .matches('\n')
                .count()
                + 1,
            message: message.into(),
        }
    }
}

/// The command line every nemo daemon takes (flattened into each binary's
/// own `clap` parser, which gives the name and version).
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
    /// Check the configuration file (and what it names on this host) and
    /// exit.
    #[arg(long)]
    pub check: bool,
    /// Print this daemon's manual page (roff, for man(1)) and exit; needs
    /// no --config.
    #[arg(long, exclusive = true)]
    pub man_page: bool,
}

/// Where a manual page belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManSection {
    /// User commands, man(1): nemoctl.
    Commands,
    /// System administration, man(8): the daemons.
    Administration,
}

/// Whether the command line asks for the manual page (`--man-page`), which
/// a daemon answers before it parses the rest (whose --config is required).
pub fn wants_man_page() -> bool {
    std::env::args_os().skip(1).any(|arg| arg == "--man-page")
}

/// Writes the manual page of `command` (a binary's whole clap definition)
/// to stdout, as roff: what `--man-page` and `nemoctl man` print, and the
/// packages install.
pub fn print_man_page(command: clap::Command, section: ManSection) -> std::io::Result<()> {
    use std::io::Write;
    // Into memory first: a closed pipe is an error, not a panic.
    let mut page = Vec::new();
    let section = match section {
        ManSection::Commands => "1",
        ManSection::Administration => "8",
    };
    clap_mangen::Man::new(command)
        .section(section)
        .render(&mut page)?;
    let mut stdout = std::io::stdout();
    stdout.write_all(&page)?;
    stdout.flush()
}

/// A config section with one listen address (`[admin]`, `[metrics]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// Address and port.
    pub listen: std::net::SocketAddr,
}

/// Data plane backends (`[dataplane] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DataPlaneBackend {
    /// The first kernel backend this kernel really runs, BPF first, then
    /// seg6 (probed by installing in a scratch namespace); with neither the
    /// daemon refuses to start, naming the kernel options missing.
    #[default]
    Auto,
    /// BPF programs (LWT encapsulation, tc ingress decapsulation) with the
    /// bindings in pinned maps.
    Bpf,
    /// seg6 encap.red / End.DT6 with an MTU gate, over rtnetlink.
    Seg6,
    /// Keep routes in memory only: the kernel is not programmed. For
    /// running the control plane alone; said loudly at start.
    Memory,
}

impl DataPlaneBackend {
    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            DataPlaneBackend::Auto => "auto",
            DataPlaneBackend::Bpf => "bpf",
            DataPlaneBackend::Seg6 => "seg6",
            DataPlaneBackend::Memory => "memory",
        }
    }

    /// True for the backends that program the kernel.
    pub fn programs_the_kernel(self) -> bool {
        self != DataPlaneBackend::Memory
    }
}

/// The label of both daemons' `dataplane_backend` gauge: the backend that
/// runs (`bpf`, `seg6` or `memory`), set to 1.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct BackendLabel {
    /// The backend's name.
    pub backend: String,
}

/// `endpoint` in a daemon's `[controller]`: one controller, or the
/// replicas of one (on one etcd), tried in order.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum Endpoints {
    /// `endpoint = "http://[2001:db8::1]:50051"`.
    One(String),
    /// `endpoint = ["http://[2001:db8::1]:50051", "http://[2001:db8::2]:50051"]`.
    Several(Vec<String>),
}

/// Most controller endpoints a daemon is given.
pub const MOST_ENDPOINTS: usize = 16;

impl Endpoints {
    /// The endpoints, in order.
    pub fn list(&self) -> Vec<String> {
        match self {
            Endpoints::One(one) => vec![one.clone()],
            Endpoints::Several(several) => several.clone(),
        }
    }

    /// Checks every endpoint ([`check_endpoint`]), and that there are 1 to
    /// [`MOST_ENDPOINTS`].
    pub fn check(&self) -> Result<(), SettingError> {
        let list = self.list();
        if list.is_empty() || list.len() > MOST_ENDPOINTS {
            return Err(SettingError::EndpointCount(list.len()));
        }
        list.iter()
            .try_for_each(|endpoint| check_endpoint(endpoint))
    }
}

/// How a daemon reaches the controller: its endpoints (replicas, tried in
/// order from the one that answered last), the CA that signs an
/// `https://` endpoint's certificate, and the bearer token.
#[derive(Clone)]
pub struct ControllerLink {
    endpoints: Vec<String>,
    /// The endpoint that answered last (shared by the link's clones).
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ca_file: Option<std::path::PathBuf>,
    token: String,
}

impl std::fmt::Debug for ControllerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ControllerLink")
            .field("endpoints", &self.endpoints)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl ControllerLink {
    /// A link from a `[controller]` section: the token read from
    /// `token_file` now.
    pub fn new(
        endpoints: &Endpoints,
        ca_file: Option<&Path>,
        token_file: &Path,
    ) -> Result<ControllerLink, SettingError> {
        let token = read_token(token_file).map_err(|source| SettingError::Unreadable {
            path: token_file.to_owned(),
            source,
        })?;
        endpoints.check()?;
        Ok(ControllerLink {
            endpoints: endpoints.list(),
            current: Default::default(),
            ca_file: ca_file.map(Path::to_owned),
            token,
        })
    }

    /// The endpoint in use (the one that answered last), for logs.
    pub fn endpoint(&self) -> &str {
        let current = self.current.load(std::sync::atomic::Ordering::Relaxed);
        self.endpoints
            .get(current)
            .or(self.endpoints.first())
            .map_or("", String::as_str)
    }

    /// A client over a new channel ([`controller_channel`]) to the first
    /// endpoint that answers, from the one that answered last: a replica
    /// that died is passed over for the next.
    pub async fn connect(
        &self,
    ) -> Result<
        nemo_proto::v1::controller_client::ControllerClient<tonic::transport::Channel>,
        ChannelError,
    > {
        let start = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut failure = None;
        for step in 0..self.endpoints.len() {
            let index = (start + step) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            match controller_channel(endpoint, self.ca_file.as_deref()).await {
                Ok(channel) => {
                    if index != start {
                        tracing::info!(%endpoint, "controller: moved to another endpoint");
                    }
                    self.current
                        .store(index, std::sync::atomic::Ordering::Relaxed);
                    return Ok(nemo_proto::v1::controller_client::ControllerClient::new(
                        channel,
                    ));
                }
                Err(error) => {
                    if self.endpoints.len() > 1 {
                        tracing::warn!(%endpoint, %error, "controller endpoint unreachable; trying the next");
                    }
                    failure = Some(error);
                }
            }
        }
        Err(failure.unwrap_or(ChannelError::Setting(SettingError::EndpointCount(0))))
    }

    /// `message` as a request carrying the token ([`authorized`]).
    pub fn request<T>(
        &self,
        message: T,
    ) -> Result<tonic::Request<T>, tonic::metadata::errors::InvalidMetadataValue> {
        authorized(message, &self.token)
    }
}

/// `message` as a request carrying the controller's bearer token (the
/// `authorization` metadata the controller checks).
pub fn authorized<T>(
    message: T,
    token: &str,
) -> Result<tonic::Request<T>, tonic::metadata::errors::InvalidMetadataValue> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

/// How a daemon's watch of the controller ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// The controller's history no longer reaches our revision
    /// (`OUT_OF_RANGE`): watch again from 0 at once, taking its whole state.
    StartOver,
}

/// The wait between attempts to reach the controller (or a pair's other
/// member): 200 ms, doubling to 30 s. One policy for every follower.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    /// What is being reached, for the log.
    what: &'static str,
}

impl Default for Backoff {
    /// For the controller.
    fn default() -> Self {
        Backoff::new("controller")
    }
}

impl Backoff {
    /// For reaching `what` (named in the log).
    pub fn new(what: &'static str) -> Backoff {
        Backoff {
            next: Duration::from_millis(200),
            what,
        }
    }

    /// Logs why the peer is away and what the daemon does meanwhile, then
    /// waits the current delay and doubles it.
    pub async fn wait(
        &mut self,
        error: &(dyn std::fmt::Display + Sync),
        endpoint: &str,
        meanwhile: &str,
    ) {
        tracing::warn!(%error, %endpoint, retry_in = ?self.next, "{} unavailable; {meanwhile}", self.what);
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(30));
    }
}

/// Why a setting does not hold on this host.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    /// Not a URL.
    #[error("{0:?} is not a URL like http://[2001:db8::1]:50051")]
    NotAUrl(String),
    /// A URL without a scheme.
    #[error("{0:?} has no scheme; did you mean http://{0}?")]
    NoScheme(String),
    /// A scheme other than http or https.
    #[error("{url:?}: scheme {scheme:?} is neither http nor https")]
    Scheme {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// A URL without a host.
    #[error("{0:?} has no host")]
    NoHost(String),
    /// A URL with a path or a query.
    #[error("{0:?}: a gRPC endpoint has no path or query")]
    PathOrQuery(String),
    /// No such network interface.
    #[error("no network interface {0:?} on this host")]
    NoInterface(String),
    /// A file that cannot be read.
    #[error("{path}: {source}")]
    Unreadable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key that is not hex.
    #[error("key must be hex digits, two per octet")]
    NotHex,
    /// No endpoints, or too many.
    #[error("{0} endpoints; give 1 to 16")]
    EndpointCount(usize),
}

/// Checks a controller endpoint: an `http://` or `https://` URL with a
/// host (and usually a port), nothing else.
pub fn check_endpoint(text: &str) -> Result<(), SettingError> {
    let uri: tonic::codegen::http::Uri = text
        .parse()
        .map_err(|_| SettingError::NotAUrl(text.to_owned()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(SettingError::Scheme {
                url: text.to_owned(),
                scheme: other.to_owned(),
            })
        }
        None => return Err(SettingError::NoScheme(text.to_owned())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(SettingError::NoHost(text.to_owned()));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(SettingError::PathOrQuery(text.to_owned()));
    }
    Ok(())
}

/// Checks that a network interface exists on this host (its entry in
/// /sys/class/net).
pub fn check_interface(name: &str) -> Result<(), SettingError> {
    let plausible = !name.is_empty() && name.len() <= 15 && !name.contains(['/', '\0']);
    if plausible && Path::new("/sys/class/net").join(name).exists() {
        Ok(())
    } else {
        Err(SettingError::NoInterface(name.to_owned()))
    }
}

/// Reads a bearer-token file: its content without surrounding white space.
pub fn read_token(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// Checks that a file can be read (a token file, a key).
pub fn check_readable(path: &Path) -> Result<(), SettingError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| SettingError::Unreadable {
            path: path.to_owned(),
            source,
        })
}

/// Receive buffer asked for on the daemons' UDP sockets unless configured:
/// a burst of Binding Updates from many mobile routers must not overflow the
/// kernel's default (about 200 KiB, some 270 small datagrams).
pub const DEFAULT_UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `listen` with a receive buffer of `receive_buffer`
/// bytes asked for, and the size the kernel granted (it doubles the request
/// for its bookkeeping and caps it at `net.core.rmem_max`).
pub fn udp_socket(
    listen: std::net::SocketAddr,
    receive_buffer: usize,
) -> std::io::Result<(tokio::net::UdpSocket, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(receive_buffer)?;
    socket.set_nonblocking(true)?;
    if listen.is_ipv6() {
        // A member of a home-agent pair listens on the home-agent address
        // while the other member holds it; its answers then leave from that
        // address, which a mobile router's connected socket requires.
        socket.set_freebind_v6(true)?;
    }
    socket.bind(&listen.into())?;
    let granted = socket.recv_buffer_size()?;
    Ok((tokio::net::UdpSocket::from_std(socket.into())?, granted))
}

/// A key written in hex, two digits per octet.
pub fn parse_hex_key(hex: &str) -> Result<Vec<u8>, SettingError> {
    let hex = hex.trim();
    if !hex.len().is_multiple_of(2) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(SettingError::NotHex);
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| SettingError::NotHex))
        .collect()
}

/// Why no channel to the controller could be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The endpoint or the CA file is wrong.
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// TLS setup or the connection failed.
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
}

/// How long connecting to one controller endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A gRPC channel to the controller: plain for `http://` endpoints; for
/// `https://`, TLS verified against the CA certificate in `ca_file` (PEM).
pub async fn controller_channel(
    endpoint: &str,
    ca_file: Option<&Path>,
) -> Result<tonic::transport::Channel, ChannelError> {
    let mut builder = tonic::transport::Channel::from_shared(endpoint.to_owned())
        .map_err(|_| SettingError::NotAUrl(endpoint.to_owned()))?
        // A replica whose host is gone (no answer at all) is given up on,
        // so that the next one is tried.
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(ca_file) = ca_file {
        let ca = std::fs::read(ca_file).map_err(|source| SettingError::Unreadable {
            path: ca_file.to_owned(),
            source,
        })?;
        builder = builder.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
        )?;
    }
    Ok(builder.connect().await?)
}

/// Logs to stderr (stdout is for the ready line), as text or JSON lines,
/// filtered by RUST_LOG (default info).
pub fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// Scrapes served at once; one more connection is closed at once.
pub const MAX_METRICS_CONNECTIONS: usize = 64;

/// Serves `GET /metrics` with what `render` returns, on a bound listener,
/// until the task is dropped. A minimal HTTP/1.1 responder: one request per
/// connection, bounded in size and time; accepted through
/// [`incoming::guarded`], so that a flood of idle connections neither
/// exhausts descriptors nor ends the server.
pub async fn serve_metrics(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<()> {
    serve_metrics_within(
        listener,
        render,
        incoming::ConnectionLimits {
            max_connections: MAX_METRICS_CONNECTIONS,
            handshake_timeout: Duration::from_secs(5),
        },
    )
    .await
}

async fn serve_metrics_within(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    limits: incoming::ConnectionLimits,
) -> std::io::Result<()> {
    use tokio_stream::StreamExt;
    tracing::info!(listen = %listener.local_addr()?, "metrics listening");
    let (mut accepted, _refused) = incoming::guarded(listener, limits);
    while let Some(connection) = accepted.next().await {
        let Ok(mut stream) = connection else { continue };
        let peer = tonic::transport::server::Connected::connect_info(&stream).remote_addr;
        let render = render.clone();
        tokio::spawn(async move {
            let mut request = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&chunk[..n]);
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                tracing::debug!(?peer, "metrics request timed out or failed");
                return;
            }
            let response = if request.starts_with(b"GET /metrics ") {
                let (content_type, body) = if exposition::wants_openmetrics(&request) {
                    (exposition::OPENMETRICS, render())
                } else {
                    (exposition::CLASSIC, exposition::classic(&render()))
                };
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_endpoint_list_is_checked_whole() {
        let list = |n: usize| Endpoints::Several(vec!["http://[::1]:50051".to_owned(); n]);
        assert!(list(1).check().is_ok() && list(MOST_ENDPOINTS).check().is_ok());
        assert!(matches!(
            list(0).check(),
            Err(SettingError::EndpointCount(0))
        ));
        assert!(matches!(
            list(MOST_ENDPOINTS + 1).check(),
            Err(SettingError::EndpointCount(17))
        ));
        let one_bad = Endpoints::Several(vec!["http://[::1]:1".into(), "[::1]:2".into()]);
        assert!(matches!(one_bad.check(), Err(SettingError::NoScheme(_))));
    }

    use super::*;

    #[tokio::test]
    async fn metrics_survive_idle_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("[::1]:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = incoming::ConnectionLimits {
            max_connections: 4,
            handshake_timeout: Duration::from_millis(200),
        };
        tokio::spawn(serve_metrics_within(
            listener,
            Arc::new(|| "nemo_up 1\n".to_owned()),
            limits,
        ));
        let mut idle = Vec::new();
        for _ in 0..20 {
            idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
        // The idle ones time out or were refused; a scrape is served.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut scrape = tokio::net::TcpStream::connect(address).await.unwrap();
        scrape
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        scrape.read_to_string(&mut answer).await.unwrap();
        assert!(answer.ends_with("nemo_up 1\n"), "{answer}");
        drop(idle);
    }

    #[test]
    fn endpoints_must_be_http_urls_with_a_host() {
        for good in [
            "http://[2001:db8::1]:50051",
            "https://controller.example:443",
            "http://[::1]:50051/",
        ] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("htp://[::1]:50051", "scheme"),
            ("not a url", "not a URL"),
            ("[::1]:50051", "scheme"),
            ("http://[::1]:50051/nemo.v1", "path"),
        ] {
            let error = check_endpoint(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn interfaces_and_files_are_looked_up() {
        assert!(check_interface("lo").is_ok());
        assert!(check_interface("nemo-none0").is_err());
        assert!(check_interface("../lo").is_err());
        assert!(check_readable(Path::new("/nonexistent/token")).is_err());
    }

    #[test]
    fn lines_are_counted_from_one() {
        let text = ConfigText::new("a = 1\nb = 2\nc = 3\n", Path::new("x.toml"));
        let at = text.text.find("c =").unwrap();
        assert_eq!(text.invalid(at..at + 1, "bad").to_string(), "x.toml:3: bad");
    }

    #[test]
    fn hex_keys() {
        assert_eq!(parse_hex_key("00ff10").unwrap(), vec![0, 255, 16]);
        assert!(parse_hex_key("0").is_err());
        assert!(parse_hex_key("zz").is_err());
    }
}
