#!/usr/bin/env bash
# Home-agent binding-cache scale: a million mobile routers (or ROUTERS), each
# with one Mobile Network Prefix, registered over UDP on loopback with
# persistence on (group commit, store on disk), then refreshed; the home
# agent's memory at each step; then a crash (SIGKILL) and the time until the
# restarted home agent has loaded every binding and answers again.
#
#   bench/ha-scale.sh [ROUTERS] [WINDOW] [REFRESH_SECONDS]
#   bench/ha-scale.sh 1000000 2000 30
#
# STORE_DIR (default /var/tmp) holds the home agent's store: a real disk, so
# the flushes are real fsyncs.
set -euo pipefail
cd "$(dirname "$0")/.."
routers=${1:-1000000}
window=${2:-2000}
refresh=${3:-30}

cargo build --release -q -p home-agent --bin nemo-ha --bin ha-loadgen
bin=target/release
work=$(mktemp -d "${STORE_DIR:-/var/tmp}/nemo-ha-scale.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

rss() { awk '/^VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$pid/status"; }
hwm() { awk '/^VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$pid/status"; }
bindings() { # the home agent's own count, from its metrics endpoint
  curl -s "http://$metrics/metrics" | awk '/^nemo_ha_bindings / {print $2}'
}
start_ha() { # prints seconds until the ready line
  local started=$SECONDS.$(date +%N) out="$work/ready"
  rm -f "$out"
  "$bin/nemo-ha" --config "$work/ha.toml" >"$out" 2>>"$work/ha.log" &
  pid=$!
  until [ -s "$out" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "nemo-ha exited; log:" >&2; tail "$work/ha.log" >&2; exit 1; }
    sleep 0.02
  done
  target=$(sed -n 's/.*udp=\([^ ]*\).*/\1/p' "$out")
}
now() { date +%s.%N; }

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); store on $(df --output=source,fstype "$work" | tail -1)"
"$bin/ha-loadgen" config --routers "$routers" --store "$work/store" \
    --listen '[::1]:0' --flush group > "$work/ha.toml"
port=$((20000 + RANDOM % 20000))
metrics="127.0.0.1:$port"
printf '\n[metrics]\nlisten = "%s"\n' "$metrics" >> "$work/ha.toml"
echo "config: $routers mobile routers, $(du -h "$work/ha.toml" | cut -f1)"

t0=$(now); start_ha; t1=$(now)
echo "start (config, empty store): $(echo "$t1 - $t0" | bc) s, RSS $(rss)"

# Fill: long enough for every router to have registered at least once.
fill=$(( routers / 20000 + 20 ))
"$bin/ha-loadgen" run --target "$target" --routers "$routers" --window "$window" \
    --seconds "$fill" --passes 2>&1 | sed 's/^/fill: /'
echo "after fill: $(bindings) bindings, RSS $(rss), peak $(hwm)"

"$bin/ha-loadgen" run --target "$target" --routers "$routers" --window "$window" \
    --seconds "$refresh" --passes --first-sequence 30000 2>&1 | sed 's/^/refresh: /'
echo "after refresh: $(bindings) bindings, RSS $(rss), peak $(hwm)"
echo "store on disk: $(du -sh "$work/store" | cut -f1)"

kill -9 "$pid"; wait "$pid" 2>/dev/null || true
t0=$(now); start_ha; t1=$(now)
echo "restart after SIGKILL: ready in $(echo "$t1 - $t0" | bc) s with $(bindings) bindings, RSS $(rss)"
