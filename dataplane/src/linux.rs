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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv6Addr;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv6Net;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteLwTunnelEncap, RouteMessage, RouteProtocol,
    RouteSeg6IpTunnel, RouteSeg6LocalTunnel, RouteType, Seg6Header, Seg6LocalAction, Seg6Mode,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::IpProtocol;
use rtnetlink::{Handle, IpVersion, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::sync::Mutex;

use crate::{
    BindingRoutes, DataPlaneError, HomeAgentDataPlane, MobileRouterDataPlane, ReconcileReport,
    TenantRoutes,
};

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

/// What this kernel offers, for the start-up report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// seg6 lightweight tunnels (the backend built here).
    pub seg6: Result<(), String>,
    /// ip6tnl devices.
    pub ip6tnl: Result<(), String>,
}

/// Looks at what the kernel offers, without changing anything.
pub fn probe() -> Probe {
    let seg6 = if std::path::Path::new("/proc/sys/net/ipv6/conf/all/seg6_enabled").exists() {
        Ok(())
    } else {
        Err("kernel without IPv6 segment routing (no seg6_enabled sysctl)".into())
    };
    let ip6tnl = if std::path::Path::new("/sys/module/ip6_tunnel").exists() {
        Err(
            "ip6_tunnel is present, but nemo has no ip6tnl backend yet (never verified: \
             the kernels it was built on lack ip6_tunnel)"
                .into(),
        )
    } else {
        Err("kernel without ip6_tunnel (ip6tnl devices unavailable)".into())
    };
    Probe { seg6, ip6tnl }
}

fn refused(action: &'static str, destination: Ipv6Net, error: rtnetlink::Error) -> DataPlaneError {
    DataPlaneError::Refused {
        action,
        destination,
        reason: error.to_string(),
    }
}

fn unavailable(reason: String) -> DataPlaneError {
    DataPlaneError::Unavailable {
        backend: "seg6",
        reason,
    }
}

/// The errno of a netlink error, if it is one.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Ok when the request succeeded or failed only because the object exists.
fn tolerate_exists(result: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match result {
        Err(error) if errno(&error) == Some(EEXIST) => Ok(()),
        other => other,
    }
}

/// Ok when the request succeeded or the object was already gone.
fn tolerate_missing(result: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match result {
        Err(error) if matches!(errno(&error), Some(ENOENT) | Some(ESRCH)) => Ok(()),
        other => other,
    }
}

/// A policy rule of nemo's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    preference: u32,
    table: u32,
    input: Option<String>,
    source: Option<Ipv6Net>,
    /// Only IPv6-in-IPv6 packets (ipproto 41).
    tunnelled: bool,
}

