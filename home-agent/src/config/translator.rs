//! `[translator]`: the tenants' IPv4 addresses, translated here (RFC 7915)
//! to the IPv6 addresses the controller maps them to (RFC 7757), so that
//! they follow the tenants wherever their binding points (issue 31).
//!
//! ```toml
//! [translator]
//! ipv4_pools = ["192.0.2.128/25"]
//! lowest_ipv6_mtu = 1280
//! icmp_source = "192.0.2.1"
//! udp_zero_checksum = "compute"
//! arrival_interfaces = ["eth0"]
//! ```

use std::ops::Range;

use ipnet::Ipv4Net;
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, DataPlaneBackend};

/// `[translator]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslatorSection {
    /// The IPv4 pools the operator routes to this home agent (to a pair:
    /// to its shared address): each is routed to the translator's device
    /// here. Mapped addresses outside them are translated only if routed
    /// here some other way.
    pub ipv4_pools: Spanned<Vec<Ipv4Net>>,
    /// RFC 7915 §4.1's "lowest-ipv6-mtu": the smallest IPv6 MTU on the way
    /// to the tenants. An IPv4 packet that would not fit once translated
    /// (with a Fragment Header) is fragmented here when it may be, refused
    /// with Fragmentation Needed when it may not.
    #[serde(default = "default_mtu")]
    pub lowest_ipv6_mtu: Spanned<u32>,
    /// The IPv4 source of ICMPv6 errors from addresses no mapping holds
    /// (RFC 6791): a Packet Too Big or Time Exceeded from this home agent
    /// or a router on the IPv6 side reaches the IPv4 peer from it. Without
    /// it they are dropped (counted icmp_unmapped_source), and path MTU
    /// discovery across the translator rests on the pools' route MTU.
    #[serde(default)]
    pub icmp_source: Option<Spanned<std::net::Ipv4Addr>>,
    /// What an IPv4 UDP datagram without a checksum gets (RFC 7915 §4.5):
    /// "compute" (the default: its IPv6 checksum computed, up to 9216
    /// octets) or "drop" (counted udp_zero_checksum). A first fragment
    /// without one is dropped either way.
    #[serde(default)]
    pub udp_zero_checksum: UdpZeroChecksumSetting,
    /// The interfaces packets to be translated arrive on: the IPv4 side,
    /// and the uplink, where the tenants' tunnels end. There the common
    /// case (not a fragment, no options, TCP, UDP or ICMP Echo, within the
    /// route's MTU) is translated as it arrives and forwarded once; the
    /// rest goes through the device (forwarded twice: slower). Default:
    /// the data plane's uplink; `[]`: everything through the device.
    #[serde(default)]
    pub arrival_interfaces: Option<Spanned<Vec<String>>>,
}

/// `udp_zero_checksum`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UdpZeroChecksumSetting {
    /// RFC 7915 §4.5's option 2.
    #[default]
    Compute,
    /// Option 1.
    Drop,
}

impl UdpZeroChecksumSetting {
    /// The data plane's value.
    pub fn dataplane(self) -> nemo_dataplane::bpf::translator::UdpZeroChecksum {
        match self {
            UdpZeroChecksumSetting::Compute => {
                nemo_dataplane::bpf::translator::UdpZeroChecksum::Compute
            }
            UdpZeroChecksumSetting::Drop => nemo_dataplane::bpf::translator::UdpZeroChecksum::Drop,
        }
    }
}

fn default_mtu() -> Spanned<u32> {
    Spanned::new(0..0, nemo_dataplane::xlat::LOWEST_IPV6_MTU)
}

/// Most pools one home agent routes to its translator.
pub const MAX_POOLS: usize = 256;

/// Most interfaces the translator runs at arrival on.
pub const MAX_ARRIVAL_INTERFACES: usize = 16;

