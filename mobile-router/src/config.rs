//! The configuration file of `nemo-mr` (TOML).
//!
//! ```toml
//! [mobile_router]
//! uplink = "eth0"                       # the care-of address is its global address
//!
//! [transport]
//! home_agent_udp = "[2001:db8:1::1]:4191"
//! home_agent_udp_ipv4 = "192.0.2.1:4191"  # IPv4 care-of addresses (RFC 5555)
//! # udp_over_ipv4 = "always"              # UDP without a NAT too (the F flag)
//!
//! [dataplane]
//! backend = "auto"                      # bpf where the kernel runs it, else seg6
//!
//! [[instance]]
//! name = "acme"
//! home_address = "2001:db8:1::100"
//! home_agent = "2001:db8:1::1"
//! spi = 4096
//! key = "000102030405060708090a0b0c0d0e0f"
//! prefixes = ["2001:db8:100::/56"]     # explicit mode; leave out for implicit
//! tenant_interface = "tap-acme"
//! table = 100
//! ```
//!
//! Unknown keys are refused, and every error names the line it is about.

pub use nemo_daemon::{AdminSection, ListenSection};
pub use nemo_dataplane::DataPlaneBackend;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv6Net;
use nemo::auth::{Algorithm, SecurityAssociation};
use nemo::registration::InstanceConfig;
pub use nemo_daemon::ConfigError;
use nemo_daemon::{parse_hex_key, ConfigText};
pub use nemo_dataplane::addresses::CareOfFamilies;
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the care-of address comes from.
    pub mobile_router: MobileRouterSection,
    /// How Binding Updates reach the home agents.
    pub transport: Spanned<TransportSection>,
    /// The data plane.
    #[serde(default)]
    pub dataplane: DataPlaneSection,
    /// Instances from the controller (beside any static ones).
    #[serde(default)]
    pub controller: Option<ControllerSection>,
    /// The status gRPC API.
    #[serde(default)]
    pub admin: Option<AdminSection>,
    /// Prometheus metrics over HTTP.
    #[serde(default)]
    pub metrics: Option<ListenSection>,
    /// Static tenant instances.
    #[serde(default, rename = "instance")]
    pub instances: Vec<Spanned<InstanceEntry>>,
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
    /// This hypervisor's name at the controller.
    pub hypervisor: String,
    /// Tenant interface names; `{tenant}` is replaced.
    #[serde(default = "default_tenant_interface")]
    pub tenant_interface: String,
    /// First table for tenants placed by the controller.
    #[serde(default = "default_table_base")]
    pub table_base: u32,
    /// Lifetime to ask for, seconds.
    #[serde(default = "default_lifetime")]
    pub lifetime_secs: u64,
}

fn default_tenant_interface() -> String {
    "t-{tenant}".into()
}

fn default_table_base() -> u32 {
    1000
}

/// `[mobile_router]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobileRouterSection {
    /// The uplink interface: its usable global address is the care-of
    /// address, watched through netlink.
    pub uplink: Spanned<String>,
    /// A fixed care-of address instead of watching the uplink (tests, or
    /// hosts whose address never changes); an IPv4 one needs
    /// `[transport] home_agent_udp_ipv4`.
    #[serde(default)]
    pub care_of: Option<Spanned<IpAddr>>,
    /// Which family of the uplink's addresses is the care-of address when
    /// it has both and the home agent takes IPv4 ones
    /// (`[transport] home_agent_udp_ipv4`): `ipv6` (the default, RFC 5555
    /// §4.4.1's preference; IPv4 only while the uplink has no global IPv6
    /// address) or `ipv4`.
    #[serde(default)]
    pub prefer: Preferred,
    /// InitialBindackTimeoutFirstReg (RFC 6275 §13), milliseconds: how
    /// long a first registration (a tenant placed or migrated here) waits
    /// for its answer before the first retransmission. 1500 by default
    /// (time for a home agent's DAD, which nemo-ha does not do); a lower
    /// value shortens the outage of a migration that meets a home-agent
    /// takeover. 100-32000.
    #[serde(default = "default_first_registration_timeout_ms")]
    pub first_registration_timeout_ms: Spanned<u64>,
    /// How long a tenant that moved to another hypervisor keeps its data
    /// path here while its port still has a VM (carrier: QEMU holds the
    /// tap), milliseconds: the home agent copies a moved tenant's packets
    /// to the site it left while the VM still sends from there (and its
    /// `bicast_ms` after), and they reach the VM only through this path (a
    /// placement made as the migration starts, which can copy memory for
    /// minutes; a migration that fails and resumes here). Ends at once
    /// when the port loses its carrier or goes (QEMU ends after the
    /// migration), so the default covers the longest copy the home agent
    /// makes (10 minutes). 0-600000, 0 off.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: Spanned<u64>,
    /// The longest a tenant placed "on announcement" (as a live migration
    /// starts, by the orchestrator or on QEMU attaching its port here) is
    /// held, milliseconds: its traffic passes when its VM announces itself
    /// on its port (QEMU's RARP at resume; any frame of the guest's), at
    /// once if the port cannot be watched, or after this long if nothing
    /// comes. Past it, what arrives queues in the paused VM's tap, to be
    /// answered before anything newer when it resumes: the default covers
    /// a pre-copy as long as the home agent copies to the source (10
    /// minutes). 0-600000.
    #[serde(default = "default_hold_ms")]
    pub hold_ms: Spanned<u64>,
}

