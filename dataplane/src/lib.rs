//! The data plane both daemons program: for a binding, packets to its
//! prefixes go IPv6-in-IPv6 (RFC 2473) to the care-of address, and packets
//! tunnelled from the care-of address are taken out of the tunnel (reverse
//! tunnelling, RFC 3963 §5.5, §6.4).
//!
//! The daemons talk to it through [`HomeAgentDataPlane`], so that the
//! control plane can be built and tested without a kernel. Backends:
//! - [`MemoryDataPlane`]: keeps the routes in memory, programs nothing. For
//!   tests, and for running the control plane alone (it says so at start).
//! - [`linux::Seg6HomeAgent`]: seg6 encap.red / End.DT6 with an MTU gate,
//!   over rtnetlink (kernels without ip6tnl, like this one).
//! - [`bpf::BpfHomeAgent`], [`bpf::BpfMobileRouter`]: LWT and tc BPF
//!   programs with the bindings in maps (kernels with `CONFIG_LWTUNNEL_BPF`
//!   and `CONFIG_NET_CLS_BPF`; no seg6 needed).
//! - ip6tnl for kernels that have it: not built yet (issue #3); this kernel
//!   has no ip6tnl to verify it on.

pub mod addresses;
mod backend;
pub mod bpf;
pub mod guest;
pub mod links;
pub mod linux;
mod peer;
pub mod quiet;
pub mod transport;
pub mod tunsrc;
pub mod vrrp;
pub mod xlat;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::Ipv6Addr;
use std::sync::Mutex;

use ipnet::Ipv6Net;

pub use backend::{watch_refused_tunnelled, DataPlaneBackend, KernelBackend};
pub use peer::Peer;

/// IPv6 forwarding is on, or why a kernel backend (`backend`) cannot run:
/// the home agent forwards correspondents' packets into the tunnel, the
/// mobile router its tenants'.
pub(crate) fn require_forwarding(backend: &'static str) -> Result<(), DataPlaneError> {
    let unavailable = |reason: String| DataPlaneError::Unavailable { backend, reason };
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding")
        .map_err(|e| unavailable(format!("reading the forwarding sysctl: {e}")))?;
    if forwarding.trim() != "1" {
        return Err(unavailable(
            "IPv6 forwarding is off (net.ipv6.conf.all.forwarding=0)".into(),
        ));
    }
    Ok(())
}

/// What one binding needs from the data plane: its home address and
/// prefixes, tunnelled to its care-of address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRoutes {
    /// The mobile router's home address (routed as a /128 too).
    pub home_address: Ipv6Addr,
    /// Where the tunnel goes: the care-of address (IPv4 ones through the
    /// BPF backend only).
    pub care_of: Peer,
    /// The Mobile Network Prefixes.
    pub prefixes: Vec<Ipv6Net>,
}

impl BindingRoutes {
    /// Every destination routed into the tunnel: the home address and the
    /// prefixes.
    pub fn destinations(&self) -> impl Iterator<Item = Ipv6Net> + '_ {
        std::iter::once(Ipv6Net::from(self.home_address)).chain(self.prefixes.iter().copied())
    }
}

/// Why the data plane could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataPlaneError {
    /// The kernel refused a change.
    #[error("kernel refused to {action} {destination}: {reason}")]
    Refused {
        /// What was attempted.
        action: &'static str,
        /// The destination concerned.
        destination: Ipv6Net,
        /// What the kernel said.
        reason: String,
    },
    /// The data plane has no room left for the change (a BPF map full,
    /// the kernel out of memory).
    #[error("no room to {action} {destination}: {reason}")]
    Exhausted {
        /// What was attempted.
        action: &'static str,
        /// The destination concerned.
        destination: Ipv6Net,
        /// What the kernel said.
        reason: String,
    },
    /// The backend is not available on this kernel.
    #[error("data plane backend {backend} unavailable: {reason}")]
    Unavailable {
        /// The backend.
        backend: &'static str,
        /// Why.
        reason: String,
    },
}

