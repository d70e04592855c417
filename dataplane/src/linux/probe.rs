//! What this kernel can forward, found out by really trying: each backend's
//! forwarding entries are installed (and dropped) in a scratch network
//! namespace made for the probe, so nothing on the host changes (or, where
//! no namespace can be made, in a table of nemo's own that nothing looks
//! up, removed at once). A kernel
//! can have the seg6 generic-netlink family and the `seg6_enabled` sysctl
//! and still refuse every seg6 encapsulation route (`CONFIG_IPV6_SEG6_LWTUNNEL`
//! unset: "Unknown device type", EOPNOTSUPP): only an install tells.
//! When the probe fails, the answer names the kernel option behind it and
//! what `/proc/config.gz` says of it, when it can be read.

use std::io::Read;
use std::net::Ipv6Addr;

use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::route::{
    RouteProtocol, RouteSeg6IpTunnel, RouteSeg6LocalTunnel, Seg6Header, Seg6LocalAction, Seg6Mode,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// Index of the loopback interface (in any network namespace).
pub(crate) const LOOPBACK: u32 = 1;
/// The table the probes install their routes in: no rule looks it up, so
/// a probe in the daemon's own namespace changes no forwarding.
pub(crate) const PROBE_TABLE: u32 = 4199;
/// Documentation addresses the probe's routes use (never sent to: the
/// namespace has no other link and goes away with the probe).
pub(crate) const PROBE_DESTINATION: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0);
const PROBE_PEER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, 1);

/// What this kernel offers, for the start-up report and the choice of a
/// backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// seg6 lightweight tunnels: an `encap seg6 mode encap.red` route and an
    /// `encap seg6local action End.DT6` route were accepted.
    pub seg6: Result<(), String>,
    /// ip6tnl devices (no backend: never verified on the kernels nemo was
    /// built on).
    pub ip6tnl: Result<(), String>,
}

/// Probes the kernel (a scratch namespace per backend; a few milliseconds).
pub fn probe() -> Probe {
    Probe {
        seg6: probe_seg6(),
        ip6tnl: probe_ip6tnl(),
    }
}

/// Installs a seg6 encapsulation and a seg6local decapsulation route.
pub fn probe_seg6() -> Result<(), String> {
    let mut header = Seg6Header::default();
    header.mode = Seg6Mode::Other(3); // encap.red, as the backend uses
    header.segments = vec![PROBE_PEER];
    let encap = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(PROBE_DESTINATION, 64)
        .output_interface(LOOPBACK)
        .table_id(PROBE_TABLE)
        .protocol(RouteProtocol::Other(super::PROTOCOL))
        .encap_seg6(vec![RouteSeg6IpTunnel::Seg6(header)])
        .build();
    let decap = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(PROBE_PEER, 128)
        .output_interface(LOOPBACK)
        .table_id(PROBE_TABLE)
        .protocol(RouteProtocol::Other(super::PROTOCOL))
        .encap_seg6local(vec![
            RouteSeg6LocalTunnel::Action(Seg6LocalAction::EndDt6),
            RouteSeg6LocalTunnel::Table(super::RT_TABLE_MAIN),
        ])
        .build();
    probe_routes(
        vec![
            ProbeRoute {
                message: encap,
                what: "seg6 encapsulation routes",
                refused: "an `encap seg6` route",
                option: "CONFIG_IPV6_SEG6_LWTUNNEL",
            },
            ProbeRoute {
                message: decap,
                what: "seg6local decapsulation routes",
                refused: "an `encap seg6local action End.DT6` route",
                option: "CONFIG_IPV6_SEG6_LWTUNNEL",
            },
        ],
        None,
    )
}

/// A route a probe installs, and what its refusal means.
pub(crate) struct ProbeRoute {
    /// The route, in [`PROBE_TABLE`] on loopback.
    pub(crate) message: RouteMessage,
    /// What the kernel lacks when it refuses it.
    pub(crate) what: &'static str,
    /// The route, in words.
    pub(crate) refused: &'static str,
    /// The kernel option it needs.
    pub(crate) option: &'static str,
}

