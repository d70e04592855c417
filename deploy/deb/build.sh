#!/usr/bin/env bash
# Builds the Debian package `nemo` with cargo deb (cargo install cargo-deb):
# the four binaries in /usr/bin, the systemd units (pointing there) in
# /lib/systemd/system, the sysusers and tmpfiles entries, the example
# configs in /etc/nemo (conffiles), manual pages and shell completions
# generated from the binaries themselves, the docs, and the Prometheus
# rules and Grafana dashboard in /usr/share/nemo.
#
#   deploy/deb/build.sh          # -> target/debian/nemo_<version>-1_<arch>.deb
#
# Its postinst creates the user nemo, the controller's token (once) and
# /etc/nemo's modes; it enables and starts nothing (the configs need
# editing first).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v cargo-deb >/dev/null || { echo "build.sh: cargo-deb missing (cargo install cargo-deb)" >&2; exit 2; }
cargo build --release -q -p controller -p home-agent -p mobile-router --bins
stage=target/deb-stage
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/units" "$stage/man" "$stage/completions"
# The release profile keeps line tables for profiling; the package does not.
for binary in nemo-controller nemoctl nemo-ha nemo-mr; do
  strip --strip-debug -o "$stage/bin/$binary" "target/release/$binary"
done
for unit in deploy/systemd/*.service; do
  sed 's|/usr/local/bin/|/usr/bin/|g' "$unit" > "$stage/units/$(basename "$unit")"
done
target/release/nemoctl man | gzip -9n > "$stage/man/nemoctl.1.gz"
for daemon in nemo-controller nemo-ha nemo-mr; do
  "target/release/$daemon" --man-page | gzip -9n > "$stage/man/$daemon.8.gz"
done
target/release/nemoctl completions bash > "$stage/completions/nemoctl"
target/release/nemoctl completions zsh > "$stage/completions/_nemoctl"
target/release/nemoctl completions fish > "$stage/completions/nemoctl.fish"
cargo deb -p controller --no-build --quiet
ls target/debian/nemo_*.deb
