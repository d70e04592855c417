#!/usr/bin/env bash
# Installs BINDINGS bindings (one MNP each, plus the home address) through a
# home-agent data plane in a throwaway namespace, then reconciles them
# unchanged, re-points them all, and has a new data plane's reconcile
# reinstall them after the kernel lost them (a reboot). Two tokio workers,
# as the daemons run. BACKENDS lists the backends, each run in turn (seg6
# is skipped, loudly, on a kernel without it).
#   bench/dataplane-scale.sh [BINDINGS]          # default 100000
#   BACKENDS="bpf seg6" bench/dataplane-scale.sh 1000000
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-100000}
backends=${BACKENDS:-bpf seg6}
cargo build --release -q -p nemo-dataplane --bin dataplane-scale
ns=nemo-scale-$$
bpffs=$(mktemp -d /tmp/nemo-scale-bpf.XXXXXX)
mount -t bpf bpf "$bpffs"
trap 'ip netns del "$ns" 2>/dev/null; umount -l "$bpffs"; rmdir "$bpffs"' EXIT
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
for backend in $backends; do
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$ns" link add u0 type veth peer name u1
  ip -n "$ns" link set u0 up; ip -n "$ns" link set u1 up
  ip -n "$ns" addr add 2001:db8:1::1/64 dev u0 nodad
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.forwarding=1
  /usr/bin/time -f "wall=%es maxrss=%MKiB" ip netns exec "$ns" \
    target/release/dataplane-scale "$backend" u0 2001:db8:1::1 "$count" "$bpffs/ha" \
    || echo "backend=$backend: not run here (above: what the kernel lacks)"
done