async fn add_rule(handle: &Handle, rule: &Rule) -> Result<(), DataPlaneError> {
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

async fn dump_rules(handle: &Handle) -> Result<Vec<RuleMessage>, DataPlaneError> {
    handle
        .rule()
        .get(IpVersion::V6)
        .execute()
        .try_collect()
        .await
        .map_err(|e| unavailable(format!("listing rules: {e}")))
}

/// Removes the rules `select` picks.
async fn remove_rules(
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
fn priority(message: &RuleMessage) -> u32 {
    message
        .attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

fn rule_source(message: &RuleMessage) -> Option<Ipv6Addr> {
    message.attributes.iter().find_map(|a| match a {
        RuleAttribute::Source(std::net::IpAddr::V6(address)) => Some(*address),
        _ => None,
    })
}

fn is_ours(message: &RuleMessage) -> bool {
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

fn route_destination(message: &RouteMessage) -> Option<Ipv6Net> {
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
async fn link(handle: &Handle, name: &str) -> Result<(u32, u32), DataPlaneError> {
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
async fn usable_port(
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

/// The host-wide part both sides share: the gate, the local rule moved, and
/// the uplink found.
#[derive(Debug)]
struct Host {
    handle: Handle,
    /// This host's tunnel address: the destination of its decapsulation
    /// routes (a mobile router's changes when it moves).
    local: std::sync::Mutex<Ipv6Addr>,
    uplink: u32,
    gate: (String, String),
    gate_in: u32,
    gate_mtu: u32,
}

impl Host {
    async fn prepare(
        handle: Handle,
        uplink: &str,
        gate: (String, String),
    ) -> Result<Host, DataPlaneError> {
        if let Err(reason) = probe().seg6 {
            return Err(unavailable(reason));
        }
        let forwarding = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
            .map_err(|e| unavailable(format!("reading the forwarding sysctl: {e}")))?;
        if forwarding.trim() != "1" {
            return Err(unavailable(
                "IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0)".into(),
            ));
        }
        let (uplink, uplink_mtu) = link(&handle, uplink).await?;
        let gate_mtu = uplink_mtu.saturating_sub(ENCAPSULATION_OVERHEAD);
        let gate_in = create_gate(&handle, &gate, gate_mtu).await?;
        // The local table reachable at PREF_LOCAL first, then its rule at 0
        // goes (it would deliver tunnelled packets before decapsulation).
        add_local_rule(&handle, PREF_LOCAL).await?;
        remove_rules(&handle, |m| is_local_rule(m, 0)).await?;
        Ok(Host {
            handle,
            local: std::sync::Mutex::new(Ipv6Addr::UNSPECIFIED),
            uplink,
            gate,
            gate_in,
            gate_mtu,
        })
    }

    /// Installs a route, waiting out the kernel's per-CPU ENOMEM. Each seg6
    /// route takes a per-CPU cache allocated atomically, from a pool the
    /// kernel refills in the background; a burst of routes empties it
    /// (measured: after about 12,500 routes at full speed, "percpu: atomic
    /// alloc failed" in the kernel log). Waiting lets the pool refill.
    async fn install(
        &self,
        message: RouteMessage,
        destination: Ipv6Net,
    ) -> Result<(), DataPlaneError> {
        let mut wait = Duration::from_millis(1);
        loop {
            let result = self
                .handle
                .route()
                .add(message.clone())
                .replace()
                .execute()
                .await;
            match result {
                Err(error) if errno(&error) == Some(ENOMEM) && wait < MAX_ENOMEM_WAIT => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => return other.map_err(|e| refused("install route for", destination, e)),
            }
        }
    }

    /// Deletes nemo's route to `destination` in `table`.
    async fn delete_route(&self, table: u32, destination: Ipv6Net) -> Result<(), DataPlaneError> {
        self.delete_route_from(table, destination, None).await
    }

    /// Deletes nemo's route to `destination` in `table`, the one for
    /// packets from `source` when it is source-specific (the kernel finds
    /// those only by both).
    async fn delete_route_from(
        &self,
        table: u32,
        destination: Ipv6Net,
        source: Option<Ipv6Addr>,
    ) -> Result<(), DataPlaneError> {
        let mut builder = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(destination.network(), destination.prefix_len())
            .table_id(table);
        if let Some(source) = source {
            builder = builder.source_prefix(source, 128);
        }
        let mut message = builder.build();
        message.header.protocol = RouteProtocol::Other(PROTOCOL);
        tolerate_missing(self.handle.route().del(message).execute().await)
            .map_err(|e| refused("remove route for", destination, e))
    }

    /// The destinations (and, for encapsulation routes, the far end) of
    /// nemo's routes in a table. Streams the dump and keeps only these
    /// pairs, so memory follows nemo's routes, not the kernel's.
    async fn owned_routes(
        &self,
        table: u32,
    ) -> Result<Vec<(Ipv6Net, Option<Ipv6Addr>)>, DataPlaneError> {
        self.owned_route_messages(table, |m| {
            route_destination(m).map(|d| (d, route_segment(m)))
        })
        .await
    }

    /// Destination and source (for source-specific routes) of nemo's routes
    /// in a table: what deleting each takes.
    async fn owned_route_keys(
        &self,
        table: u32,
    ) -> Result<Vec<(Ipv6Net, Option<Ipv6Addr>)>, DataPlaneError> {
        self.owned_route_messages(table, |m| {
            route_destination(m).map(|d| (d, route_source(m)))
        })
        .await
    }

    /// What `keep` takes of each of nemo's routes in a table.
    async fn owned_route_messages<T>(
        &self,
        table: u32,
        keep: impl Fn(&RouteMessage) -> Option<T> + Copy,
    ) -> Result<Vec<T>, DataPlaneError> {
        // Filters the kernel applies under strict checking (RTA_TABLE,
        // rtm_protocol; rtm_type unspecified keeps the throw routes). The
        // same test again below, for what the kernel sends regardless.
        let request = RouteMessageBuilder::<Ipv6Addr>::new()
            .table_id(table)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .kind(RouteType::Unspec)
            .build();
        // A connection of its own, with strict checking on: the kernel then
        // filters the dump by table and protocol (only nemo's routes cross
        // the socket: at a million bindings, 2 million routes instead of
        // every route of every table), and dumps of two tables run side by
        // side (a socket holds one dump at a time). Its own because strict
        // checking would apply to the other requests' dumps too.
        let (connection, dumps, _) = rtnetlink::new_connection_with_strict_check()
            .map_err(|e| unavailable(format!("opening a netlink socket: {e}")))?;
        let connection = tokio::spawn(connection);
        let listed = dumps
            .route()
            .get(request)
            .execute()
            .try_filter_map(|m| async move {
                let ours =
                    route_table(&m) == table && m.header.protocol == RouteProtocol::Other(PROTOCOL);
                Ok(ours.then(|| keep(&m)).flatten())
            })
            .try_collect()
            .await;
        connection.abort();
        match listed {
            // A table that holds no route does not exist: nothing of ours.
            Err(error) if errno(&error) == Some(ENOENT) => Ok(Vec::new()),
            other => other.map_err(|e| unavailable(format!("listing routes: {e}"))),
        }
    }

    fn gate_route(&self, destination: Ipv6Net, table: u32) -> RouteMessage {
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(destination.network(), destination.prefix_len())
            .gateway(GATE_OUT_ADDRESS)
            .output_interface(self.gate_in)
            .table_id(table)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .build()
    }

    /// `destination encap seg6 mode encap.red segs far_end dev UPLINK`:
    /// plain IPv6-in-IPv6 on the wire, next header 41 (GUIDE.md).
    fn encap_route(&self, destination: Ipv6Net, far_end: Ipv6Addr, table: u32) -> RouteMessage {
        let mut header = Seg6Header::default();
        header.mode = Seg6Mode::Other(3);
        header.segments = vec![far_end];
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(destination.network(), destination.prefix_len())
            .output_interface(self.uplink)
            .table_id(table)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .encap_seg6(vec![RouteSeg6IpTunnel::Seg6(header)])
            .build()
    }

    /// `local/128 from peer/128 encap seg6local action End.DT6 table main`:
    /// takes the inner packet out of what `peer` tunnelled and routes it.
    fn decap_route(&self, local: Ipv6Addr, peer: Ipv6Addr) -> RouteMessage {
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(local, 128)
            .source_prefix(peer, 128)
            .output_interface(self.uplink)
            .table_id(TABLE_DECAP)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .encap_seg6local(vec![
                RouteSeg6LocalTunnel::Action(Seg6LocalAction::EndDt6),
                RouteSeg6LocalTunnel::Table(RT_TABLE_MAIN),
            ])
            .build()
    }

    fn local(&self) -> Ipv6Addr {
        *self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decapsulates what `peer` tunnels to this host.
    async fn add_decap_peer(&self, peer: Ipv6Addr) -> Result<(), DataPlaneError> {
        let local = self.local();
        self.install(self.decap_route(local, peer), Ipv6Net::from(local))
            .await
    }

    /// Stops decapsulating what `peer` tunnels.
    async fn remove_decap_peer(&self, peer: Ipv6Addr) -> Result<(), DataPlaneError> {
        let local = Ipv6Net::from(self.local());
        self.delete_route_from(TABLE_DECAP, local, Some(peer)).await
    }

    /// Makes the peers decapsulated exactly `peers`; returns how many went.
    async fn set_decap_peers(
        &self,
        peers: impl Iterator<Item = Ipv6Addr>,
    ) -> Result<usize, DataPlaneError> {
        let peers: HashSet<Ipv6Addr> = peers.collect();
        let local = Ipv6Net::from(self.local());
        let mut removed = 0;
        for (destination, source) in self.owned_route_keys(TABLE_DECAP).await? {
            if destination != local || source.is_none_or(|s| !peers.contains(&s)) {
                self.delete_route_from(TABLE_DECAP, destination, source)
                    .await?;
                removed += 1;
            }
        }
        for peer in peers {
            self.add_decap_peer(peer).await?;
        }
        Ok(removed)
    }

    /// Sets this host's tunnel address: the decapsulation routes follow it
    /// (each peer's new route before its old one goes, so a peer's tunnel
    /// is never without one), and so does the seg6 tunnel source. At start,
    /// also takes an earlier version's decapsulation rules per peer over as
    /// routes, and drops a route that took every source.
    async fn set_decap_address(&self, local: Ipv6Addr) -> Result<(), DataPlaneError> {
        let destination = Ipv6Net::from(local);
        *self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = local;
        let mut peers: BTreeSet<Ipv6Addr> = dump_rules(&self.handle)
            .await?
            .iter()
            .filter(|m| is_decap_rule(m))
            .filter_map(rule_source)
            .collect();
        let routes = self.owned_route_keys(TABLE_DECAP).await?;
        peers.extend(routes.iter().filter_map(|(_, source)| *source));
        for peer in &peers {
            self.add_decap_peer(*peer).await?;
        }
        for (stale, source) in routes {
            if stale != destination || source.is_none() {
                self.delete_route_from(TABLE_DECAP, stale, source).await?;
            }
        }
        // The kernel takes a rule at the same preference as existing when
        // the new one names fewer selectors: the earlier rules go first (a
        // round trip without decapsulation, on the first start after the
        // upgrade only).
        remove_rules(&self.handle, |m| {
            is_decap_rule(m) && rule_source(m).is_some()
        })
        .await?;
        add_rule(
            &self.handle,
            &Rule {
                preference: PREF_DECAP,
                table: TABLE_DECAP,
                input: None,
                source: None,
                tunnelled: true,
            },
        )
        .await?;
        // Our tunnel address is also the outer source of what we
        // encapsulate: the peer's decapsulation route matches on it.
        let pinned = tokio::task::spawn_blocking(move || crate::tunsrc::set(local))
            .await
            .map_err(|e| unavailable(format!("setting the seg6 tunnel source: {e}")))?;
        pinned.map_err(|error| DataPlaneError::Refused {
            action: "pin the seg6 tunnel source to",
            destination,
            reason: error.to_string(),
        })
    }

    /// Removes every route in `tables` and rule of nemo's, the gate, and
    /// puts the local table's rule back at 0.
    async fn teardown(&self, tables: &[u32]) -> Result<(), DataPlaneError> {
        for table in tables {
            for (destination, source) in self.owned_route_keys(*table).await? {
                self.delete_route_from(*table, destination, source).await?;
            }
        }
        add_local_rule(&self.handle, 0).await?;
        remove_rules(&self.handle, |m| is_ours(m) || is_local_rule(m, PREF_LOCAL)).await?;
        // The kernel chooses the tunnel source again (`::`).
        tokio::task::spawn_blocking(|| crate::tunsrc::set(Ipv6Addr::UNSPECIFIED))
            .await
            .map_err(|e| unavailable(format!("resetting the seg6 tunnel source: {e}")))?
            .map_err(|e| unavailable(format!("resetting the seg6 tunnel source: {e}")))?;
        tolerate_missing(self.handle.link().del(self.gate_in).execute().await)
            .map_err(|e| unavailable(format!("removing the gate {}: {e}", self.gate.0)))
    }
}

/// Creates (or finds) the gate, sets its MTU, brings it up and gives its
/// ends their link-local addresses. Returns the entry's index.
async fn create_gate(
    handle: &Handle,
    names: &(String, String),
    mtu: u32,
) -> Result<u32, DataPlaneError> {
    let failed = |what: &str, e: rtnetlink::Error| unavailable(format!("gate {what}: {e}"));
    tolerate_exists(
        handle
            .link()
            .add(LinkVeth::new(&names.0, &names.1).build())
            .execute()
            .await,
    )
    .map_err(|e| failed("create", e))?;
    let mut entry = 0;
    for (name, address) in [(&names.0, GATE_IN_ADDRESS), (&names.1, GATE_OUT_ADDRESS)] {
        let (index, _) = link(handle, name).await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(|e| failed("set up", e))?;
        let mut request = handle.address().add(index, address.into(), 64);
        // No duplicate address detection: usable at once.
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        tolerate_exists(request.execute().await).map_err(|e| failed("address", e))?;
        if address == GATE_IN_ADDRESS {
            entry = index;
        }
    }
    Ok(entry)
}

/// Settings of the Linux data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seg6Config {
    /// The interface towards the tunnel's far ends.
    pub uplink: String,
    /// This host's tunnel address: the home agent's address, or the mobile
    /// router's care-of address (which [`Seg6MobileRouter::set_care_of`]
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

/// Route changes kept in flight at once. One at a time, each
/// waits for the connection task's wake-up on another worker thread: 5,250
/// bindings/s at a million (measured, two workers) against 21,900/s on one
/// thread; a window of requests hides the round trips.
const WINDOW: usize = 64;

/// Runs `change` for every item, [`WINDOW`] at a time; the first error
/// ends it.
async fn concurrently<T, F>(items: Vec<T>, change: impl Fn(T) -> F) -> Result<(), DataPlaneError>
where
    F: std::future::Future<Output = Result<(), DataPlaneError>>,
{
    futures::stream::iter(items.into_iter().map(change))
        .buffer_unordered(WINDOW)
        .try_collect()
        .await
}

/// The home agent's data plane on a Linux kernel with seg6.
#[derive(Debug)]
pub struct Seg6HomeAgent {
    host: Host,
    /// Bindings per care-of address: the decapsulation route lives while one
    /// remains.
    care_of_users: Mutex<HashMap<Ipv6Addr, usize>>,
}

impl Seg6HomeAgent {
    /// Sets up what does not depend on bindings: the gate, the rules, the
    /// decapsulation route. Idempotent; fails with a clear reason when the
    /// kernel cannot do it (no seg6, forwarding off, no uplink).
    pub async fn new(handle: Handle, config: Seg6Config) -> Result<Seg6HomeAgent, DataPlaneError> {
        let host = Host::prepare(handle, &config.uplink, config.gate.clone()).await?;
        for rule in [
            Rule {
                preference: PREF_ENCAP,
                table: TABLE_ENCAP,
                input: Some(host.gate.1.clone()),
                source: None,
                tunnelled: false,
            },
            Rule {
                preference: PREF_ROUTE,
                table: TABLE_ROUTE,
                input: None,
                source: None,
                tunnelled: false,
            },
        ] {
            add_rule(&host.handle, &rule).await?;
        }
        host.set_decap_address(config.local_address).await?;
        tracing::info!(
            uplink = %config.uplink,
            gate_mtu = host.gate_mtu,
            local = %config.local_address,
            "seg6 home-agent data plane ready"
        );
        Ok(Seg6HomeAgent {
            host,
            care_of_users: Mutex::new(HashMap::new()),
        })
    }

    async fn install(&self, destination: Ipv6Net, care_of: Ipv6Addr) -> Result<(), DataPlaneError> {
        // Encapsulation first: the gate route then never leads nowhere.
        let host = &self.host;
        host.install(
            host.encap_route(destination, care_of, TABLE_ENCAP),
            destination,
        )
        .await?;
        host.install(host.gate_route(destination, TABLE_ROUTE), destination)
            .await
    }

    /// Makes the decapsulation routes exactly one per care-of address of
    /// `users`, and the count of each what `users` says; returns how many
    /// stale routes went.
    async fn set_decapsulation(
        &self,
        users: HashMap<Ipv6Addr, usize>,
    ) -> Result<usize, DataPlaneError> {
        let mut counts = self.care_of_users.lock().await;
        let removed = self.host.set_decap_peers(users.keys().copied()).await?;
        *counts = users;
        Ok(removed)
    }

    async fn uninstall(&self, destination: Ipv6Net) -> Result<(), DataPlaneError> {
        self.host.delete_route(TABLE_ROUTE, destination).await?;
        self.host.delete_route(TABLE_ENCAP, destination).await
    }

    async fn use_care_of(&self, care_of: Ipv6Addr) -> Result<(), DataPlaneError> {
        let mut users = self.care_of_users.lock().await;
        let count = users.entry(care_of).or_insert(0);
        if *count == 0 {
            self.host.add_decap_peer(care_of).await?;
        }
        *count += 1;
        Ok(())
    }

    async fn release_care_of(&self, care_of: Ipv6Addr) -> Result<(), DataPlaneError> {
        let mut users = self.care_of_users.lock().await;
        let Some(count) = users.get_mut(&care_of) else {
            return Ok(());
        };
        *count -= 1;
        if *count == 0 {
            users.remove(&care_of);
            self.host.remove_decap_peer(care_of).await?;
        }
        Ok(())
    }

    /// Removes everything this data plane installed and puts the local
    /// table's rule back at 0. For shutdown.
    pub async fn teardown(&self) -> Result<(), DataPlaneError> {
        self.host
            .teardown(&[TABLE_ROUTE, TABLE_ENCAP, TABLE_DECAP])
            .await?;
        self.care_of_users.lock().await.clear();
        Ok(())
    }
}

impl HomeAgentDataPlane for Seg6HomeAgent {
    fn name(&self) -> &'static str {
        "seg6 encap.red with MTU gate"
    }

    async fn set(
        &self,
        routes: &BindingRoutes,
        previous: Option<&BindingRoutes>,
    ) -> Result<(), DataPlaneError> {
        // The new care-of address can send into the reverse tunnel first.
        let moved = previous.is_some_and(|p| p.care_of != routes.care_of);
        if previous.is_none() || moved {
            self.use_care_of(routes.care_of).await?;
        }
        // The destinations side by side: a round trip to the kernel waits
        // for a wake-up on another worker, so one at a time would multiply
        // that wait by the number of destinations.
        let wanted: BTreeSet<Ipv6Net> = routes.destinations().collect();
        concurrently(wanted.iter().copied().collect(), |destination| {
            self.install(destination, routes.care_of)
        })
        .await?;
        if let Some(previous) = previous {
            let gone = previous
                .destinations()
                .filter(|destination| !wanted.contains(destination))
                .collect();
            concurrently(gone, |destination| self.uninstall(destination)).await?;
            if moved {
                self.release_care_of(previous.care_of).await?;
            }
        }
        Ok(())
    }

    async fn clear(&self, routes: &BindingRoutes) -> Result<(), DataPlaneError> {
        concurrently(routes.destinations().collect(), |destination| {
            self.uninstall(destination)
        })
        .await?;
        self.release_care_of(routes.care_of).await
    }

    async fn reconcile(&self, all: &[BindingRoutes]) -> Result<ReconcileReport, DataPlaneError> {
        let wanted: HashMap<Ipv6Net, Ipv6Addr> = all
            .iter()
            .flat_map(|r| r.destinations().map(move |d| (d, r.care_of)))
            .collect();
        let mut report = ReconcileReport::default();
        // Both tables listed at once, on two sockets.
        let (encap, gated) = futures::try_join!(
            self.host.owned_routes(TABLE_ENCAP),
            self.host.owned_routes(TABLE_ROUTE)
        )?;
        let encap: HashMap<Ipv6Net, Option<Ipv6Addr>> = encap.into_iter().collect();
        let gated: HashSet<Ipv6Net> = gated
            .into_iter()
            .map(|(destination, _)| destination)
            .collect();
        // Each stale destination once, whichever tables still hold it.
        let stale: Vec<Ipv6Net> = encap
            .keys()
            .chain(gated.iter().filter(|d| !encap.contains_key(d)))
            .filter(|d| !wanted.contains_key(d))
            .copied()
            .collect();
        report.removed = stale.len();
        concurrently(stale, |destination| self.uninstall(destination)).await?;
        let missing: Vec<(Ipv6Net, Ipv6Addr)> = wanted
            .iter()
            .filter(|(destination, care_of)| {
                encap.get(*destination) != Some(&Some(**care_of)) || !gated.contains(*destination)
            })
            .map(|(destination, care_of)| (*destination, *care_of))
            .collect();
        report.installed = missing.len();
        report.kept = wanted.len() - missing.len();
        concurrently(missing, |(destination, care_of)| {
            self.install(destination, care_of)
        })
        .await?;
        // Decapsulation: exactly one route per care-of address in use.
        let mut users: HashMap<Ipv6Addr, usize> = HashMap::new();
        for routes in all {
            *users.entry(routes.care_of).or_insert(0) += 1;
        }
        report.removed += self.set_decapsulation(users).await?;
        Ok(report)
    }

    async fn settle(
        &self,
        now: &[BindingRoutes],
        gone: &[BindingRoutes],
        users: HashMap<Ipv6Addr, usize>,
    ) -> Result<(), DataPlaneError> {
        let held = crate::settled_destinations(now);
        for destination in gone.iter().flat_map(BindingRoutes::destinations) {
            if !held.contains_key(&destination) {
                self.uninstall(destination).await?;
            }
        }
        for (destination, care_of) in &held {
            self.install(*destination, *care_of).await?;
        }
        self.set_decapsulation(users).await?;
        Ok(())
    }

    async fn remove_all(&self) -> Result<(), DataPlaneError> {
        self.teardown().await
    }
}

/// The mobile router's data plane on a Linux kernel with seg6: one host
/// hosting any number of tenant instances, each with its own table.
#[derive(Debug)]
pub struct Seg6MobileRouter {
    host: Host,
    /// Tenants per home agent: the decapsulation route for a home agent
    /// lives while one of its tenants remains.
    home_agent_users: Mutex<HashMap<Ipv6Addr, usize>>,
}

impl Seg6MobileRouter {
    /// Sets up the host: the gate, the tenant gate table, the local rule
    /// moved, and decapsulation at the care-of address.
    pub async fn new(
        handle: Handle,
        config: Seg6Config,
    ) -> Result<Seg6MobileRouter, DataPlaneError> {
        let host = Host::prepare(handle, &config.uplink, config.gate.clone()).await?;
        let default = Ipv6Net::default();
        host.install(host.gate_route(default, TABLE_TENANT_GATE), default)
            .await?;
        host.set_decap_address(config.local_address).await?;
        tracing::info!(
            uplink = %config.uplink,
            gate_mtu = host.gate_mtu,
            care_of = %config.local_address,
            "seg6 mobile-router data plane ready"
        );
        Ok(Seg6MobileRouter {
            host,
            home_agent_users: Mutex::new(HashMap::new()),
        })
    }

    fn tenant_rules(&self, tenant: &TenantRoutes) -> Vec<Rule> {
        tenant
            .prefixes
            .iter()
            .flat_map(|prefix| {
                [
                    Rule {
                        preference: PREF_TENANT,
                        table: TABLE_TENANT_GATE,
                        input: Some(tenant.interface.clone()),
                        source: Some(*prefix),
                        tunnelled: false,
                    },
                    Rule {
                        preference: PREF_ENCAP,
                        table: tenant.table,
                        input: Some(self.host.gate.1.clone()),
                        source: Some(*prefix),
                        tunnelled: false,
                    },
                ]
            })
            .collect()
    }

    fn prefix_route(&self, prefix: Ipv6Net, interface: u32) -> RouteMessage {
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(prefix.network(), prefix.prefix_len())
            .output_interface(interface)
            .table_id(RT_TABLE_MAIN)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .build()
    }

    async fn remove_tenant(&self, tenant: &TenantRoutes) -> Result<(), DataPlaneError> {
        for prefix in &tenant.prefixes {
            let source = Some(prefix.network());
            remove_rules(&self.host.handle, |m| {
                is_ours(m)
                    && matches!(priority(m), PREF_TENANT | PREF_ENCAP)
                    && rule_source(m) == source
                    && m.header.src_len == prefix.prefix_len()
            })
            .await?;
            self.host.delete_route(RT_TABLE_MAIN, *prefix).await?;
        }
        for (destination, _) in self.host.owned_routes(tenant.table).await? {
            self.host.delete_route(tenant.table, destination).await?;
        }
        let mut users = self.home_agent_users.lock().await;
        if let Some(count) = users.get_mut(&tenant.home_agent) {
            *count -= 1;
            if *count == 0 {
                users.remove(&tenant.home_agent);
                self.host.remove_decap_peer(tenant.home_agent).await?;
            }
        }
        Ok(())
    }
}

impl MobileRouterDataPlane for Seg6MobileRouter {
    fn name(&self) -> &'static str {
        "seg6 encap.red with MTU gate"
    }

    async fn set_care_of(&self, care_of: Ipv6Addr) -> Result<(), DataPlaneError> {
        self.host.set_decap_address(care_of).await
    }

    async fn attach(
        &self,
        tenant: &TenantRoutes,
        previous: Option<&TenantRoutes>,
    ) -> Result<(), DataPlaneError> {
        if let Some(previous) = previous {
            if previous != tenant {
                self.remove_tenant(previous).await?;
            }
        }
        let host = &self.host;
        let interface = usable_port(&host.handle, &tenant.interface, &tenant.prefixes).await?;
        {
            let mut users = self.home_agent_users.lock().await;
            let count = users.entry(tenant.home_agent).or_insert(0);
            if *count == 0 {
                host.add_decap_peer(tenant.home_agent).await?;
            }
            *count += 1;
        }
        // The tenant's table: everything to the home agent, except the home
        // agent itself (the outer packet), which goes back to the main table.
        let default = Ipv6Net::default();
        host.install(
            host.encap_route(default, tenant.home_agent, tenant.table),
            default,
        )
        .await?;
        let home_agent = Ipv6Net::from(tenant.home_agent);
        let mut throw = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(tenant.home_agent, 128)
            .table_id(tenant.table)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .kind(RouteType::Throw)
            .build();
        throw.header.scope = netlink_packet_route::route::RouteScope::Universe;
        host.install(throw, home_agent).await?;
        for prefix in &tenant.prefixes {
            host.install(self.prefix_route(*prefix, interface), *prefix)
                .await?;
        }
        for rule in self.tenant_rules(tenant) {
            add_rule(&host.handle, &rule).await?;
        }
        Ok(())
    }

    async fn detach(&self, tenant: &TenantRoutes) -> Result<(), DataPlaneError> {
        self.remove_tenant(tenant).await
    }

    async fn remove_all(&self) -> Result<(), DataPlaneError> {
        let mut tables = vec![TABLE_DECAP, TABLE_TENANT_GATE, RT_TABLE_MAIN];
        // Tenant tables are whatever tables hold nemo's rules at PREF_ENCAP.
        for message in dump_rules(&self.host.handle).await? {
            if is_ours(&message) && priority(&message) == PREF_ENCAP {
                let table = message
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RuleAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(message.header.table));
                if !tables.contains(&table) {
                    tables.push(table);
                }
            }
        }
        self.host.teardown(&tables).await?;
        self.home_agent_users.lock().await.clear();
        Ok(())
    }
}
