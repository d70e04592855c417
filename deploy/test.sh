#!/usr/bin/env bash
# nemo's tests, as README.md gives them: installs what they need
# (deploy/setup.sh), then runs `cargo test --workspace` with every
# cross-check, namespace, etcd, promtool, BPF and tool test required: on
# this path a test that cannot run fails instead of skipping (a data plane
# backend the kernel lacks is skipped loudly, as long as it runs the other;
# one that runs neither fails). Extra
# arguments go to cargo test. Run as root (the namespace tests need it).
#
#   sudo deploy/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/setup.sh
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: not root: the network-namespace tests need root; run 'sudo $0'" >&2
  exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: no cargo on PATH: install Rust (rustup) first" >&2
  exit 1
fi

export NEMO_REQUIRE_XCHECK=1 NEMO_REQUIRE_NETNS=1 NEMO_REQUIRE_ETCD=1 \
  NEMO_REQUIRE_PROMTOOL=1 NEMO_REQUIRE_TOOLS=1 NEMO_REQUIRE_BPF=1 \
  NEMO_REQUIRE_DATAPLANE=1
log=$(mktemp)
NEMO_SKIP_LOG=$(mktemp)
export NEMO_SKIP_LOG
trap 'rm -f "$log" "$NEMO_SKIP_LOG"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?

# What the kernel lacked, gathered from the loud skips, so that a green run
# on a kernel without seg6 says what it did not test.
if [ -s "$NEMO_SKIP_LOG" ]; then
  echo
  echo "Skipped (each names what this machine lacks):"
  sort "$NEMO_SKIP_LOG" | uniq -c
fi
# One closing line for the whole run (cargo's own last line is that of the
# doc-tests, often "0 passed").
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
