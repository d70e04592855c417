//! The stateless IPv4/IPv6 translator (RFC 7915) for tenants' IPv4
//! addresses (`dataplane/bpf/translator.bpf.c`): its mappings in two LPM
//! tries (one per direction), its drop counters by reason, its program at
//! tc egress of the device the home agent routes its IPv4 pools and
//! translation prefixes to, and the same program's common case at tc
//! ingress of the interfaces packets to be translated arrive on (forwarded
//! once instead of twice).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use ipnet::{Ipv4Net, Ipv6Net};
use libbpf_rs::{MapCore, MapFlags, MapHandle, Object};

use super::{object_map, open_object, percpu_sum, program_fd, run_program, unavailable};
use crate::DataPlaneError;

/// The compiled translator (clang, at build time).
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/translator.bpf.o"));

/// The programs' names in the object.
const PROGRAM: &str = "nemo_translate";
const AT_ARRIVAL: &str = "nemo_translate_at_arrival";
/// The maps (nemo_xlat.h).
const EAM4: &str = "nemo_eam4";
const EAM6: &str = "nemo_eam6";
const COUNTERS: &str = "nemo_xlat_counters";
const CONFIG: &str = "nemo_xlat_config";
const PREFIXES: &str = "nemo_xlat_prefixes";
/// `struct nemo_ipv4_prefix`, `struct nemo_ipv6_prefix`.
const KEY4_SIZE: usize = 4 + 4;
const KEY6_SIZE: usize = 4 + 16;
/// `struct nemo_eam4`, `struct nemo_eam6`.
const EAM4_SIZE: usize = 16 + 12 + 4;
const EAM6_SIZE: usize = 4 + 12 + 4;
/// `struct nemo_xlat_config`.
const CONFIG_SIZE: usize = 4 + 4 + 4;

/// One Explicit Address Mapping (RFC 7757 §3.1) and the translation prefix
/// its tenant sees IPv4 peers in (RFC 6052 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// The IPv4 block.
    pub ipv4: Ipv4Net,
    /// The IPv6 side: as many addresses (its length is 96 + the block's).
    pub ipv6: Ipv6Net,
    /// A /96.
    pub translation_prefix: Ipv6Net,
}

impl Mapping {
    /// The mapping, if its sides are the same size and its translation
    /// prefix a /96.
    pub fn new(
        ipv4: Ipv4Net,
        ipv6: Ipv6Net,
        translation_prefix: Ipv6Net,
    ) -> Result<Mapping, String> {
        if u32::from(ipv6.prefix_len()) != 96 + u32::from(ipv4.prefix_len()) {
            return Err(format!(
                "{ipv4} and {ipv6} are not the same size (RFC 7757 §3.2)"
            ));
        }
        if translation_prefix.prefix_len() != 96 {
            return Err(format!(
                "translation prefix {translation_prefix}: not a /96"
            ));
        }
        Ok(Mapping {
            ipv4: ipv4.trunc(),
            ipv6: ipv6.trunc(),
            translation_prefix: translation_prefix.trunc(),
        })
    }
}

/// What an IPv4 UDP datagram without a checksum gets (RFC 7915 §4.5's
/// configuration function; `enum nemo_udp_zero_checksum`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UdpZeroChecksum {
    /// Its IPv6 checksum computed (the payload read: slower).
    #[default]
    Compute,
    /// Dropped, counted `udp_zero_checksum`.
    Drop,
}

/// How the translator treats what it cannot translate from a mapping alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XlatConfig {
    /// The IPv4 address ICMPv6 errors from addresses no mapping holds
    /// leave from (RFC 6791: a router on the IPv6 side, this host
    /// itself); `None` drops them.
    pub icmp_source: Option<Ipv4Addr>,
    /// IPv4 UDP without a checksum.
    pub udp_zero_checksum: UdpZeroChecksum,
}

impl XlatConfig {
    /// The map's value, with the device the program is attached to.
    fn value(&self, device: u32) -> [u8; CONFIG_SIZE] {
        let mut value = [0u8; CONFIG_SIZE];
        value[..4].copy_from_slice(&self.icmp_source.map_or([0u8; 4], |a| a.octets()));
        value[4] = match self.udp_zero_checksum {
            UdpZeroChecksum::Compute => 0,
            UdpZeroChecksum::Drop => 1,
        };
        value[8..].copy_from_slice(&device.to_ne_bytes());
        value
    }
}