/// What reconciliation at start-up did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Routes installed because they were missing.
    pub installed: usize,
    /// Routes that were already right.
    pub kept: usize,
    /// Stale routes of ours removed.
    pub removed: usize,
}

/// The home agent's side of the data plane. Every call is idempotent.
pub trait HomeAgentDataPlane: Send + Sync + 'static {
    /// A name for logs.
    fn name(&self) -> &'static str;

    /// Tunnelled packets refused so far (from a peer not bound to them, or
    /// malformed), where the data plane counts them itself (the BPF
    /// programs do); `None` where it cannot (seg6: the kernel's own
    /// counter, [`tunsrc::watch_decapsulation_misses`], is read instead).
    fn refused_tunnelled(&self) -> Option<u64> {
        None
    }

    /// The programs' packet counters by name, where the data plane counts
    /// (the BPF one); empty elsewhere.
    fn packet_counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Points the binding's destinations at its care-of address, replacing
    /// any route to another care-of address in one step (no window without
    /// a route), and removes destinations `previous` had that `routes` does
    /// not.
    fn set(
        &self,
        routes: &BindingRoutes,
        previous: Option<&BindingRoutes>,
    ) -> impl Future<Output = Result<(), DataPlaneError>> + Send;

    /// While a tenant moves (issue 29, make-before-break): packets to the
    /// destinations of `second` go to `second.care_of` too, beside their
    /// binding's care-of address, and packets reverse-tunnelled from there
    /// are taken as well; until [`HomeAgentDataPlane::end_bicast`]. `false`:
    /// this backend cannot copy packets (only the BPF one can).
    fn bicast(
        &self,
        second: &BindingRoutes,
    ) -> impl Future<Output = Result<bool, DataPlaneError>> + Send {
        let _ = second;
        async { Ok(false) }
    }

    /// Ends what [`HomeAgentDataPlane::bicast`] started for `second` (its
    /// destinations still copied to `second.care_of`; a later move's
    /// copies stay).
    fn end_bicast(
        &self,
        second: &BindingRoutes,
    ) -> impl Future<Output = Result<(), DataPlaneError>> + Send {
        let _ = second;
        async { Ok(()) }
    }

    /// How long ago a packet from `second.care_of` was last taken out of
    /// the tunnel while [`HomeAgentDataPlane::bicast`] copied to it (the
    /// VM still running there); `None`: never, or this backend cannot tell.
    fn bicast_heard(
        &self,
        second: &BindingRoutes,
    ) -> impl Future<Output = Option<std::time::Duration>> + Send {
        let _ = second;
        async { None }
    }

    /// Removes the binding's routes.
    fn clear(
        &self,
        routes: &BindingRoutes,
    ) -> impl Future<Output = Result<(), DataPlaneError>> + Send;

    /// Makes the routes this data plane owns exactly `all`: installs what is
    /// missing, keeps what is right, removes the rest.
    fn reconcile(
        &self,
        all: &[BindingRoutes],
    ) -> impl Future<Output = Result<ReconcileReport, DataPlaneError>> + Send;

    /// Removes everything this data plane created (shutdown with
    /// forwarding removed).
    fn remove_all(&self) -> impl Future<Output = Result<(), DataPlaneError>> + Send;

    /// Ends a [`HomeAgentDataPlane::reconcile`] that ran beside `set` and
    /// `clear` calls (a restart that serves before its data plane caught
    /// up): the reconcile worked from an older list, so the bindings that
    /// changed meanwhile are made what they are now: `now` installed,
    /// the destinations of `gone` (what they were before) removed unless
    /// `now` holds them; and the decapsulation state is made exactly
    /// `users` (care-of address -> bindings using it, over every binding),
    /// counted anew rather than from what each call added or released.
    fn settle(
        &self,
        now: &[BindingRoutes],
        gone: &[BindingRoutes],
        users: HashMap<Ipv6Addr, usize>,
    ) -> impl Future<Output = Result<(), DataPlaneError>> + Send;
}

