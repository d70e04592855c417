#!/usr/bin/env bash
# The real-VM live migration (deploy/lab/migrate.sh, MODE=vm), RUNS times
# for each way nemo learns of the move (HOOK early, stop, resume, none) and each
# WAN delay (0 and 20 ms each way), then the table docs/BENCHMARKS.md
# shows: the outage, QEMU's downtime, the VM's first frame at the
# destination after RESUME, the guest's first frame to the first answer,
# RESUME to the Binding Acknowledgement, and the probes lost while the VM
# ran on either side (issue 29). Root; one lab at a time (each is CPU-bound
# under TCG: runs side by side would measure each other).
#
#   bench/vm-migrations.sh [RUNS]          # default 5
#   HOOKS="none" WANS="0" bench/vm-migrations.sh 10
#   SITES="ipv6 nat" HOOKS=resume WANS=0 bench/vm-migrations.sh 10   # B an IPv4 site behind a NAT too (issue 30)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
results=${RESULTS_DIR:-/var/tmp/nemo-bench-vm-$(date -u +%Y%m%dT%H%M%SZ)}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
cargo build --release -q --bins
for wan in ${WANS:-0 20}; do
  for hook in ${HOOKS:-early stop resume none}; do
    for i in $(seq 1 "$runs"); do
      # The sites alternate within a round: a slow minute of the machine
      # falls on both.
      for site in ${SITES:-ipv6}; do
        if ! NEMO_BIN=target/release MODE=vm HOOK=$hook WAN_DELAY_MS=$wan SITE_B=$site RESULTS_DIR=$results \
            deploy/lab/migrate.sh >"$results.log" 2>&1; then
          echo "run $hook/$wan/$site/$i failed (kept out of the table):"; tail -n 5 "$results.log"
        fi
      done
    done
  done
done
rm -f "$results.log"
python3 deploy/lab/summarize.py "$results"
echo "each run's summary.json, timeline.svg and captures: $results/"