/// Why the translator dropped a packet, or what it translated (the slots
/// of `nemo_xlat_counters`, nemo_xlat.h's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XlatCounter {
    /// IPv4 packets translated to IPv6.
    Translated4to6,
    /// IPv6 packets translated to IPv4.
    Translated6to4,
    /// To (from) an IPv4 (IPv6) address no mapping holds.
    Unmapped,
    /// An IPv6 peer outside the mapping's translation prefix.
    OtherPrefix,
    /// A non-global IPv4 peer in the well-known prefix (RFC 6052 §3.1).
    NotGlobal,
    /// An address no packet may carry (RFC 7915 §4.1, §5.1).
    IllegalAddress,
    /// An ICMP fragment (its ICMPv6 checksum sums the whole message's
    /// length, unknown to a stateless translator), or a Fragment header
    /// followed by another extension header (RFC 7915 §5.1.1).
    Fragment,
    /// IPv4 options in a packet in error quoted by an ICMPv4 error.
    Ipv4Options,
    /// ICMPv4 inside IPv6; frames neither IPv4 nor IPv6.
    Protocol,
    /// ICMP types RFC 7915 drops (or errors about errors).
    IcmpUntranslated,
    /// IPv4 UDP without a checksum (RFC 7915 §4.5): configured to drop
    /// it, in a fragment, or longer than the translator sums.
    UdpZeroChecksum,
    /// Truncated, or lengths that disagree.
    Malformed,
    /// A kernel helper refused.
    Failed,
    /// The device's own link-local and multicast traffic.
    Local,
    /// An ICMPv6 error from an address no mapping holds, with no RFC 6791
    /// address to send it from.
    IcmpUnmappedSource,
    /// An unexpired IPv4 source route, an IPv6 Routing header with
    /// segments left (RFC 7915 §4.1, §5.1).
    SourceRoute,
    /// Of the packets translated (both ways), those translated where they
    /// arrived rather than at the device.
    AtArrival,
}

impl XlatCounter {
    /// Every counter, in slot order.
    pub const ALL: [XlatCounter; 17] = [
        XlatCounter::Translated4to6,
        XlatCounter::Translated6to4,
        XlatCounter::Unmapped,
        XlatCounter::OtherPrefix,
        XlatCounter::NotGlobal,
        XlatCounter::IllegalAddress,
        XlatCounter::Fragment,
        XlatCounter::Ipv4Options,
        XlatCounter::Protocol,
        XlatCounter::IcmpUntranslated,
        XlatCounter::UdpZeroChecksum,
        XlatCounter::Malformed,
        XlatCounter::Failed,
        XlatCounter::Local,
        XlatCounter::IcmpUnmappedSource,
        XlatCounter::SourceRoute,
        XlatCounter::AtArrival,
    ];

    /// Its name, as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            XlatCounter::Translated4to6 => "translated_4to6",
            XlatCounter::Translated6to4 => "translated_6to4",
            XlatCounter::Unmapped => "unmapped",
            XlatCounter::OtherPrefix => "other_prefix",
            XlatCounter::NotGlobal => "not_global",
            XlatCounter::IllegalAddress => "illegal_address",
            XlatCounter::Fragment => "fragment",
            XlatCounter::Ipv4Options => "ipv4_options",
            XlatCounter::Protocol => "protocol",
            XlatCounter::IcmpUntranslated => "icmp_untranslated",
            XlatCounter::UdpZeroChecksum => "udp_zero_checksum",
            XlatCounter::Malformed => "malformed",
            XlatCounter::Failed => "failed",
            XlatCounter::Local => "local",
            XlatCounter::IcmpUnmappedSource => "icmp_unmapped_source",
            XlatCounter::SourceRoute => "source_route",
            XlatCounter::AtArrival => "at_arrival",
        }
    }

    fn slot(self) -> u32 {
        XlatCounter::ALL
            .iter()
            .position(|c| *c == self)
            .unwrap_or_default() as u32
    }
}

fn prefix_key(prefix: Ipv6Net) -> [u8; 12] {
    let mut key = [0u8; 12];
    key.copy_from_slice(&prefix.trunc().network().octets()[..12]);
    key
}

fn key4(prefix: Ipv4Net) -> [u8; KEY4_SIZE] {
    let mut key = [0u8; KEY4_SIZE];
    key[..4].copy_from_slice(&u32::from(prefix.prefix_len()).to_ne_bytes());
    key[4..].copy_from_slice(&prefix.network().octets());
    key
}

fn key6(prefix: Ipv6Net) -> [u8; KEY6_SIZE] {
    let mut key = [0u8; KEY6_SIZE];
    key[..4].copy_from_slice(&u32::from(prefix.prefix_len()).to_ne_bytes());
    key[4..].copy_from_slice(&prefix.network().octets());
    key
}

