#!/usr/bin/env bash
# A new IPv4 mapping usable (issue 31's goal: < 100 ms from the allocation
# call, no packet of other mappings lost): a real nemo-controller and a
# nemo-ha with [translator] in namespaces; an IPv4 host probes each new
# address every 200 us from before `nemoctl ipv4 allocate` is called until
# the tenant's VM receives the first datagram on IPv6 (bench/xlat_probe.py);
# meanwhile a steady stream (1 ms) to a mapping made first is counted for
# loss. Prints, for COUNT allocations, the time from the call (nemoctl
# started: its start, connection, the controller's durable write and the
# push to the home agent are all in it) and from nemoctl's exit to the
# first datagram, and the steady stream's losses. Root; iproute2, python3; release binaries (built unless
# NEMO_BIN is set).
#
#   bench/xlat-mapping.sh [COUNT]          # default 20
#
# Namespaces: peer (IPv4 host 192.0.2.1) -- ha (controller, nemo-ha, the
# translator) -- vm (the tenant's VM, 2001:db8:100::/64 on a link of the
# home agent's). Only 192.0.2.0/24 and 2001:db8::/32.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-20}
[ "$count" -le 120 ] || { echo "COUNT: at most 120 (the pool is a /25)"; exit 2; }
bin=${NEMO_BIN:-target/release}
[ -n "${NEMO_BIN:-}" ] || cargo build --release -q -p controller -p home-agent
P=nemo-xmap-$$-
pids=(); bpffs=""; work=""; probe=""
cleanup() {
  for pid in "${pids[@]}" $probe; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  for n in peer ha vm; do ip netns del "$P$n" 2>/dev/null || true; done
  if [ -n "$bpffs" ]; then umount -l "$bpffs" 2>/dev/null || true; rmdir "$bpffs" 2>/dev/null || true; fi
  [ -n "$work" ] && rm -rf "$work"
  if pgrep -f "$P|xlat_probe.py" >/dev/null; then echo "CLEANUP FAILED: $(pgrep -fl "$P|xlat_probe.py")"; fi
}
trap cleanup EXIT
work=$(mktemp -d /tmp/nemo-xmap.XXXXXX)
bpffs=$(mktemp -d /tmp/nemo-xmap-bpf.XXXXXX)
mount -t bpf bpf "$bpffs"
x() { ip netns exec "$P$1" "${@:2}"; }

for n in peer ha vm; do ip netns add "$P$n"; ip -n "$P$n" link set lo up; done
ip link add p0 netns "${P}peer" type veth peer name h4 netns "${P}ha"
ip link add t0 netns "${P}vm" type veth peer name h6 netns "${P}ha"
ip link add u1 netns "${P}vm" type veth peer name h1 netns "${P}ha"
for l in "peer p0" "ha h4" "ha h6" "ha h1" "vm t0" "vm u1"; do set -- $l; ip -n "$P$1" link set "$2" up; done
ip -n "${P}peer" addr add 192.0.2.1/30 dev p0
ip -n "${P}ha" addr add 192.0.2.2/30 dev h4
ip -n "${P}peer" route add 192.0.2.128/25 via 192.0.2.2
ip -n "${P}ha" addr add 2001:db8:100::1/64 dev h6 nodad
ip -n "${P}vm" addr add 2001:db8:100::10/64 dev t0 nodad
for i in $(seq 1 "$count"); do ip -n "${P}vm" addr add "2001:db8:100::1:$i/64" dev t0 nodad; done
ip -n "${P}vm" -6 route add default via 2001:db8:100::1
ip -n "${P}ha" addr add 2001:db8:1::1/64 dev h1 nodad
ip -n "${P}vm" addr add 2001:db8:1::2/64 dev u1 nodad
x ha sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

