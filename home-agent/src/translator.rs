//! The home site's translator (issue 31): the tenants' IPv4 addresses,
//! mapped by the controller to IPv6 addresses inside their prefixes (RFC
//! 7757), translated here (RFC 7915, `nemo_dataplane::bpf::translator`) so
//! that an IPv4 packet to a tenant becomes an IPv6 packet to its prefix,
//! which the binding then tunnels to wherever the tenant is. The mappings
//! come with each home address's authorization, are cached with it, and
//! are applied here as a set per home address: what left the set is
//! unmapped, what joined it mapped, and each translation prefix is routed
//! to the device while a mapping uses it.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::path::PathBuf;

use anyhow::Context;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nemo_dataplane::bpf::translator::{Mapping, Translator};
use nemo_dataplane::xlat::{self, DeviceKind};
use nemo_dataplane::DataPlaneError;
use nemo_proto::v1 as pb;

/// The cache record's format (version 1): the version, the count (u16 BE),
/// then per mapping the IPv4 block (length, 4 octets), the IPv6 side
/// (length, 16 octets) and the translation prefix (16 octets, a /96).
const FORMAT: u8 = 1;
const MAPPING_OCTETS: usize = 1 + 4 + 1 + 16 + 16;

/// A home address's mappings as the cache keeps them.
pub fn encode_mappings(mappings: &[Mapping]) -> Vec<u8> {
    let count = mappings.len().min(usize::from(u16::MAX));
    let mut out = Vec::with_capacity(3 + MAPPING_OCTETS * count);
    out.push(FORMAT);
    out.extend_from_slice(&(count as u16).to_be_bytes());
    for mapping in &mappings[..count] {
        out.push(mapping.ipv4.prefix_len());
        out.extend_from_slice(&mapping.ipv4.network().octets());
        out.push(mapping.ipv6.prefix_len());
        out.extend_from_slice(&mapping.ipv6.network().octets());
        out.extend_from_slice(&mapping.translation_prefix.network().octets());
    }
    out
}

/// The mappings of a cache record.
pub fn decode_mappings(record: &[u8]) -> Result<Vec<Mapping>, &'static str> {
    let (&version, rest) = record.split_first().ok_or("empty")?;
    if version != FORMAT {
        return Err("unknown format version");
    }
    let count = rest.get(..2).ok_or("no count")?;
    let count = usize::from(u16::from_be_bytes([count[0], count[1]]));
    let body = &rest[2..];
    if body.len() != count * MAPPING_OCTETS {
        return Err("length does not match the count");
    }
    body.chunks(MAPPING_OCTETS)
        .map(|m| {
            let ipv4 = Ipv4Net::new([m[1], m[2], m[3], m[4]].into(), m[0])
                .map_err(|_| "IPv4 length above 32")?;
            let octets = |at: usize| -> [u8; 16] {
                let mut a = [0u8; 16];
                a.copy_from_slice(&m[at..at + 16]);
                a
            };
            let ipv6 = Ipv6Net::new(Ipv6Addr::from(octets(6)), m[5])
                .map_err(|_| "IPv6 length above 128")?;
            let prefix = Ipv6Net::new(Ipv6Addr::from(octets(22)), 96).map_err(|_| "prefix")?;
            Mapping::new(ipv4, ipv6, prefix).map_err(|_| "sides of different sizes")
        })
        .collect()
}

/// The mappings the controller sent with an authorization, checked.
pub fn mappings_of(sent: &[pb::Ipv4Mapping]) -> anyhow::Result<Vec<Mapping>> {
    sent.iter()
        .map(|m| {
            let parsed = (|| {
                Mapping::new(
                    m.ipv4.parse().context("ipv4")?,
                    m.ipv6.parse().context("ipv6")?,
                    m.translation_prefix.parse().context("translation_prefix")?,
                )
                .map_err(anyhow::Error::msg)
            })();
            parsed.with_context(|| format!("ipv4 mapping {}", m.ipv4))
        })
        .collect()
}