fn default_first_registration_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1500)
}

fn default_hold_ms() -> Spanned<u64> {
    Spanned::new(0..0, 600_000)
}

fn default_linger_ms() -> Spanned<u64> {
    Spanned::new(0..0, 600_000)
}

/// `[mobile_router] prefer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Preferred {
    /// IPv6, IPv4 while there is none.
    #[default]
    Ipv6,
    /// IPv4, IPv6 while there is none.
    Ipv4,
}

impl Config {
    /// The care-of addresses this mobile router uses: IPv6 alone unless its
    /// home agent takes IPv4 ones, then in the order `prefer` says.
    pub fn care_of_families(&self) -> CareOfFamilies {
        match (
            self.transport.get_ref().home_agent_udp_ipv4,
            self.mobile_router.prefer,
        ) {
            (None, _) => CareOfFamilies::Ipv6,
            (Some(_), Preferred::Ipv6) => CareOfFamilies::Ipv6ThenIpv4,
            (Some(_), Preferred::Ipv4) => CareOfFamilies::Ipv4ThenIpv6,
        }
    }
}

/// `[transport]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    /// `udp` (default) or `native` (RFC 6275 on the wire, on the uplink).
    #[serde(default)]
    pub kind: TransportKind,
    /// The home agent's UDP transport (address and port); needed for `udp`.
    #[serde(default)]
    pub home_agent_udp: Option<SocketAddr>,
    /// Local address for the UDP socket.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// The home agent's UDP transport over IPv4 (its `[ipv4]` address and
    /// port): with it, an IPv4 care-of address registers there, in UDP
    /// over IPv4 (RFC 5555 §4.2).
    #[serde(default)]
    pub home_agent_udp_ipv4: Option<SocketAddrV4>,
    /// Local address of the IPv4 socket. Its port is the IPv4 tunnel's too,
    /// so that a NAT maps the tunnel and the Binding Updates alike: fixed,
    /// 4191 by default.
    #[serde(default = "default_bind_ipv4")]
    pub bind_ipv4: SocketAddrV4,
    /// At an IPv4 care-of address: `when-needed` (the default: UDP when
    /// the home agent detects a NAT, IPv6 in IPv4 otherwise) or `always`
    /// (RFC 5555's F flag: UDP without a NAT too, for sites whose
    /// firewalls drop IPv6 in IPv4, protocol 41).
    #[serde(default)]
    pub udp_over_ipv4: UdpOverIpv4Setting,
}

/// `[transport] udp_over_ipv4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UdpOverIpv4Setting {
    /// UDP behind a NAT only.
    #[default]
    WhenNeeded,
    /// UDP always (the F flag).
    Always,
}

impl UdpOverIpv4Setting {
    /// The registrar's value.
    pub fn registration(self) -> nemo::registration::UdpOverIpv4 {
        match self {
            UdpOverIpv4Setting::WhenNeeded => nemo::registration::UdpOverIpv4::WhenNeeded,
            UdpOverIpv4Setting::Always => nemo::registration::UdpOverIpv4::Always,
        }
    }
}

fn default_bind_ipv4() -> SocketAddrV4 {
    SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 4191)
}

