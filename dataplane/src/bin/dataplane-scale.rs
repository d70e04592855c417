//! `dataplane-scale`: installs many bindings through a home-agent data plane
//! (seg6 or bpf) one by one (as registrations arrive), reconciles them
//! unchanged, re-points them all, then has a new data plane's reconcile put
//! them back after the kernel lost them (a reboot); reports time and memory.
//! Run it in a throwaway network namespace (bench/dataplane-scale.sh does):
//! it programs the kernel.
//!
//! usage: `dataplane-scale seg6|bpf UPLINK LOCAL_ADDRESS BINDINGS [PIN_DIR]`
//!
//! bpf: the maps pinned in PIN_DIR (a folder on a bpf filesystem); the
//! bindings' prefixes (2001:db8:8000::/33) and home addresses
//! (2001:db8:1::1:0 on, inside 2001:db8:1::/107) covered by two aggregates,
//! so no route per binding.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::time::Instant;

use ipnet::Ipv6Net;
use nemo_dataplane::bpf::{BpfHomeAgent, BpfHomeAgentConfig};
use nemo_dataplane::linux::{Seg6Config, Seg6HomeAgent};
use nemo_dataplane::{BindingRoutes, HomeAgentDataPlane};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The kernel's own memory that routes take: slab and per-CPU, in KiB
/// (host-wide: run it on an otherwise idle machine).
fn kernel_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Slab:") || l.starts_with("Percpu:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Objects in use and object size of each slab cache (/proc/slabinfo, root
/// only; empty otherwise): which caches a run's kernel memory went to, and
/// how many objects, explain its size (an LPM trie node is one
/// `kmalloc-cg-64` object, memory-cgroup accounted).
fn slab_objects() -> HashMap<String, (u64, u64)> {
    std::fs::read_to_string("/proc/slabinfo")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next()?.to_owned();
            let active = fields.next()?.parse().ok()?;
            let _total = fields.next()?;
            let size = fields.next()?.parse().ok()?;
            Some((name, (active, size)))
        })
        .collect()
}

/// The caches that grew by more than a hundredth of an object per binding,
/// largest first: "name +objects (size B)".
fn slab_growth(
    before: &HashMap<String, (u64, u64)>,
    after: &HashMap<String, (u64, u64)>,
    count: u32,
) -> String {
    let mut grown: Vec<(u64, &str, u64)> = after
        .iter()
        .filter_map(|(name, (active, size))| {
            let added = active.saturating_sub(before.get(name).map_or(0, |b| b.0));
            (added * 100 > u64::from(count)).then_some((added * size, name.as_str(), added))
        })
        .collect();
    grown.sort_unstable_by(|a, b| b.cmp(a));
    grown
        .iter()
        .map(|(bytes, name, added)| {
            format!(
                "{name} +{added} ({:.2} per binding, {:.0} B per binding)",
                *added as f64 / f64::from(count.max(1)),
                *bytes as f64 / f64::from(count.max(1))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn binding(n: u32) -> BindingRoutes {
    let home = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, 0)) + u128::from(n);
    let prefix =
        u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0x8000, 0, 0, 0, 0, 0)) + (u128::from(n) << 64);
    BindingRoutes {
        home_address: Ipv6Addr::from(home),
        care_of: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10 + (n % 16) as u16).into(),
        prefixes: vec![Ipv6Net::new(Ipv6Addr::from(prefix), 64).unwrap_or_default()],
    }
}

