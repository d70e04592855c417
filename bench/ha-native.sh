#!/usr/bin/env bash
# Home-agent registration throughput and latency over the native transport
# (raw IPv6 as RFC 6275 puts it on the wire), persistence on, between two
# network namespaces: the load generator plays the mobile routers behind
# care-of address 2001:db8:2::10, the home agent answers at 2001:db8:1::1.
# Group commit, then a flush per binding, in the same run.
#
#   sudo bench/ha-native.sh [ROUTERS] [SECONDS] [RATES...]
#   sudo bench/ha-native.sh 2000 10 10000
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "ha-native.sh: needs root (network namespaces)" >&2; exit 2; }
routers=${1:-2000}
seconds=${2:-10}
shift 2 || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(10000)

cargo build --release -q -p home-agent --bin nemo-ha --bin ha-loadgen
bin=$(pwd)/target/release
work=$(mktemp -d "${STORE_DIR:-/var/tmp}/nemo-ha-native.XXXXXX")
P=nemo-bench-$$-
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null
  ip netns del "${P}ha" 2>/dev/null; ip netns del "${P}lg" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "${P}ha"; ip netns add "${P}lg"
ip link add ha0 netns "${P}ha" type veth peer name lg0 netns "${P}lg"
ip -n "${P}ha" link set lo up; ip -n "${P}lg" link set lo up
ip -n "${P}ha" link set ha0 up; ip -n "${P}lg" link set lg0 up
ip -n "${P}ha" addr add 2001:db8:1::1/64 dev ha0 nodad
ip -n "${P}lg" addr add 2001:db8:2::10/64 dev lg0 nodad
ip -n "${P}ha" -6 route add 2001:db8:2::/64 dev ha0
ip -n "${P}lg" -6 route add 2001:db8:1::/64 dev lg0

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); store on $(df --output=source,fstype "$work" | tail -1)"
for flush in group each-binding; do
  "$bin/ha-loadgen" config --routers "$routers" --store "$work/store-$flush" \
      --flush "$flush" --native-interface ha0 > "$work/ha-$flush.toml"
  ip netns exec "${P}ha" "$bin/nemo-ha" --config "$work/ha-$flush.toml" >"$work/ready" 2>"$work/ha-$flush.log" &
  pid=$!
  until [ -s "$work/ready" ]; do
    kill -0 "$pid" 2>/dev/null || { tail "$work/ha-$flush.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "flush=$flush routers=$routers seconds=$seconds transport=native"
  ip netns exec "${P}lg" "$bin/ha-loadgen" run --native lg0 --routers "$routers" --seconds "$seconds"
  for rate in "${rates[@]}"; do
    ip netns exec "${P}lg" "$bin/ha-loadgen" run --native lg0 --routers "$routers" \
        --seconds "$seconds" --rate "$rate" --first-sequence 30000
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; rm -f "$work/ready"
done
