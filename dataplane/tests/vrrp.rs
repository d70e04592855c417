//! nemo's VRRPv3 against keepalived, an implementation nobody here wrote,
//! on a veth pair between two namespaces: keepalived's advertisements parse
//! here (`nemo::vrrp::Advertisement`, checksum and hop limit included), and
//! ours parse there, with who becomes master following RFC 5798 §6.4: a
//! higher priority that preempts takes the address from keepalived, a
//! resignation (priority 0) hands it back within Skew_Time, a lower
//! priority leaves it where it is.
//!
//! Needs root, iproute2 and keepalived (CI installs it; NEMO_REQUIRE_NETNS
//! makes a missing one a failure).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::Ipv6Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nemo::vrrp::{
    default_virtual_link_local, virtual_addresses, Action, Advertisement, Advertisers,
    Centiseconds, RouterConfig, State, VirtualRouter,
};
use nemo_dataplane::vrrp::{VrrpSocket, MAX_ADVERTISEMENT};
use nemo_testkit::{addr, netns_available, require, runs, veth, Netns};

const MUST_RUN: &str = "NEMO_REQUIRE_NETNS";
const VIRTUAL: &str = "2001:db8:1::1";

/// keepalived in a namespace, stopped (parent and VRRP child, by their own
/// PIDs) when dropped.
struct Keepalived {
    parent: Child,
    vrrp_pid_file: std::path::PathBuf,
}

