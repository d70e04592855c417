//! The host-wide part of the seg6 data plane both daemons share: the
//! gate, the rules, the decapsulation routes, and route changes over
//! netlink.

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::route::{
    RouteMessage, RouteProtocol, RouteSeg6IpTunnel, RouteSeg6LocalTunnel, Seg6Header,
    Seg6LocalAction, Seg6Mode,
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::probe::probe_seg6;
use super::routes::{delete_route_from, install_route, owned_route_messages};
use super::{
    add_local_rule, add_rule, dump_rules, is_decap_rule, is_local_rule, is_ours, link,
    remove_rules, route_destination, route_segment, route_source, rule_source, tolerate_exists,
    tolerate_missing, unavailable, Rule, ENCAPSULATION_OVERHEAD, GATE_IN_ADDRESS, GATE_OUT_ADDRESS,
    PREF_DECAP, PREF_LOCAL, PROTOCOL, RT_TABLE_MAIN, TABLE_DECAP,
};
use crate::DataPlaneError;

/// The host-wide part both sides share: the gate, the local rule moved, and
/// the uplink found.
#[derive(Debug)]
pub(super) struct Host {
    pub(super) handle: Handle,
    /// This host's tunnel address: the destination of its decapsulation
    /// routes (a mobile router's changes when it moves).
    pub(super) local: std::sync::Mutex<Ipv6Addr>,
    pub(super) uplink: u32,
    pub(super) gate: (String, String),
    pub(super) gate_in: u32,
    pub(super) gate_mtu: u32,
}

impl Host {
    pub(super) async fn prepare(
        handle: Handle,
        uplink: &str,
        gate: (String, String),
    ) -> Result<Host, DataPlaneError> {
        if let Err(reason) = probe_seg6() {
            return Err(unavailable(reason));
        }
        crate::require_forwarding("seg6")?;
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
    pub(super) async fn install(
        &self,
        message: RouteMessage,
        destination: Ipv6Net,
    ) -> Result<(), DataPlaneError> {
        install_route(&self.handle, message, destination).await
    }

    /// Deletes nemo's route to `destination` in `table`.
    pub(super) async fn delete_route(
        &self,
        table: u32,
        destination: Ipv6Net,
    ) -> Result<(), DataPlaneError> {
        self.delete_route_from(table, destination, None).await
    }

    /// Deletes nemo's route to `destination` in `table`, the one for
    /// packets from `source` when it is source-specific (the kernel finds
    /// those only by both).
    pub(super) async fn delete_route_from(
        &self,
        table: u32,
        destination: Ipv6Net,
        source: Option<Ipv6Addr>,
    ) -> Result<(), DataPlaneError> {
        delete_route_from(&self.handle, table, destination, source).await
    }

    /// The destinations (and, for encapsulation routes, the far end) of
    /// nemo's routes in a table. Streams the dump and keeps only these
    /// pairs, so memory follows nemo's routes, not the kernel's.
    pub(super) async fn owned_routes(
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
    pub(super) async fn owned_route_keys(
        &self,
        table: u32,
    ) -> Result<Vec<(Ipv6Net, Option<Ipv6Addr>)>, DataPlaneError> {
        self.owned_route_messages(table, |m| {
            route_destination(m).map(|d| (d, route_source(m)))
        })
        .await
    }

    /// What `keep` takes of each of nemo's routes in a table.
    pub(super) async fn owned_route_messages<T>(
        &self,
        table: u32,
        keep: impl Fn(&RouteMessage) -> Option<T> + Copy,
    ) -> Result<Vec<T>, DataPlaneError> {
        owned_route_messages(table, keep).await
    }

    pub(super) fn gate_route(&self, destination: Ipv6Net, table: u32) -> RouteMessage {
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
    pub(super) fn encap_route(
        &self,
        destination: Ipv6Net,
        far_end: Ipv6Addr,
        table: u32,
    ) -> RouteMessage {
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
    pub(super) fn decap_route(&self, local: Ipv6Addr, peer: Ipv6Addr) -> RouteMessage {
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

    pub(super) fn local(&self) -> Ipv6Addr {
        *self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decapsulates what `peer` tunnels to this host.
    pub(super) async fn add_decap_peer(&self, peer: Ipv6Addr) -> Result<(), DataPlaneError> {
        let local = self.local();
        self.install(self.decap_route(local, peer), Ipv6Net::from(local))
            .await
    }

    /// Stops decapsulating what `peer` tunnels.
    pub(super) async fn remove_decap_peer(&self, peer: Ipv6Addr) -> Result<(), DataPlaneError> {
        let local = Ipv6Net::from(self.local());
        self.delete_route_from(TABLE_DECAP, local, Some(peer)).await
    }

    /// Makes the peers decapsulated at this host's tunnel address exactly
    /// `peers`: each one's route installed before any other goes (a peer's
    /// tunnel is never without one, also when the address changed), then
    /// routes to another address, of another peer or taking every source
    /// removed. Returns how many went.
    pub(super) async fn set_decap_peers(
        &self,
        peers: impl Iterator<Item = Ipv6Addr>,
    ) -> Result<usize, DataPlaneError> {
        let peers: HashSet<Ipv6Addr> = peers.collect();
        for peer in &peers {
            self.add_decap_peer(*peer).await?;
        }
        let local = Ipv6Net::from(self.local());
        let mut removed = 0;
        for (destination, source) in self.owned_route_keys(TABLE_DECAP).await? {
            if destination != local || source.is_none_or(|s| !peers.contains(&s)) {
                self.delete_route_from(TABLE_DECAP, destination, source)
                    .await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Sets this host's tunnel address: the decapsulation routes follow it
    /// (each peer's new route before its old one goes, so a peer's tunnel
    /// is never without one), and so does the seg6 tunnel source. At start,
    /// also takes an earlier version's decapsulation rules per peer over as
    /// routes, and drops a route that took every source.
    pub(super) async fn set_decap_address(&self, local: Ipv6Addr) -> Result<(), DataPlaneError> {
        let destination = Ipv6Net::from(local);
        *self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = local;
        // The peers: those of the routes there are, and of an earlier
        // version's rules.
        let mut peers: BTreeSet<Ipv6Addr> = dump_rules(&self.handle)
            .await?
            .iter()
            .filter(|m| is_decap_rule(m))
            .filter_map(rule_source)
            .collect();
        peers.extend(
            self.owned_route_keys(TABLE_DECAP)
                .await?
                .into_iter()
                .filter_map(|(_, source)| source),
        );
        self.set_decap_peers(peers.into_iter()).await?;
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
    pub(super) async fn teardown(&self, tables: &[u32]) -> Result<(), DataPlaneError> {
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
