//! Watching an interface for its usable global IPv6 address: the mobile
//! router's care-of address. Netlink address events (RTNLGRP_IPV6_IFADDR),
//! not router advertisements or timers, so a new address is seen the moment
//! the kernel has it.

use std::net::{IpAddr, Ipv6Addr};

use futures::{StreamExt, TryStreamExt};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressScope};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::watch;

use crate::DataPlaneError;

fn unavailable(reason: String) -> DataPlaneError {
    DataPlaneError::Unavailable {
        backend: "address monitor",
        reason,
    }
}

/// Every address message of an interface, as the kernel lists them.
pub async fn address_messages(
    handle: &Handle,
    index: u32,
) -> Result<Vec<netlink_packet_route::address::AddressMessage>, DataPlaneError> {
    handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| unavailable(format!("listing addresses: {e}")))
}

/// Whether the kernel delivers packets for `address` locally: its route
/// lookup ends in a local route. An address just added is the host's at
/// once, but its local route comes later, from the kernel's address worker
/// (`addrconf_dad_work`, even without DAD); until then a packet for it is
/// forwarded as if to a neighbour (`vrrp::take_addresses` says what that
/// cost a takeover).
pub async fn delivered_locally(handle: &Handle, address: Ipv6Addr) -> bool {
    use netlink_packet_route::route::RouteType;
    // With a destination, RTM_GETROUTE is a lookup (one answer), not a dump.
    let lookup = rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(address, 128)
        .build();
    // A failed lookup (no route at all yet) is "not yet".
    let answer = handle.route().get(lookup).execute().try_next().await;
    matches!(answer, Ok(Some(route)) if route.header.kind == RouteType::Local)
}

/// The interface's usable global addresses: universe scope, not tentative,
/// not failed duplicate address detection, not deprecated. Sorted.
pub async fn usable_addresses(
    handle: &Handle,
    index: u32,
) -> Result<Vec<Ipv6Addr>, DataPlaneError> {
    let messages = address_messages(handle, index).await?;
    let mut usable: Vec<Ipv6Addr> = messages
        .into_iter()
        .filter(|m| {
            m.header.family == AddressFamily::Inet6 && m.header.scope == AddressScope::Universe
        })
        .filter(|m| m.header.index == index)
        .filter_map(|m| {
            let flags = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Flags(f) => Some(*f),
                _ => None,
            })?;
            if flags.intersects(
                AddressFlags::Tentative | AddressFlags::Dadfailed | AddressFlags::Deprecated,
            ) {
                return None;
            }
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V6(address)) => Some(*address),
                _ => None,
            })
        })
        .collect();
    usable.sort();
    Ok(usable)
}

/// Picks the care-of address: the current one while it stays usable (no
/// needless re-registration), otherwise the first usable one.
pub fn choose(current: Option<Ipv6Addr>, usable: &[Ipv6Addr]) -> Option<Ipv6Addr> {
    match current {
        Some(address) if usable.contains(&address) => Some(address),
        _ => usable.first().copied(),
    }
}

/// The index of an interface by name.
pub async fn interface_index(handle: &Handle, name: &str) -> Result<u32, DataPlaneError> {
    handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
        .map_err(|e| unavailable(format!("interface {name}: {e}")))?
        .map(|link| link.header.index)
        .ok_or_else(|| unavailable(format!("no interface {name}")))
}

/// Watches `interface` and publishes its care-of address (or `None` while it
/// has no usable address) on the returned channel, until the task is
/// dropped. The first value is the current address.
pub async fn watch_care_of(
    interface: &str,
) -> Result<
    (
        watch::Receiver<Option<Ipv6Addr>>,
        tokio::task::JoinHandle<()>,
    ),
    DataPlaneError,
> {
    let (connection, handle, mut events) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv6Ifaddr])
            .map_err(|e| unavailable(format!("subscribing to address events: {e}")))?;
    tokio::spawn(connection);
    let index = interface_index(&handle, interface).await?;
    let first = choose(None, &usable_addresses(&handle, index).await?);
    let (sender, receiver) = watch::channel(first);
    let interface = interface.to_owned();
    let task = tokio::spawn(async move {
        let mut current = first;
        // Any address event may change the choice; events for other
        // interfaces cost one dump, which is cheap next to a movement.
        while events.next().await.is_some() {
            match usable_addresses(&handle, index).await {
                Ok(usable) => {
                    let chosen = choose(current, &usable);
                    if chosen != current {
                        tracing::info!(interface = %interface, from = ?current, to = ?chosen, "care-of address changed");
                        current = chosen;
                        if sender.send(chosen).is_err() {
                            return;
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "re-reading addresses failed"),
            }
        }
    });
    Ok((receiver, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_current_address_while_usable() {
        let a: Ipv6Addr = "2001:db8:2::10".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:3::10".parse().unwrap();
        assert_eq!(choose(Some(b), &[a, b]), Some(b));
        assert_eq!(choose(Some(b), &[a]), Some(a));
        assert_eq!(choose(None, &[a, b]), Some(a));
        assert_eq!(choose(Some(a), &[]), None);
    }
}
