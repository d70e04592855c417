//! etcd's own write ceiling on this machine, with no controller in the way:
//! what bounds the controller's etcd store (`bench/etcd-ceiling.sh`; etcd's
//! own `benchmark` tool is not packaged in Debian). Each client has one
//! transaction in flight: `--keys` puts of `--value-bytes` under a guard
//! like the store's (a compare on one key), and the run reports
//! transactions and keys per second with the latency of each transaction.
//!
//! ```sh
//! cargo run --release -p controller --example etcd_ceiling -- \
//!     --endpoints http://127.0.0.1:23790 --clients 64 --keys 1 --seconds 5
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

#[derive(Debug, Parser)]
struct Args {
    /// etcd client URLs, comma-separated.
    #[arg(long)]
    endpoints: String,
    /// Clients, each with one transaction in flight on its own connection.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Keys put per transaction (the store's group commit puts up to 120).
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// Bytes per value (an allocation record is about 150).
    #[arg(long, default_value_t = 150)]
    value_bytes: usize,
    /// Length of the run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Key prefix (removed at the end).
    #[arg(long, default_value = "/etcd-ceiling/")]
    prefix: String,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[index.min(sorted.len() - 1)]) / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let endpoints: Vec<String> = args.endpoints.split(',').map(str::to_owned).collect();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let value = vec![b'x'; args.value_bytes];
    let guard = format!("{}guard", args.prefix);
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let mut etcd = Client::connect(&endpoints, None)
            .await
            .context("connecting to etcd")?;
        let (value, guard, prefix, keys) =
            (value.clone(), guard.clone(), args.prefix.clone(), args.keys);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut round = 0u64;
            while Instant::now() < deadline {
                let puts: Vec<TxnOp> = (0..keys)
                    .map(|k| {
                        TxnOp::put(
                            format!("{prefix}{client}/{}/{k}", round % 1000),
                            value.clone(),
                            None,
                        )
                    })
                    .collect();
                // The store guards each transaction with a compare on its
                // revision key; this guard always holds (the key is absent).
                let txn = Txn::new()
                    .when([Compare::version(guard.as_str(), CompareOp::Equal, 0)])
                    .and_then(puts);
                let started = Instant::now();
                etcd.txn(txn).await.context("a transaction")?;
                latencies.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                round += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.append(&mut task.await??);
    }
    latencies.sort_unstable();
    let txns = latencies.len() as f64 / args.seconds as f64;
    println!(
        "clients={} keys_per_txn={} value_bytes={} txns={txns:.0}/s keys={:.0}/s p50={:.3}ms p99={:.3}ms",
        args.clients,
        args.keys,
        args.value_bytes,
        txns * args.keys as f64,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
    let mut etcd = Client::connect(&endpoints, None).await?;
    etcd.delete(
        args.prefix.clone(),
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .context("removing the keys")?;
    Ok(())
}