/// Whether a tenant's traffic passes at a mobile router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Traffic {
    /// Both ways, as attached.
    #[default]
    Pass,
    /// Dropped both ways and counted, until passed again.
    Hold,
}

/// Passes a held tenant's traffic (see [`MobileRouterDataPlane::release`]).
pub struct Release(Box<dyn Fn() -> Result<(), DataPlaneError> + Send>);

impl Release {
    /// Wraps what passes the traffic.
    pub fn new(pass: impl Fn() -> Result<(), DataPlaneError> + Send + 'static) -> Release {
        Release(Box::new(pass))
    }

    /// Passes the traffic now.
    pub fn now(&self) -> Result<(), DataPlaneError> {
        (self.0)()
    }
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Release")
    }
}

/// What one tenant instance of a mobile router needs from the data plane:
/// its prefixes, reached on the tenant's interface, tunnelled to its home
/// agent and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRoutes {
    /// The tenant's interface on this host (the link its VMs are on).
    pub interface: String,
    /// The tenant's Mobile Network Prefixes.
    pub prefixes: Vec<Ipv6Net>,
    /// The home agent the tunnel goes to (an IPv4 one through the BPF
    /// backend only).
    pub home_agent: Peer,
    /// A routing table of the tenant's own (its encapsulation), unique on
    /// this host, so tenants stay apart.
    pub table: u32,
}

/// The mobile router's side of the data plane. Every call is idempotent.
pub trait MobileRouterDataPlane: Send + Sync + 'static {
    /// A name for logs.
    fn name(&self) -> &'static str;

    /// Tunnelled packets refused so far (from a peer not bound to them, or
    /// malformed), where the data plane counts them itself (the BPF
    /// programs do); `None` where it cannot (seg6: the kernel's own
    /// counter, [`tunsrc::watch_decapsulation_misses`], is read instead).
    fn refused_tunnelled(&self) -> Option<u64> {
        None
    }

    /// The programs' packet counters by name, where the data plane counts
    /// (the BPF one); empty elsewhere.
    fn packet_counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Sets the host's care-of address, where tunnelled packets arrive
    /// (the uplink's address; it changes when the host moves).
    fn set_care_of(
        &self,
        care_of: Ipv6Addr,
    ) -> impl Future<Output = Result<(), DataPlaneError>> + Send;

    /// Sets the host's IPv4 care-of address and the UDP port of its DSMIPv6
    /// socket (RFC 5555 §4.1), for tenants whose home agent is an IPv4
    /// peer; `None` when the host has none. Only the BPF backend tunnels
    /// over IPv4: the others refuse an address.
    fn set_ipv4_care_of(
        &self,
        care_of: Option<std::net::SocketAddrV4>,
    ) -> impl Future<Output = Result<(), DataPlaneError>> + Send {
        let name = self.name();
        async move {
            match care_of {
                None => Ok(()),
                Some(care_of) => Err(DataPlaneError::Unavailable {
                    backend: name,
                    reason: format!(
                        "IPv4 care-of address {care_of}: this backend tunnels IPv6 in IPv6 only \
                         ([dataplane] backend = \"bpf\" tunnels over IPv4)"
                    ),
                }),
            }
        }
    }

    /// Sends traffic from the tenant's prefixes through the tunnel to its
    /// home agent and takes tunnelled traffic from that home agent off the
    /// tunnel; replaces `previous` (another home agent, other prefixes).
    fn attach(
        &self,
        tenant: &TenantRoutes,
        previous: Option<&TenantRoutes>,
    ) -> impl Future<Output = Result<(), DataPlaneError>> + Send;

    /// Holds an attached tenant (its VM is on its way here: what arrives
    /// for it is dropped rather than queued in its port behind everything
    /// else) or passes its traffic again. `false`: this backend cannot hold
    /// (only the BPF one can): the traffic passes.
    fn deliver(
        &self,
        tenant: &TenantRoutes,
        traffic: Traffic,
    ) -> impl Future<Output = Result<bool, DataPlaneError>> + Send {
        let _ = (tenant, traffic);
        async { Ok(false) }
    }

    /// What passes a held tenant's traffic from any thread at once (the
    /// one that sees its VM announce itself), without waiting for the
    /// daemon's loop: a millisecond there is a probe lost. `None` where
    /// nothing holds.
    fn release(&self, tenant: &TenantRoutes) -> Option<Release> {
        let _ = tenant;
        None
    }

    /// Removes what `attach` installed for the tenant.
    fn detach(
        &self,
        tenant: &TenantRoutes,
    ) -> impl Future<Output = Result<(), DataPlaneError>> + Send;

    /// Removes everything this data plane created.
    fn remove_all(&self) -> impl Future<Output = Result<(), DataPlaneError>> + Send;
}