token=0123456789abcdef0123456789abcdef
echo "$token" >"$work/token"
cat >"$work/controller.toml" <<EOF
listen = "[::1]:50051"
token_file = "$work/token"
store = "$work/controller-store"
EOF
cat >"$work/ha.toml" <<EOF
[home_agent]
home_prefixes = ["2001:db8:1::/64"]
[store]
path = "$work/ha-store"
[udp]
listen = ["[2001:db8:1::1]:4191"]
[dataplane]
backend = "bpf"
uplink = "h1"
local_address = "2001:db8:1::1"
pin_dir = "$bpffs/ha"
[translator]
ipv4_pools = ["192.0.2.128/25"]
[controller]
endpoint = "http://[::1]:50051"
token_file = "$work/token"
home_agent = "ha1"
EOF
ip netns exec "${P}ha" "$bin/nemo-controller" --config "$work/controller.toml" >"$work/controller.log" 2>&1 &
pids+=($!)
export NEMO_ENDPOINT=http://[::1]:50051 NEMO_TOKEN=$token
ctl() { x ha "$bin/nemoctl" "$@"; }
for i in $(seq 1 100); do ctl pool list >/dev/null 2>&1 && break; sleep 0.1; done
ctl ha register ha1 --address 2001:db8:1::1 --home-prefix 2001:db8:1::/64 >/dev/null
ctl pool create core 2001:db8:100::/48 --tenant-length 64 >/dev/null
ctl tenant create acme >/dev/null
ctl prefix allocate acme --pool core >/dev/null
ctl mr create acme --home-agent ha1 --explicit >/dev/null
ctl pool create v4 192.0.2.128/25 --translation-prefix 2001:db8:64::/96 >/dev/null
ctl ipv4 allocate acme --pool v4 --address 192.0.2.129 --to 2001:db8:100::10 >/dev/null
ip netns exec "${P}ha" "$bin/nemo-ha" --config "$work/ha.toml" >"$work/ha.log" 2>&1 &
pids+=($!)
for i in $(seq 1 100); do
  x peer ping -c 1 -W 1 192.0.2.129 >/dev/null 2>&1 && break
  [ "$i" = 100 ] && { echo "the first mapping never worked:"; tail -20 "$work/ha.log"; exit 1; }
  sleep 0.1
done

out="$work/probe.jsonl"
ip netns exec "${P}vm" python3 bench/xlat_probe.py receive --out "$out" &
pids+=($!)
for i in $(seq 1 50); do grep -q ready "$out" 2>/dev/null && break; sleep 0.1; done
ip netns exec "${P}peer" python3 bench/xlat_probe.py send --to 192.0.2.129 --every-us 1000 &
steady=$!; pids+=($steady)
sleep 0.5
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
: >"$work/calls"
for i in $(seq 1 "$count"); do
  ipv4=192.0.2.$((129 + i)); ipv6=2001:db8:100::1:$i
  ip netns exec "${P}peer" python3 bench/xlat_probe.py send --to "$ipv4" --every-us 200 --seconds 5 &
  probe=$!
  sleep 0.2
  called=$(date +%s%N)
  ctl ipv4 allocate acme --pool v4 --address "$ipv4" --to "$ipv6" >/dev/null
  answered=$(date +%s%N)
  echo "$ipv6 $called $answered" >>"$work/calls"
  for _ in $(seq 1 100); do grep -q "\"dst\": \"$ipv6\", \"first_ns\"" "$out" && break; sleep 0.05; done
  kill "$probe" 2>/dev/null || true; wait "$probe" 2>/dev/null || true; probe=""
done
kill "$steady"; wait "$steady" 2>/dev/null || true
sleep 0.3
kill "${pids[2]}"; wait "${pids[2]}" 2>/dev/null || true
python3 - "$out" "$work/calls" <<'PYEOF'
import json, statistics, sys
records = [json.loads(line) for line in open(sys.argv[1])]
first = {r["dst"]: r["first_ns"] for r in records if "first_ns" in r}
totals = {r["dst"]: r for r in records if "received" in r}
from_call, from_answer, call_to_answer, never = [], [], [], []
for line in open(sys.argv[2]):
    ipv6, called, answered = line.split()
    if ipv6 not in first:
        never.append(ipv6)
        continue
    from_call.append((first[ipv6] - int(called)) / 1e6)
    from_answer.append((first[ipv6] - int(answered)) / 1e6)
    call_to_answer.append((int(answered) - int(called)) / 1e6)
def show(name, values):
    values = sorted(values)
    if not values:
        print(f"{name}: none"); return
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    print(f"{name}: median {statistics.median(values):.1f} ms, p90 {p90:.1f} ms, "
          f"min {values[0]:.1f} ms, max {values[-1]:.1f} ms (n={len(values)})")
show("first datagram after the call", from_call)
show("nemoctl's exit after the call", call_to_answer)
show("first datagram after nemoctl's exit (negative: before it)", from_answer)
if never:
    print(f"never reached: {' '.join(never)}")
steady = totals.get("2001:db8:100::10", {"received": 0, "highest": -1})
sent = steady["highest"] + 1
print(f"steady stream to the first mapping: {steady['received']} of {sent} received, "
      f"{sent - steady['received']} lost")
PYEOF
