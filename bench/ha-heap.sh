#!/usr/bin/env bash
# Where the home agent's heap goes, by call stack: heaptrack on nemo-ha
# built with glibc's allocator (feature system-allocator: heaptrack
# interposes malloc, which mimalloc bypasses) and line tables, while
# ROUTERS mobile routers' authorizations arrive from a controller
# (`ha-loadgen controller`) and every router registers once; the home
# agent is then stopped (SIGTERM) and heaptrack_print lists the call stacks
# holding the most memory at the peak, and what is still held at the end.
#
#   bench/ha-heap.sh [ROUTERS]          # default 100000
#
# Output: the heaptrack file and its summary in RESULTS (default
# /var/tmp/nemo-ha-heap).
set -euo pipefail
cd "$(dirname "$0")/.."
routers=${1:-100000}
results=${RESULTS:-/var/tmp/nemo-ha-heap}
command -v heaptrack >/dev/null || { echo "heaptrack is needed (apt-get install heaptrack)" >&2; exit 2; }

CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -q -p home-agent \
    --features system-allocator --bin nemo-ha --target-dir target/heaptrack
cargo build --release -q -p home-agent --bin ha-loadgen
bin=target/release
work=$(mktemp -d /var/tmp/nemo-ha-heap.XXXXXX)
mkdir -p "$results"
ha_pid= controller_pid=
cleanup() {
  [ -n "$ha_pid" ] && kill -9 "$ha_pid" 2>/dev/null
  [ -n "$controller_pid" ] && kill "$controller_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/ha-loadgen" controller --routers "$routers" --listen '[::1]:0' >"$work/controller.ready" &
controller_pid=$!
until [ -s "$work/controller.ready" ]; do sleep 0.02; done
endpoint="http://$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$work/controller.ready")"
echo token > "$work/token"
"$bin/ha-loadgen" config --routers "$routers" --store "$work/store" --listen '[::1]:0' \
    --flush group --controller "$endpoint" --token-file "$work/token" > "$work/ha.toml"

# heaptrack starts nemo-ha itself: its PID is the one heaptrack prints.
heaptrack -o "$results/nemo-ha" target/heaptrack/release/nemo-ha --config "$work/ha.toml" \
    >"$work/ready" 2>"$work/ha.log" &
heaptrack_pid=$!
until grep -q "nemo-ha ready" "$work/ready" 2>/dev/null; do
  kill -0 "$heaptrack_pid" 2>/dev/null || { cat "$work/ready" "$work/ha.log" >&2; exit 1; }
  sleep 0.1
done
ha_pid=$(pgrep -n -x nemo-ha)
until grep -q "whole state applied" "$work/ha.log"; do sleep 0.1; done
target=$(sed -n 's/.*udp=\([^ ]*\).*/\1/p' "$work/ready")
"$bin/ha-loadgen" run --target "$target" --routers "$routers" --window 2000 \
    --seconds $(( routers / 5000 + 10 )) 2>&1 | tail -1
echo "nemo-ha (glibc, under heaptrack): RSS $(awk '/^VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$ha_pid/status")"
kill -TERM "$ha_pid"
wait "$heaptrack_pid" || true
ha_pid=
file=$(ls -t "$results"/nemo-ha*.zst "$results"/nemo-ha*.gz 2>/dev/null | head -1 || true)
heaptrack_print -f "$file" --print-peaks 1 --print-allocators 0 --print-temporary 0 \
    --print-leaks 0 --peak-limit 15 > "$results/summary.txt" 2>&1 || true
echo "heaptrack file: $file; summary: $results/summary.txt"
grep -E "^peak heap memory consumption|^total memory leaked|^peak RSS" "$results/summary.txt" || true