/// A data plane that keeps its routes in memory and programs nothing.
#[derive(Debug, Default)]
pub struct MemoryDataPlane {
    routes: Mutex<BTreeMap<Ipv6Net, Peer>>,
    refuse: Mutex<Vec<Ipv6Net>>,
    tenants: Mutex<BTreeMap<String, TenantRoutes>>,
    /// Tenants held, by interface (as the BPF data plane holds them).
    held: Mutex<std::collections::BTreeSet<String>>,
    care_of: Mutex<Option<Ipv6Addr>>,
}

impl MemoryDataPlane {
    /// An empty data plane.
    pub fn new() -> MemoryDataPlane {
        MemoryDataPlane::default()
    }

    /// The routes: destination to care-of address.
    pub fn routes(&self) -> BTreeMap<Ipv6Net, Peer> {
        self.routes.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Makes every later change touching `destination` fail, as a kernel
    /// refusing a route would (for tests of the failure paths).
    pub fn refuse(&self, destination: Ipv6Net) {
        if let Ok(mut refuse) = self.refuse.lock() {
            refuse.push(destination);
        }
    }

    /// The tenants attached, by interface.
    pub fn tenants(&self) -> BTreeMap<String, TenantRoutes> {
        self.tenants.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The care-of address set.
    pub fn care_of(&self) -> Option<Ipv6Addr> {
        self.care_of.lock().map(|c| *c).unwrap_or(None)
    }

    fn check(&self, action: &'static str, destination: Ipv6Net) -> Result<(), DataPlaneError> {
        let refused = self
            .refuse
            .lock()
            .map(|r| r.contains(&destination))
            .unwrap_or(false);
        if refused {
            return Err(DataPlaneError::Refused {
                action,
                destination,
                reason: "refused by test".into(),
            });
        }
        Ok(())
    }
}

impl HomeAgentDataPlane for MemoryDataPlane {
    fn name(&self) -> &'static str {
        "memory (no kernel forwarding)"
    }

    async fn set(
        &self,
        routes: &BindingRoutes,
        previous: Option<&BindingRoutes>,
    ) -> Result<(), DataPlaneError> {
        let wanted: Vec<Ipv6Net> = routes.destinations().collect();
        for destination in &wanted {
            self.check("install", *destination)?;
        }
        let mut table = self
            .routes
            .lock()
            .map_err(|_| DataPlaneError::Unavailable {
                backend: "memory",
                reason: "poisoned".into(),
            })?;
        for destination in wanted.iter() {
            table.insert(*destination, routes.care_of);
        }
        if let Some(previous) = previous {
            for destination in previous.destinations() {
                if !wanted.contains(&destination) {
                    table.remove(&destination);
                }
            }
        }
        Ok(())
    }

    async fn clear(&self, routes: &BindingRoutes) -> Result<(), DataPlaneError> {
        let mut table = self
            .routes
            .lock()
            .map_err(|_| DataPlaneError::Unavailable {
                backend: "memory",
                reason: "poisoned".into(),
            })?;
        for destination in routes.destinations() {
            table.remove(&destination);
        }
        Ok(())
    }

    async fn remove_all(&self) -> Result<(), DataPlaneError> {
        if let Ok(mut table) = self.routes.lock() {
            table.clear();
        }
        Ok(())
    }

    async fn reconcile(&self, all: &[BindingRoutes]) -> Result<ReconcileReport, DataPlaneError> {
        let mut table = self
            .routes
            .lock()
            .map_err(|_| DataPlaneError::Unavailable {
                backend: "memory",
                reason: "poisoned".into(),
            })?;
        let wanted: BTreeMap<Ipv6Net, Peer> = all
            .iter()
            .flat_map(|routes| routes.destinations().map(move |d| (d, routes.care_of)))
            .collect();
        let mut report = ReconcileReport::default();
        table.retain(|destination, care_of| {
            let keep = wanted.get(destination) == Some(care_of);
            if !keep {
                report.removed += 1;
            }
            keep
        });
        for (destination, care_of) in wanted {
            if table.insert(destination, care_of).is_none() {
                report.installed += 1;
            } else {
                report.kept += 1;
            }
        }
        Ok(report)
    }

    async fn settle(
        &self,
        now: &[BindingRoutes],
        gone: &[BindingRoutes],
        _users: HashMap<Ipv6Addr, usize>,
    ) -> Result<(), DataPlaneError> {
        let mut table = self
            .routes
            .lock()
            .map_err(|_| DataPlaneError::Unavailable {
                backend: "memory",
                reason: "poisoned".into(),
            })?;
        let Settlement { remove, install } = settlement(now, gone);
        for destination in remove {
            table.remove(&destination);
        }
        table.extend(install);
        Ok(())
    }
}

/// What a `settle` does with the routes: every backend the same.
pub(crate) struct Settlement {
    /// Destinations `gone` had that `now` does not hold: removed.
    pub(crate) remove: Vec<Ipv6Net>,
    /// Every destination `now` holds, with its care-of address: installed
    /// (again, idempotently).
    pub(crate) install: HashMap<Ipv6Net, Peer>,
}

/// The settlement of `now` against `gone` ([`HomeAgentDataPlane::settle`]).
pub(crate) fn settlement(now: &[BindingRoutes], gone: &[BindingRoutes]) -> Settlement {
    let install: HashMap<Ipv6Net, Peer> = now
        .iter()
        .flat_map(|routes| routes.destinations().map(move |d| (d, routes.care_of)))
        .collect();
    let remove = gone
        .iter()
        .flat_map(BindingRoutes::destinations)
        .filter(|destination| !install.contains_key(destination))
        .collect();
    Settlement { remove, install }
}

impl MobileRouterDataPlane for MemoryDataPlane {
    fn name(&self) -> &'static str {
        "memory (no kernel forwarding)"
    }

