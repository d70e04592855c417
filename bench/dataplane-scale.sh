#!/usr/bin/env bash
# Installs BINDINGS bindings (one MNP each, plus the home address: four
# kernel routes per binding) through the seg6 home-agent data plane in a
# throwaway namespace, then reconciles them unchanged, re-points them all, and
# has a new data plane's reconcile reinstall them after a teardown (a reboot's
# loss). Two tokio workers, as the daemons run.
#   bench/dataplane-scale.sh [BINDINGS]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-100000}
cargo build --release -q -p nemo-dataplane --bin dataplane-scale
ns=nemo-scale-$$
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
ip -n "$ns" link add u0 type veth peer name u1
ip -n "$ns" link set u0 up; ip -n "$ns" link set u1 up
ip -n "$ns" addr add 2001:db8:1::1/64 dev u0 nodad
ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.forwarding=1
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
/usr/bin/time -f "wall=%es maxrss=%MKiB" ip netns exec "$ns" target/release/dataplane-scale u0 2001:db8:1::1 "$count"
grep -E "^(Slab|SUnreclaim)" /proc/meminfo
