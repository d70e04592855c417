//! The configuration file of `nemo-ha` (TOML).
//!
//! ```toml
//! [home_agent]
//! home_prefixes = ["2001:db8:1::/64"]
//! max_lifetime_secs = 600
//!
//! [store]
//! path = "/var/lib/nemo-ha"
//!
//! [udp]
//! listen = ["[::]:4191"]
//!
//! [[mobile_router]]
//! home_address = "2001:db8:1::100"
//! spi = 4096
//! algorithm = "hmac-sha256"
//! key = "000102030405060708090a0b0c0d0e0f"
//! prefixes = ["2001:db8:100::/56"]
//! ```
//!
//! Unknown keys are refused, and every error names the line it is about.
//! `[ipv4]` (IPv4 care-of addresses, RFC 5555) is [`ipv4`].

pub mod ipv4;
pub mod translator;

pub use nemo_daemon::{AdminSection, ListenSection};
pub use nemo_dataplane::DataPlaneBackend;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv6Net;
use nemo::auth::{Algorithm, ReplayPolicy, SecurityAssociation};
use nemo::ha::{invalid_prefix_reason, Authorization, AuthorizationTable, HomeAgentConfig};
pub use nemo_daemon::ConfigError;
use nemo_daemon::{parse_hex_key, ConfigText};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Protocol settings.
    pub home_agent: HomeAgentSection,
    /// Where bindings are kept.
    pub store: StoreSection,
    /// The UDP transport.
    #[serde(default)]
    pub udp: Option<UdpSection>,
    /// The native transport (raw IPv6, as RFC 6275 sends it).
    #[serde(default)]
    pub native: Option<NativeSection>,
    /// Mobile routers with IPv4 care-of addresses (RFC 5555).
    #[serde(default)]
    pub ipv4: Option<ipv4::Ipv4Section>,
    /// Tenants' IPv4 addresses, translated here (RFC 7915).
    #[serde(default)]
    pub translator: Option<translator::TranslatorSection>,
    /// The admin gRPC API.
    #[serde(default)]
    pub admin: Option<AdminSection>,
    /// Prometheus metrics over HTTP.
    #[serde(default)]
    pub metrics: Option<ListenSection>,
    /// The data plane.
    #[serde(default)]
    pub dataplane: DataPlaneSection,
    /// Authorizations from the controller (beside any static ones).
    #[serde(default)]
    pub controller: Option<ControllerSection>,
    /// Membership of a home-agent pair.
    #[serde(default)]
    pub pair: Option<PairSection>,
    /// Static authorizations: the mobile routers this home agent accepts.
    #[serde(default, rename = "mobile_router")]
    pub mobile_routers: Vec<Spanned<MobileRouterEntry>>,
}

/// `[home_agent]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAgentSection {
    /// The home prefixes served.
    pub home_prefixes: Spanned<Vec<Ipv6Net>>,
    /// Longest lifetime granted, seconds.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_secs: Spanned<u64>,
    /// Timestamp window, seconds (RFC 4285 §6: default 7, more than 3).
    #[serde(default = "default_replay_window")]
    pub replay_window_secs: Spanned<u64>,
    /// Refuse Binding Updates without a timestamp (status 145).
    #[serde(default = "default_true")]
    pub require_timestamp: bool,
    /// Send a Binding Refresh Request this long before expiry.
    #[serde(default)]
    pub refresh_request_before_secs: Option<u64>,
}

fn default_max_lifetime() -> Spanned<u64> {
    Spanned::new(0..0, 600)
}

fn default_replay_window() -> Spanned<u64> {
    Spanned::new(0..0, 7)
}

fn default_true() -> bool {
    true
}

/// How the store makes bindings durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FlushMode {
    /// One flush for every batch of bindings waiting (group commit).
    #[default]
    Group,
    /// One flush for every binding (for measuring what group commit saves).
    EachBinding,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Directory of the store (its file is `bindings.redb`).
    pub path: PathBuf,
    /// Group commit (default) or a flush per binding.
    #[serde(default)]
    pub flush: FlushMode,
}

/// `[udp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpSection {
    /// Addresses to listen on; the reply leaves from the one the Binding
    /// Update came to. RFC 5555 assigns port 4191.
    pub listen: Vec<SocketAddr>,
    /// Kernel receive buffer per socket, in bytes (capped by
    /// `net.core.rmem_max`); 4 MiB by default.
    #[serde(default = "default_udp_receive_buffer")]
    pub receive_buffer_bytes: usize,
}

