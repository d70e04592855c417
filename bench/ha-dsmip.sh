#!/usr/bin/env bash
# Registrations per second with IPv4 care-of addresses (RFC 5555: the IPv4
# Care-of Address option, Binding Updates in UDP over IPv4) against the IPv6
# figure, same home agent settings, in one run, the two alternating. Group
# commit, saturation. In a namespace of its own: the home agent's IPv4
# address (192.0.2.1) and the care-of address (192.0.2.10) on a veth pair,
# since a loopback address is no care-of address; IPv6 over [::1] as
# bench/ha-udp.sh. Root.
#
#   bench/ha-dsmip.sh [ROUTERS] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
routers=${1:-2000}
seconds=${2:-10}
rounds=${3:-3}
[ "$(id -u)" = 0 ] || { echo "needs root (a network namespace)" >&2; exit 1; }
cargo build --release -q -p home-agent --bin nemo-ha --bin ha-loadgen
bin=$(pwd)/target/release
work=$(mktemp -d)
ns=nemo-bench-dsmip-$$
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  wait 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add a0 type veth peer name b0
ip -n "$ns" link set a0 up; ip -n "$ns" link set b0 up
ip -n "$ns" addr add 192.0.2.1/24 dev a0
ip -n "$ns" addr add 192.0.2.10/24 dev b0

start_ha() { # family round
  local listen=("--listen" "[::1]:0")
  [ "$1" = ipv4 ] && listen=("--listen" "192.0.2.1:0" "--ipv4" "192.0.2.1")
  "$bin/ha-loadgen" config --routers "$routers" --store "$work/store-$1-$2" "${listen[@]}" > "$work/ha-$1.toml"
  coproc HA { exec ip netns exec "$ns" "$bin/nemo-ha" --config "$work/ha-$1.toml" 2>"$work/ha-$1.log"; }
  pid=$HA_PID
  read -r ready <&"${HA[0]}"
  target=$(sed -n 's/.*udp=\([^ ]*\).*/\1/p' <<<"$ready")
}
stop_ha() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
for round in $(seq 1 "$rounds"); do
  for family in ipv6 ipv4; do
    start_ha "$family" "$round"
    care_of=()
    [ "$family" = ipv4 ] && care_of=(--care-of-ipv4 192.0.2.10)
    echo "round=$round care_of=$family routers=$routers seconds=$seconds"
    ip netns exec "$ns" "$bin/ha-loadgen" run --target "$target" --routers "$routers" --seconds "$seconds" "${care_of[@]}"
    stop_ha
  done
done
