//! nemo's kernel data plane on Linux, programmed over rtnetlink: seg6
//! lightweight tunnels (RFC 2473 IPv6-in-IPv6 on the wire: `encap.red` adds no
//! routing header) with an MTU gate. The recipe, verified by hand first, is
//! `deploy/lab/dataplane-recipe.sh`.
//!
//! Home agent ([`Seg6HomeAgent`]):
//! ```text
//! destination (HoA/128, each MNP)
//!   table 4191 (ROUTE):  dst via fe80::2 dev nemo-g0       (into the gate)
//!   rule  900:           iif nemo-g1 lookup 4192
//!   table 4192 (ENCAP):  dst encap seg6 mode encap.red segs CoA dev UPLINK
//!   rule  950:           lookup 4191
//! reverse tunnel (RFC 3963 §6.4)
//!   rule  500:           ipproto ipv6 lookup 4193
//!   table 4193 (DECAP):  HA/128 from CoA/128 encap seg6local action End.DT6 table main
//!                        (one per care-of address in use)
//! ```
//! Mobile router ([`Seg6MobileRouter`]), per tenant with its own table T:
//! ```text
//!   rule  800:           iif TENANT_IF from MNP lookup 4194
//!   table 4194:          default via fe80::2 dev nemo-g0     (into the gate)
//!   rule  900:           iif nemo-g1 from MNP lookup T
//!   table T:             default encap seg6 mode encap.red segs HA dev UPLINK
//!                        throw HA/128                          (outer packet: main)
//!   rule  500:           ipproto ipv6 lookup 4193
//!   table 4193 (DECAP):  CoA/128 from HA/128 encap seg6local action End.DT6 table main
//!                        (one per home agent)
//!   main:                MNP dev TENANT_IF
//! ```
//! Both: `rule 1000: lookup local`, moved from 0 so that tunnelled packets to
//! the host's own address meet the decapsulation rule first; and the seg6
//! tunnel source (`ip sr tunsrc`, [`crate::tunsrc`]) pinned to the local
//! tunnel address, the source the peer's decapsulation route matches.
//!
//! The gate is a veth pair whose MTU is the uplink's minus the 40 octets of
//! encapsulation. Packets that would not fit in the tunnel meet it while
//! still being forwarded, so the kernel answers the real sender with an
//! ICMPv6 Packet Too Big and path MTU discovery works; seg6 alone
//! encapsulates on input and drops them silently (GUIDE.md).
//!
//! Decapsulation takes a packet only from a peer the table names (the
//! reverse tunnel's outer source must be the registered care-of address,
//! RFC 3963 §6.4): a source-specific route per peer, not a rule per peer,
//! because every rule added or removed makes the kernel walk every route of
//! every table (`fib6_clean_all`; measured 0.1 s per rule at a million
//! routes, under the RTNL lock that every other route change waits for),
//! where a route costs microseconds. A tunnelled packet from any other
//! source finds no route there, falls through to the local table and is
//! counted as an unknown protocol ([`crate::tunsrc::decapsulation_misses`]).
//!
//! Everything created carries protocol [`PROTOCOL`] (routes and rules) in
//! nemo's own tables, so reconciliation can tell what is ours. A move to a
//! new care-of address replaces each encapsulation route in one netlink
//! request: there is no moment without a route.
//!
//! Not built: an ip6tnl backend. This kernel has no ip6_tunnel, so nothing
//! could verify it; [`probe`] says so.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::Ipv6Net;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteLwTunnelEncap, RouteMessage, RouteProtocol,
    RouteSeg6IpTunnel,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::IpProtocol;
use rtnetlink::{Handle, IpVersion};

use crate::{DataPlaneError, Peer};

mod home_agent;
mod host;
mod mobile_router;
pub(crate) mod probe;
mod routes;

pub use home_agent::Seg6HomeAgent;
pub use mobile_router::Seg6MobileRouter;
pub use probe::{kernel_option, probe, probe_seg6, KernelOption, Probe};
pub(crate) use routes::{delete_route_from, install_route, owned_route_messages};