impl TranslatorSection {
    /// Checks the section: pools of IPv4 addresses a tenant may have, no
    /// host bits, apart from each other; an MTU IPv6 allows; the bpf data
    /// plane (the translator is a BPF program).
    pub fn validate(
        &self,
        backend: &Spanned<DataPlaneBackend>,
        invalid: &impl Fn(Range<usize>, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let pools = self.ipv4_pools.get_ref();
        let span = self.ipv4_pools.span();
        if pools.is_empty() || pools.len() > MAX_POOLS {
            return Err(invalid(
                span,
                format!("translator: ipv4_pools: 1-{MAX_POOLS} IPv4 prefixes"),
            ));
        }
        for (n, pool) in pools.iter().enumerate() {
            if *pool != pool.trunc() {
                return Err(invalid(
                    span.clone(),
                    format!(
                        "translator: ipv4_pools: {pool} has host bits set; did you mean {}?",
                        pool.trunc()
                    ),
                ));
            }
            let special = pool.network().is_loopback()
                || pool.network().is_multicast()
                || pool.network().octets()[0] == 0
                || pool.network().octets()[0] >= 240;
            if special {
                return Err(invalid(
                    span.clone(),
                    format!("translator: ipv4_pools: {pool} holds no address a tenant can have"),
                ));
            }
            if let Some(other) = pools[..n]
                .iter()
                .find(|o| o.contains(&pool.network()) || pool.contains(&o.network()))
            {
                return Err(invalid(
                    span.clone(),
                    format!("translator: ipv4_pools: {pool} overlaps {other}"),
                ));
            }
        }
        if let Some(source) = &self.icmp_source {
            if !nemo::ha::dsmip::is_unicast_ipv4(*source.get_ref()) {
                return Err(invalid(
                    source.span(),
                    format!(
                        "translator: icmp_source: {} is not a unicast address",
                        source.get_ref()
                    ),
                ));
            }
        }
        if let Some(interfaces) = &self.arrival_interfaces {
            if interfaces.get_ref().len() > MAX_ARRIVAL_INTERFACES {
                return Err(invalid(
                    interfaces.span(),
                    format!("translator: arrival_interfaces: at most {MAX_ARRIVAL_INTERFACES}"),
                ));
            }
            for name in interfaces.get_ref() {
                nemo_daemon::check_interface(name).map_err(|e| {
                    invalid(
                        interfaces.span(),
                        format!("translator: arrival_interfaces: {e}"),
                    )
                })?;
            }
        }
        let mtu = *self.lowest_ipv6_mtu.get_ref();
        if !(1280..=65535).contains(&mtu) {
            return Err(invalid(
                self.lowest_ipv6_mtu.span(),
                "translator: lowest_ipv6_mtu: 1280 (IPv6's minimum, RFC 8200 §5) to 65535".into(),
            ));
        }
        if matches!(
            backend.get_ref(),
            DataPlaneBackend::Seg6 | DataPlaneBackend::Memory
        ) {
            return Err(invalid(
                backend.span(),
                format!(
                    "dataplane: backend \"{}\": [translator] needs backend \"bpf\" (or \"auto\", \
                     which must then find bpf): the translator is a BPF program",
                    backend.get_ref().name()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::UdpZeroChecksumSetting;

    fn config(backend: &str, translator: &str) -> String {
        format!(
            "[home_agent]\nhome_prefixes = [\"2001:db8:1::/64\"]\n\n\
             [store]\npath = \"/tmp/x\"\n\n\
             [udp]\nlisten = [\"[::1]:4191\"]\n\n\
             [dataplane]\nbackend = \"{backend}\"\nuplink = \"lo\"\nlocal_address = \"2001:db8:1::1\"\n\n\
             {CONTROLLER}\
             [translator]\n{translator}"
        )
    }

    const CONTROLLER: &str = "[controller]\nendpoint = \"http://[::1]:50051\"\n\
        token_file = \"/nonexistent\"\nhome_agent = \"ha1\"\n\n";

    fn error(text: &str) -> String {
        Config::from_text(text, Path::new("ha.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_translator_section_is_checked_line_by_line() {
        let good = config("bpf", "ipv4_pools = [\"192.0.2.128/25\"]\n");
        let validated = Config::from_text(&good, Path::new("ha.toml")).unwrap();
        let section = validated.config.translator.unwrap();
        assert_eq!(*section.lowest_ipv6_mtu.get_ref(), 1280);
        assert_eq!(section.udp_zero_checksum, UdpZeroChecksumSetting::Compute);
        let dropping = config(
            "bpf",
            "ipv4_pools = [\"192.0.2.128/25\"]\nudp_zero_checksum = \"drop\"\n",
        );
        let validated = Config::from_text(&dropping, Path::new("ha.toml")).unwrap();
        assert_eq!(
            validated.config.translator.unwrap().udp_zero_checksum,
            UdpZeroChecksumSetting::Drop
        );
        for (translator, backend, expected) in [
            ("ipv4_pools = []\n", "bpf", "ipv4_pools: 1-256"),
            ("ipv4_pools = [\"192.0.2.129/25\"]\n", "bpf", "host bits"),
            ("ipv4_pools = [\"127.0.0.0/8\"]\n", "bpf", "no address"),
            (
                "ipv4_pools = [\"192.0.2.0/24\", \"192.0.2.128/25\"]\n",
                "bpf",
                "overlaps",
            ),
            (
                "ipv4_pools = [\"192.0.2.0/24\"]\nlowest_ipv6_mtu = 1200\n",
                "bpf",
                "lowest_ipv6_mtu",
            ),
            (
                "ipv4_pools = [\"192.0.2.0/24\"]\n",
                "seg6",
                "needs backend \"bpf\"",
            ),
            (
                "ipv4_pools = [\"192.0.2.0/24\"]\nnat64 = true\n",
                "bpf",
                "unknown field",
            ),
            ("ipv4_pools = [\"2001:db8::/32\"]\n", "bpf", "ipv4_pools"),
            (
                "ipv4_pools = [\"192.0.2.0/24\"]\nicmp_source = \"224.0.0.1\"\n",
                "bpf",
                "icmp_source",
            ),
            (
                "ipv4_pools = [\"192.0.2.0/24\"]\nudp_zero_checksum = \"fix\"\n",
                "bpf",
                "udp_zero_checksum",
            ),
            (
                "ipv4_pools = [\"192.0.2.0/24\"]\narrival_interfaces = [\"a/b\"]\n",
                "bpf",
                "arrival_interfaces",
            ),
            (
                &format!(
                    "ipv4_pools = [\"192.0.2.0/24\"]\narrival_interfaces = [{}]\n",
                    vec!["\"lo\""; super::MAX_ARRIVAL_INTERFACES + 1].join(", ")
                ),
                "bpf",
                "arrival_interfaces: at most 16",
            ),
        ] {
            let message = error(&config(backend, translator));
            assert!(message.contains(expected), "{translator}: {message}");
            // Every refusal names the file and its line.
            assert!(message.contains("ha.toml:"), "{message}");
        }
        // The mappings come from the controller: none, no translator.
        let alone = config("bpf", "ipv4_pools = [\"192.0.2.0/24\"]\n").replace(CONTROLLER, "");
        assert!(
            error(&alone).contains("[controller] is needed"),
            "{}",
            error(&alone)
        );
    }
}
