#!/usr/bin/env bash
# Controller: durable prefix allocations per second over gRPC, with
# concurrent clients (each one call in flight on its own connection), and
# the latency of each call. The store is on a real disk (STORE_DIR, default
# /var/tmp), so each acknowledgement waits for an fsync.
#
#   bench/controller.sh [SECONDS] [CLIENTS...]
#   bench/controller.sh 10 1 8 64
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
shift || true
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(1 8 64)

cargo build --release -q -p controller --bin nemo-controller --bin controller-loadgen
bin=target/release
work=$(mktemp -d "${STORE_DIR:-/var/tmp}/nemo-controller-bench.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); store on $(df --output=source,fstype "$work" | tail -1)"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
for n in "${clients[@]}"; do
  # A fresh controller and store per client count: each run starts equal.
  rm -rf "$work/store"
  printf 'listen = "[::1]:0"\nstore = "%s"\ntoken_file = "%s"\n' "$work/store" "$work/token" > "$work/controller.toml"
  coproc CONTROLLER { exec "$bin/nemo-controller" --config "$work/controller.toml" 2>"$work/controller.log"; }
  pid=$CONTROLLER_PID
  read -r ready <&"${CONTROLLER[0]}"
  listen=$(sed -n "s/.*grpc=\([^ ]*\).*/\1/p" <<<"$ready")
  "$bin/controller-loadgen" --endpoint "http://$listen" --token-file "$work/token" \
      --clients "$n" --seconds "$seconds"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done
