//! The home agent's kernel data plane on Linux, programmed over rtnetlink:
//! seg6 lightweight tunnels (RFC 2473 IPv6-in-IPv6 on the wire) with an MTU
//! gate. The recipe, verified by hand first, is `deploy/lab/dataplane-recipe.sh`.
//!
//! ```text
//! destination (HoA/128, each MNP)
//!   table ROUTE:  dst via fe80::2 dev nemo-g0          (into the gate, MTU 1460)
//!   rule  900:    iif nemo-g1 lookup ENCAP
//!   table ENCAP:  dst encap seg6 mode encap.red segs CoA dev UPLINK
//! reverse tunnel (RFC 3963 §6.4)
//!   rule  500:    from CoA ipproto ipv6 lookup DECAP   (one per care-of address)
//!   table DECAP:  HA/128 encap seg6local action End.DT6 table main
//!   rule 1000:    lookup local                          (moved from 0, behind 500)
//! ```
//!
//! The gate is a veth pair whose MTU is the uplink's minus the 40 octets of
//! encapsulation. Packets that would not fit in the tunnel meet it while
//! still being forwarded, so the kernel answers the real sender with an
//! ICMPv6 Packet Too Big (path MTU discovery works); seg6 alone encapsulates
//! on input and drops them silently (GUIDE.md).
//!
//! Everything created carries protocol [`PROTOCOL`] (routes and rules) in
//! nemo's own tables, so reconciliation can tell what is ours. A move to a new
//! care-of address replaces each encapsulation route in one netlink request:
//! there is no moment without a route.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv6Addr;

use futures::TryStreamExt;
use ipnet::Ipv6Net;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteSeg6IpTunnel,
    RouteSeg6LocalTunnel, Seg6Header, Seg6LocalAction, Seg6Mode,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::IpProtocol;