/// What the translator runs with (`[translator]` and the data plane's pin
/// folder).
#[derive(Debug, Clone)]
pub struct TranslatorSettings {
    /// The IPv4 pools routed here.
    pub ipv4_pools: Vec<Ipv4Net>,
    /// RFC 7915 §4.1's lowest-ipv6-mtu.
    pub lowest_ipv6_mtu: u32,
    /// RFC 6791's source of ICMPv6 errors from no mapping; IPv4 UDP
    /// without a checksum.
    pub xlat: nemo_dataplane::bpf::translator::XlatConfig,
    /// The interfaces the common case is translated at as it arrives.
    pub arrival_interfaces: Vec<String>,
    /// Where the data plane pins its maps (the translator's beside them).
    pub pin_dir: PathBuf,
}

/// The translator running: its program, its device, and what it maps.
#[derive(Debug)]
pub struct Translating {
    translator: Translator,
    netlink: rtnetlink::Handle,
    device: u32,
    /// Each home address's mappings, as last applied.
    by_home: HashMap<Ipv6Addr, Vec<Mapping>>,
    /// Which home address an IPv4 block is mapped for now: a block the
    /// controller moved between tenants is unmapped only by its holder.
    holders: HashMap<Ipv4Net, Ipv6Addr>,
    /// Mappings using each translation prefix (routed while above 0).
    prefixes: HashMap<Ipv6Net, usize>,
}

impl Translating {
    /// Makes the device (saying loudly when the kernel has no dummy
    /// driver), routes the pools to it, loads the program there (its maps
    /// pinned: a restart translates on), forgets what the maps hold and
    /// `cached` does not, and maps `cached`.
    pub async fn start(
        settings: &TranslatorSettings,
        netlink: rtnetlink::Handle,
        cached: Vec<(Ipv6Addr, Vec<Mapping>)>,
    ) -> anyhow::Result<Translating> {
        let (device, kind) = xlat::ensure_device(&netlink).await?;
        if kind == DeviceKind::Ifb {
            tracing::warn!(
                device = xlat::DEVICE,
                "this kernel has no dummy driver (CONFIG_DUMMY): the translator's device is an ifb"
            );
        }
        for pool in &settings.ipv4_pools {
            xlat::route_pool(&netlink, device, *pool, settings.lowest_ipv6_mtu).await?;
        }
        let translator = Translator::load(Some(&settings.pin_dir))
            .context("loading the translator's BPF program")?;
        translator.configure(&settings.xlat)?;
        translator.attach(device)?;
        for name in &settings.arrival_interfaces {
            let index = nemo_dataplane::addresses::interface_index(&netlink, name).await?;
            translator
                .attach_at_arrival(index)
                .with_context(|| format!("[translator] arrival_interfaces: {name}"))?;
        }
        // The prefixes are given again with the mappings below.
        for prefix in translator.translation_prefixes() {
            translator.remove_translation_prefix(prefix)?;
        }
        let mut translating = Translating {
            translator,
            netlink,
            device,
            by_home: HashMap::new(),
            holders: HashMap::new(),
            prefixes: HashMap::new(),
        };
        let wanted: std::collections::HashSet<Mapping> =
            cached.iter().flat_map(|(_, m)| m.iter().copied()).collect();
        let stale: Vec<Mapping> = translating
            .translator
            .mappings()
            .into_iter()
            .filter(|m| !wanted.contains(m))
            .collect();
        for mapping in &stale {
            translating.translator.unmap(mapping)?;
        }
        let count = wanted.len();
        for (home_address, mappings) in cached {
            translating.set(home_address, mappings).await?;
        }
        tracing::info!(
            device = xlat::DEVICE,
            pools = ?settings.ipv4_pools,
            at_arrival = ?settings.arrival_interfaces,
            mappings = count,
            removed_stale = stale.len(),
            "translating tenants' IPv4 addresses (RFC 7915)"
        );
        Ok(translating)
    }

    /// Makes `mappings` the set translated for `home_address` (empty: its
    /// tenant has none, or is no longer authorized).
    pub async fn set(
        &mut self,
        home_address: Ipv6Addr,
        mappings: Vec<Mapping>,
    ) -> Result<(), DataPlaneError> {
        let before = self.by_home.remove(&home_address).unwrap_or_default();
        // What is applied, kept however far this gets: a failure half way
        // leaves the record saying what the kernel holds, so that the next
        // update neither counts a prefix twice nor forgets a mapping.
        let mut applied: Vec<Mapping> = Vec::with_capacity(mappings.len());
        let outcome = self
            .apply(home_address, &before, &mappings, &mut applied)
            .await;
        if !applied.is_empty() {
            self.by_home.insert(home_address, applied);
        }
        outcome
    }

