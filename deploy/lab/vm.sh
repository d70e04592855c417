# The lab's tenant VM on QEMU (sourced by migrate.sh after lib.sh):
#
#   vm_prepare                 guest image built (vm-image.sh), ACCEL chosen
#   vm_port NS                 the VM's tap port on a hypervisor, prepared
#                              as a hypervisor prepares it (same gateway MAC
#                              and address on every hypervisor)
#   vm_start NS TAG [INCOMING] QEMU in NS, its serial console in
#                              $WORK/TAG.console, its monitors
#                              $WORK/TAG.qmp (the lab's) and
#                              $WORK/TAG-hook.qmp (nemo's hook); with
#                              INCOMING, waiting for a migration there
#   vm_capture NS SIDE         the frames the VM sends on NS's tap port,
#                              and the probes put into it for the VM, to
#                              $WORK/frames-SIDE.pcapng (dumpcap), started
#                              before it returns
#
# ACCEL=kvm|tcg|auto (default auto): KVM when a guest really runs under it
# (on these machines KVM_CREATE_VM succeeds but a guest hangs at "Booting
# from ROM"), else TCG; the lab says which.

VM_MAC=52:54:00:00:01:02       # the tenant VM's NIC
GATEWAY_MAC=02:00:00:00:01:01  # every hypervisor's port to it (as a cloud's
                               # anycast gateway MAC: the VM's neighbour entry
                               # for its gateway stays right after a move)
VM_ADDR=2001:db8:100::2
VM_GW=2001:db8:100::1

# The QEMU command line both ends share (a migration needs the same
# machine and devices on both sides).
vm_qemu_args() { # tag
  printf '%s\n' $ACCEL_ARGS -m 128 -smp 1 -nodefaults -no-user-config -display none \
    -serial "file:$WORK/$1.console" \
    -kernel "$WORK/guest/vmlinuz" -initrd "$WORK/guest/initrd.img" \
    -append "console=ttyS0 panic=-1 nemo.addr=$VM_ADDR/64 nemo.gw=$VM_GW" \
    -netdev tap,id=n0,ifname=t-acme,script=no,downscript=no \
    -device "virtio-net-pci,netdev=n0,mac=$VM_MAC" \
    -qmp "unix:$WORK/$1.qmp,server=on,wait=off" \
    -qmp "unix:$WORK/$1-hook.qmp,server=on,wait=off"
}

vm_prepare() {
  deploy/lab/vm-image.sh "$WORK/guest" "$BIN"
  local wanted=${ACCEL:-auto}
  case "$wanted" in auto|kvm|tcg) ;; *) echo "migrate.sh: ACCEL is auto, kvm or tcg" >&2; exit 2;; esac
  ACCEL_USED=tcg
  if [ "$wanted" != tcg ] && [ -w /dev/kvm ]; then
    # A guest that prints its kernel's banner within 8 s runs.
    local probe="$WORK/kvm-probe.console"
    timeout 8 qemu-system-x86_64 -accel kvm -cpu qemu64 -m 128 -nodefaults -no-user-config \
      -display none -serial "file:$probe" -kernel "$WORK/guest/vmlinuz" \
      -append "console=ttyS0 panic=-1" -no-reboot >/dev/null 2>&1 || true
    grep -q "Linux version" "$probe" 2>/dev/null && ACCEL_USED=kvm
  fi
  if [ "$wanted" = kvm ] && [ "$ACCEL_USED" != kvm ]; then
    echo "migrate.sh: ACCEL=kvm, but a KVM guest does not run here" >&2; exit 1
  fi
  case "$ACCEL_USED" in
    kvm) ACCEL_ARGS="-accel kvm -cpu qemu64";;
    tcg) ACCEL_ARGS="-accel tcg -cpu qemu64";;
  esac
  if [ "$wanted" = auto ] && [ "$ACCEL_USED" = tcg ]; then
    echo "   accelerator: tcg (software; a KVM guest does not run on this machine)"
  else
    echo "   accelerator: $ACCEL_USED"
  fi
}

vm_port() { # ns
  ip -n "$P$1" tuntap add dev t-acme mode tap
  ip -n "$P$1" link set t-acme address "$GATEWAY_MAC"
  ip -n "$P$1" link set t-acme up
  addr "$1" t-acme "$VM_GW/64"
  if [ "${VM_NEIGHBOUR:-static}" = static ]; then
    # The hypervisor knows its VM's MAC and address (the port's binding):
    # no Neighbor Solicitation to a guest that has just resumed.
    ip -n "$P$1" neigh replace "$VM_ADDR" lladdr "$VM_MAC" dev t-acme nud permanent
  fi
}

vm_start() { # ns tag [incoming uri]
  local ns=$1 tag=$2 incoming=${3:-}
  local args; mapfile -t args < <(vm_qemu_args "$tag")
  [ -z "$incoming" ] || args+=(-incoming "$incoming")
  spawn "$ns" "$WORK/$tag.qemu.out" "$WORK/$tag.qemu.err" qemu-system-x86_64 "${args[@]}"
}

CAPTURES=()
# Ends the captures (dumpcap completes its file on SIGTERM).
vm_captures_end() {
  local pid
  for pid in "${CAPTURES[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
vm_capture() { # ns side
  local file="$WORK/frames-$2.pcapng"
  spawn "$1" /dev/null "$WORK/capture-$2.err" dumpcap -q -i t-acme -s 128 \
    -f "ether src $VM_MAC or (ether dst $VM_MAC and udp dst port 7007)" -w "$file"
  CAPTURES+=("$LAST_PID")
  for _ in $(seq 1 50); do [ -s "$file" ] && return; sleep 0.1; done
  echo "FAIL: dumpcap did not start on $1's tap: $(cat "$WORK/capture-$2.err")"; exit 1
}
