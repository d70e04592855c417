#!/usr/bin/env bash
# Checks the units as an operator's systemd will read them: each verifies
# (`systemd-analyze verify`, with ExecStart pointed at this build's
# binaries, since /usr/local/bin has none here) and each stays below
# exposure 5 (`systemd-analyze security --offline`, lower is safer; FRR's
# unit scores 9.8, BIRD's 9.6). The sysusers and tmpfiles entries parse.
#
#   deploy/systemd/check.sh [BIN_DIR]     # default target/debug
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(cd "${1:-target/debug}" && pwd)
command -v systemd-analyze >/dev/null || { echo "check.sh: systemd-analyze missing (apt-get install systemd)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for unit in deploy/systemd/*.service; do
  name=$(basename "$unit")
  sed "s|/usr/local/bin/|$bin/|g" "$unit" > "$work/$name"
  if ! out=$(systemd-analyze verify "$work/$name" 2>&1); then
    echo "FAIL: $name does not verify: $out"; status=1
  elif [ -n "$out" ]; then
    echo "FAIL: $name: $out"; status=1
  fi
  score=$(systemd-analyze security --offline=true "$unit" 2>/dev/null | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
  echo "$name: exposure $score"
  awk -v s="$score" 'BEGIN { exit !(s != "" && s < 5) }' || { echo "FAIL: $name exposure ${score:-unknown}, limit 5"; status=1; }
done
if command -v systemd-sysusers >/dev/null; then
  systemd-sysusers --dry-run "$PWD/deploy/sysusers.d/nemo.conf" >/dev/null 2>"$work/sysusers.err" \
    || { echo "FAIL: sysusers: $(cat "$work/sysusers.err")"; status=1; }
fi
if command -v systemd-tmpfiles >/dev/null; then
  # --dry-run is newer than Debian 12's systemd: parse by asking for a
  # prefix no entry has.
  systemd-tmpfiles --create --prefix=/nonexistent-nemo "$PWD/deploy/tmpfiles.d/nemo.conf" 2>"$work/tmpfiles.err" \
    || { echo "FAIL: tmpfiles: $(cat "$work/tmpfiles.err")"; status=1; }
fi
[ "$status" = 0 ] && echo "units: ok"
exit "$status"