/// Work a probe does only in its scratch namespace (attaching to its
/// loopback is harmless there, not on the host).
pub(crate) type ScratchOnly = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// Installs `routes` in a scratch network namespace (its loopback up),
/// then runs `scratch_only` there. Where no namespace can be made (the
/// systemd units withhold CAP_SYS_ADMIN and namespaces), installs them in
/// the daemon's own namespace instead, in nemo's probe table on loopback
/// (documentation prefixes, never routed to: no rule looks the table up),
/// and removes them again; `scratch_only` is then skipped (the backend's
/// own start does that work for real, and says so when it fails).
pub(crate) fn probe_routes(
    routes: Vec<ProbeRoute>,
    scratch_only: Option<ScratchOnly>,
) -> Result<(), String> {
    let thread = std::thread::Builder::new()
        .name("nemo-probe".into())
        .spawn(move || {
            let scratch = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("probe runtime: {e}"))?;
            runtime.block_on(async move {
                let (connection, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| format!("probe netlink socket: {e}"))?;
                let connection = tokio::spawn(connection);
                let result = install_probe_routes(&handle, routes, scratch).await;
                connection.abort();
                result?;
                match scratch_only {
                    Some(work) if scratch => work(),
                    _ => Ok(()),
                }
            })
        })
        .map_err(|e| format!("probe thread: {e}"))?;
    thread
        .join()
        .unwrap_or_else(|_| Err("the probe's thread panicked".into()))
}

async fn install_probe_routes(
    handle: &Handle,
    routes: Vec<ProbeRoute>,
    scratch: bool,
) -> Result<(), String> {
    if scratch {
        handle
            .link()
            .set(LinkUnspec::new_with_index(LOOPBACK).up().build())
            .execute()
            .await
            .map_err(|e| format!("probe: bringing loopback up: {e}"))?;
    }
    let mut installed = Vec::new();
    let mut result = Ok(());
    for route in routes {
        match handle
            .route()
            .add(route.message.clone())
            .replace()
            .execute()
            .await
        {
            Ok(()) => installed.push(route.message),
            Err(error) => {
                result = Err(missing(
                    route.what,
                    &format!("the kernel refused {} ({error})", route.refused),
                    route.option,
                ));
                break;
            }
        }
    }
    // In a scratch namespace the routes go with it; in place, now.
    if !scratch {
        for message in installed {
            let _ = handle.route().del(message).execute().await;
        }
    }
    result
}

fn probe_ip6tnl() -> Result<(), String> {
    if std::path::Path::new("/sys/module/ip6_tunnel").exists() {
        Err(
            "ip6_tunnel is present, but nemo has no ip6tnl backend yet (never verified: \
             the kernels it was built on lack ip6_tunnel)"
                .into(),
        )
    } else {
        Err(missing(
            "ip6tnl devices",
            "no ip6_tunnel module loaded",
            "CONFIG_IPV6_TUNNEL",
        ))
    }
}

/// "`what`: `how`; this kernel's config: OPTION is not set" (or what
/// /proc/config.gz says of it, or that it could not be read).
pub(crate) fn missing(what: &str, how: &str, option: &str) -> String {
    let config = match kernel_option(option) {
        Some(KernelOption::Unset) => format!("{option} is not set in /proc/config.gz"),
        Some(KernelOption::Set(value)) => {
            format!("{option}={value} in /proc/config.gz (so something else is missing)")
        }
        None => format!("needs {option} (no /proc/config.gz to check)"),
    };
    format!("no {what}: {how}; {config}")
}

/// A kernel option's state in the running kernel's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelOption {
    /// `CONFIG_X=y` or `=m`.
    Set(String),
    /// `# CONFIG_X is not set`, or not mentioned.
    Unset,
}

/// What `/proc/config.gz` says of `option` (`None`: it cannot be read).
pub fn kernel_option(option: &str) -> Option<KernelOption> {
    let compressed = std::fs::read("/proc/config.gz").ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .ok()?;
    Some(option_in(&text, option))
}