/// Route and rule protocol number marking what nemo installed ("N").
pub const PROTOCOL: u8 = 78;
/// Home agent: destinations pointed into the gate.
pub const TABLE_ROUTE: u32 = 4191;
/// Home agent: encapsulation routes, for traffic out of the gate.
pub const TABLE_ENCAP: u32 = 4192;
/// Both: the decapsulation route.
pub const TABLE_DECAP: u32 = 4193;
/// Mobile router: tenant traffic into the gate.
pub const TABLE_TENANT_GATE: u32 = 4194;
/// Rule preference of the decapsulation rule.
pub const PREF_DECAP: u32 = 500;
/// Rule preference of "tenant traffic into the gate" (mobile router).
pub const PREF_TENANT: u32 = 800;
/// Rule preference of "out of the gate: encapsulate".
pub const PREF_ENCAP: u32 = 900;
/// Rule preference of "look up nemo's destinations" (home agent).
pub const PREF_ROUTE: u32 = 950;
/// Where the local table's rule moves, behind the decapsulation rule.
pub const PREF_LOCAL: u32 = 1000;
/// Octets IPv6-in-IPv6 adds (RFC 2473 §4.1 without options).
pub const ENCAPSULATION_OVERHEAD: u32 = 40;
const GATE_IN_ADDRESS: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const GATE_OUT_ADDRESS: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
const RT_TABLE_MAIN: u32 = 254;
const RT_TABLE_LOCAL: u32 = 255;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENOMEM: i32 = 12;
const EEXIST: i32 = 17;
/// Longest single wait for the kernel's per-CPU pool before giving up.
const MAX_ENOMEM_WAIT: Duration = Duration::from_millis(1024);

fn refused(action: &'static str, destination: Ipv6Net, error: rtnetlink::Error) -> DataPlaneError {
    DataPlaneError::Refused {
        action,
        destination,
        reason: error.to_string(),
    }
}

/// The IPv6 address of a tunnel peer: the seg6 backends tunnel IPv6 in
/// IPv6 only; an IPv4 care-of address (RFC 5555) needs the bpf backend.
pub(crate) fn ipv6_peer(peer: Peer, destination: Ipv6Net) -> Result<Ipv6Addr, DataPlaneError> {
    peer.ipv6().ok_or_else(|| DataPlaneError::Refused {
        action: "tunnel",
        destination,
        reason: format!(
            "{peer} is an IPv4 peer: the seg6 backend tunnels IPv6 in IPv6 only \
             ([dataplane] backend = \"bpf\" tunnels IPv4 care-of addresses)"
        ),
    })
}

fn unavailable(reason: String) -> DataPlaneError {
    DataPlaneError::Unavailable {
        backend: "seg6",
        reason,
    }
}

/// The errno of a netlink error, if it is one.
pub(crate) fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Ok when the request succeeded or failed only because the object exists.
pub(crate) fn tolerate_exists(
    result: Result<(), rtnetlink::Error>,
) -> Result<(), rtnetlink::Error> {
    match result {
        Err(error) if errno(&error) == Some(EEXIST) => Ok(()),
        other => other,
    }
}

/// Ok when the request succeeded or the object was already gone.
pub(crate) fn tolerate_missing(
    result: Result<(), rtnetlink::Error>,
) -> Result<(), rtnetlink::Error> {
    match result {
        Err(error) if matches!(errno(&error), Some(ENOENT) | Some(ESRCH)) => Ok(()),
        other => other,
    }
}

/// A policy rule of nemo's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) preference: u32,
    pub(crate) table: u32,
    pub(crate) input: Option<String>,
    pub(crate) source: Option<Ipv6Net>,
    /// Only IPv6-in-IPv6 packets (ipproto 41).
    pub(crate) tunnelled: bool,
}

