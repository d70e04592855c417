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
# SOURCE=controller (the default, the production path): the authorizations
# come from a controller's watch stream (`ha-loadgen controller`, a stand-in
# serving the same identities) and the home agent keeps them in its redb
# cache; the time from start until every one is applied and cached, and a
# restart's load from that cache, are measured. SOURCE=config writes them
# into the config as a million [[mobile_router]] tables instead.
#
# HA_BIN runs another nemo-ha build (the glibc one bench/ha-heap.sh makes,
# target/heaptrack/release/nemo-ha, to compare allocators).
#
# STORE_DIR (default /var/tmp) holds the home agent's store: a real disk, so
# the flushes are real fsyncs.
#
# BACKEND=bpf (root) runs the home agent and the load generator in a network
# namespace with the bpf data plane on a veth uplink: every binding
# forwarded, its map pinned in a bpffs of the bench's own, the load
# generator's prefixes and home addresses covered by two aggregates; the
# kernel memory the bindings took (Slab + Percpu) is printed beside the RSS.
# The default, memory, programs no kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
routers=${1:-1000000}
window=${2:-2000}
refresh=${3:-30}

cargo build --release -q -p home-agent --bin nemo-ha --bin ha-loadgen
bin=target/release
ha_bin=${HA_BIN:-$bin/nemo-ha}
source=${SOURCE:-controller}
backend=${BACKEND:-memory}
work=$(mktemp -d "${STORE_DIR:-/var/tmp}/nemo-ha-scale.XXXXXX")
pid=
controller_pid=
ns=
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  [ -n "$controller_pid" ] && kill "$controller_pid" 2>/dev/null
  wait 2>/dev/null
  [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null
  umount -l "$work/bpf" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
# Runs a command where the home agent runs (its namespace, for bpf). Not
# for background processes: a function run with & is a subshell, and $!
# would be its PID, not the daemon's (use $in_ns directly there).
inside() { if [ -n "$ns" ]; then ip netns exec "$ns" "$@"; else "$@"; fi; }
in_ns=()
kernel_kib() { awk '/^(Slab|Percpu):/ {k += $2} END {print k}' /proc/meminfo; }
if [ "$backend" = bpf ]; then
  ns=nemo-ha-scale-$$
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add h1 type veth peer name p0
  ip -n "$ns" link set h1 up; ip -n "$ns" link set p0 up
  ip -n "$ns" addr add 2001:db8:1::1/64 dev h1 nodad
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.forwarding=1
  mkdir "$work/bpf"; mount -t bpf bpf "$work/bpf"
  in_ns=(ip netns exec "$ns")
fi

rss() { awk '/^VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$pid/status"; }
hwm() { awk '/^VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$pid/status"; }
bindings() { # the home agent's own count, from its metrics endpoint
  inside curl -s "http://$metrics/metrics" | awk '/^nemo_ha_bindings / {print $2}'
}
start_ha() { # prints seconds until the ready line
  local started=$SECONDS.$(date +%N) out="$work/ready"
  rm -f "$out"
  # ip execs the daemon: $! is the daemon's own PID.
  "${in_ns[@]}" "$ha_bin" --config "$work/ha.toml" >"$out" 2>>"$work/ha.log" &
  pid=$!
  until [ -s "$out" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "nemo-ha exited; log:" >&2; tail "$work/ha.log" >&2; exit 1; }
    sleep 0.02
  done
  target=$(sed -n 's/.*udp=\([^ ]*\).*/\1/p' "$out")
}
now() { date +%s.%N; }

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); store on $(df --output=source,fstype "$work" | tail -1)"
case $source in
  controller)
    "${in_ns[@]}" "$bin/ha-loadgen" controller --routers "$routers" --listen '[::1]:0' >"$work/controller.ready" &
    controller_pid=$!
    until [ -s "$work/controller.ready" ]; do
      kill -0 "$controller_pid" 2>/dev/null || { echo "stand-in controller exited" >&2; exit 1; }
      sleep 0.02
    done
    endpoint="http://$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$work/controller.ready")"
    echo "stand-in-controller-token" > "$work/token"
    "$bin/ha-loadgen" config --routers "$routers" --store "$work/store" \
        --listen '[::1]:0' --flush group --controller "$endpoint" --token-file "$work/token" > "$work/ha.toml" ;;
  config)
    "$bin/ha-loadgen" config --routers "$routers" --store "$work/store" \
        --listen '[::1]:0' --flush group > "$work/ha.toml" ;;
  *) echo "SOURCE: controller or config" >&2; exit 2 ;;