// Two workers, as the daemons run (nemo-ha's runtime is multi-threaded), and
// the work in a spawned task as nemo-ha's core is: the main task runs on the
// main thread, where every netlink answer's wake-up crosses threads (5,200
// bindings/s at a million, against 16,000/s through nemo-ha itself).
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tokio::spawn(run()).await?
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: dataplane-scale seg6|bpf UPLINK LOCAL_ADDRESS BINDINGS [PIN_DIR]";
    let (backend, uplink, local, count, pin_dir) = match args.as_slice() {
        [_, backend, uplink, local, count] => (backend, uplink, local, count, None),
        [_, backend, uplink, local, count, pin_dir] => {
            (backend, uplink, local, count, Some(pin_dir.into()))
        }
        _ => return Err(usage.into()),
    };
    let count: u32 = count.parse()?;
    let local: Ipv6Addr = local.parse()?;
    match backend.as_str() {
        "seg6" => {
            let make = || async {
                let (connection, handle, _) = rtnetlink::new_connection()?;
                tokio::spawn(connection);
                Ok(Seg6HomeAgent::new(handle, Seg6Config::new(uplink, local)).await?)
            };
            measure(backend, count, make).await
        }
        "bpf" => {
            let make = || async {
                let (connection, handle, _) = rtnetlink::new_connection()?;
                tokio::spawn(connection);
                let config = BpfHomeAgentConfig {
                    uplink: uplink.clone(),
                    local_address: local,
                    local_ipv4: None,
                    pin_dir: pin_dir.clone(),
                    aggregates: vec!["2001:db8:8000::/33".parse()?, "2001:db8:1::/107".parse()?],
                };
                Ok(BpfHomeAgent::new(handle, config).await?)
            };
            measure(backend, count, make).await
        }
        _ => Err(usage.into()),
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn measure<D, F, M>(backend: &str, count: u32, make: M) -> Result<(), Error>
where
    D: HomeAgentDataPlane,
    F: std::future::Future<Output = Result<D, Error>>,
    M: Fn() -> F,
{
    let plane = make().await?;
    let before = rss_kib();
    let kernel_before = kernel_kib();
    let slabs_before = slab_objects();
    let started = Instant::now();
    for n in 0..count {
        plane.set(&binding(n), None).await?;
    }
    let install = started.elapsed();
    let kernel_installed = kernel_kib();
    let slabs_installed = slab_objects();
    let all: Vec<BindingRoutes> = (0..count).map(binding).collect();
    let started = Instant::now();
    let report = plane.reconcile(&all).await?;
    let reconcile = started.elapsed();
    let started = Instant::now();
    for n in 0..count {
        let mut moved = binding(n);
        moved.care_of = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x10).into();
        plane.set(&moved, Some(&binding(n))).await?;
    }
    let repoint = started.elapsed();
    // The kernel loses them all (a reboot): a new data plane's reconcile
    // puts every binding back, as a restarted nemo-ha does.
    plane.remove_all().await?;
    drop(plane);
    let moved: Vec<BindingRoutes> = all
        .into_iter()
        .map(|mut routes| {
            routes.care_of = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x10).into();
            routes
        })
        .collect();
    let plane = make().await?;
    let started = Instant::now();
    let reinstalled = plane.reconcile(&moved).await?;
    let reinstall = started.elapsed();
    println!(
        "backend={backend} bindings={count} install={:.2}s ({:.0} bindings/s) \
         reconcile_unchanged={:.2}s kept={} repoint_all={:.2}s rss_before={}KiB rss_after={}KiB \
         kernel_slab_percpu_added={}KiB ({:.0} B/binding) reinstall_after_loss={:.2}s ({:.0} bindings/s, installed={})",
        install.as_secs_f64(),
        f64::from(count) / install.as_secs_f64(),
        reconcile.as_secs_f64(),
        report.kept,
        repoint.as_secs_f64(),
        before,
        rss_kib(),
        kernel_installed.saturating_sub(kernel_before),
        kernel_installed.saturating_sub(kernel_before) as f64 * 1024.0 / f64::from(count.max(1)),
        reinstall.as_secs_f64(),
        f64::from(count) / reinstall.as_secs_f64(),
        reinstalled.installed,
    );
    println!(
        "slab caches grown by the install: {}",
        slab_growth(&slabs_before, &slabs_installed, count)
    );
    plane.remove_all().await?;
    Ok(())
}
