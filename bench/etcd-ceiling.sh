#!/usr/bin/env bash
# etcd's own write ceiling on this machine, beside the controller's figures
# (bench/controller.sh): transactions and keys per second with no
# controller in the way, for 1 and 3 members, with 64 clients putting one
# key each (etcd's `benchmark put` shape; that tool is not packaged in
# Debian) and with one client putting 120 keys at a time (the shape of the
# store's group commit: one transaction in flight per controller).
#
#   bench/etcd-ceiling.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
cargo build --release -q -p controller --example etcd_ceiling
bin=target/release/examples/etcd_ceiling
work=$(mktemp -d "${STORE_DIR:-/var/tmp}/nemo-etcd-ceiling.XXXXXX")
etcd_pids=()
cleanup() {
  for p in "${etcd_pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
. bench/etcd-cluster.sh
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); data on $(df --output=source,fstype "$work" | tail -1)"
for members in 1 3; do
  start_etcd_cluster "$members" "$work/$members"
  for shape in "64 1" "8 1" "1 120" "8 120"; do
    set -- $shape
    "$bin" --endpoints "$endpoint_list" --clients "$1" --keys "$2" --seconds "$seconds"
  done
  for p in "${etcd_pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  etcd_pids=()
done
