//! Load generator for the controller's allocator: N allocations from one
//! pool through `Store::allocate` (each one queued and made durable by a group commit
//! before it returns, as the API acknowledges it), then a reopen.
//!
//! `cargo bench -p controller --bench allocate -- [N] [DIR]`
//! N defaults to 1,000,000; DIR (default a temporary directory) decides
//! what the commit costs: tmpfs measures the allocator and redb, a disk adds
//! its fsync. Prints the rate per 10% and the reopen time.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a load generator

use std::time::{Duration, Instant};

use nemo_controller::store::Store;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let total: u64 = args.first().map_or(1_000_000, |n| n.parse().unwrap());
    let temp =
        tempfile::tempdir_in(args.get(1).map_or_else(std::env::temp_dir, Into::into)).unwrap();
    let path = temp.path().join("store");
    let store = Store::open(&path, Duration::from_secs(3600)).await.unwrap();
    // A /32 in /56s: 16M slots, so the pool never fills.
    store
        .create_pool("bench", "2001:db8::/32", 56)
        .await
        .unwrap();
    store.create_tenant("acme").await.unwrap();
    let step = (total / 10).max(1);
    let started = Instant::now();
    let mut window = Instant::now();
    for i in 1..=total {
        store.allocate("acme", "bench", 0).await.unwrap();
        if i % step == 0 {
            let rate = step as f64 / window.elapsed().as_secs_f64();
            println!("{i:>9} allocated  {rate:>9.0} allocations/s over the last {step}");
            window = Instant::now();
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{total} allocations in {:.1} s: {:.0}/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    let (_, allocated, _) = store.pool("bench").await.unwrap();
    assert_eq!(allocated, total);
    drop(store);
    let reopen = Instant::now();
    let store = Store::open(&path, Duration::from_secs(3600)).await.unwrap();
    let (_, allocated, _) = store.pool("bench").await.unwrap();
    assert_eq!(allocated, total);
    println!(
        "reopen with {allocated} allocations: {:.2} s",
        reopen.elapsed().as_secs_f64()
    );
    let one = Instant::now();
    store.allocate("acme", "bench", 0).await.unwrap();
    println!(
        "first allocation after reopen: {:.2} ms",
        one.elapsed().as_secs_f64() * 1e3
    );
}
