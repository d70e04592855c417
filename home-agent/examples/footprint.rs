//! The home agent's heap, structure by structure: bytes per authorization
//! and per binding, counted by a global allocator that tracks every live
//! byte and the peak, while the structures the daemon keeps are filled as
//! the daemon fills them (authorizations as from the config or the
//! controller; bindings as loaded at a restart; the admin view; the reply
//! paths; the memory data plane's routes).
//!
//! ```sh
//! cargo run --release -p home-agent --example footprint -- 1000000
//! ```
//!
//! Heap only: the store's redb pages, the kernel's routes (seg6) and the
//! allocator's own retention are not in it (ha-scale.sh measures RSS).

use std::alloc::System;

use cap::Cap;
use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::Ipv6Net;
use nemo::auth::{Algorithm, SecurityAssociation};
use nemo::ha::{Authorization, AuthorizationTable, Binding, HomeAgent, HomeAgentConfig};
use nemo::wire::{Lifetime, NtpTimestamp, SequenceNumber};

/// Counts live bytes and their peak.
#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

fn home(n: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 1, 0)) + u128::from(n))
}

fn prefix(n: u32) -> Ipv6Net {
    let base = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0x8000, 0, 0, 0, 0, 0));
    Ipv6Net::new(Ipv6Addr::from(base + (u128::from(n) << 64)), 64).unwrap_or_default()
}

fn authorization(n: u32) -> Authorization {
    let mut key = vec![0x5a; 32];
    key[..4].copy_from_slice(&n.to_be_bytes());
    Authorization {
        home_address: home(n),
        security_associations: vec![SecurityAssociation::new(
            0x1_0000 + n,
            Algorithm::HmacSha256,
            key,
        )
        .expect("a 32-octet key")],
        mobile_router: true,
        prefixes: vec![prefix(n)].into(),
    }
}

fn binding(n: u32, now: SystemTime) -> Binding {
    Binding {
        home_address: home(n),
        care_of: nemo::ha::CareOf::Ipv6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10)),
        prefixes: vec![prefix(n)].into(),
        mobile_router: true,
        sequence: SequenceNumber(7),
        spi: 0x1_0000 + n,
        timestamp: Some(NtpTimestamp(1 << 40)),
        lifetime: Lifetime(150),
        registered_at: now,
        expires_at: now + Duration::from_secs(600),
    }
}

/// Bytes live now.
fn live() -> usize {
    ALLOCATOR.allocated()
}

/// Runs `step`, prints what it left on the heap per entry and the heap's
/// peak so far, and returns what it built.
fn measure<T>(what: &str, entries: usize, step: impl FnOnce() -> T) -> T {
    let before = live();
    let built = step();
    let after = live();
    println!(
        "{what:<52} {:>8.1} MiB  {:>6} B/entry   peak so far {:.1} MiB",
        after.saturating_sub(before) as f64 / f64::from(1 << 20),
        after.saturating_sub(before) / entries.max(1),
        ALLOCATOR.max_allocated() as f64 / f64::from(1 << 20),
    );
    built
}

fn main() {
    let entries: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let count = entries as usize;
    let now = SystemTime::now();
    println!("{entries} mobile routers, one /64 MNP and a 32-octet key each");
    println!(
        "sizes: Authorization {} B, Binding {} B, SecurityAssociation {} B, ReplyPath {} B",
        std::mem::size_of::<Authorization>(),
        std::mem::size_of::<Binding>(),
        std::mem::size_of::<SecurityAssociation>(),
        std::mem::size_of::<nemo_ha::messages::ReplyPath>()
    );
    let parsed: Vec<Authorization> = measure("authorizations, parsed (a Vec)", count, || {
        (0..entries).map(authorization).collect()
    });
    let table = measure("authorization table (by home, SPI, prefix)", count, || {
        AuthorizationTable::new(parsed).expect("distinct entries")
    });
    let config = HomeAgentConfig {
        home_prefixes: vec!["2001:db8:1::/64".parse().expect("a prefix")],
        ..HomeAgentConfig::default()
    };
    let mut engine: HomeAgent<(Arc<()>, SocketAddr)> = HomeAgent::new(config, table);
    let stored: Vec<Binding> = measure("bindings, as read from the store (a Vec)", count, || {
        (0..entries).map(|n| binding(n, now)).collect()
    });
    measure(
        "engine: binding cache (bindings, expiry, prefixes)",
        count,
        || engine.load(stored, now),
    );
    // The durable view shares each binding with the engine (an Arc).
    let view: BTreeMap<Ipv6Addr, Arc<Binding>> =
        measure("admin view (the durable state, shared)", count, || {
            engine
                .cache()
                .shared_bindings()
                .map(|b| (b.home_address, b.clone()))
                .collect()
        });
    // The daemon's reply paths hold a socket's Arc: a value of the same
    // size stands in for one.
    type ReplyPathSized = std::mem::MaybeUninit<nemo_ha::messages::ReplyPath>;
    let paths: std::collections::HashMap<Ipv6Addr, (ReplyPathSized, Ipv6Addr)> = measure(
        "reply paths (kept only with refresh requests on)",
        count,
        || {
            (0..entries)
                .map(|n| (home(n), (ReplyPathSized::uninit(), home(n))))
                .collect()
        },
    );
    let routes: BTreeMap<Ipv6Net, Ipv6Addr> =
        measure("memory data plane routes (/128 + MNP)", count, || {
            (0..entries)
                .flat_map(|n| {
                    let care_of = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10);
                    [
                        (Ipv6Net::new(home(n), 128).unwrap_or_default(), care_of),
                        (prefix(n), care_of),
                    ]
                })
                .collect()
        });
    println!("the parts, each built alone:");
    let parts = (
        measure(
            "  HashMap<Ipv6Addr, Arc<Binding>> (the bindings)",
            count,
            || {
                (0..entries)
                    .map(|n| (home(n), Arc::new(binding(n, now))))
                    .collect::<std::collections::HashMap<_, _>>()
            },
        ),
        measure(
            "  BTreeSet<(SystemTime, Ipv6Addr)> (expiry order)",
            count,
            || {
                (0..entries)
                    .map(|n| (now + Duration::from_millis(u64::from(n)), home(n)))
                    .collect::<std::collections::BTreeSet<_>>()
            },
        ),
        measure("  HashMap<Ipv6Addr, NtpTimestamp> (replay)", count, || {
            (0..entries)
                .map(|n| (home(n), NtpTimestamp(u64::from(n))))
                .collect::<std::collections::HashMap<_, _>>()
        }),
        measure("  PrefixIndex<Ipv6Addr> (one prefix each)", count, || {
            let mut index = nemo::prefix_index::PrefixIndex::default();
            for n in 0..entries {
                index.insert(prefix(n), home(n));
            }
            index
        }),
        measure("  HashMap<Ipv6Addr, Box<Authorization>>", count, || {
            (0..entries)
                .map(|n| (home(n), Box::new(authorization(n))))
                .collect::<std::collections::HashMap<_, _>>()
        }),
        measure("  HashMap<u32, Ipv6Addr> (by SPI)", count, || {
            (0..entries)
                .map(|n| (0x1_0000 + n, home(n)))
                .collect::<std::collections::HashMap<_, _>>()
        }),
    );
    drop(parts);
    println!(
        "total live heap: {:.1} MiB ({} B per mobile router)",
        live() as f64 / f64::from(1 << 20),
        live() / count.max(1)
    );
    drop((engine, view, paths, routes));
}