use rtnetlink::{Handle, IpVersion, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::sync::Mutex;

use crate::{BindingRoutes, DataPlaneError, HomeAgentDataPlane, ReconcileReport};

/// Route and rule protocol number marking what nemo installed ("N").
pub const PROTOCOL: u8 = 78;
/// Table of destinations pointed into the gate.
pub const TABLE_ROUTE: u32 = 4191;
/// Table of encapsulation routes, looked up for traffic out of the gate.
pub const TABLE_ENCAP: u32 = 4192;
/// Table of the decapsulation route.
pub const TABLE_DECAP: u32 = 4193;
/// Rule preference of the per-care-of-address decapsulation rules.
pub const PREF_DECAP: u32 = 500;
/// Rule preference of "out of the gate: encapsulate".
pub const PREF_ENCAP: u32 = 900;
/// Rule preference of "look up nemo's destinations".
pub const PREF_ROUTE: u32 = 950;
/// Where the local table's rule moves, behind the decapsulation rules.
pub const PREF_LOCAL: u32 = 1000;
/// Octets IPv6-in-IPv6 adds (RFC 2473 §4.1 without options).
pub const ENCAPSULATION_OVERHEAD: u32 = 40;
const GATE_IN_ADDRESS: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const GATE_OUT_ADDRESS: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
const RT_TABLE_MAIN: u32 = 254;
const RT_TABLE_LOCAL: u32 = 255;
const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENOMEM: i32 = 12;
/// Longest single wait for the kernel's per-CPU pool before giving up.
const MAX_ENOMEM_WAIT: std::time::Duration = std::time::Duration::from_millis(1024);

/// Settings of the Linux data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seg6Config {
    /// The interface towards the care-of addresses.
    pub uplink: String,
    /// The home agent's address: the reverse tunnel's outer destination.
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

/// The home agent's data plane on a Linux kernel with seg6.
#[derive(Debug)]
pub struct Seg6HomeAgent {
    handle: Handle,
    config: Seg6Config,
    uplink: u32,
    gate_in: u32,
    /// Bindings per care-of address: the decapsulation rule lives while one
    /// remains.
    care_of_users: Mutex<HashMap<Ipv6Addr, usize>>,
}

impl Seg6HomeAgent {
    /// Sets up what does not depend on bindings: the gate, the rules, the
    /// decapsulation route. Idempotent; fails with a clear reason when the
    /// kernel cannot do it (no seg6, forwarding off, no uplink).
    pub async fn new(handle: Handle, config: Seg6Config) -> Result<Seg6HomeAgent, DataPlaneError> {
        let forwarding = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
            .map_err(|e| unavailable(format!("reading the forwarding sysctl: {e}")))?;
        if forwarding.trim() != "1" {
            return Err(unavailable(
                "IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0)".into(),
            ));
        }
        let (uplink, uplink_mtu) = link(&handle, &config.uplink).await?;
        let gate_mtu = uplink_mtu.saturating_sub(ENCAPSULATION_OVERHEAD);
        let gate_in = gate(&handle, &config.gate, gate_mtu).await?;
        let plane = Seg6HomeAgent {
            handle,
            config,
            uplink,
            gate_in,
            care_of_users: Mutex::new(HashMap::new()),
        };
        plane.rules().await?;
        let local = Ipv6Net::from(plane.config.local_address);
        let decap = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(plane.config.local_address, 128)
            .output_interface(plane.uplink)
            .table_id(TABLE_DECAP)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .encap_seg6local(vec![
                RouteSeg6LocalTunnel::Action(Seg6LocalAction::EndDt6),
                RouteSeg6LocalTunnel::Table(RT_TABLE_MAIN),
            ])
            .build();
        plane
            .handle
            .route()
            .add(decap)
            .replace()
            .execute()
            .await
            .map_err(|e| refused("install decapsulation route", local, e))?;
        tracing::info!(
            uplink = %plane.config.uplink,
            gate_mtu,
            local = %plane.config.local_address,
            "seg6 data plane ready"
        );
        Ok(plane)
    }

    /// The fixed rules, and the local table moved behind the decapsulation
    /// rules (the only change outside nemo's own tables).
    async fn rules(&self) -> Result<(), DataPlaneError> {
        let rule = |error: rtnetlink::Error| unavailable(format!("adding rule: {error}"));
        let mut encap = self
            .handle
            .rule()
            .add()
            .v6()
            .priority(PREF_ENCAP)
            .table_id(TABLE_ENCAP)
            .input_interface(self.config.gate.1.clone())
            .action(RuleAction::ToTable);
        encap
            .message_mut()
            .attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Other(PROTOCOL)));
        tolerate_exists(encap.execute().await).map_err(rule)?;
        let mut route = self
            .handle
            .rule()
            .add()
            .v6()
            .priority(PREF_ROUTE)
            .table_id(TABLE_ROUTE)
            .action(RuleAction::ToTable);
        route
            .message_mut()
            .attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Other(PROTOCOL)));
        tolerate_exists(route.execute().await).map_err(rule)?;
        let local = self
            .handle
            .rule()
            .add()
            .v6()
            .priority(PREF_LOCAL)
            .table_id(RT_TABLE_LOCAL)
            .action(RuleAction::ToTable);
        tolerate_exists(local.execute().await).map_err(rule)?;
        // Now that the local table is reachable at PREF_LOCAL, drop its
        // rule at 0, which would deliver tunnelled packets before decap.
        for message in self.dump_rules().await? {
            if message.header.table == RT_TABLE_LOCAL as u8 && priority(&message) == 0 {
                tolerate_missing(self.handle.rule().del(message).execute().await)
                    .map_err(|e| unavailable(format!("moving the local rule: {e}")))?;
            }
        }
        Ok(())
    }

    async fn dump_rules(&self) -> Result<Vec<RuleMessage>, DataPlaneError> {
        self.handle
            .rule()
            .get(IpVersion::V6)
            .execute()
            .try_collect()
            .await
            .map_err(|e| unavailable(format!("listing rules: {e}")))
    }

    async fn add_decap_rule(&self, care_of: Ipv6Addr) -> Result<(), DataPlaneError> {
        let mut request = self
            .handle
            .rule()
            .add()
            .v6()
            .priority(PREF_DECAP)
            .table_id(TABLE_DECAP)
            .source_prefix(care_of, 128)
            .action(RuleAction::ToTable);
        let attributes = &mut request.message_mut().attributes;
        attributes.push(RuleAttribute::IpProtocol(IpProtocol::Ipv6));
        attributes.push(RuleAttribute::Protocol(RouteProtocol::Other(PROTOCOL)));
        tolerate_exists(request.execute().await)
            .map_err(|e| refused("add decapsulation rule for", Ipv6Net::from(care_of), e))
    }

    async fn remove_decap_rule(&self, care_of: Ipv6Addr) -> Result<(), DataPlaneError> {
        for message in self.dump_rules().await? {
            if is_decap_rule(&message) && rule_source(&message) == Some(care_of) {
                tolerate_missing(self.handle.rule().del(message).execute().await).map_err(|e| {
                    refused("remove decapsulation rule for", Ipv6Net::from(care_of), e)
                })?;
            }
        }
        Ok(())
    }

    fn gate_route(&self, destination: Ipv6Net) -> RouteMessage {
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(destination.network(), destination.prefix_len())
            .gateway(GATE_OUT_ADDRESS)
            .output_interface(self.gate_in)
            .table_id(TABLE_ROUTE)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .build()
    }

    fn encap_route(&self, destination: Ipv6Net, care_of: Ipv6Addr) -> RouteMessage {
        let mut header = Seg6Header::default();
        // encap.red (reduced): no routing header, plain IPv6-in-IPv6 on the
        // wire, next header 41 (GUIDE.md).
        header.mode = Seg6Mode::Other(3);
        header.segments = vec![care_of];
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(destination.network(), destination.prefix_len())
            .output_interface(self.uplink)
            .table_id(TABLE_ENCAP)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .encap_seg6(vec![RouteSeg6IpTunnel::Seg6(header)])
            .build()
    }

    async fn install(&self, destination: Ipv6Net, care_of: Ipv6Addr) -> Result<(), DataPlaneError> {
        // Encapsulation first: the gate route then never leads nowhere.
        // Each seg6 route takes a per-CPU cache allocated atomically, from a
        // pool the kernel refills in the background; installing routes in a
        // burst empties it and the kernel answers ENOMEM (measured: after
        // about 12,500 routes at full speed, "percpu: atomic alloc failed"
        // in the kernel log). Waiting lets the pool refill.
        let mut wait = std::time::Duration::from_millis(1);
        loop {
            let result = self
                .handle
                .route()
                .add(self.encap_route(destination, care_of))
                .replace()
                .execute()
                .await;
            match result {
                Err(error) if errno(&error) == Some(ENOMEM) && wait < MAX_ENOMEM_WAIT => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => {
                    other
                        .map_err(|e| refused("install encapsulation route for", destination, e))?;
                    break;
                }
            }
        }
        self.handle
            .route()
            .add(self.gate_route(destination))
            .replace()
            .execute()
            .await
            .map_err(|e| refused("install route for", destination, e))
    }

    async fn uninstall(&self, destination: Ipv6Net) -> Result<(), DataPlaneError> {
        self.delete_route(TABLE_ROUTE, destination).await?;
        self.delete_route(TABLE_ENCAP, destination).await
    }

    async fn use_care_of(&self, care_of: Ipv6Addr) -> Result<(), DataPlaneError> {
        let mut users = self.care_of_users.lock().await;
        let count = users.entry(care_of).or_insert(0);
        if *count == 0 {
            self.add_decap_rule(care_of).await?;
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
            self.remove_decap_rule(care_of).await?;
        }
        Ok(())
    }

    /// The destinations (and, for encapsulation routes, the care-of
    /// address) of nemo's routes in a table. Streams the dump and keeps only
    /// these pairs, so memory follows nemo's routes, not the kernel's.
    async fn owned_routes(
        &self,
        table: u32,
    ) -> Result<Vec<(Ipv6Net, Option<Ipv6Addr>)>, DataPlaneError> {
        self.handle
            .route()
            .get(RouteMessageBuilder::<Ipv6Addr>::new().build())
            .execute()
            .try_filter_map(|m| async move {
                let ours =
                    route_table(&m) == table && m.header.protocol == RouteProtocol::Other(PROTOCOL);
                Ok(ours
                    .then(|| route_destination(&m).map(|d| (d, route_segment(&m))))
                    .flatten())
            })
            .try_collect()
            .await
            .map_err(|e| unavailable(format!("listing routes: {e}")))
    }

    /// Deletes nemo's route to `destination` in `table`.
    async fn delete_route(&self, table: u32, destination: Ipv6Net) -> Result<(), DataPlaneError> {
        let mut message = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(destination.network(), destination.prefix_len())
            .table_id(table)
            .build();
        message.header.protocol = RouteProtocol::Other(PROTOCOL);
        tolerate_missing(self.handle.route().del(message).execute().await)
            .map_err(|e| refused("remove route for", destination, e))
    }

    /// Removes everything this data plane installed: routes, rules, the gate;
    /// and puts the local table's rule back at 0. For shutdown.
    pub async fn teardown(&self) -> Result<(), DataPlaneError> {
        for table in [TABLE_ROUTE, TABLE_ENCAP, TABLE_DECAP] {
            for (destination, _) in self.owned_routes(table).await? {
                self.delete_route(table, destination).await?;
            }
        }
        let local_back = self
            .handle
            .rule()
            .add()
            .v6()
            .priority(0)
            .table_id(RT_TABLE_LOCAL)
            .action(RuleAction::ToTable);
        tolerate_exists(local_back.execute().await)
            .map_err(|e| unavailable(format!("restoring the local rule: {e}")))?;
        for message in self.dump_rules().await? {
            let ours = is_ours(&message);
            let moved_local =
                message.header.table == RT_TABLE_LOCAL as u8 && priority(&message) == PREF_LOCAL;
            if ours || moved_local {
                tolerate_missing(self.handle.rule().del(message).execute().await)
                    .map_err(|e| unavailable(format!("removing rule: {e}")))?;
            }
        }
        tolerate_missing(self.handle.link().del(self.gate_in).execute().await)
            .map_err(|e| unavailable(format!("removing the gate: {e}")))?;
        self.care_of_users.lock().await.clear();
        Ok(())
    }
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
    message.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet6(address)) => {
            Ipv6Net::new(*address, message.header.destination_prefix_length).ok()
        }
        _ => None,
    })
}

