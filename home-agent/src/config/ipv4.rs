//! `[ipv4]`: mobile routers with IPv4 care-of addresses (Dual-Stack Mobile
//! IPv6, RFC 5555): the home agent's IPv4 address, the keepalive it asks
//! of those behind a NAT, and when it encapsulates in UDP.
//!
//! ```toml
//! [ipv4]
//! address = "192.0.2.1"
//! nat_keepalive_secs = 110
//! udp = "when-needed"
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::time::Duration;

use nemo::ha::{Ipv4CareOfs, UdpEncapsulation};
use nemo::wire::NATKATIMEOUT;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, DataPlaneBackend, UdpSection};

/// `[ipv4]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipv4Section {
    /// The home agent's IPv4 address: mobile routers send their Binding
    /// Updates in UDP to it (a `[udp]` listener must take them) and the
    /// tunnels to IPv4 care-of addresses leave from it. A pair's members
    /// both name the shared one.
    pub address: Spanned<Ipv4Addr>,
    /// The Refresh time of the NAT Detection option (RFC 5555 §3.2.2,
    /// §4.3): how often a mobile router behind a NAT refreshes its binding,
    /// which keeps the NAT's mapping. Below the shortest UDP timeout of
    /// the NATs in the way; NATKATIMEOUT (110 s) by default.
    #[serde(default = "default_keepalive")]
    pub nat_keepalive_secs: Spanned<u64>,
    /// When to encapsulate in UDP: `when-needed` (behind a NAT, or when
    /// the mobile router sets F) or `always` (paths that drop protocol 41).
    #[serde(default)]
    pub udp: UdpWhen,
}

/// `[ipv4] udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UdpWhen {
    /// Behind a NAT or when asked (F).
    #[default]
    WhenNeeded,
    /// For every IPv4 care-of address.
    Always,
}

fn default_keepalive() -> Spanned<u64> {
    Spanned::new(0..0, NATKATIMEOUT.as_secs())
}

/// The longest keepalive accepted: a NAT that keeps idle UDP mappings
/// longer is rare, and a mobile router refreshes its binding anyway.
pub const MAX_NAT_KEEPALIVE_SECS: u64 = 3600;

impl Ipv4Section {
    /// The engine's policy for IPv4 care-of addresses.
    pub fn policy(&self) -> Ipv4CareOfs {
        Ipv4CareOfs::Accepted {
            nat_keepalive: Duration::from_secs(*self.nat_keepalive_secs.get_ref()),
            udp: match self.udp {
                UdpWhen::WhenNeeded => UdpEncapsulation::WhenNeeded,
                UdpWhen::Always => UdpEncapsulation::Always,
            },
        }
    }

