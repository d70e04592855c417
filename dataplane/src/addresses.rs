//! Watching an interface for its usable global address: the mobile
//! router's care-of address, IPv6, or IPv4 where its home agent takes IPv4
//! care-of addresses (RFC 5555 §4.4.1: IPv6 preferred). Netlink address
//! events (RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV4_IFADDR), not router
//! advertisements or timers, so a new address is seen the moment the
//! kernel has it.

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

/// The interface's usable global addresses of both families: universe
/// scope, not tentative, not failed duplicate address detection, not
/// deprecated. Sorted (IPv4 first).
pub async fn usable_addresses(handle: &Handle, index: u32) -> Result<Vec<IpAddr>, DataPlaneError> {
    let messages = address_messages(handle, index).await?;
    let mut usable: Vec<IpAddr> = messages
        .into_iter()
        .filter(|m| {
            matches!(m.header.family, AddressFamily::Inet6 | AddressFamily::Inet)
                && m.header.scope == AddressScope::Universe
        })
        .filter(|m| m.header.index == index)
        .filter_map(|m| {
            let flags = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    AddressAttribute::Flags(f) => Some(*f),
                    _ => None,
                })
                .unwrap_or(AddressFlags::empty());
            if flags.intersects(
                AddressFlags::Tentative | AddressFlags::Dadfailed | AddressFlags::Deprecated,
            ) {
                return None;
            }
            // IPv4's own address (IFA_LOCAL), else IFA_ADDRESS.
            m.attributes
                .iter()
                .find_map(|a| match a {
                    AddressAttribute::Local(address) => Some(*address),
                    _ => None,
                })
                .or_else(|| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(address) => Some(*address),
                        _ => None,
                    })
                })
        })
        .collect();
    usable.sort();
    Ok(usable)
}

/// Which care-of addresses a mobile router uses (RFC 5555 §4.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CareOfFamilies {
    /// IPv6 only: its home agent takes no IPv4 care-of address.
    Ipv6,
    /// IPv6 when the uplink has a usable one, else IPv4 (RFC 5555 §4.4.1:
    /// "SHOULD prefer the IPv6 care-of address").
    Ipv6ThenIpv4,
    /// IPv4 when the uplink has one, else IPv6 (an operator's choice, for
    /// sites whose IPv6 is not to be relied on).
    Ipv4ThenIpv6,
}

impl CareOfFamilies {
    /// The families in the order of preference.
    fn order(self) -> &'static [bool] {
        // `true` stands for IPv6.
        match self {
            CareOfFamilies::Ipv6 => &[true],
            CareOfFamilies::Ipv6ThenIpv4 => &[true, false],
            CareOfFamilies::Ipv4ThenIpv6 => &[false, true],
        }
    }
}

/// Picks the care-of address: the current one while it stays usable and no
/// address of a family preferred to its own is (no needless
/// re-registration), otherwise the first usable one of the preferred
/// family.
pub fn choose(
    current: Option<IpAddr>,
    usable: &[IpAddr],
    families: CareOfFamilies,
) -> Option<IpAddr> {
    let family = families
        .order()
        .iter()
        .find(|ipv6| usable.iter().any(|a| a.is_ipv6() == **ipv6))?;
    match current {
        Some(address) if address.is_ipv6() == *family && usable.contains(&address) => Some(address),
        _ => usable.iter().find(|a| a.is_ipv6() == *family).copied(),
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
    families: CareOfFamilies,
) -> Result<(watch::Receiver<Option<IpAddr>>, tokio::task::JoinHandle<()>), DataPlaneError> {
    let (connection, handle, mut events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Ifaddr,
    ])
    .map_err(|e| unavailable(format!("subscribing to address events: {e}")))?;
    tokio::spawn(connection);
    let index = interface_index(&handle, interface).await?;
    let first = choose(None, &usable_addresses(&handle, index).await?, families);
    let (sender, receiver) = watch::channel(first);
    let interface = interface.to_owned();
    let task = tokio::spawn(async move {
        let mut current = first;
        // Any address event may change the choice; events for other
        // interfaces cost one dump, which is cheap next to a movement.
        while events.next().await.is_some() {
            match usable_addresses(&handle, index).await {
                Ok(usable) => {
                    let chosen = choose(current, &usable, families);
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
        let a: IpAddr = "2001:db8:2::10".parse().unwrap();
        let b: IpAddr = "2001:db8:3::10".parse().unwrap();
        let only = CareOfFamilies::Ipv6;
        assert_eq!(choose(Some(b), &[a, b], only), Some(b));
        assert_eq!(choose(Some(b), &[a], only), Some(a));
        assert_eq!(choose(None, &[a, b], only), Some(a));
        assert_eq!(choose(Some(a), &[], only), None);
    }

    #[test]
    fn ipv4_serves_when_the_preferred_family_has_no_address() {
        let v6: IpAddr = "2001:db8:2::10".parse().unwrap();
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        let other_v4: IpAddr = "192.0.2.11".parse().unwrap();
        // IPv6 only: an IPv4 address is no care-of address.
        assert_eq!(choose(None, &[v4], CareOfFamilies::Ipv6), None);
        // IPv6 preferred (RFC 5555 §4.4.1): IPv4 while there is no IPv6,
        // back to IPv6 as soon as there is.
        let preferred = CareOfFamilies::Ipv6ThenIpv4;
        assert_eq!(choose(None, &[v4], preferred), Some(v4));
        assert_eq!(choose(Some(v4), &[v4, v6], preferred), Some(v6));
        assert_eq!(choose(Some(v6), &[v4], preferred), Some(v4));
        // IPv4 preferred: kept while usable.
        let ipv4 = CareOfFamilies::Ipv4ThenIpv6;
        assert_eq!(choose(Some(v4), &[v4, other_v4, v6], ipv4), Some(v4));
        assert_eq!(choose(Some(v6), &[v4, v6], ipv4), Some(v4));
        assert_eq!(choose(Some(v4), &[v6], ipv4), Some(v6));
    }
}
