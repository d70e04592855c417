//! What this kernel can forward, found out by really trying: each backend's
//! forwarding entries are installed (and dropped) in a scratch network
//! namespace made for the probe, so nothing on the host changes. A kernel
//! can have the seg6 generic-netlink family and the `seg6_enabled` sysctl
//! and still refuse every seg6 encapsulation route (`CONFIG_IPV6_SEG6_LWTUNNEL`
//! unset: "Unknown device type", EOPNOTSUPP): only an install tells.
//! When the probe fails, the answer names the kernel option behind it and
//! what `/proc/config.gz` says of it, when it can be read.

use std::io::Read;
use std::net::Ipv6Addr;

use netlink_packet_route::route::{
    RouteProtocol, RouteSeg6IpTunnel, RouteSeg6LocalTunnel, Seg6Header, Seg6LocalAction, Seg6Mode,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// Index of the loopback interface in a new network namespace.
const LOOPBACK: u32 = 1;
/// Documentation addresses the probe's routes use (never sent to: the
/// namespace has no other link and goes away with the probe).
const PROBE_DESTINATION: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0);
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

/// Installs a seg6 encapsulation and a seg6local decapsulation route in a
/// scratch namespace.
pub fn probe_seg6() -> Result<(), String> {
    in_scratch_namespace(|handle| async move {
        let mut header = Seg6Header::default();
        header.mode = Seg6Mode::Other(3); // encap.red, as the backend uses
        header.segments = vec![PROBE_PEER];
        let encap = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(PROBE_DESTINATION, 64)
            .output_interface(LOOPBACK)
            .protocol(RouteProtocol::Other(super::PROTOCOL))
            .encap_seg6(vec![RouteSeg6IpTunnel::Seg6(header)])
            .build();
        handle.route().add(encap).execute().await.map_err(|e| {
            missing(
                "seg6 encapsulation routes",
                &format!("the kernel refused an `encap seg6` route ({e})"),
                "CONFIG_IPV6_SEG6_LWTUNNEL",
            )
        })?;
        let decap = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(PROBE_PEER, 128)
            .output_interface(LOOPBACK)
            .protocol(RouteProtocol::Other(super::PROTOCOL))
            .encap_seg6local(vec![
                RouteSeg6LocalTunnel::Action(Seg6LocalAction::EndDt6),
                RouteSeg6LocalTunnel::Table(super::RT_TABLE_MAIN),
            ])
            .build();
        handle.route().add(decap).execute().await.map_err(|e| {
            missing(
                "seg6local decapsulation routes",
                &format!("the kernel refused an `encap seg6local action End.DT6` route ({e})"),
                "CONFIG_IPV6_SEG6_LWTUNNEL",
            )
        })
    })
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

/// Runs `job` with a netlink handle inside a new network namespace, on a
/// thread of its own (a namespace is per thread; the namespace goes away
/// with the thread). Its loopback is up.
pub(crate) fn in_scratch_namespace<F, Fut>(job: F) -> Result<(), String>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let thread = std::thread::Builder::new()
        .name("nemo-probe".into())
        .spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                format!("cannot make a scratch network namespace to probe in ({e}; needs CAP_SYS_ADMIN)")
            })?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("probe runtime: {e}"))?;
            runtime.block_on(async move {
                let (connection, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| format!("probe netlink socket: {e}"))?;
                let connection = tokio::spawn(connection);
                let up = handle
                    .link()
                    .set(LinkUnspec::new_with_index(LOOPBACK).up().build())
                    .execute()
                    .await
                    .map_err(|e| format!("probe: bringing loopback up: {e}"));
                let result = match up {
                    Ok(()) => job(handle).await,
                    Err(error) => Err(error),
                };
                connection.abort();
                result
            })
        })
        .map_err(|e| format!("probe thread: {e}"))?;
    thread
        .join()
        .unwrap_or_else(|_| Err("the probe's thread panicked".into()))
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
}