fn eam4_value(mapping: &Mapping) -> [u8; EAM4_SIZE] {
    let mut value = [0u8; EAM4_SIZE];
    value[..16].copy_from_slice(&mapping.ipv6.network().octets());
    value[16..28].copy_from_slice(&mapping.translation_prefix.network().octets()[..12]);
    value[28] = mapping.ipv6.prefix_len();
    value
}

fn eam6_value(mapping: &Mapping) -> [u8; EAM6_SIZE] {
    let mut value = [0u8; EAM6_SIZE];
    value[..4].copy_from_slice(&mapping.ipv4.network().octets());
    value[4..16].copy_from_slice(&mapping.translation_prefix.network().octets()[..12]);
    value[16] = mapping.ipv4.prefix_len();
    value
}

/// The mapping an `nemo_eam4` entry holds.
fn eam4_mapping(key: &[u8], value: &[u8]) -> Option<Mapping> {
    let length = u8::try_from(u32::from_ne_bytes(key.get(..4)?.try_into().ok()?)).ok()?;
    let ipv4: [u8; 4] = key.get(4..8)?.try_into().ok()?;
    let ipv6: [u8; 16] = value.get(..16)?.try_into().ok()?;
    let mut translation = [0u8; 16];
    translation[..12].copy_from_slice(value.get(16..28)?);
    Mapping::new(
        Ipv4Net::new(Ipv4Addr::from(ipv4), length).ok()?,
        Ipv6Net::new(Ipv6Addr::from(ipv6), *value.get(28)?).ok()?,
        Ipv6Net::new(Ipv6Addr::from(translation), 96).ok()?,
    )
    .ok()
}

/// The loaded translator and its maps.
#[derive(Debug)]
pub struct Translator {
    object: Object,
    eam4: MapHandle,
    eam6: MapHandle,
    counters: MapHandle,
    config: MapHandle,
    prefixes: MapHandle,
    /// What `configure` last set and the device `attach` attached to:
    /// one map value holds both.
    settings: std::cell::Cell<(XlatConfig, u32)>,
}

impl Translator {
    /// Loads the translator; with `pin_dir` its maps are pinned there (a
    /// restarted daemon translates on with the mappings it left).
    pub fn load(pin_dir: Option<&Path>) -> Result<Translator, DataPlaneError> {
        if let Some(dir) = pin_dir {
            super::check_pin_dir(dir)?;
            // The mappings keep their layout; counters and the ICMP source
            // are set again at start.
            super::drop_incompatible(
                dir,
                &[
                    (COUNTERS, 4, 8, Some(XlatCounter::ALL.len())),
                    (CONFIG, 4, CONFIG_SIZE, Some(1)),
                ],
            );
        }
        let object = open_object(OBJECT, pin_dir)?;
        let eam4 = object_map(&object, EAM4, KEY4_SIZE, EAM4_SIZE)?;
        let eam6 = object_map(&object, EAM6, KEY6_SIZE, EAM6_SIZE)?;
        let counters = object_map(&object, COUNTERS, 4, 8)?;
        let config = object_map(&object, CONFIG, 4, CONFIG_SIZE)?;
        let prefixes = object_map(&object, PREFIXES, 12, 1)?;
        if counters.max_entries() as usize != XlatCounter::ALL.len() {
            return Err(unavailable(format!(
                "map {COUNTERS}: {} counters in the object, {} in translator.rs",
                counters.max_entries(),
                XlatCounter::ALL.len()
            )));
        }
        Ok(Translator {
            object,
            eam4,
            eam6,
            counters,
            config,
            prefixes,
            settings: std::cell::Cell::new((XlatConfig::default(), 0)),
        })
    }

    /// Translates `mapping` from now on (both directions; a mapping of the
    /// same IPv4 block replaced).
    pub fn map(&self, mapping: &Mapping) -> Result<(), DataPlaneError> {
        let refused = |e: libbpf_rs::Error| super::refused("map", mapping.ipv6, e);
        // The return direction first: a packet translated in must find its
        // way back.
        self.eam6
            .update(&key6(mapping.ipv6), &eam6_value(mapping), MapFlags::ANY)
            .map_err(refused)?;
        self.eam4
            .update(&key4(mapping.ipv4), &eam4_value(mapping), MapFlags::ANY)
            .map_err(refused)
    }

    /// Sets what the translator does beyond its mappings.
    pub fn configure(&self, config: &XlatConfig) -> Result<(), DataPlaneError> {
        let (_, device) = self.settings.get();
        self.write_settings(*config, device)
    }

