# Shared by the lab scripts (sourced after `cd` to the repository root).
# The caller sets P (the namespaces' name prefix), WORK (a scratch
# directory), ALL_NS (its namespaces) and PIDS=() first. Namespaces are
# "$P<name>"; daemons are started by their own PID; the clean-up ends them,
# deletes the namespaces and WORK, and fails the lab when anything it
# started outlived it (also when the lab itself failed or was interrupted).

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
  rm -rf "$WORK"
  if [ -n "$left" ]; then
    echo "CLEANUP FAILED: processes left behind:$left" >&2
    [ "$status" = 0 ] && status=1
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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
