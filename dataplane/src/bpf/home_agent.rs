//! The home agent's BPF data plane: a binding is one entry per destination
//! in `nemo_bindings` (its home address and each Mobile Network Prefix, to
//! its care-of address), which serves both directions: packets to those
//! prefixes are tunnelled there, and the reverse tunnel takes packets from
//! them only from there (RFC 3963 §6.4). Routes carry the program: one per
//! configured aggregate
//! (a pool the controller allocates prefixes from), and one per
//! destination that no aggregate covers.
//!
//! ```text
//!   rule  950:          lookup 4191
//!   table 4191:         AGGREGATE encap bpf xmit nemo_encap_dst headroom 40 dev UPLINK
//!                       (and DESTINATION ... for what no aggregate covers)
//!   tc ingress UPLINK:  nemo_decap_src (nemo_local = the home agent's address)
//!   tc egress UPLINK:   nemo_bicast (copies while a tenant moves: nemo_also)
//! ```

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv6Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv6Net;
use libbpf_rs::{MapCore, MapFlags};
use rtnetlink::Handle;

use super::maps::{self, Counter};
use super::routes::{attach_tc, detach_tc, encap_route, TcHook};
use super::{Program, Programs};
use crate::linux::{
    add_rule, delete_route_from, install_route, link, owned_route_messages, remove_rules,
    route_destination, Rule, PREF_ROUTE, TABLE_ROUTE,
};
use crate::{BindingRoutes, DataPlaneError, HomeAgentDataPlane, Peer, ReconcileReport};

/// What the home agent's BPF data plane needs.
#[derive(Debug, Clone)]
pub struct BpfHomeAgentConfig {
    /// The interface towards the care-of addresses (tunnelled packets
    /// arrive on it).
    pub uplink: String,
    /// The home agent's address: the tunnels' source here, and where
    /// reverse-tunnelled packets must be sent.
    pub local_address: Ipv6Addr,
    /// The home agent's IPv4 address and DSMIPv6 port (RFC 5555: 4191),
    /// for mobile routers with IPv4 care-of addresses; `None`: none.
    pub local_ipv4: Option<SocketAddrV4>,
    /// Where the maps are pinned (a folder on a bpf filesystem); `None`
    /// keeps them unpinned (a restart then starts from empty maps).
    pub pin_dir: Option<PathBuf>,
    /// Prefixes whose every address is a tenant's (the controller's
    /// pools): one route each carries the program. A destination outside
    /// them gets a route of its own.
    pub aggregates: Vec<Ipv6Net>,
}

/// The home agent's data plane in BPF.
#[derive(Debug)]
pub struct BpfHomeAgent {
    handle: Handle,
    programs: Programs,
    uplink: u32,
    aggregates: Vec<Ipv6Net>,
}

use super::refused;

impl BpfHomeAgent {
    /// Loads the programs (over the pinned maps, if an earlier run left
    /// them), attaches decapsulation at the uplink and the aggregates'
    /// routes, replacing what an earlier run attached: forwarding goes on
    /// through a restart. Fails with the reason when the kernel cannot.
    pub async fn new(
        handle: Handle,
        config: BpfHomeAgentConfig,
    ) -> Result<BpfHomeAgent, DataPlaneError> {
        crate::require_forwarding("bpf")?;
        let programs = Programs::load(config.pin_dir.as_deref())?;
        let (uplink, _mtu) = link(&handle, &config.uplink).await?;
        programs.set_local(config.local_address)?;
        programs.set_local4(config.local_ipv4)?;
        attach_tc(
            TcHook::Decap,
            uplink,
            programs.fd(Program::DecapBySource)?.as_fd(),
        )?;
        // Copies to moving tenants' second peers: what an earlier run left
        // there is over (a move's copies last a window, and a restart ends
        // the window), then the program that sends them.
        programs.clear_also();
        attach_tc(
            TcHook::Bicast,
            uplink,
            programs.fd(Program::Bicast)?.as_fd(),
        )?;
        add_rule(
            &handle,
            &Rule {
                preference: PREF_ROUTE,
                table: TABLE_ROUTE,
                input: None,
                source: None,
                tunnelled: false,
            },
        )
        .await?;
        let plane = BpfHomeAgent {
            handle,
            programs,
            uplink,
            aggregates: config.aggregates,
        };
        for aggregate in &plane.aggregates {
            plane.route(*aggregate).await?;
        }
        tracing::info!(
            uplink = %config.uplink,
            local = %config.local_address,
            local_ipv4 = ?config.local_ipv4,
            aggregates = ?plane.aggregates,
            pinned = ?plane.programs.pin_dir(),
            "bpf home-agent data plane ready"
        );
        Ok(plane)
    }

