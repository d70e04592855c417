#!/usr/bin/env bash
# The lab's tenant VM: a Debian kernel and a busybox initramfs that brings
# up virtio-net with the tenant's address and answers the lab's probe
# (nemo-probe echo, UDP 7007) and TCP stream (iperf3 -s).
#
#   deploy/lab/vm-image.sh OUT_DIR BIN_DIR
#
# Writes OUT_DIR/vmlinuz and OUT_DIR/initrd.img. The kernel comes from
# Debian's linux-image-<version>-amd64 package (the one linux-image-amd64
# depends on: one exact name, as a pattern would fetch every version),
# fetched with apt-get download and unpacked with dpkg-deb, never
# installed; the kernel and the eight modules virtio-net needs are kept in
# NEMO_VM_CACHE (default /var/cache/nemo-lab), the package and the rest of
# it deleted. The initramfs is built anew each time (it holds this build's
# nemo-probe). Needs apt-get, dpkg-deb, busybox (busybox-static), cpio.
# The guest takes its address from the kernel command line:
#   nemo.addr=2001:db8:100::2/64 nemo.gw=2001:db8:100::1
set -euo pipefail
out=${1:?usage: vm-image.sh OUT_DIR BIN_DIR}
bin=${2:?usage: vm-image.sh OUT_DIR BIN_DIR}
cache=${NEMO_VM_CACHE:-/var/cache/nemo-lab}
# virtio-net and what it depends on, in the order they load.
modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"

for tool in apt-get apt-cache dpkg-deb cpio gzip flock; do
  command -v "$tool" >/dev/null || { echo "vm-image.sh: $tool missing" >&2; exit 2; }
done
busybox=$(command -v busybox) || { echo "vm-image.sh: busybox missing (apt-get install busybox-static)" >&2; exit 2; }
# A static busybox: the initramfs has no C library for it.
if ldd "$busybox" >/dev/null 2>&1; then
  echo "vm-image.sh: $busybox is linked dynamically; the guest needs busybox-static" >&2; exit 2
fi

kernel_dir=$cache/guest-kernel
mkdir -p "$cache"
# One lab at a time fetches (labs may run side by side).
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$kernel_dir/vmlinuz" ] || [ ! -f "$kernel_dir/virtio_net.ko" ]; then
  package=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$package" ] || { echo "vm-image.sh: no linux-image-<version>-amd64 known to apt (apt-get update?)" >&2; exit 2; }
  echo "   fetching $package (once; kept in $cache)"
  unpacked=$(mktemp -d "$cache/unpack.XXXXXX")
  trap 'rm -rf "$unpacked"' EXIT
  (cd "$unpacked" && apt-get download -q "$package" >/dev/null 2>&1) \
    || { echo "vm-image.sh: apt-get download $package failed" >&2; exit 1; }
  dpkg-deb -x "$unpacked"/*.deb "$unpacked/root"
  mkdir -p "$kernel_dir.new"
  cp "$unpacked"/root/boot/vmlinuz-* "$kernel_dir.new/vmlinuz"
  for m in $modules; do
    found=$(find "$unpacked/root/lib/modules" -name "$m.ko" | head -1)
    [ -n "$found" ] || { echo "vm-image.sh: $m.ko not in $package" >&2; exit 1; }
    cp "$found" "$kernel_dir.new/"
  done
  echo "$package" > "$kernel_dir.new/package"
  rm -rf "$kernel_dir"; mv "$kernel_dir.new" "$kernel_dir"
  rm -rf "$unpacked"; trap - EXIT
fi
flock -u 9

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,lib/modules,proc,sys,dev,tmp}
cp "$busybox" "$root/bin/busybox"
for applet in sh mount insmod ip sleep cat echo mkdir; do ln -s busybox "$root/bin/$applet"; done
for m in $modules; do cp "$kernel_dir/$m.ko" "$root/lib/modules/"; done
# The responders with the libraries they load, at the paths they load them.
for program in "$bin/nemo-probe" "$(command -v iperf3)"; do
  cp "$program" "$root/bin/"
  for library in $(ldd "$program" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$library")"
    cp -L "$library" "$root$library"
  done
done
cat > "$root/init" <<EOF
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $modules; do insmod /lib/modules/\$m.ko || echo "nemo-guest: \$m did not load"; done
for arg in \$(cat /proc/cmdline); do
  case \$arg in
    nemo.addr=*) addr=\${arg#nemo.addr=};;
    nemo.gw=*) gw=\${arg#nemo.gw=};;
  esac
done
# One VM on a point-to-point port: no duplicate to detect (RFC 4862 5.4).
echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad
echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad
ip link set lo up
ip link set eth0 up
ip -6 addr add "\$addr" dev eth0
ip -6 route add default via "\$gw"
/bin/nemo-probe echo --listen "[\${addr%/*}]:7007" &
/bin/iperf3 -s >/dev/null 2>&1 &
echo "nemo-guest ready addr=\$addr"
while :; do sleep 3600; done
EOF
chmod +x "$root/init"
mkdir -p "$out"
cp "$kernel_dir/vmlinuz" "$out/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.img"
echo "   guest: $(cat "$kernel_dir/package"), initramfs $(du -k "$out/initrd.img" | cut -f1) KiB"