/// How Binding Updates travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// IPv6 packets in UDP to the home agent's UDP transport.
    #[default]
    Udp,
    /// RFC 6275 as is: Home Address option out, type 2 routing header in.
    Native,
}

fn default_bind() -> SocketAddr {
    SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
}

/// `[dataplane]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPlaneSection {
    /// Which backend programs forwarding (`auto`: BPF if this kernel runs
    /// it, else seg6).
    #[serde(default)]
    pub backend: DataPlaneBackend,
    /// bpf: where its maps are pinned (a folder on a bpf filesystem), so
    /// that a restart keeps forwarding.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
}

impl Default for DataPlaneSection {
    fn default() -> DataPlaneSection {
        DataPlaneSection {
            backend: DataPlaneBackend::default(),
            pin_dir: default_pin_dir(),
        }
    }
}

fn default_pin_dir() -> PathBuf {
    "/sys/fs/bpf/nemo-mr".into()
}

/// `[[instance]]`: one tenant's mobile router.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceEntry {
    /// A name for logs and the API.
    pub name: String,
    /// The mobile router's home address.
    pub home_address: Ipv6Addr,
    /// The home agent.
    pub home_agent: Ipv6Addr,
    /// Mobility SPI.
    pub spi: u32,
    /// `hmac-sha256` (default) or `hmac-sha1-96`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// The shared key, hex.
    pub key: String,
    /// Prefixes for explicit mode; empty for implicit mode.
    #[serde(default)]
    pub prefixes: Vec<Ipv6Net>,
    /// Lifetime to ask for, seconds.
    #[serde(default = "default_lifetime")]
    pub lifetime_secs: u64,
    /// NAI to send (RFC 4283).
    #[serde(default)]
    pub nai: Option<String>,
    /// The tenant's interface on this host.
    pub tenant_interface: String,
    /// The tenant's own routing table on this host.
    pub table: u32,
}

fn default_lifetime() -> u64 {
    600
}

/// One instance, checked.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Its name.
    pub name: String,
    /// What the registrar needs.
    pub registration: InstanceConfig,
    /// Its tenant interface.
    pub tenant_interface: String,
    /// Its table.
    pub table: u32,
    /// The last sequence number the home agent accepted for this home
    /// address, when known (from the controller): the first Binding Update
    /// goes after it. Unknown: a random start (a 135 corrects it).
    pub last_sequence: Option<nemo::wire::SequenceNumber>,
    /// When its traffic passes here: at once, or once its VM announces
    /// itself on its port (a placement made as a live migration starts).
    pub delivery: nemo_dataplane::Traffic,
}

impl Config {
    /// Reads and checks a file.
    /// Reads, validates, and checks against this host what the file names
    /// (the uplink, the token file): what `--check` and a start do.
    /// Tenant interfaces are not checked: a tenant's port may appear later.
    pub fn load(path: &Path) -> Result<(Config, Vec<Instance>), ConfigError> {
        let file = ConfigText::read(path)?;
        let (config, instances) = Self::validate(&file)?;
        if !instances.is_empty() {
            // [[instance]] keys in the file.
            nemo_daemon::secret::warn_if_exposed(path);
        }
        let uplink = &config.mobile_router.uplink;
        nemo_daemon::check_interface(uplink.get_ref())
            .map_err(|e| file.invalid(uplink.span(), format!("mobile_router: uplink: {e}")))?;
        if let Some(controller) = &config.controller {
            nemo_daemon::check_readable(controller.token_file.get_ref()).map_err(|e| {
                file.invalid(
                    controller.token_file.span(),
                    format!("controller: token_file: {e}"),
                )
            })?;
        }
        if let Some(admin) = &config.admin {
            admin.token(&file)?;
        }
        Ok((config, instances))
    }

    /// Parses and checks text read from `path`.
    pub fn from_text(text: &str, path: &Path) -> Result<(Config, Vec<Instance>), ConfigError> {
        Self::validate(&ConfigText::new(text, path))
    }