    /// Checks the section against the rest of the file: an address a home
    /// agent can have, a keepalive in range, a data plane that tunnels over
    /// IPv4 (bpf, or memory for the control plane alone), and a `[udp]`
    /// listener that takes IPv4 to the address. Returns the address and
    /// the port the data plane's tunnels use.
    pub fn validate(
        &self,
        backend: &Spanned<DataPlaneBackend>,
        udp: Option<&UdpSection>,
        invalid: &impl Fn(Range<usize>, String) -> ConfigError,
    ) -> Result<SocketAddrV4, ConfigError> {
        let address = *self.address.get_ref();
        if !nemo::ha::dsmip::is_unicast_ipv4(address) {
            return Err(invalid(
                self.address.span(),
                format!("ipv4: address: {address} is not a unicast address"),
            ));
        }
        let keepalive = *self.nat_keepalive_secs.get_ref();
        if !(1..=MAX_NAT_KEEPALIVE_SECS).contains(&keepalive) {
            return Err(invalid(
                self.nat_keepalive_secs.span(),
                format!("ipv4: nat_keepalive_secs: 1-{MAX_NAT_KEEPALIVE_SECS}"),
            ));
        }
        if *backend.get_ref() == DataPlaneBackend::Seg6 {
            return Err(invalid(
                backend.span(),
                format!(
                    "dataplane: backend \"{}\" tunnels IPv6 in IPv6 only: [ipv4] needs backend \
                     \"bpf\" (or \"auto\", which must then find bpf)",
                    backend.get_ref().name()
                ),
            ));
        }
        let port = udp
            .into_iter()
            .flat_map(|udp| &udp.listen)
            .find_map(|listen| match listen {
                SocketAddr::V4(v4) if *v4.ip() == address || v4.ip().is_unspecified() => {
                    Some(v4.port())
                }
                // A dual-stack socket on [::] takes IPv4 too.
                SocketAddr::V6(v6) if v6.ip().is_unspecified() => Some(v6.port()),
                _ => None,
            })
            .ok_or_else(|| {
                invalid(
                    self.address.span(),
                    format!(
                        "ipv4: address: no [udp] listen address takes Binding Updates to \
                         {address} (add \"{address}:4191\", RFC 5555's port)"
                    ),
                )
            })?;
        Ok(SocketAddrV4::new(address, port))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    fn config(udp: &str, backend: &str, ipv4: &str) -> String {
        format!(
            "[home_agent]\nhome_prefixes = [\"2001:db8:1::/64\"]\n\n\
             [store]\npath = \"/tmp/x\"\n\n\
             [udp]\nlisten = [{udp}]\n\n\
             [dataplane]\nbackend = \"{backend}\"\nuplink = \"lo\"\nlocal_address = \"2001:db8:1::1\"\n\n\
             [ipv4]\n{ipv4}"
        )
    }

    fn error(text: &str) -> String {
        Config::from_text(text, Path::new("ha.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn an_ipv4_section_accepts_ipv4_care_of_addresses_at_its_listeners_port() {
        let text = config(
            "\"[::1]:4191\", \"192.0.2.1:4191\"",
            "bpf",
            "address = \"192.0.2.1\"\nnat_keepalive_secs = 25\n",
        );
        let validated = Config::from_text(&text, Path::new("ha.toml")).unwrap();
        assert_eq!(
            validated.ipv4_tunnel,
            Some("192.0.2.1:4191".parse().unwrap())
        );
        assert_eq!(
            validated.engine.ipv4_care_of,
            Ipv4CareOfs::Accepted {
                nat_keepalive: Duration::from_secs(25),
                udp: UdpEncapsulation::WhenNeeded
            }
        );
        // A wildcard listener takes it too; `udp = "always"`.
        let text = config(
            "\"0.0.0.0:5000\"",
            "memory",
            "address = \"192.0.2.1\"\nudp = \"always\"\n",
        );
        let validated = Config::from_text(&text, Path::new("ha.toml")).unwrap();
        assert_eq!(
            validated.ipv4_tunnel,
            Some("192.0.2.1:5000".parse().unwrap())
        );
        assert!(matches!(
            validated.engine.ipv4_care_of,
            Ipv4CareOfs::Accepted {
                udp: UdpEncapsulation::Always,
                ..
            }
        ));
    }

    #[test]
    fn a_bad_ipv4_section_names_its_line() {
        // No listener takes IPv4 to the address.
        let message = error(&config(
            "\"[::1]:4191\"",
            "bpf",
            "address = \"192.0.2.1\"\n",
        ));
        assert!(
            message.starts_with("ha.toml:16: ipv4: address: no [udp] listen address"),
            "{message}"
        );
        let message = error(&config(
            "\"192.0.2.1:4191\"",
            "bpf",
            "address = \"192.0.2.1\"\nnat_keepalive_secs = 0\n",
        ));
        assert!(
            message.starts_with("ha.toml:17: ipv4: nat_keepalive_secs"),
            "{message}"
        );
        let message = error(&config(
            "\"192.0.2.1:4191\"",
            "seg6",
            "address = \"192.0.2.1\"\n",
        ));
        assert!(
            message.contains("ha.toml:11: dataplane: backend \"seg6\" tunnels IPv6 in IPv6 only"),
            "{message}"
        );
        let message = error(&config(
            "\"0.0.0.0:4191\"",
            "bpf",
            "address = \"224.0.0.1\"\n",
        ));
        assert!(message.contains("not a unicast address"), "{message}");
        let message = error(&config(
            "\"0.0.0.0:4191\"",
            "bpf",
            "address = \"192.0.2.1\"\nudp = \"sometimes\"\n",
        ));
        assert!(
            message.contains("line 17") && message.contains("when-needed"),
            "{message}"
        );
    }
}