fn default_udp_receive_buffer() -> usize {
    nemo_daemon::DEFAULT_UDP_RECEIVE_BUFFER
}

/// `[controller]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    /// The controller's gRPC endpoint, e.g. `http://[2001:db8::1]:50051`,
    /// or a list of its replicas, tried in order.
    pub endpoint: Spanned<nemo_daemon::Endpoints>,
    /// CA certificate (PEM) for an `https://` endpoint.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// File holding the bearer token.
    pub token_file: Spanned<PathBuf>,
    /// This home agent's name at the controller.
    pub home_agent: String,
    /// The on-disk copy of the authorizations, a redb file (default:
    /// `authorizations.redb` in the store's directory; another extension
    /// is made `.redb`, and an earlier version's `.json` there is taken in).
    #[serde(default)]
    pub cache: Option<PathBuf>,
}

/// `[pair]`: this home agent is one member of a pair on one home link.
/// VRRPv3 (RFC 5798) elects the active member, which holds `addresses`
/// (the home-agent address) and answers; the other stands by, following the
/// active's replication.
///
/// ```toml
/// [pair]
/// interface = "eth1"                 # the home link
/// link_local = "fe80::a"             # this member's address on it
/// peer_link_local = "fe80::b"        # the other member's: only its advertisements count
/// vrid = 12                          # the same on both members
/// priority = 200                     # 1-254, higher is preferred
/// addresses = ["2001:db8:1::1"]      # what moves with the active role
///                                    # (after fe80::5e:2:VRID, or a link-local named first)
/// replication_listen = "[2001:db8:ff::a]:4192"
/// peer = "[2001:db8:ff::b]:4192"     # the other member's replication_listen
/// token_file = "/etc/nemo/pair.token"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairSection {
    /// The home link.
    pub interface: Spanned<String>,
    /// This member's link-local address on the home link: the source of
    /// its advertisements, and the tie-breaker between equal priorities.
    pub link_local: Spanned<Ipv6Addr>,
    /// The other member's link-local address on the home link: only its
    /// advertisements count (VRRP has no authentication; without it, any
    /// host on the link can depose the active, and a warning says so).
    #[serde(default)]
    pub peer_link_local: Option<Spanned<Ipv6Addr>>,
    /// The virtual router ID, 1-255, the same on both members.
    pub vrid: Spanned<u8>,
    /// This member's priority, 1-254.
    pub priority: Spanned<u8>,
    /// Advertisement interval, milliseconds: a multiple of 10, 10-40950.
    #[serde(default = "default_advert_interval_ms")]
    pub advert_interval_ms: Spanned<u64>,
    /// Take the active role from a member of lower priority.
    #[serde(default)]
    pub preempt: bool,
    /// The addresses that move with the active role (the home-agent
    /// address): first the virtual router's link-local address when named
    /// (RFC 5798 §5.2.9; else `fe80::5e:2:VRID`,
    /// [`nemo::vrrp::default_virtual_link_local`]), then routable ones.
    pub addresses: Spanned<Vec<Ipv6Addr>>,
    /// IPv4 addresses that move with the active role (`[ipv4] address`,
    /// the address the IPv4 pools of `[translator]` are routed to): taken
    /// as /32s with the IPv6 ones and announced by gratuitous ARP. The
    /// election itself runs over IPv6.
    #[serde(default = "no_ipv4_addresses")]
    pub ipv4_addresses: Spanned<Vec<std::net::Ipv4Addr>>,
    /// Where the standby attaches to this member when it is active.
    pub replication_listen: Spanned<SocketAddr>,
    /// The other member's `replication_listen`.
    pub peer: Spanned<SocketAddr>,
    /// File holding the pair's shared secret (at least 16 characters).
    pub token_file: Spanned<PathBuf>,
    /// `synchronous` (answers wait for the standby's disk) or
    /// `asynchronous`.
    #[serde(default = "default_replication")]
    pub replication: crate::replication::Mode,
    /// How long an answer waits for the standby, milliseconds.
    #[serde(default = "default_replication_timeout_ms")]
    pub replication_timeout_ms: Spanned<u64>,
}

fn no_ipv4_addresses() -> Spanned<Vec<std::net::Ipv4Addr>> {
    Spanned::new(0..0, Vec::new())
}

fn default_advert_interval_ms() -> Spanned<u64> {
    Spanned::new(0..0, 100)
}

fn default_replication() -> crate::replication::Mode {
    crate::replication::Mode::Synchronous
}

fn default_replication_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 500)
}

