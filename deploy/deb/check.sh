#!/usr/bin/env bash
# Installs the package build.sh made on this machine (as root), checks it as
# an operator would meet it, and removes it again (purge), also when a
# check fails:
#   - dpkg -i succeeds (postinst: the user nemo, the token, /etc/nemo modes)
#   - the installed units verify (systemd-analyze verify)
#   - nemo-controller --check accepts the installed example config
#   - the manual pages, completions, docs, rules and dashboard are there
#   - the token is root:nemo 0640, made once (a reinstall keeps it)
#
#   deploy/deb/check.sh [PACKAGE.deb]
set -euo pipefail
cd "$(dirname "$0")/../.."
deb=${1:-$(ls target/debian/nemo_*.deb | tail -1)}
[ "$(id -u)" = 0 ] || { echo "check.sh: needs root (dpkg -i)" >&2; exit 2; }
if dpkg -s nemo >/dev/null 2>&1; then
  echo "check.sh: a package nemo is installed already; not touching it" >&2; exit 2
fi
status=0
fail() { echo "FAIL: $*"; status=1; }
cleanup() {
  dpkg --purge nemo >/dev/null 2>&1 || echo "FAIL: dpkg --purge nemo"
  rm -f /etc/nemo/controller.token
  rmdir /etc/nemo 2>/dev/null || true
}
trap cleanup EXIT
dpkg -i "$deb" >/dev/null || { echo "FAIL: dpkg -i $deb"; exit 1; }
for unit in nemo-controller nemo-ha nemo-mr; do
  out=$(systemd-analyze verify "/lib/systemd/system/$unit.service" 2>&1) || fail "$unit.service: $out"
  [ -z "$out" ] || fail "$unit.service: $out"
  [ -s "/usr/share/man/man8/$unit.8.gz" ] || fail "no $unit(8)"
done
[ -s /usr/share/man/man1/nemoctl.1.gz ] || fail "no nemoctl(1)"
for file in /usr/share/bash-completion/completions/nemoctl /usr/share/doc/nemo/OPERATIONS.md \
    /usr/share/nemo/prometheus/nemo-alerts.yml /usr/share/nemo/grafana/nemo.json; do
  [ -s "$file" ] || fail "$file missing"
done
getent passwd nemo >/dev/null || fail "no user nemo"
[ "$(stat -c '%U:%G %a' /etc/nemo/controller.token)" = "root:nemo 640" ] \
  || fail "token is $(stat -c '%U:%G %a' /etc/nemo/controller.token), not root:nemo 640"
nemo-controller --config /etc/nemo/controller.toml --check >/dev/null \
  || fail "nemo-controller --check refuses the installed example"
token=$(cat /etc/nemo/controller.token)
dpkg -i "$deb" >/dev/null || fail "reinstall"
[ "$(cat /etc/nemo/controller.token)" = "$token" ] || fail "a reinstall replaced the token"
nemoctl --version >/dev/null || fail "nemoctl does not run"
[ "$status" = 0 ] && echo "package: ok ($(basename "$deb"), $(dpkg-deb -f "$deb" Installed-Size) KiB installed)"
exit "$status"