pub(crate) async fn add_rule(handle: &Handle, rule: &Rule) -> Result<(), DataPlaneError> {
    let mut request = handle
        .rule()
        .add()
        .v6()
        .priority(rule.preference)
        .table_id(rule.table)
        .action(RuleAction::ToTable);
    if let Some(input) = &rule.input {
        request = request.input_interface(input.clone());
    }
    if let Some(source) = rule.source {
        request = request.source_prefix(source.network(), source.prefix_len());
    }
    let attributes = &mut request.message_mut().attributes;
    if rule.tunnelled {
        attributes.push(RuleAttribute::IpProtocol(IpProtocol::Ipv6));
    }
    attributes.push(RuleAttribute::Protocol(RouteProtocol::Other(PROTOCOL)));
    tolerate_exists(request.execute().await)
        .map_err(|e| unavailable(format!("adding rule {rule:?}: {e}")))
}

/// The tenants' own tables: whatever tables nemo's rules at
/// [`PREF_ENCAP`] look up (a mobile router's, whichever backend).
pub(crate) async fn tenant_tables(handle: &Handle) -> Result<BTreeSet<u32>, DataPlaneError> {
    Ok(dump_rules(handle)
        .await?
        .iter()
        .filter(|m| is_ours(m) && priority(m) == PREF_ENCAP)
        .map(|m| {
            m.attributes
                .iter()
                .find_map(|a| match a {
                    RuleAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(m.header.table))
        })
        .filter(|t| *t != RT_TABLE_MAIN)
        .collect())
}

pub(crate) async fn dump_rules(handle: &Handle) -> Result<Vec<RuleMessage>, DataPlaneError> {
    handle
        .rule()
        .get(IpVersion::V6)
        .execute()
        .try_collect()
        .await
        .map_err(|e| unavailable(format!("listing rules: {e}")))
}

/// Removes the rules `select` picks.
pub(crate) async fn remove_rules(
    handle: &Handle,
    select: impl Fn(&RuleMessage) -> bool,
) -> Result<usize, DataPlaneError> {
    let mut removed = 0;
    for message in dump_rules(handle).await? {
        if select(&message) {
            tolerate_missing(handle.rule().del(message).execute().await)
                .map_err(|e| unavailable(format!("removing rule: {e}")))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A rule's preference; the kernel leaves the attribute out for 0.
pub(crate) fn priority(message: &RuleMessage) -> u32 {
    message
        .attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

pub(crate) fn rule_source(message: &RuleMessage) -> Option<Ipv6Addr> {
    message.attributes.iter().find_map(|a| match a {
        RuleAttribute::Source(std::net::IpAddr::V6(address)) => Some(*address),
        _ => None,
    })
}

pub(crate) fn is_ours(message: &RuleMessage) -> bool {
    message
        .attributes
        .contains(&RuleAttribute::Protocol(RouteProtocol::Other(PROTOCOL)))
}

fn is_decap_rule(message: &RuleMessage) -> bool {
    priority(message) == PREF_DECAP && is_ours(message)
}

fn is_local_rule(message: &RuleMessage, preference: u32) -> bool {
    message.header.table == RT_TABLE_LOCAL as u8
        && priority(message) == preference
        && !is_ours(message)
}

async fn add_local_rule(handle: &Handle, preference: u32) -> Result<(), DataPlaneError> {
    let request = handle
        .rule()
        .add()
        .v6()
        .priority(preference)
        .table_id(RT_TABLE_LOCAL)
        .action(RuleAction::ToTable);
    tolerate_exists(request.execute().await)
        .map_err(|e| unavailable(format!("adding the local rule at {preference}: {e}")))
}

fn route_table(message: &RouteMessage) -> u32 {
    message
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(message.header.table))
}

pub(crate) fn route_destination(message: &RouteMessage) -> Option<Ipv6Net> {
    let address = message.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet6(address)) => Some(*address),
        _ => None,
    });
    Ipv6Net::new(
        address.unwrap_or(Ipv6Addr::UNSPECIFIED),
        message.header.destination_prefix_length,
    )
    .ok()
}

/// The first segment of an encapsulation route: the tunnel's far end.
fn route_segment(message: &RouteMessage) -> Option<Ipv6Addr> {
    message.attributes.iter().find_map(|a| match a {
        RouteAttribute::Encap(encaps) => encaps.iter().find_map(|e| match e {
            RouteLwTunnelEncap::Seg6(RouteSeg6IpTunnel::Seg6(header)) => {
                header.segments.first().copied()
            }
            _ => None,
        }),
        _ => None,
    })
}

/// A source-specific route's source (decapsulation routes: the peer).
fn route_source(message: &RouteMessage) -> Option<Ipv6Addr> {
    message.attributes.iter().find_map(|a| match a {
        RouteAttribute::Source(RouteAddress::Inet6(address)) => Some(*address),
        _ => None,
    })
}

/// An interface's netlink description, by name.
async fn link_message(
    handle: &Handle,
    name: &str,
) -> Result<netlink_packet_route::link::LinkMessage, DataPlaneError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    links
        .try_next()
        .await
        .map_err(|e| unavailable(format!("interface {name}: {e}")))?
        .ok_or_else(|| unavailable(format!("no interface {name}")))
}

