#!/usr/bin/env bash
# A home-agent pair (root: three network namespaces on one bridge, the home
# link), measured in one run:
#   1. registrations/s and BU->BA latency with synchronous replication to
#      the standby, with the standby SIGSTOPped (it stops reading: detached
#      after one replication timeout), then the same load on the same
#      active with the standby gone (answered alone): the ratio is the cost
#      of the second copy;
#   2. time for a standby holding nothing to resynchronise from an active
#      holding every router's binding;
#   3. failover: the active's machine dies (process killed, its port taken
#      off the home link); time until the standby holds the address, and
#      the Binding Updates answered across the death.
#
#   bench/ha-pair.sh [ROUTERS] [SECONDS] [RATE]
#   bench/ha-pair.sh 2000 10 10000
#   bench/ha-pair.sh 100000 10 10000      # the 100,000-binding figures
#   DATAPLANE=seg6 bench/ha-pair.sh 100000 10 10000
#                                         # ... with kernel routes (seg6) on
#                                         # both members, as in production
#
# Stores under STORE_DIR (default /var/tmp): a real disk, real fdatasync.
set -euo pipefail
cd "$(dirname "$0")/.."
routers=${1:-2000}
seconds=${2:-10}
rate=${3:-10000}
dataplane=${DATAPLANE:-memory}
case "$dataplane" in memory|seg6) ;; *) echo "DATAPLANE is memory or seg6" >&2; exit 2;; esac
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }

cargo build --release -q -p home-agent --bin nemo-ha --bin ha-loadgen
bin=$PWD/target/release
work=$(mktemp -d "${STORE_DIR:-/var/tmp}/nemo-ha-pair.XXXXXX")
tag=hp$$
link=$tag-l a=$tag-a b=$tag-b
pid_a= pid_b=
cleanup() {
  for pid in $pid_a $pid_b; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in $link $a $b; do ip netns del "$ns" 2>/dev/null || true; done
  # LOGS_TO=dir keeps the members' logs.
  [ -z "${LOGS_TO:-}" ] || { mkdir -p "$LOGS_TO"; cp "$work"/*.log "$LOGS_TO"/ 2>/dev/null || true; }
  rm -rf "$work"
  left=$(ip netns list | grep -c "^$tag-" || true)
  [ "$left" = 0 ] || { echo "CLEANUP FAILED: $left namespaces left" >&2; exit 1; }
}
trap cleanup EXIT

for ns in $link $a $b; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
# A fixed address: a bridge otherwise takes its lowest port's, and changes
# it when that port leaves (the dead member's, at the failover), and the
# members' neighbour entries for the load generator go stale with it.
ip -n "$link" link add br0 address 02:00:00:00:00:50 type bridge mcast_snooping 0
for m in a b; do
  ns=${!m}
  ip link add "p$m" netns "$link" type veth peer name home netns "$ns"
  ip -n "$link" link set "p$m" master br0 up
  ip -n "$ns" link set home up
  ip -n "$ns" addr add "fe80::$m/64" dev home nodad
  ip -n "$ns" addr add "2001:db8:1::$m/64" dev home nodad
  # A home agent forwards (the seg6 data plane refuses to start without).
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.forwarding=1
done
ip -n "$link" link set br0 up
ip -n "$link" addr add 2001:db8:1::50/64 dev br0 nodad
printf 'pair-bench-token-0123456789\n' > "$work/token"

config() { # member priority peer
  "$bin/ha-loadgen" config --routers "$routers" --listen '[2001:db8:1::1]:4191' \
      --store "$work/$1-store" --flush group
  cat <<TOML

[pair]
interface = "home"
link_local = "fe80::$1"
peer_link_local = "fe80::$3"
vrid = 12
priority = $2
advert_interval_ms = 50
addresses = ["2001:db8:1::1"]
replication_listen = "[2001:db8:1::$1]:4192"
peer = "[2001:db8:1::$3]:4192"
token_file = "$work/token"
TOML
  if [ "$dataplane" = seg6 ]; then
    cat <<TOML

[dataplane]
backend = "seg6"
uplink = "home"
local_address = "2001:db8:1::1"
TOML
  fi
}
config a 200 b > "$work/a.toml"
config b 100 a > "$work/b.toml"

start() { # member -> pid in pid_<member>
  local ns=${!1}
  ip netns exec "$ns" "$bin/nemo-ha" --config "$work/$1.toml" > "$work/$1.ready" 2>> "$work/$1.log" &
  local pid=$!
  eval "pid_$1=$pid"
  until [ -s "$work/$1.ready" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "nemo-ha ($1) did not start:" >&2; tail -5 "$work/$1.log" >&2; exit 1; }
    sleep 0.02
  done
}
wait_log() { # member text count
  local n=0
  until [ "$(grep -c "$2" "$work/$1.log" || true)" -ge "$3" ]; do
    sleep 0.01; n=$((n + 1)); [ $n -lt 60000 ] || { echo "timeout: $2" >&2; tail "$work/$1.log" >&2; exit 1; }
  done
}
now() { date +%s.%N; }
load() { # args...
  ip netns exec "$link" "$bin/ha-loadgen" run --target '[2001:db8:1::1]:4191' --routers "$routers" "$@"
}

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); stores on $(df --output=source,fstype "$work" | tail -1)"
echo "pair: $routers mobile routers, advertisement interval 50 ms, synchronous replication, data plane $dataplane"
# Kernel routes nemo installed in a member's namespace (seg6 encapsulation).
routes() { ip -n "${!1}" -6 route show table all | grep -c "encap seg6" || true; }
start a; wait_log a "election: active" 1
start b; wait_log a "standby attached and in sync" 1

# 1. Throughput and latency, replicated, then alone.
fill=$(( routers / 5000 + 5 ))
load --seconds "$fill" --window 2000 --passes > /dev/null 2>&1
echo "replicated: $(load --seconds "$seconds" --first-sequence 10000)"
echo "replicated: $(load --seconds "$seconds" --rate "$rate" --first-sequence 20000)"
# The standby stops reading (SIGSTOP): one stall of replication_timeout_ms
# (500 ms), then the active answers alone (issue 32); it attaches again
# once it runs.
kill -STOP "$pid_b"
echo "stopped:    $(load --seconds "$seconds" --first-sequence 25000)"
echo "stopped:    $(load --seconds "$seconds" --rate "$rate" --first-sequence 27000)"
attached=$(grep -c "standby attached and in sync" "$work/a.log" || true)
kill -CONT "$pid_b"; wait_log a "standby attached and in sync" $((attached + 1))
kill "$pid_b"; wait "$pid_b" 2>/dev/null || true; pid_b=
echo "alone:      $(load --seconds "$seconds" --first-sequence 30000)"
echo "alone:      $(load --seconds "$seconds" --rate "$rate" --first-sequence 40000)"

# 2. Resynchronisation of an empty standby.
rm -rf "$work/b-store"
synced=$(grep -c "in sync with the active" "$work/b.log" || true)
t0=$(now); start b; wait_log b "in sync with the active" $((synced + 1)); t1=$(now)
bindings=$(grep "in sync with the active" "$work/b.log" | tail -1 | sed -n 's/.*bindings=\([0-9]*\).*/\1/p')
echo "resync: empty standby took $bindings bindings in $(echo "$t1 - $t0" | bc) s (start to in sync)"
if [ "$dataplane" = seg6 ]; then
  wait_log b "standby in step with the active" $((synced + 1)); t2=$(now)
  echo "resync: its kernel routes in step $(echo "$t2 - $t0" | bc) s after its start: $(routes b) routes on b, $(routes a) on a"
fi

# 3. Failover: the machine dies under load.
load --seconds 6 --rate 2000 --first-sequence 50000 > "$work/failover.load" 2>&1 &
loader=$!
sleep 2
t0=$(now)
# The machine leaves the link: its port off the bridge (not its own
# interface down: with 100,000 bindings' routes that takes the kernel's
# one RTNL lock for ~0.4 s, which on a real second machine would not hold
# up the standby, and here does).
{ kill -9 "$pid_a"; wait "$pid_a" || true; } 2>/dev/null; ip -n "$link" link set pa nomaster; pid_a=
until ip -n "$b" -6 addr show dev home | grep -q 2001:db8:1::1; do sleep 0.001; done
t1=$(now)
[ "$dataplane" = seg6 ] && echo "failover: $(routes b) routes in b's kernel when it took the address"
wait "$loader" || true
echo "failover: address on the standby $(echo "($t1 - $t0) * 1000" | bc) ms after the active died"
echo "failover load: $(cat "$work/failover.load")"
grep -E "election: active|standby in step" "$work/b.log" | tail -2 | sed 's/^/b: /'
