# Shared by the lab scripts (sourced after `cd` to the repository root).
#
#   lab_prepare NAME TOOL...  root and tools checked, binaries built (or
#                             NEMO_BIN's), BIN set
#   lab_begin PREFIX NS...    the namespaces' prefix (NEMO_LAB_PREFIX wins),
#                             WORK, and the clean-up armed
#
# Namespaces are "$P<name>"; daemons are started by their own PID
# (`spawn`); the clean-up ends them, deletes the namespaces and WORK, and
# fails the lab when anything it started outlived it (also when the lab
# itself failed or was interrupted).

lab_prepare() { # name tools...
  local name=$1; shift
  if [ "$(id -u)" != 0 ]; then echo "$name: needs root (network namespaces)" >&2; exit 2; fi
  # What a fresh machine lacks, installed first (deploy/tools.txt).
  bash deploy/setup.sh >&2 || { echo "$name: the set-up failed (above)" >&2; exit 2; }
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$name: $tool missing after deploy/setup.sh: add it to deploy/tools.txt" >&2; exit 2; }
  done
  if [ -z "${NEMO_BIN:-}" ]; then
    cargo build --release -q --bins
    NEMO_BIN=target/release
  fi
  BIN=$(cd "$NEMO_BIN" && pwd)
}

lab_begin() { # prefix namespaces...
  P=${NEMO_LAB_PREFIX:-$1}; shift
  ALL_NS="$*"
  # Another lab with this prefix runs (or crashed without its clean-up):
  # leave its namespaces alone (the clean-up below would end what runs
  # in them) and say so.
  local n
  for n in $ALL_NS; do
    if [ -e "/run/netns/$P$n" ]; then
      echo "lab: namespace $P$n exists already: another lab with the prefix $P runs (NEMO_LAB_PREFIX), or one left it (ip netns del $P$n)" >&2
      exit 2
    fi
  done
  WORK=$(mktemp -d)
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  # The daemons' data plane: BACKEND=auto (bpf where the kernel runs it,
  # else seg6), bpf or seg6. The bpf backend pins its maps in a bpf
  # filesystem of the lab's own: `ip netns exec` hides /sys/fs/bpf.
  BACKEND=${BACKEND:-auto}
  mkdir "$WORK/bpf"
  mount -t bpf bpf "$WORK/bpf"
}

# The backend a daemon chose, from its log.
lab_backend() { # log
  grep -o 'data plane backend chosen backend="[a-z0-9]*"' "$1" 2>/dev/null | cut -d'"' -f2 | tail -n 1
}