    /// The programs and maps (for tests and metrics).
    pub fn programs(&self) -> &Programs {
        &self.programs
    }

    /// A counter of the programs.
    pub fn counter(&self, counter: Counter) -> u64 {
        self.programs.counter(counter)
    }

    fn covered(&self, destination: Ipv6Net) -> bool {
        self.aggregates.iter().any(|a| a.contains(&destination))
    }

    async fn route(&self, destination: Ipv6Net) -> Result<(), DataPlaneError> {
        let fd = self.programs.fd(Program::EncapByDestination)?;
        let message = encap_route(
            destination,
            self.uplink,
            TABLE_ROUTE,
            Program::EncapByDestination,
            fd.as_fd(),
        );
        install_route(&self.handle, message, destination).await
    }

    /// Points `destination` at `care_of` (one map entry, replaced in
    /// place: both directions move at once), then its route if no
    /// aggregate covers it.
    async fn install(&self, destination: Ipv6Net, care_of: Peer) -> Result<(), DataPlaneError> {
        self.programs
            .bindings
            .update(
                &maps::prefix_key(destination),
                &maps::peer_value(care_of),
                MapFlags::ANY,
            )
            .map_err(|e| refused("install binding for", destination, e))?;
        if !self.covered(destination) {
            self.route(destination).await?;
        }
        Ok(())
    }

    async fn uninstall(&self, destination: Ipv6Net) -> Result<(), DataPlaneError> {
        if !self.covered(destination) {
            delete_route_from(&self.handle, TABLE_ROUTE, destination, None).await?;
        }
        match self
            .programs
            .bindings
            .delete(&maps::prefix_key(destination))
        {
            Err(error) if error.kind() != libbpf_rs::ErrorKind::NotFound => {
                Err(refused("remove binding for", destination, error))
            }
            _ => Ok(()),
        }
    }

    /// Removes everything: routes, rule, the tc filter, the map entries and
    /// their pins.
    pub async fn teardown(&self) -> Result<(), DataPlaneError> {
        for destination in self.listed_routes().await? {
            delete_route_from(&self.handle, TABLE_ROUTE, destination, None).await?;
        }
        remove_rules(&self.handle, |m| {
            crate::linux::is_ours(m) && crate::linux::priority(m) == PREF_ROUTE
        })
        .await?;
        detach_tc(
            TcHook::Decap,
            self.uplink,
            self.programs.fd(Program::DecapBySource)?.as_fd(),
        )?;
        detach_tc(
            TcHook::Bicast,
            self.uplink,
            self.programs.fd(Program::Bicast)?.as_fd(),
        )?;
        self.programs.clear_bindings();
        self.programs.unpin()
    }

    async fn listed_routes(&self) -> Result<Vec<Ipv6Net>, DataPlaneError> {
        owned_route_messages(TABLE_ROUTE, |m| {
            super::routes::is_bpf_route(m)
                .then(|| route_destination(m))
                .flatten()
        })
        .await
    }
}

