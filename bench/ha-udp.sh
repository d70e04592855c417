#!/usr/bin/env bash
# Home-agent registration throughput and latency over UDP on loopback,
# persistence on: group commit, and a flush per binding in the same run so
# the gain is a ratio. Prints one result line per measurement.
#
#   bench/ha-udp.sh [ROUTERS] [SECONDS] [RATES...]
#   bench/ha-udp.sh 2000 10 10000 30000
set -euo pipefail
cd "$(dirname "$0")/.."
routers=${1:-2000}
seconds=${2:-10}
shift 2 || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(10000)

cargo build --release -q -p home-agent --bin nemo-ha --bin ha-loadgen
bin=target/release
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start_ha() { # flush-mode
  "$bin/ha-loadgen" config --routers "$routers" --store "$work/store-$1" \
      --listen '[::1]:0' --flush "$1" > "$work/ha-$1.toml"
  coproc HA { exec "$bin/nemo-ha" --config "$work/ha-$1.toml" 2>"$work/ha-$1.log"; }
  pid=$HA_PID
  read -r ready <&"${HA[0]}"
  target=$(sed -n 's/.*udp=\([^ ]*\).*/\1/p' <<<"$ready")
}
stop_ha() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
for flush in group each-binding; do
  start_ha "$flush"
  echo "flush=$flush routers=$routers seconds=$seconds"
  "$bin/ha-loadgen" run --target "$target" --routers "$routers" --seconds "$seconds"
  for rate in "${rates[@]}"; do
    # Starting sequence numbers ahead of the saturation run's, so that the
    # first updates are refreshes and not answered with status 135.
    "$bin/ha-loadgen" run --target "$target" --routers "$routers" --seconds "$seconds" --rate "$rate" \
        --first-sequence 30000
  done
  stop_ha
done
