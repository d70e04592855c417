#!/usr/bin/env bash
# Controller: durable prefix allocations per second over gRPC, with
# concurrent clients (each one call in flight on its own connection), and
# the latency of each call. The store is on a real disk (STORE_DIR, default
# /var/tmp), so each acknowledgement waits for an fsync.
#
#   bench/controller.sh [SECONDS] [CLIENTS...]
#   bench/controller.sh 10 1 8 64
#   STORE=etcd1 bench/controller.sh 10 1 8 64   # the store in a 1-member etcd
#   STORE=etcd3 bench/controller.sh 10 1 8 64   # ... in a 3-member etcd
#   STORE=etcd3 REPLICAS=2 bench/controller.sh 10 64  # two controller
#       replicas on it, the clients spread over both
#   STORE=etcd3 REPLICAS=2 KILL_AFTER=3 bench/controller.sh 6 64  # the first
#       replica SIGKILLed 3 s into the run: its clients move to the other;
#       longest_failover is the failover time they saw
#   REQUEST_IDS=1 ...    # every allocation with a request id, a failed one
#       sent again under it (what ids cost; a retry allocates once)
#   PREFER_FIRST=1 ...   # every client on the first replica until it fails
#       (the deployment OPERATIONS.md advises) instead of spread over all
#
# etcd members run on loopback ports 23790-23795, their data beside the
# store (a real disk, etcd's own fsync per commit).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
shift || true
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(1 8 64)
store=${STORE:-redb}
replicas=${REPLICAS:-1}
[ "$replicas" = 1 ] || [ "$store" != redb ] || { echo "REPLICAS needs STORE=etcd1 or etcd3" >&2; exit 2; }
[ -z "${KILL_AFTER:-}" ] || [ "$replicas" -gt 1 ] || { echo "KILL_AFTER needs REPLICAS=2 or more" >&2; exit 2; }
case "$store" in redb) members=0;; etcd1) members=1;; etcd3) members=3;; *) echo "STORE is redb, etcd1 or etcd3" >&2; exit 2;; esac

cargo build --release -q -p controller --bin nemo-controller --bin controller-loadgen
bin=target/release
work=$(mktemp -d "${STORE_DIR:-/var/tmp}/nemo-controller-bench.XXXXXX")
pids=()
etcd_pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${etcd_pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT

endpoints=""
if [ "$members" -gt 0 ]; then
  . bench/etcd-cluster.sh
  start_etcd_cluster "$members" "$work"
fi

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); store on $(df --output=source,fstype "$work" | tail -1)"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
for n in "${clients[@]}"; do
  # A fresh controller and store per client count: each run starts equal.
  rm -rf "$work/store"
  if [ "$members" = 0 ]; then
    printf 'listen = "[::1]:0"\nstore = "%s"\ntoken_file = "%s"\n' "$work/store" "$work/token" > "$work/controller.toml"
  else
    # A fresh prefix per client count.
    printf 'listen = "[::1]:0"\ntoken_file = "%s"\n[etcd]\nendpoints = %s\nprefix = "/bench-%s/"\n' \
        "$work/token" "$endpoints" "$n" > "$work/controller.toml"
  fi
  listens=""
  for r in $(seq 1 "$replicas"); do
    "$bin/nemo-controller" --config "$work/controller.toml" >"$work/ready-$r" 2>"$work/controller-$r.log" &
    pids+=($!)
    for i in $(seq 1 200); do grep -q ready "$work/ready-$r" 2>/dev/null && break; sleep 0.05; done
    listens+="http://$(sed -n "s/.*grpc=\([^ ]*\).*/\1/p" "$work/ready-$r"),"
  done
  if [ -n "${KILL_AFTER:-}" ]; then
    first=${pids[0]}
    (sleep "$KILL_AFTER"; kill -9 "$first"; echo "killed replica 1 (pid $first) at ${KILL_AFTER} s") &
    killer=$!
  fi
  "$bin/controller-loadgen" --endpoint "${listens%,}" --token-file "$work/token" \
      --clients "$n" --seconds "$seconds" ${PREFER_FIRST:+--prefer-first} ${REQUEST_IDS:+--request-ids}
  [ -z "${KILL_AFTER:-}" ] || wait "$killer"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
done