    fn validate(file: &ConfigText) -> Result<(Config, Vec<Instance>), ConfigError> {
        let config: Config = file.parse()?;
        if let Some(admin) = &config.admin {
            admin.validate(file)?;
        }
        let transport = config.transport.get_ref();
        if transport.kind == TransportKind::Udp && transport.home_agent_udp.is_none() {
            return Err(file.invalid(
                config.transport.span(),
                "transport: kind \"udp\" needs home_agent_udp",
            ));
        }
        if transport.home_agent_udp_ipv4.is_some() && transport.kind != TransportKind::Udp {
            return Err(file.invalid(
                config.transport.span(),
                "transport: home_agent_udp_ipv4 needs kind \"udp\" (RFC 5555 sends Binding \
                 Updates from IPv4 care-of addresses in UDP)",
            ));
        }
        if let Some(fixed) = &config.mobile_router.care_of {
            if fixed.get_ref().is_ipv4() && transport.home_agent_udp_ipv4.is_none() {
                return Err(file.invalid(
                    fixed.span(),
                    "mobile_router: care_of: an IPv4 care-of address needs [transport] \
                     home_agent_udp_ipv4",
                ));
            }
        }
        if let Some(controller) = &config.controller {
            controller.endpoint.get_ref().check().map_err(|e| {
                file.invalid(
                    controller.endpoint.span(),
                    format!("controller: endpoint: {e}"),
                )
            })?;
        }
        let first = config.mobile_router.first_registration_timeout_ms.get_ref();
        if !(100..=32_000).contains(first) {
            return Err(file.invalid(
                config.mobile_router.first_registration_timeout_ms.span(),
                "mobile_router: first_registration_timeout_ms: 100-32000",
            ));
        }
        if *config.mobile_router.linger_ms.get_ref() > 600_000 {
            return Err(file.invalid(
                config.mobile_router.linger_ms.span(),
                "mobile_router: linger_ms: 0-600000",
            ));
        }
        if *config.mobile_router.hold_ms.get_ref() > 600_000 {
            return Err(file.invalid(
                config.mobile_router.hold_ms.span(),
                "mobile_router: hold_ms: 0-600000",
            ));
        }
        let mut instances: Vec<Instance> = Vec::new();
        for spanned in &config.instances {
            let entry = spanned.get_ref();
            let at = |message: String| {
                file.invalid(
                    spanned.span(),
                    format!("instance {:?}: {message}", entry.name),
                )
            };
            let algorithm: Algorithm = match &entry.algorithm {
                Some(name) => name.parse().map_err(|e| at(format!("{e}")))?,
                None => Algorithm::default(),
            };
            let key = parse_hex_key(&entry.key).map_err(|e| at(e.to_string()))?;
            let sa = SecurityAssociation::new(entry.spi, algorithm, key)
                .map_err(|e| at(e.to_string()))?;
            if entry.lifetime_secs < 4 {
                return Err(at("lifetime_secs must be at least 4".into()));
            }
            for other in &instances {
                if other.name == entry.name {
                    return Err(at("name used twice".into()));
                }
                if other.tenant_interface == entry.tenant_interface || other.table == entry.table {
                    return Err(at(format!(
                        "tenant_interface and table must be its own; {:?} has them",
                        other.name
                    )));
                }
                if other.registration.home_address == entry.home_address {
                    return Err(at("home_address used twice".into()));
                }
            }
            instances.push(Instance {
                name: entry.name.clone(),
                registration: InstanceConfig {
                    home_address: entry.home_address,
                    home_agent: entry.home_agent,
                    prefixes: entry.prefixes.clone(),
                    lifetime: Duration::from_secs(entry.lifetime_secs),
                    sa,
                    nai: entry.nai.clone(),
                },
                tenant_interface: entry.tenant_interface.clone(),
                table: entry.table,
                last_sequence: None,
                delivery: nemo_dataplane::Traffic::Pass,
            });
        }
        Ok((config, instances))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[mobile_router]
uplink = "eth0"

[transport]
home_agent_udp = "[2001:db8:1::1]:4191"

[[instance]]
name = "acme"
home_address = "2001:db8:1::100"
home_agent = "2001:db8:1::1"
spi = 4096
key = "000102030405060708090a0b0c0d0e0f"
prefixes = ["2001:db8:100::/56"]
tenant_interface = "t-acme"
table = 100
"#;

    fn error(text: &str) -> String {
        Config::from_text(text, Path::new("mr.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_shipped_example_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/examples/mr.toml"
        ));
        // The file itself; its uplink and token file belong to the host it
        // is written for, not this one.
        let text = std::fs::read_to_string(path).unwrap();
        let (config, instances) = Config::from_text(&text, path).unwrap();
        assert!(config.controller.is_some());
        assert!(instances.is_empty());
    }

    #[test]
    fn transport_errors_name_the_transport_table() {
        let text = GOOD.replace(
            "home_agent_udp = \"[2001:db8:1::1]:4191\"",
            "kind = \"udp\"",
        );
        assert_eq!(
            error(&text),
            "mr.toml:5: transport: kind \"udp\" needs home_agent_udp"
        );
    }

    #[test]
    fn udp_over_ipv4_is_when_needed_unless_always_and_nothing_else() {
        let good = Config::from_text(GOOD, Path::new("mr.toml")).unwrap();
        assert_eq!(
            good.0.transport.get_ref().udp_over_ipv4,
            UdpOverIpv4Setting::WhenNeeded
        );
        let always = GOOD.replace(
            "home_agent_udp = \"[2001:db8:1::1]:4191\"",
            "home_agent_udp = \"[2001:db8:1::1]:4191\"\nudp_over_ipv4 = \"always\"",
        );
        let config = Config::from_text(&always, Path::new("mr.toml")).unwrap();
        assert_eq!(
            config.0.transport.get_ref().udp_over_ipv4.registration(),
            nemo::registration::UdpOverIpv4::Always
        );
        let wrong = always.replace("\"always\"", "\"sometimes\"");
        let message = error(&wrong);
        assert!(
            message.contains("mr.toml:") && message.contains("sometimes"),
            "{message}"
        );
    }

    #[test]
    fn endpoints_uplinks_and_token_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "a-token-of-sixteen-or-more\n").unwrap();
        let with = |uplink: &str, endpoint: &str, token: &Path| {
            GOOD.replace("uplink = \"eth0\"", &format!("uplink = \"{uplink}\""))
                .replace(
                    "[[instance]]",
                    &format!(
                        "[controller]\nendpoint = \"{endpoint}\"\ntoken_file = \"{}\"\nhypervisor = \"hv1\"\n\n[[instance]]",
                        token.display()
                    ),
                )
        };
        let message = error(&with("lo", "htp://[2001:db8::1]:50051", &token));
        assert!(
            message.starts_with("mr.toml:9: controller: endpoint:"),
            "{message}"
        );
        let load = |text: String| {
            let path = dir.path().join("mr.toml");
            std::fs::write(&path, text).unwrap();
            Config::load(&path).map(drop).map_err(|e| e.to_string())
        };
        assert_eq!(
            load(with("lo", "http://[2001:db8::1]:50051", &token)),
            Ok(())
        );
        let message = load(with("nemo-none0", "http://[2001:db8::1]:50051", &token)).unwrap_err();
        assert!(
            message.contains(":3: mobile_router: uplink: no network interface"),
            "{message}"
        );
        let message = load(with(
            "lo",
            "http://[2001:db8::1]:50051",
            &dir.path().join("nope"),
        ))
        .unwrap_err();
        assert!(
            message.contains(":10: controller: token_file:"),
            "{message}"
        );
    }

    #[test]
    fn good_file_loads() {
        let (config, instances) = Config::from_text(GOOD, Path::new("mr.toml")).unwrap();
        assert_eq!(config.mobile_router.uplink.get_ref(), "eth0");
        assert_eq!(instances.len(), 1);
        assert_eq!(instances[0].registration.lifetime, Duration::from_secs(600));
    }

    #[test]
    fn errors_name_the_line() {
        let unknown = GOOD.replace("table = 100", "table = 100\ncolour = 1");
        assert!(error(&unknown).contains("line 17"), "{}", error(&unknown));
        let short = GOOD.replace("000102030405060708090a0b0c0d0e0f", "00");
        assert_eq!(
            error(&short),
            "mr.toml:8: instance \"acme\": key is 1 octets, at least 16 are required"
        );
        let twice = format!(
            "{GOOD}\n[[instance]]\nname = \"acme\"\nhome_address = \"2001:db8:1::200\"\nhome_agent = \"2001:db8:1::1\"\nspi = 4097\nkey = \"000102030405060708090a0b0c0d0e0f\"\ntenant_interface = \"t-b\"\ntable = 101\n"
        );
        assert!(
            error(&twice).starts_with("mr.toml:18: instance \"acme\": name used twice"),
            "{}",
            error(&twice)
        );
    }
}
