//! The home agent's seg6 data plane: a binding's destinations tunnelled to
//! its care-of address, the reverse tunnel taken out.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use rtnetlink::Handle;
use tokio::sync::Mutex;

use super::host::Host;
use super::{
    add_rule, ipv6_peer, Rule, Seg6Config, PREF_ENCAP, PREF_ROUTE, TABLE_DECAP, TABLE_ENCAP,
    TABLE_ROUTE,
};
use crate::{BindingRoutes, DataPlaneError, HomeAgentDataPlane, ReconcileReport};

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
        let care_of = ipv6_peer(routes.care_of, Ipv6Net::from(routes.home_address))?;
        // The new care-of address can send into the reverse tunnel first.
        let moved = previous.is_some_and(|p| p.care_of != routes.care_of);
        if previous.is_none() || moved {
            self.use_care_of(care_of).await?;
        }
        let wanted: BTreeSet<Ipv6Net> = routes.destinations().collect();
        for destination in &wanted {
            self.install(*destination, care_of).await?;
        }
        if let Some(previous) = previous {
            for destination in previous.destinations() {
                if !wanted.contains(&destination) {
                    self.uninstall(destination).await?;
                }
            }
            if let (true, Some(left)) = (moved, previous.care_of.ipv6()) {
                self.release_care_of(left).await?;
            }
        }
        Ok(())
    }

    async fn clear(&self, routes: &BindingRoutes) -> Result<(), DataPlaneError> {
        for destination in routes.destinations() {
            self.uninstall(destination).await?;
        }
        match routes.care_of.ipv6() {
            Some(care_of) => self.release_care_of(care_of).await,
            // Never installed here.
            None => Ok(()),
        }
    }

    async fn reconcile(&self, all: &[BindingRoutes]) -> Result<ReconcileReport, DataPlaneError> {
        // Both tables listed at once, on two sockets, each into a sorted
        // list with a mark per route for "a binding wants it"; what stays
        // unmarked is stale. Lists, not maps: at a million bindings each
        // holds 2 million destinations, and the reconcile is a restart's
        // memory peak (a hash map of them is twice a list's size).
        let (encap, gated) = futures::try_join!(
            self.host.owned_routes(TABLE_ENCAP),
            self.host.owned_routes(TABLE_ROUTE)
        )?;
        let mut encap = Listed::new(encap);
        let mut gated = Listed::new(gated);
        let mut report = ReconcileReport::default();
        for routes in all {
            let Some(care_of) = routes.care_of.ipv6() else {
                tracing::warn!(
                    home_address = %routes.home_address,
                    care_of = %routes.care_of,
                    "a binding to an IPv4 care-of address: the seg6 backend cannot tunnel to it"
                );
                continue;
            };
            for destination in routes.destinations() {
                let encapsulated = encap.take(destination);
                let into_gate = gated.take(destination).is_some();
                if encapsulated == Some(Some(care_of)) && into_gate {
                    report.kept += 1;
                } else {
                    self.install(destination, care_of).await?;
                    report.installed += 1;
                }
            }
        }
        // Each stale destination once, whichever tables still hold it.
        let stale: BTreeSet<Ipv6Net> = encap.unwanted().chain(gated.unwanted()).collect();
        report.removed = stale.len();
        for destination in stale {
            self.uninstall(destination).await?;
        }
        // Decapsulation: exactly one route per care-of address in use.
        let mut users: HashMap<Ipv6Addr, usize> = HashMap::new();
        for care_of in all.iter().filter_map(|routes| routes.care_of.ipv6()) {
            *users.entry(care_of).or_insert(0) += 1;
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
        let crate::Settlement { remove, install } = crate::settlement(now, gone);
        for destination in remove {
            self.uninstall(destination).await?;
        }
        for (destination, care_of) in install {
            self.install(destination, ipv6_peer(care_of, destination)?)
                .await?;
        }
        self.set_decapsulation(users).await?;
        Ok(())
    }

    async fn remove_all(&self) -> Result<(), DataPlaneError> {
        self.teardown().await
    }
}

/// One table's routes as listed at the start of a reconcile, sorted by
/// destination, each marked once a binding wants it.
struct Listed {
    routes: Vec<(Ipv6Net, Option<Ipv6Addr>)>,
    wanted: Vec<bool>,
}

impl Listed {
    fn new(mut routes: Vec<(Ipv6Net, Option<Ipv6Addr>)>) -> Listed {
        routes.sort_unstable_by_key(|(destination, _)| *destination);
        let wanted = vec![false; routes.len()];
        Listed { routes, wanted }
    }

    /// Marks `destination` wanted; its far end if the table holds it.
    fn take(&mut self, destination: Ipv6Net) -> Option<Option<Ipv6Addr>> {
        let at = self
            .routes
            .binary_search_by_key(&destination, |(listed, _)| *listed)
            .ok()?;
        self.wanted[at] = true;
        Some(self.routes[at].1)
    }

    /// The destinations no binding wanted.
    fn unwanted(&self) -> impl Iterator<Item = Ipv6Net> + '_ {
        self.routes
            .iter()
            .zip(&self.wanted)
            .filter(|(_, wanted)| !**wanted)
            .map(|((destination, _), _)| *destination)
    }
}
