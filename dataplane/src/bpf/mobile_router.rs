//! The mobile router's BPF data plane: per tenant, its prefixes in
//! `nemo_bindings` to its home agent (traffic from the prefix is tunnelled
//! there from the care-of address in `nemo_local`, and tunnelled packets to
//! the prefix are taken only from there), a rule sending the tenant's
//! traffic into its own table, whose default route carries the program.
//!
//! ```text
//!   rule  900:          iif TENANT_IF from MNP lookup T
//!   table T:            default encap bpf xmit nemo_encap_src headroom 40 dev UPLINK
//!   main:               MNP dev TENANT_IF
//!   tc ingress UPLINK:  nemo_decap_dst (nemo_local = the care-of address)
//!   tc ingress TENANT_IF: nemo_release (only while the tenant is held: nemo_holds)
//! ```

use std::net::{Ipv6Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::path::PathBuf;

use ipnet::Ipv6Net;
use libbpf_rs::{MapCore, MapFlags};
use netlink_packet_route::route::RouteProtocol;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::maps;
use super::routes::{attach_tc, detach_tc, encap_route, TcHook};
use super::{Program, Programs};
use crate::linux::{
    add_rule, delete_route_from, install_route, is_ours, link, owned_route_messages, priority,
    remove_rules, route_destination, rule_source, tenant_tables, usable_port, Rule, PREF_ENCAP,
    PROTOCOL,
};
use crate::{DataPlaneError, MobileRouterDataPlane, Peer, Release, TenantRoutes, Traffic};

const RT_TABLE_MAIN: u32 = 254;

/// The tenant's port's index, when it exists.
fn port_index(tenant: &TenantRoutes) -> Option<u32> {
    nix::net::if_::if_nametoindex(tenant.interface.as_str()).ok()
}

/// The kernel's release of a held tenant (nemo_release on its port) is no
/// longer wanted: its traffic passes, or it left.
fn forget_hold(holds: &libbpf_rs::MapHandle, tenant: &TenantRoutes) {
    if let Some(port) = port_index(tenant) {
        let _ = holds.delete(&port.to_ne_bytes());
    }
}

/// A tenant's prefixes to its home agent (its traffic passes) or to `::`
/// (held: the programs drop it, tunnel.bpf.c), in place.
fn set_traffic(
    bindings: &libbpf_rs::MapHandle,
    tenant: &TenantRoutes,
    traffic: Traffic,
) -> Result<(), DataPlaneError> {
    let peer = match traffic {
        Traffic::Pass => tenant.home_agent,
        Traffic::Hold => Peer::Ipv6(Ipv6Addr::UNSPECIFIED),
    };
    for prefix in &tenant.prefixes {
        bindings
            .update(
                &maps::prefix_key(*prefix),
                &maps::peer_value(peer),
                MapFlags::EXIST,
            )
            .map_err(|e| refused("hold or pass", *prefix, e))?;
    }
    Ok(())
}

/// What the mobile router's BPF data plane needs.
#[derive(Debug, Clone)]
pub struct BpfMobileRouterConfig {
    /// The interface towards the home agents (the care-of address is on it).
    pub uplink: String,
    /// The care-of address at start (`set_care_of` changes it).
    pub local_address: Ipv6Addr,
    /// Where the maps are pinned (a folder on a bpf filesystem).
    pub pin_dir: Option<PathBuf>,
}

/// The mobile router's data plane in BPF.
#[derive(Debug)]
pub struct BpfMobileRouter {
    handle: Handle,
    programs: Programs,
    uplink: u32,
}

use super::refused;

impl BpfMobileRouter {
    /// Loads the programs (over the pinned maps of an earlier run, if any)
    /// and attaches decapsulation at the uplink.
    pub async fn new(
        handle: Handle,
        config: BpfMobileRouterConfig,
    ) -> Result<BpfMobileRouter, DataPlaneError> {
        crate::require_forwarding("bpf")?;
        let programs = Programs::load(config.pin_dir.as_deref())?;
        let (uplink, _mtu) = link(&handle, &config.uplink).await?;
        attach_tc(
            TcHook::Decap,
            uplink,
            programs.fd(Program::DecapByDestination)?.as_fd(),
        )?;
        let plane = BpfMobileRouter {
            handle,
            programs,
            uplink,
        };
        plane.set_care_of_now(config.local_address)?;
        tracing::info!(
            uplink = %config.uplink,
            care_of = %config.local_address,
            pinned = ?plane.programs.pin_dir(),
            "bpf mobile-router data plane ready"
        );
        Ok(plane)
    }

    /// The programs and maps (for tests and metrics).
    pub fn programs(&self) -> &Programs {
        &self.programs
    }

    /// The care-of address: where tunnelled packets must arrive, and every
    /// tenant tunnel's source (one entry: a move re-points every tenant).
    fn set_care_of_now(&self, care_of: Ipv6Addr) -> Result<(), DataPlaneError> {
        self.programs.set_local(care_of)
    }

    fn rules(tenant: &TenantRoutes) -> impl Iterator<Item = Rule> + '_ {
        tenant.prefixes.iter().map(|prefix| Rule {
            preference: PREF_ENCAP,
            table: tenant.table,
            input: Some(tenant.interface.clone()),
            source: Some(*prefix),
            tunnelled: false,
        })
    }

    /// Has the kernel release a held tenant on its VM's first frame
    /// (nemo_release at tc ingress of its port): no thread's wake-up comes
    /// between the frame and the release. Best effort: the daemon's thread
    /// that reads the same frame releases it too.
    fn release_in_kernel(&self, tenant: &TenantRoutes) {
        let (Some(port), Some(hold)) = (
            port_index(tenant),
            maps::hold_value(tenant.home_agent, &tenant.prefixes),
        ) else {
            tracing::debug!(interface = %tenant.interface, "not released in the kernel (no port, or too many prefixes): the daemon releases it");
            return;
        };
        let attached = self
            .programs
            .holds
            .update(&port.to_ne_bytes(), &hold, MapFlags::ANY)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let fd = self
                    .programs
                    .fd(Program::Release)
                    .map_err(|e| e.to_string())?;
                attach_tc(TcHook::Release, port, fd.as_fd()).map_err(|e| e.to_string())
            });
        if let Err(error) = attached {
            forget_hold(&self.programs.holds, tenant);
            tracing::warn!(interface = %tenant.interface, %error, "the kernel cannot release the held tenant itself: the daemon's thread does");
        }
    }

    /// Undoes [`BpfMobileRouter::release_in_kernel`]: the hold's entry and
    /// the program on the port.
    fn end_release_in_kernel(&self, tenant: &TenantRoutes) -> Result<(), DataPlaneError> {
        forget_hold(&self.programs.holds, tenant);
        if let Some(port) = port_index(tenant) {
            // The port may be gone with its VM, or never had it: nothing
            // to detach then.
            if let Err(error) = detach_tc(
                TcHook::Release,
                port,
                self.programs.fd(Program::Release)?.as_fd(),
            ) {
                tracing::debug!(interface = %tenant.interface, %error, "release program not detached");
            }
        }
        Ok(())
    }

    async fn remove_tenant(&self, tenant: &TenantRoutes) -> Result<(), DataPlaneError> {
        for prefix in &tenant.prefixes {
            let source = Some(prefix.network());
            remove_rules(&self.handle, |m| {
                is_ours(m)
                    && priority(m) == PREF_ENCAP
                    && rule_source(m) == source
                    && m.header.src_len == prefix.prefix_len()
            })
            .await?;
            delete_route_from(&self.handle, RT_TABLE_MAIN, *prefix, None).await?;
            if let Err(error) = self.programs.bindings.delete(&maps::prefix_key(*prefix)) {
                if error.kind() != libbpf_rs::ErrorKind::NotFound {
                    return Err(refused("remove binding for", *prefix, error));
                }
            }
        }
        for destination in owned_route_messages(tenant.table, route_destination).await? {
            delete_route_from(&self.handle, tenant.table, destination, None).await?;
        }
        Ok(())
    }
}