    async fn set_ipv4_care_of(
        &self,
        _care_of: Option<std::net::SocketAddrV4>,
    ) -> Result<(), DataPlaneError> {
        // Nothing is forwarded: any address will do.
        Ok(())
    }

    async fn set_care_of(&self, care_of: Ipv6Addr) -> Result<(), DataPlaneError> {
        if let Ok(mut current) = self.care_of.lock() {
            *current = Some(care_of);
        }
        Ok(())
    }

    async fn attach(
        &self,
        tenant: &TenantRoutes,
        previous: Option<&TenantRoutes>,
    ) -> Result<(), DataPlaneError> {
        for prefix in &tenant.prefixes {
            self.check("attach", *prefix)?;
        }
        if let Ok(mut tenants) = self.tenants.lock() {
            if let Some(previous) = previous {
                tenants.remove(&previous.interface);
            }
            tenants.insert(tenant.interface.clone(), tenant.clone());
        }
        Ok(())
    }

    async fn deliver(
        &self,
        tenant: &TenantRoutes,
        traffic: Traffic,
    ) -> Result<bool, DataPlaneError> {
        if let Ok(mut held) = self.held.lock() {
            match traffic {
                Traffic::Hold => held.insert(tenant.interface.clone()),
                Traffic::Pass => held.remove(&tenant.interface),
            };
        }
        Ok(true)
    }

