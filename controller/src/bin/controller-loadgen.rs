//! `controller-loadgen`: many orchestrators allocating tenant prefixes from a
//! running `nemo-controller` over gRPC, each allocation acknowledged only
//! once it is on disk. Reports allocations per second and the latency of
//! each call (p50, p99, p99.9).
//!
//! ```sh
//! controller-loadgen --endpoint http://[::1]:50051 --token-file token --clients 64 --seconds 10
//! ```
//!
//! It creates a pool (`--pool`, a /32 carved in /56s: 16M prefixes) and one
//! tenant per client, then each client allocates in a loop, one call in
//! flight, over its own HTTP/2 connection. Given several replicas, a client
//! whose call fails moves to the next; `longest_wait` is the longest time a
//! client went without an answer, `longest_failover` the longest from a
//! client's last answer before a failed call to its first answer after it
//! (with a replica killed during the run: the failover time clients saw).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nemo_proto::v1 as pb;
use nemo_proto::v1::controller_client::ControllerClient;
use tonic::transport::Channel;
use tonic::Request;

#[derive(Debug, Parser)]
#[command(name = "controller-loadgen", version)]
struct Args {
    /// The controller's gRPC endpoint; replicas as a comma-separated
    /// list, the clients spread over them in turn.
    #[arg(long)]
    endpoint: String,
    /// File holding the bearer token.
    #[arg(long)]
    token_file: std::path::PathBuf,
    /// Concurrent clients, each with one call in flight.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Duration of the measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Pool to create and allocate from.
    #[arg(long, default_value = "bench")]
    pool: String,
    /// Its prefix.
    #[arg(long, default_value = "2001:db8::/32")]
    prefix: String,
    /// Call GetPool instead of AllocatePrefix: the ceiling of the gRPC path
    /// (connection, token check, state lock) without a write.
    #[arg(long)]
    read_only: bool,
    /// At the end, write every prefix whose allocation was acknowledged to
    /// this file, one a line (what a power-loss test checks the restarted
    /// controller against).
    #[arg(long)]
    acknowledged: Option<std::path::PathBuf>,
    /// Every client starts on the first endpoint and moves on only when it
    /// fails (the deployment OPERATIONS.md advises), instead of spreading
    /// the clients over the endpoints.
    #[arg(long)]
    prefer_first: bool,
    /// Give every allocation a request id (gRPC metadata nemo-request-id),
    /// and send a failed one again with the same id, as an orchestrator
    /// does: what request ids cost, and that a retry allocates once.
    #[arg(long)]
    request_ids: bool,
}

fn request<T>(message: T, token: &str) -> anyhow::Result<Request<T>> {
    Ok(nemo_daemon::authorized(message, token)?)
}

/// Latency percentile of sorted microseconds, in milliseconds.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[index.min(sorted.len() - 1)]) / 1000.0
}

