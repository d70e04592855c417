#!/usr/bin/env bash
# The translator (issue 31), in one run: packet rate of 64-byte UDP
# datagrams (iperf3 -u -b 0 -l 64, what the receiver counts) both ways
# through nemo's translator (`nemo`: its BPF program translating at tc
# ingress of both links as packets arrive, set up by the code nemo-ha runs;
# `nemo-device`: every packet through its device, forwarded twice),
# through TAYGA on the same path (`tayga`), plain IPv6 forwarding on the
# same path (`plain6`: what a translated packet costs beyond the
# translation, the kernel's IPv6 path), and
# plain IPv4 forwarding on the same path (`plain`); with BUSY=1 the same
# with both cores kept busy by two spinning shells. Then the memory of the
# translator's maps per mapping at COUNT mappings (bpftool's memlock of
# nemo_eam4 and nemo_eam6; kernel 6.4+ counts an LPM trie's nodes) and how
# long mapping them took. Root; iproute2, iperf3, tayga, bpftool.
#
#   bench/translator.sh [ROUNDS]            # default 5 rounds, COUNT=1000000
#   MODES="nemo plain" BUSY=1 bench/translator.sh 1
#
# Each rate is EACH seconds (default 3); the modes alternate within each
# round, and the medians over the rounds are printed at the end with their
# ratios to plain IPv4 forwarding (this machine's rates swing by a third
# from one run to the next: one run says little).
#
# Namespaces: v4 (IPv4 host 192.0.2.1) -- rt (the translator) -- v6 (IPv6
# host 2001:db8:100::10, mapped to 192.0.2.10; in `plain` also 192.0.2.5).
# The memory run's COUNT mappings are map entries in a namespace of their
# own, routed nowhere: no traffic goes to them.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
modes=${MODES:-nemo nemo-device tayga plain plain6}
EACH=${EACH:-3}
COUNT=${COUNT:-1000000}
BUSY=${BUSY:-0}
bin=${NEMO_BIN:-target/release}
[ -n "${NEMO_BIN:-}" ] || cargo build --release -q -p nemo-dataplane --bin dataplane-set
P=nemo-xbench-$$-
bpffs=""; spinners=(); tayga_pid=""
cleanup() {
  [ -n "$tayga_pid" ] && { kill "$tayga_pid" 2>/dev/null || true; wait "$tayga_pid" 2>/dev/null || true; }
  for pid in "${spinners[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  for n in v4 rt v6 mem; do ip netns del "$P$n" 2>/dev/null || true; done
  if [ -n "$bpffs" ]; then umount -l "$bpffs" 2>/dev/null || true; rmdir "$bpffs" 2>/dev/null || true; fi
  rm -rf "${work:-}"
  if pgrep -f "nemo-xbench" >/dev/null; then echo "CLEANUP FAILED: $(pgrep -fl nemo-xbench)"; fi
}
trap cleanup EXIT
work=$(mktemp -d /tmp/nemo-xbench.XXXXXX)
x() { ip netns exec "$P$1" "${@:2}"; }