esac
if [ "$backend" = bpf ]; then
  sed -i 's|^backend = "memory"$|backend = "bpf"\nuplink = "h1"\nlocal_address = "2001:db8:1::1"\npin_dir = "'"$work"'/bpf/ha"\naggregates = ["2001:db8:8000::/33", "2001:db8:1::/107"]|' "$work/ha.toml"
fi
port=$((20000 + RANDOM % 20000))
metrics="127.0.0.1:$port"
printf '\n[metrics]\nlisten = "%s"\n' "$metrics" >> "$work/ha.toml"
echo "config: $routers mobile routers from the $source, $(du -h "$work/ha.toml" | cut -f1)"
# The home agent's log line that says the controller's state is in, and when.
applied() {
  local line
  until line=$(grep -m1 "whole state applied" "$work/ha.log"); do
    kill -0 "$pid" 2>/dev/null || { echo "nemo-ha exited; log:" >&2; tail "$work/ha.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "$line" | sed -n 's/.*took_ms=\([0-9]*\).*/\1 ms/p'
}

t0=$(now); start_ha; t1=$(now)
echo "start (empty store): ready in $(echo "$t1 - $t0" | bc) s, RSS $(rss)"
if [ "$source" = controller ]; then
  took=$(applied); t2=$(now)
  echo "every authorization from the controller applied and cached: $(echo "$t2 - $t0" | bc) s after the start (watch: $took), RSS $(rss), peak $(hwm)"
fi

# Fill: long enough for every router to have registered at least once.
fill=$(( routers / 20000 + 20 ))
kernel_before=$(kernel_kib)
inside "$bin/ha-loadgen" run --target "$target" --routers "$routers" --window "$window" \
    --seconds "$fill" --passes 2>&1 | sed 's/^/fill: /'
echo "after fill: $(bindings) bindings, RSS $(rss), peak $(hwm), kernel (Slab + Percpu) +$(( ($(kernel_kib) - kernel_before) / 1024 )) MiB (backend $backend)"

inside "$bin/ha-loadgen" run --target "$target" --routers "$routers" --window "$window" \
    --seconds "$refresh" --passes --first-sequence 30000 2>&1 | sed 's/^/refresh: /'
echo "after refresh: $(bindings) bindings, RSS $(rss), peak $(hwm)"
echo "store on disk: $(du -sh "$work/store" | cut -f1)"

kill -9 "$pid"; wait "$pid" 2>/dev/null || true
t0=$(now); start_ha; t1=$(now)
echo "restart after SIGKILL: ready in $(echo "$t1 - $t0" | bc) s with $(bindings) bindings, RSS $(rss), peak $(hwm)"
grep -o 'authorizations loaded from the cache.*' "$work/ha.log" | tail -1 | sed 's/^/restart: /' || true
grep -o 'binding cache loaded.*' "$work/ha.log" | tail -1 | sed 's/^/restart: /' || true
# The log holds both runs: the restart's is the second such line.
until [ "$(grep -c 'data plane caught up' "$work/ha.log")" -ge 2 ]; do sleep 0.1; done
grep -o 'data plane caught up.*' "$work/ha.log" | tail -1 | sed 's/^/restart: /' || true