    async fn apply(
        &mut self,
        home_address: Ipv6Addr,
        before: &[Mapping],
        mappings: &[Mapping],
        applied: &mut Vec<Mapping>,
    ) -> Result<(), DataPlaneError> {
        applied.extend(before.iter().copied());
        for gone in before.iter().filter(|m| !mappings.contains(m)) {
            if self.holders.get(&gone.ipv4) == Some(&home_address) {
                self.translator.unmap(gone)?;
                self.holders.remove(&gone.ipv4);
            }
            applied.retain(|m| m != gone);
            self.release_prefix(gone.translation_prefix).await?;
        }
        for new in mappings.iter().filter(|m| !before.contains(m)) {
            if !self.prefixes.contains_key(&new.translation_prefix) {
                xlat::route_translation_prefix(&self.netlink, self.device, new.translation_prefix)
                    .await?;
                self.translator
                    .add_translation_prefix(new.translation_prefix)?;
            }
            self.translator.map(new)?;
            *self.prefixes.entry(new.translation_prefix).or_default() += 1;
            self.holders.insert(new.ipv4, home_address);
            applied.push(*new);
            tracing::info!(%home_address, ipv4 = %new.ipv4, ipv6 = %new.ipv6, "translating");
        }
        Ok(())
    }

    async fn release_prefix(&mut self, prefix: Ipv6Net) -> Result<(), DataPlaneError> {
        if let Some(users) = self.prefixes.get_mut(&prefix) {
            *users = users.saturating_sub(1);
            if *users == 0 {
                self.prefixes.remove(&prefix);
                self.translator.remove_translation_prefix(prefix)?;
                xlat::unroute(&self.netlink, self.device, IpNet::V6(prefix)).await?;
            }
        }
        Ok(())
    }

    /// The translator's counters by name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self.translator.counters()
    }

    /// How many mappings are translated.
    pub fn mapped(&self) -> usize {
        self.holders.len()
    }
}

/// Applies each home address's mappings as they come, until the sender
/// goes; publishes the counters.
pub async fn run(
    mut translating: Translating,
    mut updates: tokio::sync::mpsc::Receiver<(Ipv6Addr, Vec<Mapping>)>,
    packets: prometheus_client::metrics::family::Family<
        nemo_daemon::PacketCounterLabel,
        prometheus_client::metrics::gauge::Gauge,
    >,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            update = updates.recv() => {
                let Some((home_address, mappings)) = update else { return };
                if let Err(error) = translating.set(home_address, mappings).await {
                    tracing::error!(%home_address, %error, "translator not updated");
                }
            }
            _ = tick.tick() => {
                for (name, value) in translating.counters() {
                    packets
                        .get_or_create(&nemo_daemon::PacketCounterLabel { counter: name.to_owned() })
                        .set(i64::try_from(value).unwrap_or(i64::MAX));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_to_what_was_encoded_and_damage_is_named() {
        let mappings = vec![
            Mapping::new(
                "192.0.2.10/32".parse().unwrap(),
                "2001:db8:100::10/128".parse().unwrap(),
                "64:ff9b::/96".parse().unwrap(),
            )
            .unwrap(),
            Mapping::new(
                "192.0.2.20/30".parse().unwrap(),
                "2001:db8:100::20/126".parse().unwrap(),
                "2001:db8:64::/96".parse().unwrap(),
            )
            .unwrap(),
        ];
        let record = encode_mappings(&mappings);
        assert_eq!(decode_mappings(&record), Ok(mappings));
        assert_eq!(
            decode_mappings(&record[..record.len() - 1]),
            Err("length does not match the count")
        );
        assert_eq!(decode_mappings(&[9]), Err("unknown format version"));
        assert_eq!(decode_mappings(&[]), Err("empty"));
    }
}