    fn write_settings(&self, config: XlatConfig, device: u32) -> Result<(), DataPlaneError> {
        self.config
            .update(&0u32.to_ne_bytes(), &config.value(device), MapFlags::ANY)
            .map_err(|e| unavailable(format!("configuring the translator: {e}")))?;
        self.settings.set((config, device));
        Ok(())
    }

    /// Says the program at arrival may translate packets to `prefix` (a
    /// translation prefix now routed to the device).
    pub fn add_translation_prefix(&self, prefix: Ipv6Net) -> Result<(), DataPlaneError> {
        self.prefixes
            .update(&prefix_key(prefix), &[1], MapFlags::ANY)
            .map_err(|e| super::refused("translation prefix", prefix, e))
    }

    /// Takes `prefix` back (nothing if it was not there).
    pub fn remove_translation_prefix(&self, prefix: Ipv6Net) -> Result<(), DataPlaneError> {
        match self.prefixes.delete(&prefix_key(prefix)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(super::refused("translation prefix", prefix, e)),
        }
    }

    /// The translation prefixes the program at arrival knows.
    pub fn translation_prefixes(&self) -> Vec<Ipv6Net> {
        self.prefixes
            .keys()
            .filter_map(|key| {
                let mut octets = [0u8; 16];
                octets[..12].copy_from_slice(key.get(..12)?);
                Ipv6Net::new(Ipv6Addr::from(octets), 96).ok()
            })
            .collect()
    }

    /// Stops translating `mapping` (nothing if it was not translated).
    pub fn unmap(&self, mapping: &Mapping) -> Result<(), DataPlaneError> {
        for (map, key) in [
            (&self.eam4, key4(mapping.ipv4).to_vec()),
            (&self.eam6, key6(mapping.ipv6).to_vec()),
        ] {
            match map.delete(&key) {
                Ok(()) => {}
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                Err(e) => return Err(super::refused("unmap", mapping.ipv6, e)),
            }
        }
        Ok(())
    }

    /// Every mapping translated now.
    pub fn mappings(&self) -> Vec<Mapping> {
        self.eam4
            .keys()
            .filter_map(|key| {
                let value = self.eam4.lookup(&key, MapFlags::ANY).ok()??;
                eam4_mapping(&key, &value)
            })
            .collect()
    }

    /// A counter, summed over the CPUs.
    pub fn counter(&self, counter: XlatCounter) -> u64 {
        percpu_sum(&self.counters, counter.slot())
    }

    /// Every counter by its name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        XlatCounter::ALL
            .iter()
            .map(|c| (c.name(), self.counter(*c)))
            .collect()
    }

    /// The program, to attach it.
    pub fn fd(&self) -> Result<OwnedFd, DataPlaneError> {
        program_fd(&self.object, PROGRAM)
    }

    /// Attaches the program at tc egress of the device `interface`
    /// (replacing one there), and tells the program at arrival that what
    /// is routed there is to be translated.
    pub fn attach(&self, interface: u32) -> Result<(), DataPlaneError> {
        let fd = self.fd()?;
        super::routes::attach_tc(super::TcHook::Translate, interface, fd.as_fd())?;
        let (config, _) = self.settings.get();
        self.write_settings(config, interface)
    }

    /// Attaches the common case at tc ingress of `interface`, where
    /// packets to be translated arrive (after the decapsulation program
    /// if the interface has it).
    pub fn attach_at_arrival(&self, interface: u32) -> Result<(), DataPlaneError> {
        let fd = program_fd(&self.object, AT_ARRIVAL)?;
        super::routes::attach_tc(super::TcHook::TranslateAtArrival, interface, fd.as_fd())
    }

    /// Runs the program once on `frame` (an Ethernet frame): its verdict
    /// and the frame as it left.
    pub fn test_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), DataPlaneError> {
        run_program(&self.object, PROGRAM, frame)
    }

    /// The same with the program at arrival.
    pub fn test_run_at_arrival(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), DataPlaneError> {
        run_program(&self.object, AT_ARRIVAL, frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_as_the_mapping_written() {
        let mapping = Mapping::new(
            "192.0.2.8/30".parse().unwrap(),
            "2001:db8:100::8/126".parse().unwrap(),
            "2001:db8:64::/96".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            eam4_mapping(&key4(mapping.ipv4), &eam4_value(&mapping)),
            Some(mapping)
        );
        assert!(Mapping::new(
            "192.0.2.8/30".parse().unwrap(),
            "2001:db8:100::8/128".parse().unwrap(),
            "2001:db8:64::/96".parse().unwrap(),
        )
        .is_err());
    }
}