/// `[native]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeSection {
    /// Interfaces Binding Updates arrive on (read with a packet socket).
    pub interfaces: Spanned<Vec<String>>,
    /// The home agent's addresses: Binding Updates sent to them are taken.
    pub addresses: Spanned<Vec<Ipv6Addr>>,
}

/// `[dataplane]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPlaneSection {
    /// Which backend programs forwarding.
    #[serde(default = "default_backend")]
    pub backend: Spanned<DataPlaneBackend>,
    /// Kernel backends: the interface towards the care-of addresses.
    #[serde(default)]
    pub uplink: Option<Spanned<String>>,
    /// Kernel backends: the home agent's address, the tunnels' source and
    /// where reverse-tunnelled packets arrive.
    #[serde(default)]
    pub local_address: Option<Ipv6Addr>,
    /// bpf: where its maps are pinned (a folder on a bpf filesystem), so
    /// that a restart keeps forwarding.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: std::path::PathBuf,
    /// bpf: prefixes every address of which belongs to some tenant (the
    /// controller's pools): one route each carries every binding in them.
    /// A home address or prefix outside them gets a route of its own.
    #[serde(default)]
    pub aggregates: Vec<ipnet::Ipv6Net>,
    /// What happens to forwarding when the daemon stops.
    #[serde(default)]
    pub on_shutdown: OnShutdown,
    /// bpf: for how long a binding that moved to another care-of address
    /// still sends copies to the one it left, and takes reverse-tunnelled
    /// packets from it (make-before-break, issue 29), counted from the
    /// move and again from each packet the old address sends meanwhile
    /// (its VM still runs there: a live migration's pre-copy), 10 minutes
    /// at most in all; 0 turns it off.
    #[serde(default = "default_bicast_ms")]
    pub bicast_ms: Spanned<u64>,
}

/// The longest `bicast_ms`: a window is meant to cover a live migration,
/// not to keep two sites fed (however long the old address sends, a window
/// ends `nemo::ha::bicast::LONGEST` after the move).
pub const MAX_BICAST_MS: u64 = 600_000;

fn default_bicast_ms() -> Spanned<u64> {
    Spanned::new(0..0, 2_000)
}

impl Default for DataPlaneSection {
    fn default() -> DataPlaneSection {
        DataPlaneSection {
            backend: default_backend(),
            uplink: None,
            local_address: None,
            pin_dir: default_pin_dir(),
            aggregates: Vec::new(),
            on_shutdown: OnShutdown::default(),
            bicast_ms: default_bicast_ms(),
        }
    }
}

fn default_backend() -> Spanned<DataPlaneBackend> {
    Spanned::new(0..0, DataPlaneBackend::Auto)
}

fn default_pin_dir() -> std::path::PathBuf {
    "/sys/fs/bpf/nemo-ha".into()
}

/// Forwarding at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnShutdown {
    /// Leave it: the bindings are on disk and still valid, and the next
    /// start reconciles. A restart does not interrupt tenants.
    #[default]
    Keep,
    /// Remove everything the data plane created.
    Remove,
}

/// `[[mobile_router]]`: one static authorization.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobileRouterEntry {
    /// Its home address.
    pub home_address: Ipv6Addr,
    /// Mobility SPI (above 255).
    pub spi: u32,
    /// `hmac-sha256` (default) or `hmac-sha1-96`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// The shared key, in hex (at least 16 octets).
    pub key: String,
    /// Whether it may register as a mobile router (R flag).
    #[serde(default = "default_true")]
    pub mobile_router: bool,
    /// Prefixes it may register; implicit mode forwards these.
    #[serde(default)]
    pub prefixes: Vec<Ipv6Net>,
}

/// What the daemon runs from, checked.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The parsed file.
    pub config: Config,
    /// The engine's settings.
    pub engine: HomeAgentConfig,
    /// The static authorizations.
    pub authorizations: AuthorizationTable,
    /// The home agent's IPv4 address and the port its Binding Updates come
    /// to (`[ipv4]`), which the data plane's IPv4 tunnels use.
    pub ipv4_tunnel: Option<std::net::SocketAddrV4>,
}