cleanup() {
  local status=$? left=""
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  # Whatever still runs in the lab's namespaces escaped the PIDs above: a
  # clean-up bug. Say so, end it, and fail.
  for n in $ALL_NS; do
    [ -e "/run/netns/$P$n" ] || continue
    for pid in $(ip netns pids "$P$n" 2>/dev/null); do
      left+=" $pid($(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-60))"
      kill -9 "$pid" 2>/dev/null
    done
    ip netns del "$P$n" 2>/dev/null
  done
  # Lazy: a map a leftover program still holds does not keep the mount.
  umount -l "$WORK/bpf" 2>/dev/null
  rm -rf "$WORK"
  if [ -n "$left" ]; then
    echo "CLEANUP FAILED: processes left behind:$left" >&2
    [ "$status" = 0 ] && status=1
  fi
  exit "$status"
}
x() { local ns=$1; shift; ip netns exec "$P$ns" "$@"; }
# Starts a command in a namespace in the background, its stdout and stderr
# to the files given, and records its PID. Not `x ... &`: a function run in
# the background is a subshell, so `$!` would be the subshell's and the
# daemon would survive the clean-up. Here `$!` is ip's, which execs the
# command: the daemon's own PID. The redirections happen in the child (a
# ready FIFO must not block the lab before its reader opens it).
spawn() { # ns stdout stderr command...
  local ns=$1 out=$2 err=$3; shift 3
  ip netns exec "$P$ns" "$@" >"$out" 2>"$err" &
  LAST_PID=$!; PIDS+=("$LAST_PID")
}
link() { # ns1 if1 ns2 if2 (up before addresses: GUIDE.md lab tip)
  ip link add "$2" netns "$P$1" type veth peer name "$4" netns "$P$3"
  ip -n "$P$1" link set "$2" up; ip -n "$P$3" link set "$4" up
}
addr() { ip -n "$P$1" addr add "$3" dev "$2" nodad; }
# The two hypervisors behind the WAN router, each on its own port and
# prefix: hva 2001:db8:2::10, hvb 2001:db8:3::10. A hypervisor prepares a
# migrating VM's port before the VM resumes, so its link-local address is
# past Duplicate Address Detection: moving the veth re-creates the port at
# the moment of the move, and with DAD on hvb could not resolve the VM's
# address (no Neighbor Solicitation while the port's link-local is
# tentative): a 2-second outage for the lab's sake. RFC 4862 §5.4 allows
# DAD off where duplicates cannot happen: a point-to-point port to one VM.
lab_hypervisors() {
  link hva u0 wan w2
  link hvb u0 wan w3
  x hvb sysctl -qw net.ipv6.conf.default.accept_dad=0
  addr wan w2 2001:db8:2::fe/64
  addr wan w3 2001:db8:3::fe/64
  addr hva u0 2001:db8:2::10/64; ip -n "${P}hva" -6 route add default via 2001:db8:2::fe
  addr hvb u0 2001:db8:3::10/64; ip -n "${P}hvb" -6 route add default via 2001:db8:3::fe
}
# The same with datacenter B an IPv4-only site behind a NAT (issue 30):
# hvb's uplink has 192.0.2.130/25 behind natb (192.0.2.129), which
# masquerades it to 192.0.2.99 towards the WAN router (192.0.2.64/26), UDP
# to other ports (40000-40099) as NATs do; the home site is 192.0.2.0/26
# (home 192.0.2.1). The hypervisors also share a migration link
# (2001:db8:e::/64): the migration stream cannot reach a host behind a NAT.
lab_hypervisors_b_behind_nat() {
  link hva u0 wan w2
  addr wan w2 2001:db8:2::fe/64
  addr hva u0 2001:db8:2::10/64; ip -n "${P}hva" -6 route add default via 2001:db8:2::fe
  ip -n "${P}home" addr add 192.0.2.1/26 dev h1
  ip -n "${P}home" route add 192.0.2.64/26 via 192.0.2.62
  ip -n "${P}wan" addr add 192.0.2.62/26 dev w1
  link natb o0 wan w3
  ip -n "${P}wan" addr add 192.0.2.126/26 dev w3
  ip -n "${P}natb" addr add 192.0.2.99/26 dev o0
  ip -n "${P}natb" route add default via 192.0.2.126
  link hvb u0 natb i0
  x hvb sysctl -qw net.ipv6.conf.default.accept_dad=0
  ip -n "${P}natb" addr add 192.0.2.129/25 dev i0
  ip -n "${P}hvb" addr add 192.0.2.130/25 dev u0
  ip -n "${P}hvb" route add default via 192.0.2.129
  x wan sysctl -qw net.ipv4.ip_forward=1
  x natb sysctl -qw net.ipv4.ip_forward=1
  x natb nft -f - <<'NFT'
table ip nemo_nat {
  chain out {
    type nat hook postrouting priority srcnat;
    oifname "o0" meta l4proto udp masquerade to :40000-40099
    oifname "o0" masquerade
  }
}
NFT
  link hva m0 hvb m0
  addr hva m0 2001:db8:e::1/64
  addr hvb m0 2001:db8:e::2/64
}
# The tenant's VM as a namespace (vm, 2001:db8:100::2) on hva's tenant port.
lab_vm_namespace() {
  link vm v0 hva t-acme
  addr hva t-acme 2001:db8:100::1/64
  addr vm v0 2001:db8:100::2/64; ip -n "${P}vm" -6 route add default via 2001:db8:100::1
}
# The daemons run as their units run them (deploy/systemd/): as a user
# that is not root (uid LAB_UID, default 65534) with only the capabilities
# the unit gives (AmbientCapabilities=; none for the controller) and no
# new privileges. What their config names (the store and pin folders, the
# token files) and the config itself are made theirs to use; the binary is
# linked into WORK, since the build folder may be one only root enters.
# LAB_AS_ROOT=1 runs them as root. Sets UNIT_USER (the command's prefix).
LAB_UID=${LAB_UID:-65534}
lab_as_unit_user() { # binary config
  local binary=$1 config=$2 caps only="-all" path
  UNIT_USER=()
  [ -n "${LAB_AS_ROOT:-}" ] && return
  caps=$(sed -n 's/^AmbientCapabilities=//p' "deploy/systemd/$binary.service")
  for cap in $caps; do only+=",+$(echo "${cap#CAP_}" | tr 'A-Z' 'a-z')"; done
  chmod 711 "$WORK"; mkdir -p "$WORK/bin"; chmod 711 "$WORK/bin"
  [ -e "$WORK/bin/$binary" ] || ln "$BIN/$binary" "$WORK/bin/$binary" 2>/dev/null \
    || cp "$BIN/$binary" "$WORK/bin/$binary"
  chgrp "$LAB_UID" "$config"; chmod 640 "$config"
  for path in $(sed -n 's/^\(path\|pin_dir\|store\) = "\(.*\)"$/\2/p' "$config"); do
    mkdir -p "$path"; chown "$LAB_UID:$LAB_UID" "$path"
  done
  for path in $(sed -n 's/^token_file = "\(.*\)"$/\1/p' "$config"); do
    chgrp "$LAB_UID" "$path"; chmod 640 "$path"
  done
  UNIT_USER=(setpriv --reuid="$LAB_UID" --regid="$LAB_UID" --clear-groups --no-new-privs
    --inh-caps="$only" --ambient-caps="$only" --bounding-set="$only" --)
}
# Starts a daemon in a namespace and waits for its ready line (on a FIFO,
# at most 20 s): NAME.log gets its stderr, PID_NAME its PID. The daemons
# run as their units would (lab_as_unit_user).
lab_start() { # ns name binary config
  local fifo="$WORK/$2.ready" binary="$BIN/$3"; mkfifo "$fifo"
  lab_as_unit_user "$3" "$WORK/$4"
  [ -n "${LAB_AS_ROOT:-}" ] || binary="$WORK/bin/$3"
  spawn "$1" "$fifo" "$WORK/$2.log" "${UNIT_USER[@]}" "$binary" --config "$WORK/$4"
  eval "PID_${2//-/_}=$LAST_PID"
  local line; read -r -t 20 line <"$fifo" || { echo "$2 did not start:"; cat "$WORK/$2.log"; exit 1; }
  if [ -z "${LAB_AS_ROOT:-}" ] && ! grep -Eq "^Uid:\s+$LAB_UID\s" "/proc/$LAST_PID/status"; then
    echo "FAIL: $2 is not running as uid $LAB_UID: $(grep ^Uid: "/proc/$LAST_PID/status")"; exit 1
  fi
  echo "   $line"
}
# After a failure: what the daemons said that explains it (their warnings
# and errors, the kernel's refusals among them), then each log's last lines.
lab_daemon_errors() {
  local log
  echo "--- what the daemons logged as warnings or errors:"
  grep -h -E ' (WARN|ERROR) ' "$WORK"/*.log 2>/dev/null | tail -n 20 | sed 's/^/   | /'
  for log in "$WORK"/*.log; do
    [ -e "$log" ] || continue
    echo "--- ${log##*/} (last lines)"
    tail -n 5 "$log" | sed 's/^/   | /'
  done
}
