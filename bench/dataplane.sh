#!/usr/bin/env bash
# Data plane: throughput (one TCP stream) and packet rate (64-byte UDP
# datagrams) through nemo's bpf backend (`nemo`, programmed by its own code)
# and, where the kernel has seg6, the seg6 tunnel with its MTU gate
# (`tunnel`), against the same namespaces routed without a tunnel (`plain`),
# in one run. Root; iproute2, iperf3.
#
#   bench/dataplane.sh [ROUNDS]      # modes alternate, ROUNDS times (default 2)
#   MODES="nemo tunnel nogate bpf plain" TESTS=udp bench/dataplane.sh 2
#
# The tunnel is deploy/lab/dataplane-recipe.sh's: the routes the seg6 backend
# of nemo-dataplane installs (tables, encap.red, End.DT6, the gate, the tunnel
# source pinned), set by hand so that all modes share everything else. MODES
# may add the recipe's `nogate` (seg6 alone: the bound of any MTU gate) and
# `bpf` (the gate as an lwt BPF program); TESTS and TUNSRC pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
modes=${MODES:-nemo plain}
cargo build --release -q -p nemo-dataplane --bin dataplane-set
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
for round in $(seq 1 "$rounds"); do
  for mode in $modes; do
    MODE=$mode bash deploy/lab/dataplane-recipe.sh 2>&1 | sed -n "s/^result /round $round $mode /p"
  done
done