build() { # mode
  local mode=$1
  for n in v4 rt v6; do ip netns add "$P$n"; ip -n "$P$n" link set lo up; done
  ip link add p0 netns "${P}v4" type veth peer name h4 netns "${P}rt"
  ip link add t0 netns "${P}v6" type veth peer name h6 netns "${P}rt"
  for l in "v4 p0" "rt h4" "rt h6" "v6 t0"; do set -- $l; ip -n "$P$1" link set "$2" up; done
  ip -n "${P}v4" addr add 192.0.2.1/30 dev p0
  ip -n "${P}rt" addr add 192.0.2.2/30 dev h4
  ip -n "${P}v4" route add 192.0.2.4/30 via 192.0.2.2
  ip -n "${P}v4" route add 192.0.2.8/29 via 192.0.2.2
  ip -n "${P}v6" addr add 2001:db8:100::10/64 dev t0 nodad
  ip -n "${P}rt" addr add 2001:db8:100::1/64 dev h6 nodad
  ip -n "${P}v6" -6 route add default via 2001:db8:100::1
  x rt sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  case "$mode" in
    plain)
      ip -n "${P}v6" addr add 192.0.2.5/30 dev t0
      ip -n "${P}rt" addr add 192.0.2.6/30 dev h6
      ip -n "${P}v6" route add default via 192.0.2.6;;
    plain6)
      ip -n "${P}v4" addr add 2001:db8:f::2/64 dev p0 nodad
      ip -n "${P}rt" addr add 2001:db8:f::1/64 dev h4 nodad
      ip -n "${P}v4" -6 route add default via 2001:db8:f::1;;
    nemo)
      x rt "$bin/dataplane-set" xlat "$bpffs/rt" 192.0.2.8/29 2001:db8:64::/96 192.0.2.10 2001:db8:100::10 1 h4,h6 >/dev/null;;
    nemo-device)
      x rt "$bin/dataplane-set" xlat "$bpffs/rt" 192.0.2.8/29 2001:db8:64::/96 192.0.2.10 2001:db8:100::10 >/dev/null;;
    tayga)
      printf 'tun-device nat64\nipv4-addr 192.0.2.254\nprefix 2001:db8:64::/96\nmap 192.0.2.10 2001:db8:100::10\ndata-dir %s\n' "$work" >"$work/tayga.conf"
      x rt tayga --mktun -c "$work/tayga.conf" >/dev/null
      ip -n "${P}rt" link set nat64 up
      ip -n "${P}rt" route add 192.0.2.8/29 dev nat64
      ip -n "${P}rt" -6 route add 2001:db8:64::/96 dev nat64
      # Not through x (a function): in the background it would run in a
      # subshell, and $! would be the subshell's PID, not TAYGA's.
      ip netns exec "${P}rt" tayga -d -c "$work/tayga.conf" >"$work/tayga.log" 2>&1 &
      tayga_pid=$!
      sleep 0.5;;
  esac
}
teardown() {
  [ -n "$tayga_pid" ] && { kill "$tayga_pid" 2>/dev/null || true; wait "$tayga_pid" 2>/dev/null || true; tayga_pid=""; }
  for n in v4 rt v6; do ip netns del "$P$n" 2>/dev/null || true; done
  rm -rf "$bpffs/rt"
}
# The CPU time every core spent busy (user, system, interrupts), in ticks.
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
rate() { # from-ns to-ns to-address label
  x "$2" iperf3 -s -1 -D; sleep 0.5
  local before; before=$(busy)
  x "$1" timeout 20 iperf3 -c "$3" -t "$EACH" -u -b 0 -l 64 2>/dev/null >"$work/iperf.out" || true
  local spent=$(( $(busy) - before ))
  # Packets/s as the receiver counts them, and the CPU time the whole
  # machine spent per packet received (sender, kernel, receiver: what the
  # translation adds shows there whatever the scheduling did).
  awk -v d="$4" -v t="$EACH" -v spent="$spent" -v hz="$(getconf CLK_TCK)" '
    /receiver/ { split($0, a, "("); n = split(a[1], f, " "); split(f[n], lt, "/");
                 got = lt[2] - lt[1];
                 printf "%s %.0f packets/s %.2f us/packet\n", d, got / t, spent * 1e6 / hz / got }' \
    "$work/iperf.out" | tee -a "$work/rates"
}

bpffs=$(mktemp -d /tmp/nemo-xbench-bpf.XXXXXX)
mount -t bpf bpf "$bpffs"
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d), busy=$BUSY"
if [ "$BUSY" = 1 ]; then
  for _ in $(seq 1 "$(nproc)"); do sh -c 'while :; do :; done' & spinners+=($!); done
fi
for round in $(seq 1 "$rounds"); do
  for mode in $modes; do
    build "$mode"
    case "$mode" in
      plain) to4=192.0.2.5; to6=192.0.2.1;;
      plain6) to4=2001:db8:100::10; to6=2001:db8:f::2;;
      *) to4=192.0.2.10; to6=2001:db8:64::c000:201;;
    esac
    # Neighbours resolved, the path answering both ways, before measuring.
    for i in $(seq 1 50); do
      x v4 ping -c 1 -W 1 "$to4" >/dev/null 2>&1 && x v6 ping -c 1 -W 1 "$to6" >/dev/null 2>&1 && break
      [ "$i" = 50 ] && { echo "$mode: no path through it"; exit 1; }
      sleep 0.1
    done
    rate v4 v6 "$to4" "round $round $mode 4to6"
    rate v6 v4 "$to6" "round $round $mode 6to4"
    teardown
  done
done
for pid in "${spinners[@]}"; do kill "$pid" 2>/dev/null || true; done; spinners=()
python3 - "$work/rates" <<'PYEOF2'
import statistics, sys
rates = {}
for line in open(sys.argv[1]):
    _, _, mode, way, value, _, cpu, _ = line.split()
    rates.setdefault((mode, way), []).append((float(value), float(cpu)))
for way in ("4to6", "6to4"):
    plain = statistics.median(v for v, _ in rates.get(("plain", way), [(0, 0)])) or None
    for (mode, w), values in sorted(rates.items()):
        if w != way:
            continue
        packets = [v for v, _ in values]
        median = statistics.median(packets)
        cpu = statistics.median(c for _, c in values)
        ratio = f", {median / plain:.2f}x plain" if plain else ""
        print(f"median {mode} {way} {median:.0f} packets/s (of {len(values)}: "
              f"{min(packets):.0f}-{max(packets):.0f}){ratio}; {cpu:.2f} us CPU a packet")
PYEOF2

# Memory per mapping and the time to map them.
ip netns add "${P}mem"
mapped=$(x mem "$bin/dataplane-set" xlat "$bpffs/mem" 192.0.2.0/24 2001:db8:64::/96 100.64.0.0 2001:db8:100:: "$COUNT")
bytes=0
for map in nemo_eam4 nemo_eam6; do
  b=$(bpftool -j map show pinned "$bpffs/mem/$map" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("bytes_memlock", 0))')
  bytes=$((bytes + b))
done
echo "mappings $COUNT: $mapped; maps $bytes bytes, $((bytes / COUNT)) bytes per mapping"