/// Index and MTU of an interface.
pub(crate) async fn link(handle: &Handle, name: &str) -> Result<(u32, u32), DataPlaneError> {
    let link = link_message(handle, name).await?;
    let mtu = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
        .unwrap_or(1500);
    Ok((link.header.index, mtu))
}

/// Index of a tenant's port, once it can carry traffic: administratively
/// up with a carrier (for a VM's tap or veth: the VM's end is there). A
/// port that exists but is still down (a hypervisor mid-way through
/// preparing it) is an error, so that nothing registers a binding whose
/// first packets would wait for a neighbour solicitation the down link
/// lost (measured: a second of outage).
/// The tenant's port, if it can carry the tenant's traffic now: up, with a
/// carrier, and holding the tenant's gateway address (an address inside
/// one of its prefixes, which the VMs route through) that the kernel
/// already delivers locally. Registering earlier pulls the tenant's
/// traffic here before the port can answer for it: a Neighbor
/// Advertisement sent to a gateway address not yet local is forwarded
/// away, and the kernel solicits again only a second later (seen in the
/// place-first migration lab on a loaded machine: 1.35-1.4 s outages).
pub(crate) async fn usable_port(
    handle: &Handle,
    name: &str,
    prefixes: &[Ipv6Net],
) -> Result<u32, DataPlaneError> {
    use netlink_packet_route::link::LinkFlags;
    let link = link_message(handle, name).await?;
    let flags = link.header.flags;
    if !flags.contains(LinkFlags::Up) || !flags.contains(LinkFlags::LowerUp) {
        return Err(unavailable(format!(
            "interface {name} is not up with a carrier yet"
        )));
    }
    let index = link.header.index;
    if prefixes.is_empty() {
        // No prefix to route: no gateway to wait for.
        return Ok(index);
    }
    for address in crate::addresses::address_messages(handle, index).await? {
        let gateway = address
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                AddressAttribute::Address(std::net::IpAddr::V6(a)) => Some(*a),
                _ => None,
            });
        if let Some(gateway) = gateway.filter(|a| prefixes.iter().any(|p| p.contains(a))) {
            if crate::addresses::delivered_locally(handle, gateway).await {
                return Ok(index);
            }
        }
    }
    Err(unavailable(format!(
        "interface {name} has no gateway address of the tenant's prefixes ({}) that the kernel receives for yet",
        prefixes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Settings of the Linux data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seg6Config {
    /// The interface towards the tunnel's far ends.
    pub uplink: String,
    /// This host's tunnel address: the home agent's address, or the mobile
    /// router's care-of address (which [`crate::MobileRouterDataPlane::set_care_of`]
    /// changes).
    pub local_address: Ipv6Addr,
    /// The gate's two ends.
    pub gate: (String, String),
}

impl Seg6Config {
    /// Settings with the default gate names.
    pub fn new(uplink: &str, local_address: Ipv6Addr) -> Seg6Config {
        Seg6Config {
            uplink: uplink.to_owned(),
            local_address,
            gate: ("nemo-g0".into(), "nemo-g1".into()),
        }
    }
}
