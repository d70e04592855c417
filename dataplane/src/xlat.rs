//! The translator's device and routes (issue 31): an interface of nemo's,
//! `nemo-xlat` (a dummy; an ifb where the kernel has no dummy driver, as
//! this project's machines do not: both are Ethernet devices without ARP,
//! so what is routed there carries the device's own address and comes back
//! in as the device's own), that the home agent routes its IPv4 pools and its
//! translation prefixes to. What the kernel routes there meets the
//! translator at the device's tc egress (`bpf::translator`), which sends it
//! back in at the device's ingress in the other family; the kernel then
//! routes it like any packet it receives. Everything over netlink, the
//! routes with nemo's protocol; the two sysctls the device needs written
//! to /proc/sys.

use std::net::{Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteMetric, RouteProtocol};
use rtnetlink::{Handle, LinkDummy, LinkIfb, LinkUnspec, RouteMessageBuilder};

use crate::linux::{errno, tolerate_exists, tolerate_missing, PROTOCOL};
use crate::DataPlaneError;

/// The device's name.
pub const DEVICE: &str = "nemo-xlat";
/// The device's MTU: as large as the kernel takes, so that only the
/// routes' MTUs (and the paths beyond) bound what is translated.
const DEVICE_MTU: u32 = 65535;
/// RFC 7915 §4.1: the smallest IPv6 MTU assumed on the way to tenants
/// ("lowest-ipv6-mtu", 1280 unless the operator knows better).
pub const LOWEST_IPV6_MTU: u32 = 1280;

fn unavailable(reason: String) -> DataPlaneError {
    DataPlaneError::Unavailable {
        backend: "translator",
        reason,
    }
}

/// The kind of interface the device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A dummy interface (CONFIG_DUMMY).
    Dummy,
    /// An ifb (CONFIG_IFB), where the kernel has no dummy driver.
    Ifb,
    /// There already, made by an earlier run.
    Found,
}

/// The device's index, creating it (up) when missing, with forwarding on
/// and reverse-path filtering off for IPv4 (what comes back in from the
/// translator has sources the routing table sends to other interfaces);
/// and what it was made as.
pub async fn ensure_device(handle: &Handle) -> Result<(u32, DeviceKind), DataPlaneError> {
    let mut kind = DeviceKind::Found;
    if device_index(handle).await?.is_none() {
        kind = DeviceKind::Dummy;
        let mut created = handle
            .link()
            .add(LinkDummy::new(DEVICE).mtu(DEVICE_MTU).build())
            .execute()
            .await;
        // EOPNOTSUPP: no dummy driver in this kernel (said by the caller).
        if matches!(&created, Err(e) if errno(e) == Some(95)) {
            kind = DeviceKind::Ifb;
            created = handle
                .link()
                .add(LinkIfb::new(DEVICE).mtu(DEVICE_MTU).build())
                .execute()
                .await;
        }
        tolerate_exists(created).map_err(|e| {
            unavailable(format!(
                "creating interface {DEVICE} (dummy, or ifb: the kernel needs CONFIG_DUMMY or CONFIG_IFB): {e}"
            ))
        })?;
    }
    let index = device_index(handle)
        .await?
        .ok_or_else(|| unavailable(format!("interface {DEVICE} vanished as it was made")))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| unavailable(format!("bringing {DEVICE} up: {e}")))?;
    for (setting, value) in [("forwarding", "1"), ("rp_filter", "0")] {
        let path = format!("/proc/sys/net/ipv4/conf/{DEVICE}/{setting}");
        std::fs::write(&path, value).map_err(|e| unavailable(format!("writing {path}: {e}")))?;
    }
    Ok((index, kind))
}

/// The device's index, if it exists.
pub async fn device_index(handle: &Handle) -> Result<Option<u32>, DataPlaneError> {
    let found = handle
        .link()
        .get()
        .match_name(DEVICE.to_owned())
        .execute()
        .try_next()
        .await;
    match found {
        Ok(link) => Ok(link.and_then(|l| {
            l.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfName(n) if n == DEVICE))
                .then_some(l.header.index)
        })),
        // ENODEV: no such interface.
        Err(error) if errno(&error) == Some(19) => Ok(None),
        Err(error) => Err(unavailable(format!("looking up {DEVICE}: {error}"))),
    }
}

/// Deletes the device (and with it every route to it).
pub async fn remove_device(handle: &Handle) -> Result<(), DataPlaneError> {
    let Some(index) = device_index(handle).await? else {
        return Ok(());
    };
    tolerate_missing(handle.link().del(index).execute().await)
        .map_err(|e| unavailable(format!("deleting {DEVICE}: {e}")))
}

/// The route of `prefix` to the device (main table, nemo's protocol); an
/// IPv4 pool's with `mtu`, so that what is bigger is fragmented (DF clear)
/// or refused with Fragmentation Needed (DF set) before translation.
/// RTAX_MTU (linux/rtnetlink.h): the bit of the MTU in RTAX_LOCK.
const RTAX_MTU: u32 = 2;

fn route(prefix: IpNet, device: u32, mtu: Option<u32>) -> RouteMessage {
    let mut message = match prefix {
        IpNet::V4(p) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(p.network(), p.prefix_len())
            .output_interface(device)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .build(),
        IpNet::V6(p) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(p.network(), p.prefix_len())
            .output_interface(device)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .build(),
    };
    if let Some(mtu) = mtu {
        // Locked: bpf_fib_lookup (the translator at arrival asks it
        // whether a packet fits) honours a route's MTU only when locked,
        // where forwarding honours it always.
        message.attributes.push(RouteAttribute::Metrics(vec![
            RouteMetric::Mtu(mtu),
            RouteMetric::Lock(1 << RTAX_MTU),
        ]));
    }
    message
}

/// Routes an IPv4 pool to the device. Its MTU: RFC 7915 §4.1's
/// lowest-ipv6-mtu less the 20 octets IPv6 adds and the 8 of a Fragment
/// Header (a fragment of what is bigger carries one).
pub async fn route_pool(
    handle: &Handle,
    device: u32,
    pool: Ipv4Net,
    lowest_ipv6_mtu: u32,
) -> Result<(), DataPlaneError> {
    let mtu = lowest_ipv6_mtu.saturating_sub(28);
    let prefix = IpNet::V4(pool.trunc());
    install(handle, prefix, route(prefix, device, Some(mtu))).await
}

/// Routes a translation prefix to the device.
pub async fn route_translation_prefix(
    handle: &Handle,
    device: u32,
    prefix: Ipv6Net,
) -> Result<(), DataPlaneError> {
    let prefix = IpNet::V6(prefix.trunc());
    install(handle, prefix, route(prefix, device, None)).await
}

/// Takes the route of `prefix` to the device away (gone already is fine).
pub async fn unroute(handle: &Handle, device: u32, prefix: IpNet) -> Result<(), DataPlaneError> {
    tolerate_missing(
        handle
            .route()
            .del(route(prefix.trunc(), device, None))
            .execute()
            .await,
    )
    .map_err(|e| unavailable(format!("removing the route of {prefix} to {DEVICE}: {e}")))
}

async fn install(
    handle: &Handle,
    prefix: IpNet,
    message: RouteMessage,
) -> Result<(), DataPlaneError> {
    handle
        .route()
        .add(message)
        .replace()
        .execute()
        .await
        .map_err(|e| unavailable(format!("routing {prefix} to {DEVICE}: {e}")))
}
