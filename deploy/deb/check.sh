#!/usr/bin/env bash
# Installs the package build.sh made on this machine (as root), checks it as
# an operator would meet it, and removes it again (purge), also when a
# check fails:
#   - dpkg -i succeeds (postinst: the user nemo, the token, /etc/nemo modes)
#   - the installed units verify (systemd-analyze verify)
#   - nemo-controller --check accepts the installed example config
#   - the manual pages, completions, docs, rules and dashboard are there
#   - the token is root:nemo 0640, made once (a reinstall keeps it)
#   - each daemon has its user (nemo, nemo-ha, nemo-mr), its config is
#     root:<user> 0640, and the bpf pin folders are nemo-ha's and nemo-mr's
#     (the mode of /sys/fs/bpf, which the tmpfiles entry opens to 0711, is
#     put back afterwards, and the folders removed)
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
bpffs_mode=$(stat -c %a /sys/fs/bpf 2>/dev/null || true)
# Users the package makes, removed afterwards unless they were here before.
new_users=()
for user in nemo nemo-ha nemo-mr; do getent passwd "$user" >/dev/null || new_users+=("$user"); done
cleanup() {
  dpkg --purge nemo >/dev/null 2>&1 || echo "FAIL: dpkg --purge nemo"
  rm -f /etc/nemo/controller.token
  rmdir /etc/nemo 2>/dev/null || true
  rmdir /sys/fs/bpf/nemo-ha /sys/fs/bpf/nemo-mr 2>/dev/null || true
  if [ -n "$bpffs_mode" ] && mountpoint -q /sys/fs/bpf; then chmod "$bpffs_mode" /sys/fs/bpf; fi
  for user in "${new_users[@]}"; do userdel "$user" 2>/dev/null || true; done
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
for user in nemo nemo-ha nemo-mr; do
  getent passwd "$user" >/dev/null || fail "no user $user"
done
for pair in ha.toml:nemo-ha mr.toml:nemo-mr controller.toml:nemo; do
  file=/etc/nemo/${pair%%:*} group=${pair#*:}
  [ "$(stat -c '%U:%G %a' "$file")" = "root:$group 640" ] \
    || fail "$file is $(stat -c '%U:%G %a' "$file"), not root:$group 640"
done
if mountpoint -q /sys/fs/bpf; then
  for daemon in nemo-ha nemo-mr; do
    [ "$(stat -c '%U %a' "/sys/fs/bpf/$daemon")" = "$daemon 700" ] \
      || fail "/sys/fs/bpf/$daemon is $(stat -c '%U %a' "/sys/fs/bpf/$daemon" 2>&1), not $daemon's 700"
  done
else
  echo "SKIPPED: no bpf filesystem mounted at /sys/fs/bpf here: the pin folders were not made (postinst says so) nor checked"
fi
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
