#!/usr/bin/env bash
# Home-agent registrations with the kernel data plane: nemo-ha with the seg6
# backend in a namespace (uplink h1 towards the care-of address
# 2001:db8:2::10 in a second one), the load generator over UDP inside the
# home agent's namespace. The first pass creates every binding (each one's
# routes installed before its acknowledgement: the rate at which new
# bindings and moves can be forwarded); later passes refresh (no route
# changes). Then the kernel loses the routes, nemo-ha is killed and started
# again, and its reconcile's time to put them back is read from its log.
#
#   sudo bench/ha-seg6.sh [ROUTERS] [WINDOW] [SECONDS]
#   sudo bench/ha-seg6.sh 20000 256 20
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "ha-seg6.sh: needs root (network namespaces)" >&2; exit 2; }
routers=${1:-20000}
window=${2:-256}
seconds=${3:-20}

cargo build --release -q -p home-agent --bin nemo-ha --bin ha-loadgen
bin=$(pwd)/target/release
work=$(mktemp -d "${STORE_DIR:-/var/tmp}/nemo-ha-seg6.XXXXXX")
P=nemo-seg6-$$-
pid=
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null
  ip netns del "${P}ha" 2>/dev/null; ip netns del "${P}peer" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "${P}ha"; ip netns add "${P}peer"
ip link add h1 netns "${P}ha" type veth peer name p0 netns "${P}peer"
ip -n "${P}ha" link set lo up; ip -n "${P}ha" link set h1 up; ip -n "${P}peer" link set p0 up
ip -n "${P}ha" addr add 2001:db8:1::1/64 dev h1 nodad
ip -n "${P}peer" addr add 2001:db8:2::10/64 dev p0 nodad
ip netns exec "${P}ha" sysctl -qw net.ipv6.conf.all.forwarding=1

"$bin/ha-loadgen" config --routers "$routers" --listen '[::1]:0' --store "$work/store" > "$work/ha.toml"
sed -i 's/^backend = "memory"$/backend = "seg6"\nuplink = "h1"\nlocal_address = "2001:db8:1::1"/' "$work/ha.toml"
start_ha() { # LOG
  log=$work/$1
  rm -f "$work/ready"
  ip netns exec "${P}ha" "$bin/nemo-ha" --config "$work/ha.toml" >"$work/ready" 2>"$log" &
  pid=$!
  until [ -s "$work/ready" ]; do
    kill -0 "$pid" 2>/dev/null || { tail "$log" >&2; exit 1; }
    sleep 0.02
  done
  target=$(sed -n 's/.*udp=\([^ ]*\).*/\1/p' "$work/ready")
}
routes() { ip -n "${P}ha" -6 route show table 4192 | grep -c 'segs 1' || true; }

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); store on $(df --output=source,fstype "$work" | tail -1)"
start_ha first.log
echo "routers=$routers window=$window seconds=$seconds dataplane=seg6"
ip netns exec "${P}ha" "$bin/ha-loadgen" run --target "$target" --routers "$routers" \
    --window "$window" --seconds "$seconds" --passes 2>&1 | sed 's/^/fill: /'
echo "encapsulation routes: $(routes) (2 per binding)"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=
ip -n "${P}ha" -6 route flush table 4191; ip -n "${P}ha" -6 route flush table 4192
start_ha restart.log
for _ in $(seq 1 600); do
  grep -q "data plane caught up" "$log" && break
  sleep 0.1
done
grep -E "binding cache loaded|data plane caught up" "$log" | sed 's/^/restart: /'
echo "encapsulation routes after the restart: $(routes)"