/// The care-of address of an encapsulation route.
fn route_segment(message: &RouteMessage) -> Option<Ipv6Addr> {
    message.attributes.iter().find_map(|a| match a {
        RouteAttribute::Encap(encaps) => encaps.iter().find_map(|e| match e {
            netlink_packet_route::route::RouteLwTunnelEncap::Seg6(RouteSeg6IpTunnel::Seg6(h)) => {
                h.segments.first().copied()
            }
            _ => None,
        }),
        _ => None,
    })
}

/// Index and MTU of an interface.
async fn link(handle: &Handle, name: &str) -> Result<(u32, u32), DataPlaneError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    let link = links
        .try_next()
        .await
        .map_err(|e| unavailable(format!("interface {name}: {e}")))?
        .ok_or_else(|| unavailable(format!("no interface {name}")))?;
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

/// Creates (or finds) the gate, sets its MTU, brings it up and gives its
/// ends their link-local addresses. Returns the entry's index.
async fn gate(handle: &Handle, names: &(String, String), mtu: u32) -> Result<u32, DataPlaneError> {
    let failed = |what: &str, e: rtnetlink::Error| unavailable(format!("gate {what}: {e}"));
    tolerate_exists(
        handle
            .link()
            .add(LinkVeth::new(&names.0, &names.1).build())
            .execute()
            .await,
    )
    .map_err(|e| failed("create", e))?;
    let mut indexes = Vec::new();
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
            .push(AddressAttribute::Flags(
                netlink_packet_route::address::AddressFlags::Nodad,
            ));
        tolerate_exists(request.execute().await).map_err(|e| failed("address", e))?;
        indexes.push(index);
    }
    Ok(indexes[0])
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
        let wanted: BTreeSet<Ipv6Net> = routes.destinations().collect();
        for destination in &wanted {
            self.install(*destination, routes.care_of).await?;
        }
        if let Some(previous) = previous {
            for destination in previous.destinations() {
                if !wanted.contains(&destination) {
                    self.uninstall(destination).await?;
                }
            }
            if moved {
                self.release_care_of(previous.care_of).await?;
            }
        }
        Ok(())
    }

    async fn clear(&self, routes: &BindingRoutes) -> Result<(), DataPlaneError> {
        for destination in routes.destinations() {
            self.uninstall(destination).await?;
        }
        self.release_care_of(routes.care_of).await
    }

    async fn remove_all(&self) -> Result<(), DataPlaneError> {
        self.teardown().await
    }

    async fn reconcile(&self, all: &[BindingRoutes]) -> Result<ReconcileReport, DataPlaneError> {
        let wanted: HashMap<Ipv6Net, Ipv6Addr> = all
            .iter()
            .flat_map(|r| r.destinations().map(move |d| (d, r.care_of)))
            .collect();
        let mut report = ReconcileReport::default();
        let encap: HashMap<Ipv6Net, Option<Ipv6Addr>> =
            self.owned_routes(TABLE_ENCAP).await?.into_iter().collect();
        let gated: BTreeSet<Ipv6Net> = self
            .owned_routes(TABLE_ROUTE)
            .await?
            .into_iter()
            .map(|(destination, _)| destination)
            .collect();
        for destination in encap.keys().chain(gated.iter()).collect::<BTreeSet<_>>() {
            if !wanted.contains_key(destination) {
                self.uninstall(*destination).await?;
                report.removed += 1;
            }
        }
        for (destination, care_of) in &wanted {
            if encap.get(destination) == Some(&Some(*care_of)) && gated.contains(destination) {
                report.kept += 1;
            } else {
                self.install(*destination, *care_of).await?;
                report.installed += 1;
            }
        }
        // Decapsulation rules: exactly one per care-of address in use.
        let mut users: HashMap<Ipv6Addr, usize> = HashMap::new();
        for routes in all {
            *users.entry(routes.care_of).or_insert(0) += 1;
        }
        for message in self.dump_rules().await? {
            if is_decap_rule(&message) {
                let source = rule_source(&message);
                if source.is_none_or(|s| !users.contains_key(&s)) {
                    tolerate_missing(self.handle.rule().del(message).execute().await)
                        .map_err(|e| unavailable(format!("removing stale rule: {e}")))?;
                    report.removed += 1;
                }
            }
        }
        for care_of in users.keys() {
            self.add_decap_rule(*care_of).await?;
        }
        *self.care_of_users.lock().await = users;
        Ok(report)
    }
}
