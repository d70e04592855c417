#!/usr/bin/env bash
# Installs what nemo's tests and labs need on a Debian machine: the package
# of every entry of deploy/tools.txt that is missing, in one apt-get run,
# quietly. Does nothing when everything is here. Needs root (and apt-get)
# only when something is missing, and then says exactly what.
#
#   sudo deploy/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

present() {
  case "$1" in
    /*) [ -e "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

missing() {
  local what package _
  while read -r what package _; do
    case "$what" in ''|\#*) continue;; esac
    present "$what" || printf '%s %s\n' "$what" "$package"
  done <deploy/tools.txt
}

gaps=$(missing)
if [ -z "$gaps" ]; then
  echo "setup: everything deploy/tools.txt lists is here"
  exit 0
fi
packages=$(printf '%s\n' "$gaps" | awk '{print $2}' | sort -u | tr '\n' ' ')
echo "setup: missing $(printf '%s\n' "$gaps" | awk '{print $1}' | tr '\n' ' ')"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: no apt-get on this machine; install the equivalents of these Debian packages by hand: $packages" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "setup: not root; run 'sudo $0', or install them: sudo apt-get install $packages" >&2
  exit 1
fi
echo "setup: apt-get install $packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# -q alone still prints every package unpacked: the log keeps it, the
# screen gets the gist.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! apt-get install -y -q --no-install-recommends $packages >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  echo "setup: apt-get install failed (above)" >&2
  exit 1
fi
still=$(missing)
if [ -n "$still" ]; then
  echo "setup: installed, yet still missing (deploy/tools.txt names the wrong package?):" >&2
  printf '  %s\n' "$still" >&2
  exit 1
fi
echo "setup: done"