fn option_in(config: &str, option: &str) -> KernelOption {
    config
        .lines()
        .find_map(|line| {
            line.strip_prefix(option)?
                .strip_prefix('=')
                .map(|value| KernelOption::Set(value.to_owned()))
        })
        .unwrap_or(KernelOption::Unset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_from_the_config_text() {
        let config = "CONFIG_BPF=y\n# CONFIG_IPV6_SEG6_LWTUNNEL is not set\nCONFIG_LWTUNNEL_BPF=y\nCONFIG_NET_CLS_BPF=m\n";
        assert_eq!(
            option_in(config, "CONFIG_LWTUNNEL_BPF"),
            KernelOption::Set("y".into())
        );
        assert_eq!(
            option_in(config, "CONFIG_NET_CLS_BPF"),
            KernelOption::Set("m".into())
        );
        assert_eq!(
            option_in(config, "CONFIG_IPV6_SEG6_LWTUNNEL"),
            KernelOption::Unset
        );
        // A prefix of another option is not that option.
        assert_eq!(option_in(config, "CONFIG_LWTUNNEL"), KernelOption::Unset);
        assert_eq!(option_in(config, "CONFIG_BP"), KernelOption::Unset);
    }

    /// The probe agrees with the kernel's own config where both can be
    /// read: a kernel with CONFIG_IPV6_SEG6_LWTUNNEL accepts the routes, one
    /// without refuses them. Needs root (a namespace); says so otherwise.
    #[test]
    fn seg6_probe_agrees_with_the_kernel_config() {
        let Some(option) = kernel_option("CONFIG_IPV6_SEG6_LWTUNNEL") else {
            eprintln!("SKIPPED: no /proc/config.gz to compare the seg6 probe with");
            return;
        };
        if !nemo_testkit::require(
            nemo_testkit::is_root(),
            "not root: the seg6 probe needs a scratch namespace",
            "NEMO_REQUIRE_NETNS",
        ) {
            return;
        }
        let result = probe_seg6();
        match option {
            KernelOption::Set(_) => assert_eq!(result, Ok(())),
            KernelOption::Unset => {
                let reason = result.expect_err("seg6 probe said Ok on a kernel without it");
                assert!(
                    reason.contains("CONFIG_IPV6_SEG6_LWTUNNEL is not set"),
                    "{reason}"
                );
            }
        }
    }

    /// The same for the BPF backend: CONFIG_LWTUNNEL_BPF and
    /// CONFIG_NET_CLS_BPF set means the probe succeeds.
    #[test]
    fn bpf_probe_agrees_with_the_kernel_config() {
        let (Some(lwt), Some(cls)) = (
            kernel_option("CONFIG_LWTUNNEL_BPF"),
            kernel_option("CONFIG_NET_CLS_BPF"),
        ) else {
            eprintln!("SKIPPED: no /proc/config.gz to compare the bpf probe with");
            return;
        };
        if !nemo_testkit::require(
            nemo_testkit::is_root(),
            "not root: the bpf probe loads programs",
            "NEMO_REQUIRE_BPF",
        ) {
            return;
        }
        let result = crate::bpf::probe_bpf();
        match (lwt, cls) {
            (KernelOption::Set(_), KernelOption::Set(_)) => assert_eq!(result, Ok(())),
            (KernelOption::Unset, _) => {
                let reason = result.expect_err("bpf probe said Ok without CONFIG_LWTUNNEL_BPF");
                assert!(reason.contains("CONFIG_LWTUNNEL_BPF"), "{reason}");
            }
            (_, KernelOption::Unset) => {
                let reason = result.expect_err("bpf probe said Ok without CONFIG_NET_CLS_BPF");
                assert!(reason.contains("CONFIG_NET_CLS_BPF"), "{reason}");
            }
        }
        // The probe left nothing in this namespace's probe table.
        let listed = std::process::Command::new("ip")
            .args(["-6", "route", "show", "table", "4199"])
            .output()
            .expect("ip");
        assert!(
            listed.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&listed.stdout)
        );
    }

    /// Where no scratch namespace can be made, the probe installs in the
    /// daemon's own namespace and must leave nothing there: run in a test
    /// namespace standing in for the daemon's.
    #[test]
    fn a_probe_in_place_removes_what_it_installed() {
        if !nemo_testkit::require(
            nemo_testkit::is_root(),
            "not root: the in-place probe needs a namespace",
            "NEMO_REQUIRE_BPF",
        ) {
            return;
        }
        let ns = nemo_testkit::Netns::new("probe-in-place");
        let result = ns.block_on(|| async {
            let (connection, handle, _) = rtnetlink::new_connection().expect("netlink");
            tokio::spawn(connection);
            let programs = crate::bpf::Programs::load(None).expect("programs");
            let fd = programs
                .fd(crate::bpf::Program::EncapByDestination)
                .expect("fd");
            let route = crate::bpf::encap_route(
                ipnet::Ipv6Net::new(PROBE_DESTINATION, 64).expect("prefix"),
                LOOPBACK,
                PROBE_TABLE,
                crate::bpf::Program::EncapByDestination,
                std::os::fd::AsFd::as_fd(&fd),
            );
            let installed = install_probe_routes(
                &handle,
                vec![ProbeRoute {
                    message: route,
                    what: "BPF lightweight tunnels",
                    refused: "an `encap bpf xmit` route",
                    option: "CONFIG_LWTUNNEL_BPF",
                }],
                false,
            )
            .await;
            drop(fd);
            installed
        });
        assert_eq!(result, Ok(()));
        let listed = ns.ip(&["-6", "route", "show", "table", "all"]);
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(!listed.contains("2001:db8:ffff::"), "{listed}");
    }
}