    async fn detach(&self, tenant: &TenantRoutes) -> Result<(), DataPlaneError> {
        if let Ok(mut tenants) = self.tenants.lock() {
            tenants.remove(&tenant.interface);
        }
        if let Ok(mut held) = self.held.lock() {
            held.remove(&tenant.interface);
        }
        Ok(())
    }

    async fn remove_all(&self) -> Result<(), DataPlaneError> {
        if let Ok(mut tenants) = self.tenants.lock() {
            tenants.clear();
        }
        if let Ok(mut held) = self.held.lock() {
            held.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(care_of: &str, prefixes: &[&str]) -> BindingRoutes {
        BindingRoutes {
            home_address: "2001:db8:1::100".parse().unwrap(),
            care_of: care_of.parse().unwrap(),
            prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    #[tokio::test]
    async fn set_replaces_and_prunes() {
        let plane = MemoryDataPlane::new();
        let first = routes(
            "2001:db8:2::10",
            &["2001:db8:100::/56", "2001:db8:101::/56"],
        );
        plane.set(&first, None).await.unwrap();
        assert_eq!(plane.routes().len(), 3);
        let moved = routes("2001:db8:3::10", &["2001:db8:100::/56"]);
        plane.set(&moved, Some(&first)).await.unwrap();
        let table = plane.routes();
        assert_eq!(table.len(), 2);
        assert!(table.values().all(|c| *c == moved.care_of));
        plane.clear(&moved).await.unwrap();
        assert!(plane.routes().is_empty());
    }

    #[tokio::test]
    async fn reconcile_keeps_installs_and_removes() {
        let plane = MemoryDataPlane::new();
        plane
            .set(&routes("2001:db8:2::10", &["2001:db8:100::/56"]), None)
            .await
            .unwrap();
        let mut stale = routes("2001:db8:2::10", &["2001:db8:900::/56"]);
        stale.home_address = "2001:db8:1::900".parse().unwrap();
        plane.set(&stale, None).await.unwrap();
        let wanted = routes(
            "2001:db8:2::10",
            &["2001:db8:100::/56", "2001:db8:101::/56"],
        );
        let report = plane.reconcile(&[wanted]).await.unwrap();
        assert_eq!(
            report,
            ReconcileReport {
                installed: 1,
                kept: 2,
                removed: 2
            }
        );
    }

    #[tokio::test]
    async fn settling_undoes_what_a_late_reconcile_put_back() {
        let plane = MemoryDataPlane::new();
        // The binding moved to 2001:db8:3::10 and lost a prefix while a
        // reconcile worked from the list made before.
        let before = routes(
            "2001:db8:2::10",
            &["2001:db8:100::/56", "2001:db8:101::/56"],
        );
        let now = routes("2001:db8:3::10", &["2001:db8:100::/56"]);
        plane.set(&now, Some(&before)).await.unwrap();
        plane
            .reconcile(std::slice::from_ref(&before))
            .await
            .unwrap();
        plane
            .settle(
                std::slice::from_ref(&now),
                std::slice::from_ref(&before),
                HashMap::new(),
            )
            .await
            .unwrap();
        let care_of: Peer = "2001:db8:3::10".parse().unwrap();
        let expected: BTreeMap<Ipv6Net, Peer> = now.destinations().map(|d| (d, care_of)).collect();
        assert_eq!(plane.routes(), expected);
    }

    #[tokio::test]
    async fn refused_destination_fails_without_partial_change() {
        let plane = MemoryDataPlane::new();
        plane.refuse("2001:db8:101::/56".parse().unwrap());
        let result = plane
            .set(
                &routes(
                    "2001:db8:2::10",
                    &["2001:db8:100::/56", "2001:db8:101::/56"],
                ),
                None,
            )
            .await;
        assert!(matches!(result, Err(DataPlaneError::Refused { .. })));
        assert!(plane.routes().is_empty());
    }
}