fn validate_pair(
    pair: &PairSection,
    invalid: &impl Fn(Range<usize>, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if !pair.link_local.get_ref().is_unicast_link_local() {
        return Err(invalid(
            pair.link_local.span(),
            "pair: link_local: a link-local address (fe80::/10)".into(),
        ));
    }
    if let Some(peer) = &pair.peer_link_local {
        if !peer.get_ref().is_unicast_link_local() || peer.get_ref() == pair.link_local.get_ref() {
            return Err(invalid(
                peer.span(),
                "pair: peer_link_local: the other member's link-local address (fe80::/10, not link_local)"
                    .into(),
            ));
        }
    }
    if *pair.vrid.get_ref() == 0 {
        return Err(invalid(pair.vrid.span(), "pair: vrid: 1-255".into()));
    }
    if !(1..=254).contains(pair.priority.get_ref()) {
        return Err(invalid(
            pair.priority.span(),
            "pair: priority: 1-254 (255 is an address owner's, which no member of a pair is)"
                .into(),
        ));
    }
    let interval = *pair.advert_interval_ms.get_ref();
    if !interval.is_multiple_of(10) || !(10..=40_950).contains(&interval) {
        return Err(invalid(
            pair.advert_interval_ms.span(),
            "pair: advert_interval_ms: a multiple of 10 between 10 and 40950 (RFC 5798 centiseconds)".into(),
        ));
    }
    let addresses = pair.addresses.get_ref();
    if addresses.is_empty() || addresses.len() > 255 {
        return Err(invalid(
            pair.addresses.span(),
            "pair: addresses: 1-255 addresses".into(),
        ));
    }
    // RFC 5798 §5.2.9: the virtual router's link-local address first (one
    // is derived from the VRID when none is named), then the routable ones:
    // what the election will advertise.
    let advertised = nemo::vrrp::virtual_addresses(*pair.vrid.get_ref(), addresses);
    let routable = &advertised[1..];
    if let Some(bad) = routable
        .iter()
        .find(|a| !nemo::ha::is_unicast_routable(**a))
    {
        return Err(invalid(
            pair.addresses.span(),
            format!(
                "pair: addresses: {bad} is not a routable unicast address (only the first may be \
                 link-local: the virtual router's, RFC 5798 §5.2.9)"
            ),
        ));
    }
    if routable.is_empty() {
        return Err(invalid(
            pair.addresses.span(),
            "pair: addresses: the home-agent address, after the link-local one".into(),
        ));
    }
    if advertised.len() > 255 {
        return Err(invalid(
            pair.addresses.span(),
            "pair: addresses: at most 254 besides the virtual link-local address".into(),
        ));
    }
    let ipv4 = pair.ipv4_addresses.get_ref();
    if ipv4.len() > 255 {
        return Err(invalid(
            pair.ipv4_addresses.span(),
            "pair: ipv4_addresses: at most 255".into(),
        ));
    }
    if let Some(bad) = ipv4.iter().find(|a| !nemo::ha::dsmip::is_unicast_ipv4(**a)) {
        return Err(invalid(
            pair.ipv4_addresses.span(),
            format!("pair: ipv4_addresses: {bad} is not a unicast address"),
        ));
    }
    if pair.replication_listen.get_ref().ip().is_unspecified() {
        return Err(invalid(
            pair.replication_listen.span(),
            "pair: replication_listen: this member's own address, not a wildcard (the standby connects from it)".into(),
        ));
    }
    if pair.peer.get_ref() == pair.replication_listen.get_ref() {
        return Err(invalid(
            pair.peer.span(),
            "pair: peer: the other member's address, not this one's".into(),
        ));
    }
    if *pair.replication_timeout_ms.get_ref() == 0 {
        return Err(invalid(
            pair.replication_timeout_ms.span(),
            "pair: replication_timeout_ms: above 0".into(),
        ));
    }
    Ok(())
}

impl Config {
    /// Reads, parses and validates a file.
    /// Reads, validates, and checks against this host what the file names
    /// (interfaces, the token file): what `--check` and a start do.
    pub fn load(path: &Path) -> Result<Validated, ConfigError> {
        let file = ConfigText::read(path)?;
        let validated = Self::validate(&file)?;
        validated.config.check_host(&file)?;
        if !validated.authorizations.is_empty() {
            // [[mobile_router]] keys in the file.
            nemo_daemon::secret::warn_if_exposed(path);
        }
        Ok(validated)
    }

    /// The checks that depend on the host rather than the file.
    fn check_host(&self, file: &ConfigText) -> Result<(), ConfigError> {
        if let Some(admin) = &self.admin {
            admin.token(file)?;
        }
        if self.dataplane.backend.get_ref().programs_the_kernel() {
            if let Some(uplink) = &self.dataplane.uplink {
                nemo_daemon::check_interface(uplink.get_ref())
                    .map_err(|e| file.invalid(uplink.span(), format!("dataplane: uplink: {e}")))?;
            }
        }
        if let Some(native) = &self.native {
            for interface in native.interfaces.get_ref() {
                nemo_daemon::check_interface(interface).map_err(|e| {
                    file.invalid(native.interfaces.span(), format!("native: interfaces: {e}"))
                })?;
            }
        }
        if let Some(pair) = &self.pair {
            nemo_daemon::check_interface(pair.interface.get_ref()).map_err(|e| {
                file.invalid(pair.interface.span(), format!("pair: interface: {e}"))
            })?;
            let token = nemo_daemon::read_token(pair.token_file.get_ref()).map_err(|e| {
                file.invalid(pair.token_file.span(), format!("pair: token_file: {e}"))
            })?;
            if token.len() < 16 {
                return Err(file.invalid(
                    pair.token_file.span(),
                    "pair: token_file: the token must be at least 16 characters",
                ));
            }
        }
        if let Some(controller) = &self.controller {
            nemo_daemon::check_readable(controller.token_file.get_ref()).map_err(|e| {
                file.invalid(
                    controller.token_file.span(),
                    format!("controller: token_file: {e}"),
                )
            })?;
        }
        Ok(())
    }

    /// Parses and validates text read from `path`.
    pub fn from_text(text: &str, path: &Path) -> Result<Validated, ConfigError> {
        Self::validate(&ConfigText::new(text, path))
    }

    fn validate(file: &ConfigText) -> Result<Validated, ConfigError> {
        let config: Config = file.parse()?;
        if let Some(admin) = &config.admin {
            admin.validate(file)?;
        }
        let invalid = |span: Range<usize>, message: String| file.invalid(span, message);
        let section = &config.home_agent;
        let home_prefixes = section.home_prefixes.get_ref().clone();
        if home_prefixes.is_empty() {
            return Err(invalid(
                section.home_prefixes.span(),
                "home_prefixes: at least one home prefix is needed".into(),
            ));
        }
        if *section.max_lifetime_secs.get_ref() < 4 {
            return Err(invalid(
                section.max_lifetime_secs.span(),
                "max_lifetime_secs: at least 4 (one lifetime unit)".into(),
            ));
        }
        if *section.replay_window_secs.get_ref() <= 3 {
            return Err(invalid(
                section.replay_window_secs.span(),
                "replay_window_secs: RFC 4285 §6 wants more than 3 seconds".into(),
            ));
        }
        let dataplane = &config.dataplane;
        let backend = *dataplane.backend.get_ref();
        if backend.programs_the_kernel()
            && (dataplane.uplink.is_none() || dataplane.local_address.is_none())
        {
            return Err(invalid(
                dataplane.backend.span(),
                format!(
                    "dataplane: backend \"{}\"{} needs uplink and local_address \
                     (backend = \"memory\" runs the control plane without forwarding)",
                    backend.name(),
                    if dataplane.backend.span().is_empty() {
                        " (the default)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        if *dataplane.bicast_ms.get_ref() > MAX_BICAST_MS {
            return Err(invalid(
                dataplane.bicast_ms.span(),
                format!("dataplane: bicast_ms: at most {MAX_BICAST_MS} (0 turns copying off)"),
            ));
        }
        if let Some(controller) = &config.controller {
            controller.endpoint.get_ref().check().map_err(|e| {
                invalid(
                    controller.endpoint.span(),
                    format!("controller: endpoint: {e}"),
                )
            })?;
        }
        if let Some(pair) = &config.pair {
            validate_pair(pair, &invalid)?;
        }
        if let Some(native) = &config.native {
            if native.interfaces.get_ref().is_empty() || native.addresses.get_ref().is_empty() {
                return Err(invalid(
                    native.addresses.span(),
                    "native: at least one interface and one address".into(),
                ));
            }
        }
        let mut entries = Vec::new();
        for spanned in &config.mobile_routers {
            let entry = spanned.get_ref();
            let at = |message: String| invalid(spanned.span(), message);
            if !home_prefixes
                .iter()
                .any(|p| p.contains(&entry.home_address))
            {
                return Err(at(format!(
                    "home address {} is outside every home prefix",
                    entry.home_address
                )));
            }
            let algorithm: Algorithm = match &entry.algorithm {
                Some(name) => name.parse().map_err(|e| at(format!("{e}")))?,
                None => Algorithm::default(),
            };
            let key = parse_hex_key(&entry.key).map_err(|e| at(e.to_string()))?;
            let sa = SecurityAssociation::new(entry.spi, algorithm, key)
                .map_err(|e| at(format!("mobile router {}: {e}", entry.home_address)))?;
            for prefix in &entry.prefixes {
                if let Some(reason) = invalid_prefix_reason(prefix, &home_prefixes) {
                    return Err(at(format!("prefix {prefix}: {reason}")));
                }
            }
            entries.push((
                spanned.span(),
                Authorization {
                    home_address: entry.home_address,
                    security_associations: vec![sa],
                    mobile_router: entry.mobile_router,
                    prefixes: entry.prefixes.clone().into(),
                },
            ));
        }
        let mut authorizations = AuthorizationTable::default();
        for (span, entry) in entries {
            if authorizations.get(entry.home_address).is_some() {
                return Err(invalid(
                    span,
                    format!("home address {} appears twice", entry.home_address),
                ));
            }
            authorizations
                .insert(entry)
                .map_err(|e| invalid(span.clone(), e.to_string()))?;
        }
        let ipv4_tunnel = match &config.ipv4 {
            Some(ipv4) => Some(ipv4.validate(&dataplane.backend, config.udp.as_ref(), &invalid)?),
            None => None,
        };
        if let Some(translator) = &config.translator {
            translator.validate(&dataplane.backend, &invalid)?;
            if config.controller.is_none() {
                return Err(invalid(
                    translator.ipv4_pools.span(),
                    "translator: the tenants' IPv4 mappings come from the controller: \
                     [controller] is needed"
                        .into(),
                ));
            }
        }
        let engine = HomeAgentConfig {
            home_prefixes,
            max_lifetime: Duration::from_secs(*section.max_lifetime_secs.get_ref()),
            replay: ReplayPolicy {
                window: Duration::from_secs(*section.replay_window_secs.get_ref()),
                required: section.require_timestamp,
            },
            refresh_request_before: section.refresh_request_before_secs.map(Duration::from_secs),
            // Without [ipv4] a mobile router behind an IPv4-only uplink is
            // answered 129, not acknowledged into a binding that forwards
            // nothing.
            ipv4_care_of: config
                .ipv4
                .as_ref()
                .map_or(nemo::ha::Ipv4CareOfs::Refused, ipv4::Ipv4Section::policy),
        };
        Ok(Validated {
            config,
            engine,
            authorizations,
            ipv4_tunnel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[home_agent]
home_prefixes = ["2001:db8:1::/64"]

[store]
path = "/tmp/x"

[udp]
listen = ["[::1]:4191"]

[[mobile_router]]
home_address = "2001:db8:1::100"
spi = 4096
key = "000102030405060708090a0b0c0d0e0f"
prefixes = ["2001:db8:100::/56"]

[dataplane]
backend = "memory"
"#;

    /// GOOD's data plane section, for tests that replace it.
    const MEMORY: &str = "[dataplane]\nbackend = \"memory\"\n";

    fn error(text: &str) -> String {
        Config::from_text(text, Path::new("ha.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_shipped_example_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/examples/ha.toml"
        ));
        // The file itself; its interfaces and token file belong to the
        // host it is written for, not this one.
        let text = std::fs::read_to_string(path).unwrap();
        let validated = Config::from_text(&text, path).unwrap();
        assert!(validated.config.controller.is_some());
        assert!(validated.config.native.is_some());
    }

    #[test]
    fn endpoints_interfaces_and_token_files_are_checked() {
        let with_controller = |endpoint: &str, token: &Path| {
            GOOD.replace(
                "[store]",
                &format!(
                    "[controller]\nendpoint = \"{endpoint}\"\ntoken_file = \"{}\"\nhome_agent = \"ha1\"\n\n[store]",
                    token.display()
                ),
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "a-token-of-sixteen-or-more\n").unwrap();
        let text = with_controller("htp://[2001:db8::1]:50051", &token);
        let message = error(&text);
        assert!(
            message.starts_with("ha.toml:6: controller: endpoint:"),
            "{message}"
        );
        assert!(message.contains("scheme"), "{message}");
        assert!(error(&with_controller("not a url", &token)).contains("ha.toml:6:"));

        // Host checks: what --check and a start see through `load`.
        let load = |text: String| {
            let path = dir.path().join("ha.toml");
            std::fs::write(&path, text).unwrap();
            Config::load(&path).map(drop).map_err(|e| e.to_string())
        };
        let good = with_controller("http://[2001:db8::1]:50051", &token);
        assert_eq!(load(good.clone()), Ok(()));
        let missing = with_controller("http://[2001:db8::1]:50051", &dir.path().join("nope"));
        let message = load(missing).unwrap_err();
        assert!(message.contains(":7: controller: token_file:"), "{message}");
        let no_uplink = good.replace(
            MEMORY,
            "[dataplane]\nbackend = \"seg6\"\nuplink = \"nemo-none0\"\nlocal_address = \"2001:db8:1::1\"\n",
        );
        let message = load(no_uplink).unwrap_err();
        assert!(
            message.contains("dataplane: uplink: no network interface \"nemo-none0\""),
            "{message}"
        );
    }

    #[test]
    fn good_file_loads() {
        let validated = Config::from_text(GOOD, Path::new("ha.toml")).unwrap();
        assert_eq!(validated.authorizations.len(), 1);
        assert_eq!(validated.engine.max_lifetime, Duration::from_secs(600));
        assert!(validated.engine.replay.required);
        let (entry, sa) = validated.authorizations.by_spi(4096).unwrap();
        assert_eq!(sa.algorithm(), Algorithm::HmacSha256);
        assert_eq!(
            *entry.prefixes,
            ["2001:db8:100::/56".parse::<Ipv6Net>().unwrap()]
        );
    }

    #[test]
    fn unknown_key_names_its_line() {
        let text = GOOD.replace("[store]\n", "[store]\nflavour = \"x\"\n");
        let message = error(&text);
        assert!(message.contains("line 6"), "{message}");
        assert!(message.contains("flavour"), "{message}");
    }

    #[test]
    fn bad_prefix_value_names_its_line() {
        let text = GOOD.replace("2001:db8:100::/56", "2001:db8:100::/129");
        let message = error(&text);
        assert!(message.contains("line 15"), "{message}");
    }

    #[test]
    fn semantic_errors_name_the_entry_line() {
        let short_key = GOOD.replace("000102030405060708090a0b0c0d0e0f", "0001");
        assert_eq!(
            error(&short_key),
            "ha.toml:11: mobile router 2001:db8:1::100: key is 2 octets, at least 16 are required"
        );
        let bad_hex = GOOD.replace("000102030405060708090a0b0c0d0e0f", "zz");
        assert!(error(&bad_hex).starts_with("ha.toml:11: key must be hex"));
        let away = GOOD.replace(
            "home_address = \"2001:db8:1::100\"",
            "home_address = \"2001:db8:9::1\"",
        );
        assert!(error(&away).contains("outside every home prefix"));
        let reserved = GOOD.replace("spi = 4096", "spi = 7");
        assert!(error(&reserved).contains("SPI 7 is reserved"));
        let link_local = GOOD.replace("2001:db8:100::/56", "fe80::/64");
        assert!(error(&link_local).contains("link-local"));
        let algorithm = GOOD.replace("spi = 4096", "spi = 4096\nalgorithm = \"md5\"");
        assert!(error(&algorithm).contains("unknown algorithm"));
    }

    #[test]
    fn duplicates_and_overlaps_are_refused() {
        let twice = format!(
            "{GOOD}\n[[mobile_router]]\nhome_address = \"2001:db8:1::100\"\nspi = 4097\nkey = \"000102030405060708090a0b0c0d0e0f\"\n"
        );
        assert!(error(&twice).contains("appears twice"), "{}", error(&twice));
        let overlap = format!(
            "{GOOD}\n[[mobile_router]]\nhome_address = \"2001:db8:1::200\"\nspi = 4097\nkey = \"000102030405060708090a0b0c0d0e0f\"\nprefixes = [\"2001:db8:100:1::/64\"]\n"
        );
        let message = error(&overlap);
        assert!(message.starts_with("ha.toml:20:"), "{message}");
        assert!(message.contains("overlaps"), "{message}");
    }

    #[test]
    fn seg6_needs_its_settings() {
        for backend in ["seg6", "bpf", "auto"] {
            let text = GOOD.replace(MEMORY, &format!("[dataplane]\nbackend = \"{backend}\"\n"));
            assert_eq!(
                error(&text),
                format!(
                    "ha.toml:18: dataplane: backend \"{backend}\" needs uplink and local_address \
                     (backend = \"memory\" runs the control plane without forwarding)"
                )
            );
            let text = GOOD.replace(
                MEMORY,
                &format!("[dataplane]\nbackend = \"{backend}\"\nuplink = \"eth0\"\nlocal_address = \"2001:db8:1::1\"\n"),
            );
            assert!(Config::from_text(&text, Path::new("ha.toml")).is_ok());
        }
        // No [dataplane] at all: "auto", the default, says so.
        let text = GOOD.replace(MEMORY, "");
        assert!(
            error(&text).contains("backend \"auto\" (the default) needs uplink"),
            "{}",
            error(&text)
        );
        let text = GOOD.replace(MEMORY, "[dataplane]\nbackend = \"ip6tnl\"\n");
        assert!(error(&text).contains("line 18"), "{}", error(&text));
    }

    #[test]
    fn limits_are_checked() {
        let no_home = GOOD.replace("[\"2001:db8:1::/64\"]", "[]");
        assert_eq!(
            error(&no_home),
            "ha.toml:3: home_prefixes: at least one home prefix is needed"
        );
        let window = GOOD.replace(
            "home_prefixes = [\"2001:db8:1::/64\"]",
            "home_prefixes = [\"2001:db8:1::/64\"]\nreplay_window_secs = 2",
        );
        assert!(error(&window).starts_with("ha.toml:4: replay_window_secs"));
    }

    #[test]
    fn an_admin_api_off_loopback_needs_a_token() {
        let with_admin = |admin: &str| format!("{GOOD}\n[admin]\n{admin}\n");
        let error = Config::from_text(
            &with_admin("listen = \"[2001:db8::1]:50052\""),
            Path::new("ha.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("admin: listen") && error.contains("token_file"),
            "{error}"
        );
        assert!(Config::from_text(
            &with_admin("listen = \"[2001:db8::1]:50052\"\ntoken_file = \"/etc/nemo/admin.token\""),
            Path::new("ha.toml"),
        )
        .is_ok());
        assert!(Config::from_text(
            &with_admin("listen = \"[::1]:50052\""),
            Path::new("ha.toml")
        )
        .is_ok());
    }

    const PAIR: &str = "\n[pair]\ninterface = \"home\"\nlink_local = \"fe80::a\"\nvrid = 12\n\
priority = 200\naddresses = [\"2001:db8:1::1\"]\nreplication_listen = \"[2001:db8:ff::a]:4192\"\n\
peer = \"[2001:db8:ff::b]:4192\"\ntoken_file = \"/etc/nemo/pair.token\"\n";

    #[test]
    fn a_pair_section_loads_with_its_defaults() {
        let validated = Config::from_text(&format!("{GOOD}{PAIR}"), Path::new("ha.toml")).unwrap();
        let pair = validated.config.pair.unwrap();
        assert_eq!(*pair.advert_interval_ms.get_ref(), 100);
        assert_eq!(pair.replication, crate::replication::Mode::Synchronous);
        assert_eq!(*pair.replication_timeout_ms.get_ref(), 500);
        assert!(!pair.preempt);
        // The virtual router's link-local address may be named first, as
        // keepalived's configurations do (RFC 5798 §5.2.9).
        let named = format!("{GOOD}{PAIR}").replace(
            "addresses = [\"2001:db8:1::1\"]",
            "addresses = [\"fe80::12\", \"2001:db8:1::1\"]",
        );
        assert!(Config::from_text(&named, Path::new("ha.toml")).is_ok());
    }

    #[test]
    fn a_pair_section_names_what_is_wrong() {
        let pair = format!("{GOOD}{PAIR}");
        // The [pair] section starts on line 20 of GOOD + PAIR.
        for (from, to, expected) in [
            (
                "priority = 200",
                "priority = 255",
                "ha.toml:24: pair: priority: 1-254",
            ),
            (
                "link_local = \"fe80::a\"",
                "link_local = \"2001:db8::a\"",
                "ha.toml:22: pair: link_local",
            ),
            ("vrid = 12", "vrid = 0", "ha.toml:23: pair: vrid"),
            (
                "vrid = 12",
                "vrid = 12\npeer_link_local = \"fe80::a\"",
                "ha.toml:24: pair: peer_link_local",
            ),
            (
                "\"[2001:db8:ff::b]:4192\"",
                "\"[2001:db8:ff::a]:4192\"",
                "ha.toml:27: pair: peer",
            ),
            (
                "addresses = [\"2001:db8:1::1\"]",
                "addresses = [\"fe80::1\"]",
                "ha.toml:25: pair: addresses: the home-agent address",
            ),
            (
                "addresses = [\"2001:db8:1::1\"]",
                "addresses = [\"2001:db8:1::1\", \"fe80::1\"]",
                "ha.toml:25: pair: addresses: fe80::1 is not a routable unicast address (only the first",
            ),
            (
                "vrid = 12\n",
                "vrid = 12\nadvert_interval_ms = 15\n",
                "pair: advert_interval_ms",
            ),
        ] {
            let text = pair.replacen(from, to, 1);
            let message = error(&text);
            assert!(message.contains(expected), "{message}");
        }
    }
}