impl Keepalived {
    fn start(netns: &Netns, dir: &Path, interface: &str, priority: u8) -> Keepalived {
        let config = dir.join("keepalived.conf");
        std::fs::write(
            &config,
            format!(
                "global_defs {{\n  vrrp_version 3\n}}\n\
                 vrrp_instance nemo {{\n  state BACKUP\n  interface {interface}\n  \
                 virtual_router_id 12\n  priority {priority}\n  advert_int 0.1\n  native_ipv6\n  \
                 virtual_ipaddress {{\n    {link_local}/64\n    {VIRTUAL}/64\n  }}\n}}\n",
                link_local = default_virtual_link_local(12),
            ),
        )
        .unwrap();
        let vrrp_pid_file = dir.join("vrrp.pid");
        let parent = netns
            .command("keepalived")
            .args(["--dont-fork", "--log-console", "--vrrp", "--use-file"])
            .arg(&config)
            .arg(format!("--pid={}", dir.join("keepalived.pid").display()))
            .arg(format!("--vrrp_pid={}", vrrp_pid_file.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("keepalived.log")).unwrap())
            .spawn()
            .unwrap();
        Keepalived {
            parent,
            vrrp_pid_file,
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let child = std::fs::read_to_string(&self.vrrp_pid_file).unwrap_or_default();
        let _ = Command::new("kill")
            .args(["-TERM", &self.parent.id().to_string()])
            .status();
        let _ = self.parent.wait();
        // The VRRP child ends with its parent; if it did not, end it.
        if let Ok(pid) = child.trim().parse::<u32>() {
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// True when `interface` in `netns` holds the virtual address.
fn holds_virtual(netns: &Netns, interface: &str) -> bool {
    let output = netns.ip(&["-6", "addr", "show", "dev", interface]);
    String::from_utf8_lossy(&output.stdout).contains(VIRTUAL)
}

/// Polls `check` for up to `limit`; the time it took, or `None`.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Runs a nemo virtual router on `socket` until `deadline`, answering
/// advertisements and timers; returns it.
async fn run_router(
    socket: &VrrpSocket,
    mut router: VirtualRouter,
    until: Instant,
    stop_with_resignation: bool,
) -> VirtualRouter {
    let source = router.config().primary_address;
    let mut buffer = vec![0u8; MAX_ADVERTISEMENT];
    router.start(Instant::now());
    loop {
        while let Some(action) = router.poll_action() {
            if let Action::Send(advertisement) = action {
                socket.send(&advertisement.encode(source)).await.unwrap();
            }
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        let wake = router.poll_timeout().unwrap_or(until).min(until);
        tokio::select! {
            received = socket.receive(&mut buffer) => {
                let received = received.unwrap();
                if let Ok(advertisement) = Advertisement::decode(
                    &buffer[..received.len],
                    received.source,
                    received.hop_limit,
                ) {
                    let _ = router.handle_advertisement(received.source, &advertisement, Instant::now());
                }
            }
            () = tokio::time::sleep_until(wake.into()) => router.handle_timeout(Instant::now()),
        }
    }
    if stop_with_resignation {
        router.shutdown();
        while let Some(action) = router.poll_action() {
            if let Action::Send(advertisement) = action {
                socket.send(&advertisement.encode(source)).await.unwrap();
            }
        }
    }
    router
}

#[test]
fn keepalived_and_nemo_agree_on_vrrpv3() {
    if !netns_available(MUST_RUN)
        || !require(
            runs("keepalived", &["--version"]),
            "keepalived missing",
            MUST_RUN,
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let theirs = Netns::new("vrrp-k");
    let ours = Netns::new("vrrp-n");
    veth(&theirs, "vk", "fe80::a/64", &ours, "vn", "fe80::b/64");
    let keepalived = Keepalived::start(&theirs, dir.path(), "vk", 100);

    // Alone, keepalived becomes master and holds the address.
    assert!(
        within(Duration::from_secs(10), || holds_virtual(&theirs, "vk")).is_some(),
        "keepalived never became master: {}",
        std::fs::read_to_string(dir.path().join("keepalived.log")).unwrap_or_default()
    );

    let log = dir.path().join("keepalived.log");
    let open = || VrrpSocket::open("vn", addr("fe80::b")).unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };

    // Theirs parse here; and a lower priority leaves keepalived master.
    let (heard, loser) = ours
        .spawn_in(move || {
            runtime().block_on(async move {
                let socket = open();
                let mut buffer = vec![0u8; MAX_ADVERTISEMENT];
                let received =
                    tokio::time::timeout(Duration::from_secs(5), socket.receive(&mut buffer))
                        .await
                        .expect("no advertisement from keepalived")
                        .unwrap();
                let heard = (
                    received.source,
                    received.hop_limit,
                    Advertisement::decode(
                        &buffer[..received.len],
                        received.source,
                        received.hop_limit,
                    ),
                );
                let loser = run_router(
                    &socket,
                    VirtualRouter::new(config(50)),
                    Instant::now() + Duration::from_millis(1500),
                    false,
                )
                .await;
                (heard, loser.state())
            })
        })
        .join()
        .unwrap();
    let (source, hop_limit, decoded) = heard;
    assert_eq!(hop_limit, 255);
    assert!(source.is_unicast_link_local(), "{source}");
    let advertisement = decoded.unwrap_or_else(|e| panic!("keepalived's advertisement: {e}"));
    assert_eq!(advertisement.vrid, 12);
    assert_eq!(advertisement.priority, 100);
    assert_eq!(
        advertisement.max_advert_interval,
        Centiseconds::new(10).unwrap()
    );
    // Configured the RFC's way (its link-local address first, §5.2.9),
    // keepalived advertises the list nemo sends: before nemo sent its
    // link-local address first, each discarded the other's advertisements
    // ("unexpected ip number count" there) and both held the address.
    assert_eq!(advertisement.addresses, config(50).addresses);
    assert_eq!(loser, State::Backup, "priority 50 under keepalived's 100");
    assert!(
        holds_virtual(&theirs, "vk"),
        "keepalived gave up to a lower priority"
    );

    // Ours parse there: a higher priority that preempts takes over, and
    // keepalived gives the address up; our resignation hands it back.
    let winner = ours.spawn_in(move || {
        runtime().block_on(async move {
            let socket = open();
            run_router(
                &socket,
                VirtualRouter::new(config(200)),
                Instant::now() + Duration::from_secs(3),
                true,
            )
            .await
            .state()
        })
    });
    let released = within(Duration::from_millis(2500), || {
        !holds_virtual(&theirs, "vk")
    });
    let winner = winner.join().unwrap();
    let resumed = within(Duration::from_secs(2), || holds_virtual(&theirs, "vk"));
    let keepalived_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        released.is_some(),
        "keepalived kept the address under priority 200: {keepalived_log}"
    );
    assert_eq!(winner, State::Initialize, "stopped after resigning");
    let resumed = resumed.unwrap_or_else(|| {
        panic!("keepalived did not take over after our resignation: {keepalived_log}")
    });
    eprintln!("keepalived released after {released:?}, resumed {resumed:?} after the resignation");
    drop(keepalived);
}

/// A nemo router as `nemo-ha` configures it from `addresses = [VIRTUAL]`.
fn config(priority: u8) -> RouterConfig {
    RouterConfig {
        vrid: 12,
        priority,
        advert_interval: Centiseconds::new(10).unwrap(),
        preempt: true,
        primary_address: addr("fe80::b"),
        addresses: virtual_addresses(12, &[addr(VIRTUAL)]),
        // keepalived, named: the filter a pair runs with interoperates.
        advertisers: Advertisers::Only(vec![addr("fe80::a")]),
    }
}

/// Whether the kernel's route lookup for `address` ends in a local route.
async fn delivered_locally(handle: &rtnetlink::Handle, address: Ipv6Addr) -> bool {
    use futures::TryStreamExt;
    let lookup = rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(address, 128)
        .build();
    matches!(
        handle.route().get(lookup).execute().try_next().await,
        Ok(Some(route)) if route.header.kind == netlink_packet_route::route::RouteType::Local
    )
}

#[test]
fn a_taken_address_is_received_for_when_take_returns() {
    // The kernel makes an added address local later, in its address worker;
    // a member that announced before that forwarded the first packets for
    // the address to the old member (the process-death failover lab's
    // 1-second outage). take_addresses returns only once the address is
    // local: checked at once after each of many takes, on a link with a
    // /64 covering the addresses (so that, before, they were forwarded),
    // with every CPU kept busy (the worker's delay is what loses the race:
    // idle, it nearly always wins).
    if !netns_available(MUST_RUN) {
        return;
    }
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: Vec<_> = (0..cpus * 2)
        .map(|_| {
            let busy = busy.clone();
            std::thread::spawn(move || {
                while busy.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let a = Netns::new("vrrp-ta");
    let b = Netns::new("vrrp-tb");
    veth(&a, "va", "2001:db8:1::a/64", &b, "vb", "2001:db8:1::b/64");
    a.ip(&["-6", "route", "add", "2001:db8:2::/48", "dev", "va"]);
    let addresses: Vec<Ipv6Addr> = (1..=4).map(|i| addr(&format!("2001:db8:2::{i}"))).collect();
    let late = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.block_on(move || async move {
            let (connection, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(connection);
            let index = nemo_dataplane::addresses::interface_index(&handle, "va")
                .await
                .unwrap();
            let mut late = Vec::new();
            for round in 0..500 {
                nemo_dataplane::vrrp::take_addresses(&handle, index, &addresses)
                    .await
                    .unwrap();
                for address in &addresses {
                    if !delivered_locally(&handle, *address).await {
                        late.push((round, *address));
                    }
                }
                nemo_dataplane::vrrp::release_addresses(&handle, index, &addresses)
                    .await
                    .unwrap();
                for address in &addresses {
                    assert!(
                        !delivered_locally(&handle, *address).await,
                        "{address} still local after its release"
                    );
                }
            }
            late
        })
    }));
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
    let late = late.unwrap();
    assert!(
        late.is_empty(),
        "not yet local when take_addresses returned: {} of 2000, first {:?}",
        late.len(),
        late.first()
    );
}
