#!/usr/bin/env bash
# Home-agent registrations with a kernel data plane: nemo-ha with BACKEND
# (bpf, the default, or seg6) in a namespace (uplink h1 towards the care-of
# address 2001:db8:2::10 in a second one), the load generator over UDP
# inside the home agent's namespace. The first pass creates every binding
# (each one's forwarding installed before its acknowledgement: the rate at
# which new bindings and moves can be forwarded); later passes refresh (no
# forwarding changes). Then the kernel loses the forwarding state (a
# reboot: seg6's routes flushed, bpf's pins dropped), nemo-ha is killed and
# started again, and its reconcile's time to put it back is read from its
# log. bpf: the load generator's prefixes and home addresses are covered by
# two aggregates (2001:db8:8000::/33, 2001:db8:1::/107), so no route per
# binding.
#
#   sudo bench/ha-dataplane.sh [ROUTERS] [WINDOW] [SECONDS]
#   sudo BACKEND=seg6 bench/ha-dataplane.sh 20000 256 20
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "ha-dataplane.sh: needs root (network namespaces)" >&2; exit 2; }
backend=${BACKEND:-bpf}
routers=${1:-20000}
window=${2:-256}
seconds=${3:-20}

# NEMO_BIN: a folder with nemo-ha and ha-loadgen already built (an A/B of
# two builds); by default this tree's release build.
if [ -n "${NEMO_BIN:-}" ]; then bin=$NEMO_BIN; else
  cargo build --release -q -p home-agent --bin nemo-ha --bin ha-loadgen
  bin=$(pwd)/target/release
fi
work=$(mktemp -d "${STORE_DIR:-/var/tmp}/nemo-ha-dataplane.XXXXXX")
P=nemo-hadp-$$-
pid=
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null
  ip netns del "${P}ha" 2>/dev/null; ip netns del "${P}peer" 2>/dev/null
  umount -l "$work/bpf" 2>/dev/null
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
mkdir "$work/bpf"; mount -t bpf bpf "$work/bpf"
case "$backend" in
  bpf) lines='backend = "bpf"\nuplink = "h1"\nlocal_address = "2001:db8:1::1"\npin_dir = "'"$work"'/bpf/ha"\naggregates = ["2001:db8:8000::/33", "2001:db8:1::/107"]';;
  seg6) lines='backend = "seg6"\nuplink = "h1"\nlocal_address = "2001:db8:1::1"';;
  *) echo "ha-dataplane.sh: BACKEND is bpf or seg6" >&2; exit 2;;
esac
sed -i "s|^backend = \"memory\"\$|$lines|" "$work/ha.toml"
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
# Destinations forwarded: seg6's encapsulation routes, bpf's map entries.
forwarded() {
  case "$backend" in
    bpf) bpftool -j map dump pinned "$work/bpf/ha/nemo_bindings" 2>/dev/null | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))' || echo 0;;
    seg6) ip -n "${P}ha" -6 route show table 4192 | grep -c 'segs 1' || true;;
  esac
}
lose_forwarding() {
  case "$backend" in
    bpf) rm -rf "$work/bpf/ha"; ip -n "${P}ha" -6 route flush table 4191;;
    seg6) ip -n "${P}ha" -6 route flush table 4191; ip -n "${P}ha" -6 route flush table 4192;;
  esac
}

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); store on $(df --output=source,fstype "$work" | tail -1)"
start_ha first.log
echo "routers=$routers window=$window seconds=$seconds dataplane=$backend"
read -r -a stat < "/proc/$pid/stat"; cpu_before=$((stat[13] + stat[14]))
ip netns exec "${P}ha" "$bin/ha-loadgen" run --target "$target" --routers "$routers" \
    --window "$window" --seconds "$seconds" --passes 2>&1 | tee "$work/fill.out" | sed 's/^/fill: /'
echo "destinations forwarded: $(forwarded) (2 per binding)"
# nemo-ha's own CPU time during the load (user + system), per message
# answered: what the rate costs, whatever the waits between.
read -r -a stat < "/proc/$pid/stat"
answered=$(sed -n 's/.* acknowledged=\([0-9]*\).*/\1/p' "$work/fill.out")
awk -v t=$((stat[13] + stat[14] - cpu_before)) -v hz="$(getconf CLK_TCK)" -v n="$answered" \
  'BEGIN { printf "nemo-ha cpu during the load: %.2f s, %.1f us per answer (%d answered)\n", t / hz, t / hz * 1e6 / n, n }'
kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=
lose_forwarding
start_ha restart.log
for _ in $(seq 1 600); do
  grep -q "data plane caught up" "$log" && break
  sleep 0.1
done
grep -E "binding cache loaded|data plane caught up" "$log" | sed 's/^/restart: /'
echo "destinations forwarded after the restart: $(forwarded)"