impl MobileRouterDataPlane for BpfMobileRouter {
    fn name(&self) -> &'static str {
        "bpf (lwt xmit encapsulation, tc ingress decapsulation)"
    }

    fn refused_tunnelled(&self) -> Option<u64> {
        Some(self.programs.refused_tunnelled())
    }

    fn packet_counters(&self) -> Vec<(&'static str, u64)> {
        self.programs.counters()
    }

    async fn set_care_of(&self, care_of: Ipv6Addr) -> Result<(), DataPlaneError> {
        self.set_care_of_now(care_of)
    }

    async fn set_ipv4_care_of(&self, care_of: Option<SocketAddrV4>) -> Result<(), DataPlaneError> {
        self.programs.set_local4(care_of)
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
        let interface = usable_port(&self.handle, &tenant.interface, &tenant.prefixes).await?;
        for prefix in &tenant.prefixes {
            self.programs
                .bindings
                .update(
                    &maps::prefix_key(*prefix),
                    &maps::peer_value(tenant.home_agent),
                    MapFlags::ANY,
                )
                .map_err(|e| refused("install binding for", *prefix, e))?;
            let onlink = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(prefix.network(), prefix.prefix_len())
                .output_interface(interface)
                .table_id(RT_TABLE_MAIN)
                .protocol(RouteProtocol::Other(PROTOCOL))
                .build();
            install_route(&self.handle, onlink, *prefix).await?;
        }
        let default = Ipv6Net::default();
        let fd = self.programs.fd(Program::EncapBySource)?;
        install_route(
            &self.handle,
            encap_route(
                default,
                self.uplink,
                tenant.table,
                Program::EncapBySource,
                fd.as_fd(),
            ),
            default,
        )
        .await?;
        for rule in Self::rules(tenant) {
            add_rule(&self.handle, &rule).await?;
        }
        Ok(())
    }

    async fn deliver(
        &self,
        tenant: &TenantRoutes,
        traffic: Traffic,
    ) -> Result<bool, DataPlaneError> {
        set_traffic(&self.programs.bindings, tenant, traffic)?;
        match traffic {
            Traffic::Hold => self.release_in_kernel(tenant),
            // Off the VM's path: every frame it sends would pass the
            // program's lookup for nothing.
            Traffic::Pass => self.end_release_in_kernel(tenant)?,
        }
        Ok(true)
    }

    fn release(&self, tenant: &TenantRoutes) -> Option<Release> {
        let map = libbpf_rs::MapHandle::try_from(&self.programs.bindings).ok()?;
        let holds = libbpf_rs::MapHandle::try_from(&self.programs.holds).ok()?;
        let tenant = tenant.clone();
        Some(Release::new(move || {
            set_traffic(&map, &tenant, Traffic::Pass)?;
            forget_hold(&holds, &tenant);
            Ok(())
        }))
    }

    async fn detach(&self, tenant: &TenantRoutes) -> Result<(), DataPlaneError> {
        self.end_release_in_kernel(tenant)?;
        self.remove_tenant(tenant).await
    }

    async fn remove_all(&self) -> Result<(), DataPlaneError> {
        let mut tables = vec![RT_TABLE_MAIN];
        tables.extend(tenant_tables(&self.handle).await?);
        remove_rules(&self.handle, |m| is_ours(m) && priority(m) == PREF_ENCAP).await?;
        for table in tables {
            for destination in owned_route_messages(table, route_destination).await? {
                delete_route_from(&self.handle, table, destination, None).await?;
            }
        }
        detach_tc(
            TcHook::Decap,
            self.uplink,
            self.programs.fd(Program::DecapByDestination)?.as_fd(),
        )?;
        self.programs.clear_bindings();
        self.programs.unpin()
    }
}