impl HomeAgentDataPlane for BpfHomeAgent {
    fn name(&self) -> &'static str {
        "bpf (lwt xmit encapsulation, tc ingress decapsulation)"
    }

    async fn bicast(&self, second: &BindingRoutes) -> Result<bool, DataPlaneError> {
        for destination in second.destinations() {
            self.programs
                .also
                .update(
                    &maps::prefix_key(destination),
                    &maps::second_value(second.care_of),
                    MapFlags::ANY,
                )
                .map_err(|e| refused("copy packets to a second peer for", destination, e))?;
        }
        Ok(true)
    }

    async fn end_bicast(&self, second: &BindingRoutes) -> Result<(), DataPlaneError> {
        for destination in second.destinations() {
            let key = maps::prefix_key(destination);
            // Only this move's copies: a later move may have set another.
            let peer = self
                .programs
                .also
                .lookup(&key, MapFlags::ANY)
                .ok()
                .flatten();
            if peer.as_deref().and_then(maps::value_peer) != Some(second.care_of) {
                continue;
            }
            match self.programs.also.delete(&key) {
                Err(error) if error.kind() != libbpf_rs::ErrorKind::NotFound => {
                    return Err(refused("stop copying packets for", destination, error));
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn bicast_heard(&self, second: &BindingRoutes) -> Option<Duration> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
        let now_ns = u64::try_from(Duration::from(now).as_nanos()).ok()?;
        second
            .destinations()
            .filter_map(|destination| {
                let value = self
                    .programs
                    .also
                    .lookup(&maps::prefix_key(destination), MapFlags::ANY)
                    .ok()??;
                (maps::value_peer(&value)? == second.care_of)
                    .then(|| maps::second_heard_ns(&value))?
            })
            .max()
            .map(|heard| Duration::from_nanos(now_ns.saturating_sub(heard)))
    }

    fn refused_tunnelled(&self) -> Option<u64> {
        Some(self.programs.refused_tunnelled())
    }

    fn packet_counters(&self) -> Vec<(&'static str, u64)> {
        self.programs.counters()
    }

    async fn set(
        &self,
        routes: &BindingRoutes,
        previous: Option<&BindingRoutes>,
    ) -> Result<(), DataPlaneError> {
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
        }
        Ok(())
    }

    async fn clear(&self, routes: &BindingRoutes) -> Result<(), DataPlaneError> {
        for destination in routes.destinations() {
            self.uninstall(destination).await?;
        }
        Ok(())
    }

    async fn reconcile(&self, all: &[BindingRoutes]) -> Result<ReconcileReport, DataPlaneError> {
        let mut listed = self.programs.listed_bindings();
        let mut report = ReconcileReport::default();
        // Routes are installed again whatever they hold: after a restart
        // they still carry the last run's program, and a replace points
        // them at this run's (the old one goes once nothing holds it).
        let mut routes: BTreeSet<Ipv6Net> = self.listed_routes().await?.into_iter().collect();
        for aggregate in &self.aggregates {
            routes.remove(aggregate);
            self.route(*aggregate).await?;
        }
        for binding in all {
            for destination in binding.destinations() {
                let right = listed.remove(&destination) == Some(binding.care_of);
                if right && self.covered(destination) {
                    report.kept += 1;
                } else {
                    routes.remove(&destination);
                    self.install(destination, binding.care_of).await?;
                    if right {
                        report.kept += 1;
                    } else {
                        report.installed += 1;
                    }
                }
            }
        }
        let stale: BTreeSet<Ipv6Net> = listed.into_keys().collect();
        report.removed = stale.len();
        for destination in stale {
            self.uninstall(destination).await?;
        }
        for destination in routes {
            delete_route_from(&self.handle, TABLE_ROUTE, destination, None).await?;
        }
        Ok(report)
    }

    async fn settle(
        &self,
        now: &[BindingRoutes],
        gone: &[BindingRoutes],
        _users: HashMap<Ipv6Addr, usize>,
    ) -> Result<(), DataPlaneError> {
        // Peers are per destination here, not counted per care-of address:
        // installing `now` and removing what only `gone` held is all.
        let crate::Settlement { remove, install } = crate::settlement(now, gone);
        for destination in remove {
            self.uninstall(destination).await?;
        }
        for (destination, care_of) in install {
            self.install(destination, care_of).await?;
        }
        Ok(())
    }

    async fn remove_all(&self) -> Result<(), DataPlaneError> {
        self.teardown().await
    }
}