async fn client(endpoint: &str) -> anyhow::Result<ControllerClient<Channel>> {
    let channel = Channel::from_shared(endpoint.to_owned())?
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    Ok(ControllerClient::new(channel))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("token file {}", args.token_file.display()))?
        .trim()
        .to_owned();
    let endpoints: Vec<&str> = args.endpoint.split(',').map(str::trim).collect();
    let mut admin = client(endpoints[0]).await?;
    let run = std::process::id();
    admin
        .create_pool(request(
            pb::CreatePoolRequest {
                name: args.pool.clone(),
                prefix: args.prefix.clone(),
                tenant_length: 56,
                translation_prefix: String::new(),
            },
            &token,
        )?)
        .await
        .context("creating the pool")?;
    let mut tasks = Vec::new();
    let mut tenants = Vec::new();
    for n in 0..args.clients {
        let tenant = format!("load-{run}-{n}");
        admin
            .create_tenant(request(
                pb::CreateTenantRequest {
                    name: tenant.clone(),
                },
                &token,
            )?)
            .await
            .context("creating a tenant")?;
        tenants.push(tenant);
    }
    if endpoints.len() > 1 {
        // The other replicas follow the first: let them catch up with the
        // pool and tenants before their clients allocate.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let endpoints: Vec<String> = endpoints.into_iter().map(str::to_owned).collect();
    for (n, tenant) in tenants.into_iter().enumerate() {
        let mut at = if args.prefer_first {
            0
        } else {
            n % endpoints.len()
        };
        let mut connection = client(&endpoints[at]).await?;
        let (token, pool, read_only) = (token.clone(), args.pool.clone(), args.read_only);
        let request_ids = args.request_ids;
        let endpoints = endpoints.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut allocated = Vec::new();
            let mut failures = 0u64;
            // The longest time this client went without an answer: with a
            // replica killed, the failover time it saw.
            let mut last_answer = Instant::now();
            let mut longest_wait = Duration::ZERO;
            // From the last answer before a failed call to the first answer
            // after it: the failover time.
            let mut failing_over = false;
            let mut longest_failover = Duration::ZERO;
            // The id of the allocation being made: kept until it is
            // answered, so that a failed call is sent again under it.
            let mut calls = 0u64;
            let mut pending_id: Option<String> = None;
            while Instant::now() < deadline {
                let started = Instant::now();
                let answer = if read_only {
                    let call = pb::GetPoolRequest { name: pool.clone() };
                    connection.get_pool(request(call, &token)?).await.map(drop)
                } else {
                    let call = pb::AllocatePrefixRequest {
                        tenant: tenant.clone(),
                        pool: pool.clone(),
                        length: 0,
                        prefix: String::new(),
                    };
                    let mut call = request(call, &token)?;
                    if request_ids {
                        let id = pending_id.get_or_insert_with(|| {
                            calls += 1;
                            format!("loadgen-{n}-{calls}")
                        });
                        call.metadata_mut()
                            .insert(nemo_controller::api::REQUEST_ID, id.parse()?);
                    }
                    connection
                        .allocate_prefix(call)
                        .await
                        .map(|answer| allocated.push(answer.into_inner().prefix))
                };
                match answer {
                    Ok(()) => {
                        pending_id = None;
                        latencies
                            .push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        longest_wait = longest_wait.max(last_answer.elapsed());
                        if std::mem::take(&mut failing_over) {
                            longest_failover = longest_failover.max(last_answer.elapsed());
                        }
                        last_answer = Instant::now();
                    }
                    Err(_) => {
                        // As an orchestrator given the replicas does: on to
                        // the next one (the same one again when alone).
                        failures += 1;
                        failing_over = true;
                        at = (at + 1) % endpoints.len();
                        match client(&endpoints[at]).await {
                            Ok(next) => connection = next,
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                }
            }
            anyhow::Ok((
                latencies,
                failures,
                allocated,
                longest_wait,
                longest_failover,
            ))
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    let mut allocated = String::new();
    let mut longest_wait = Duration::ZERO;
    let mut longest_failover = Duration::ZERO;
    for task in tasks {
        let (mut some, failed, prefixes, waited, failed_over) = task.await??;
        latencies.append(&mut some);
        failures += failed;
        longest_wait = longest_wait.max(waited);
        longest_failover = longest_failover.max(failed_over);
        for prefix in prefixes {
            allocated.push_str(&prefix);
            allocated.push('\n');
        }
    }
    if let Some(path) = &args.acknowledged {
        std::fs::write(path, allocated).with_context(|| format!("writing {}", path.display()))?;
    }
    latencies.sort_unstable();
    println!(
        "call={} clients={} calls={} failed={failures} rate={:.0}/s p50={:.3}ms p99={:.3}ms p99.9={:.3}ms max={:.3}ms longest_wait={:.1}ms longest_failover={:.1}ms",
        if args.read_only {
            "GetPool"
        } else {
            "AllocatePrefix"
        },
        args.clients,
        latencies.len(),
        latencies.len() as f64 / args.seconds as f64,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        percentile(&latencies, 1.0),
        longest_wait.as_secs_f64() * 1000.0,
        longest_failover.as_secs_f64() * 1000.0,
    );
    Ok(())
}
