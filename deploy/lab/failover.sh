#!/usr/bin/env bash
# The failover lab: a tenant's traffic through a home-agent PAIR while the
# active home agent's machine dies, and the outage the tenant sees.
#
#   sudo deploy/lab/failover.sh                  # builds (release) and runs
#   NEMO_BIN=target/debug deploy/lab/failover.sh # uses built binaries
#   DEATH=process deploy/lab/failover.sh         # kill -9 only, port stays up
#   DURING=migration deploy/lab/failover.sh      # the VM migrates to hvb as
#                                                # the active dies
#
# Namespaces (2001:db8::/32 only):
#   cn    correspondent                             2001:db8:f::2
#   home  router of the home site + nemo-controller 2001:db8:f::1, 2001:db8:1::f0/::c
#   ha1   nemo-ha, priority 200 (active first)      2001:db8:1::a, fe80::a
#   ha2   nemo-ha, priority 100 (standby)           2001:db8:1::b, fe80::b
#         both on the home link (a bridge in home); the home-agent address
#         2001:db8:1::1 belongs to whichever is active
#   wan   router between the sites                  2001:db8:1::fe
#   hva   hypervisor, nemo-mr                       2001:db8:2::10
#   hvb   hypervisor, nemo-mr                       2001:db8:3::10
#   vm    the tenant's VM on hva                    2001:db8:100::2
#         ... and at its IPv4 address (issue 31)    192.0.2.250
#
# The correspondent is an IPv4 client too (192.0.2.241, linked to the home
# router's 192.0.2.242), which routes the tenants' IPv4 pool 192.0.2.248/29
# to the pair's IPv4 address 192.0.2.1 on the home link ([pair]
# ipv4_addresses: it moves with the active role, announced by gratuitous
# ARP); both members translate ([translator]); a second probe runs to the
# VM's IPv4 address through the death, its outage printed beside the IPv6
# one. IPV4_CLIENT=0 leaves it out.
#
# Runs a UDP probe every 2 ms and a TCP stream from cn to the VM, kills the
# active home agent (DEATH=machine, the default: its process and its
# home-link port at once; DEATH=process: kill -9 alone), and prints the
# outage, the probes lost, whether TCP survived, the bindings each home
# agent holds before and after, and how many times the mobile router
# registered after the death (0: it did nothing special). Exits non-zero
# when the tenant did not come through. Cleans up everything it made.
set -euo pipefail
cd "$(dirname "$0")/../.."

. deploy/lab/lib.sh
lab_prepare failover.sh ip setpriv iperf3 python3
MAX_OUTAGE_MS=${MAX_OUTAGE_MS:-1000}
DEATH=${DEATH:-machine}
case "$DEATH" in machine|process) ;; *) echo "failover.sh: DEATH is machine or process" >&2; exit 2;; esac
DURING=${DURING:-steady}
IPV4_CLIENT=${IPV4_CLIENT:-1}
# InitialBindackTimeoutFirstReg of the mobile routers (RFC 6275 §13; the
# RFC's default 1500 ms): a migration's first Binding Update can be lost in
# the takeover window, and this is how long its retransmission waits.
FIRST_REG_MS=${FIRST_REG_MS:-1500}
case "$DURING" in steady|migration) ;; *) echo "failover.sh: DURING is steady or migration" >&2; exit 2;; esac

lab_begin "nemo-fo-$$-" cn home ha1 ha2 wan hva hvb vm
metric() { # ns port name -> value
  x "$1" python3 -c "import urllib.request,sys
for line in urllib.request.urlopen('http://[::1]:$2/metrics', timeout=2).read().decode().splitlines():
    if line.startswith('$3 ') or line.startswith('$3{'): print(line.split()[-1]); sys.exit()
print(0)" 2>/dev/null || echo n/a
}

echo "== building the lab (home-agent pair, death: $DEATH)"
for n in $ALL_NS; do ip netns add "$P$n"; ip -n "$P$n" link set lo up; done
link cn c0 home h0
addr cn c0 2001:db8:f::2/64; ip -n "${P}cn" -6 route add default via 2001:db8:f::1
addr home h0 2001:db8:f::1/64
# The home link: a bridge in home, with the WAN router and both home agents.
# A fixed address: a bridge without one takes its lowest port's and changes
# it when that port leaves (a dead member's), and the controller's address
# on br1 would move with it.
ip -n "${P}home" link add br1 address 02:00:00:00:00:51 type bridge mcast_snooping 0
ip -n "${P}home" link set br1 up
link home h1 wan w1; ip -n "${P}home" link set h1 master br1
link home p1 ha1 hl;  ip -n "${P}home" link set p1 master br1
link home p2 ha2 hl;  ip -n "${P}home" link set p2 master br1
addr home br1 2001:db8:1::f0/64
addr home br1 2001:db8:1::c/64
addr wan w1 2001:db8:1::fe/64
ip -n "${P}home" -6 route add 2001:db8:2::/47 via 2001:db8:1::fe
ip -n "${P}home" -6 route add 2001:db8:100::/48 via 2001:db8:1::1
for m in 1 2; do
  id=$([ $m = 1 ] && echo a || echo b)
  addr "ha$m" hl "fe80::$id/64"
  addr "ha$m" hl "2001:db8:1::$id/64"
  ip -n "${P}ha$m" -6 route add 2001:db8:2::/47 via 2001:db8:1::fe
  ip -n "${P}ha$m" -6 route add default via 2001:db8:1::f0
done
lab_hypervisors
lab_vm_namespace
for n in home wan hva hvb ha1 ha2; do x "$n" sysctl -qw net.ipv6.conf.all.forwarding=1; done
if [ "$IPV4_CLIENT" = 1 ]; then
  ip -n "${P}cn" addr add 192.0.2.241/30 dev c0
  ip -n "${P}home" addr add 192.0.2.242/30 dev h0
  ip -n "${P}cn" route add 192.0.2.248/29 via 192.0.2.242
  ip -n "${P}home" addr add 192.0.2.62/26 dev br1
  ip -n "${P}home" route add 192.0.2.248/29 via 192.0.2.1
  for m in 1 2; do
    ip -n "${P}ha$m" addr add "192.0.2.1$m/26" dev hl
    ip -n "${P}ha$m" route add default via 192.0.2.62
    x "ha$m" sysctl -qw net.ipv4.ip_forward=1
  done
  x home sysctl -qw net.ipv4.ip_forward=1
fi

echo "== starting the control plane"
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$TOKEN" > "$WORK/token"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/pair.token"
cat > "$WORK/controller.toml" <<TOML
listen = "[2001:db8:1::c]:50051"
store = "$WORK/controller"
token_file = "$WORK/token"
TOML
for m in 1 2; do
  id=$([ $m = 1 ] && echo a || echo b); peer=$([ $m = 1 ] && echo b || echo a)
  priority=$([ $m = 1 ] && echo 200 || echo 100)
  cat > "$WORK/ha$m.toml" <<TOML
[home_agent]
home_prefixes = ["2001:db8:1::/64"]
[store]
path = "$WORK/ha$m"
[udp]
listen = ["[2001:db8:1::1]:4191"]
[metrics]
listen = "[::1]:9464"
[dataplane]
backend = "$BACKEND"
uplink = "hl"
local_address = "2001:db8:1::1"
pin_dir = "$WORK/bpf/ha$m"
aggregates = ["2001:db8:100::/48"]
[controller]
endpoint = "http://[2001:db8:1::c]:50051"
token_file = "$WORK/token"
home_agent = "ha1"
[pair]
interface = "hl"
link_local = "fe80::$id"
peer_link_local = "fe80::$peer"
vrid = 12
priority = $priority
advert_interval_ms = 100
addresses = ["2001:db8:1::1"]
replication_listen = "[2001:db8:1::$id]:4192"
peer = "[2001:db8:1::$peer]:4192"
token_file = "$WORK/pair.token"
TOML
  if [ "$IPV4_CLIENT" = 1 ]; then
    printf 'ipv4_addresses = ["192.0.2.1"]\n[translator]\nipv4_pools = ["192.0.2.248/29"]\nicmp_source = "192.0.2.1"\n' >>"$WORK/ha$m.toml"
  fi
done
for hv in hva hvb; do
cat > "$WORK/$hv.toml" <<TOML
[mobile_router]
uplink = "u0"
first_registration_timeout_ms = $FIRST_REG_MS
[transport]
home_agent_udp = "[2001:db8:1::1]:4191"
[dataplane]
backend = "$BACKEND"
pin_dir = "$WORK/bpf/$hv"
[controller]
endpoint = "http://[2001:db8:1::c]:50051"
token_file = "$WORK/token"
hypervisor = "$hv"
TOML
done
wait_log() { # name text
  for i in $(seq 1 200); do grep -q "$2" "$WORK/$1.log" && return 0; sleep 0.05; done
  echo "FAIL: $1 never logged \"$2\""; tail -20 "$WORK/$1.log"; exit 1
}
lab_start home controller nemo-controller controller.toml
export NEMO_ENDPOINT=http://[2001:db8:1::c]:50051 NEMO_TOKEN=$TOKEN
ctl() { x home "$BIN/nemoctl" "$@"; }
ctl ha register ha1 --address 2001:db8:1::1 --home-prefix 2001:db8:1::/64 --udp '[2001:db8:1::1]:4191' >/dev/null
lab_start ha1 ha1 nemo-ha ha1.toml
echo "   data plane: $(lab_backend "$WORK/ha1.log") (BACKEND=$BACKEND)"
wait_log ha1 "election: active"
lab_start ha2 ha2 nemo-ha ha2.toml
wait_log ha1 "standby attached and in sync"
echo "   ha1 active, ha2 standing by and in sync"

echo "== the tenant on hva"
ctl pool create core 2001:db8:100::/48 --tenant-length 64 >/dev/null
ctl tenant create acme >/dev/null
ctl prefix allocate acme --pool core
if [ "$IPV4_CLIENT" = 1 ]; then
  ctl pool create v4 192.0.2.248/29 --translation-prefix 2001:db8:64::/96 >/dev/null
  ctl ipv4 allocate acme --pool v4 --address 192.0.2.250 --to 2001:db8:100::2 >/dev/null
fi
ctl mr create acme --home-agent ha1 --explicit >/dev/null
lab_start hva mr-a nemo-mr hva.toml
lab_start hvb mr-b nemo-mr hvb.toml
for i in $(seq 1 100); do
  [ "$(ctl --output json hv list)" = '[{"name":"hva"},{"name":"hvb"}]' ] && break
  [ "$i" = 100 ] && { echo "FAIL: hypervisor never registered"; exit 1; }
  sleep 0.1
done
ctl place acme hva --reason initial >/dev/null
ip -n "${P}cn" -6 route replace 2001:db8:100::/48 via 2001:db8:f::1
for i in $(seq 1 100); do
  x cn ping -c 1 -W 1 2001:db8:100::2 >/dev/null 2>&1 && break
  [ "$i" = 100 ] && { echo "FAIL: the VM never answered before the failover"; for l in ha1 ha2 mr-a mr-b; do echo "--- $l"; tail -8 "$WORK/$l.log"; done; exit 1; }
  sleep 0.1
done
if [ "$IPV4_CLIENT" = 1 ]; then
  for i in $(seq 1 100); do
    x cn ping -c 1 -W 1 192.0.2.250 >/dev/null 2>&1 && break
    [ "$i" = 100 ] && { echo "FAIL: the VM never answered at 192.0.2.250 before the failover"; for l in ha1 ha2; do echo "--- $l"; tail -8 "$WORK/$l.log"; done; exit 1; }
    sleep 0.1
  done
fi
sleep 0.5   # the registration's batch reaches the standby
BEFORE="ha1=$(metric ha1 9464 nemo_ha_bindings) ha2=$(metric ha2 9464 nemo_ha_bindings)"
REGISTERED_BEFORE=$(cat "$WORK"/mr-*.log | grep -c "driver: registered" || true)
echo "   VM answers through ha1; bindings: $BEFORE"

echo "== traffic, then the active home agent dies ($DEATH)"
spawn vm "$WORK/iperf-server.log" "$WORK/iperf-server.err" iperf3 -s -1
spawn vm /dev/null /dev/null "$BIN/nemo-probe" echo --listen '[2001:db8:100::2]:7007'
sleep 0.3
spawn cn "$WORK/probe.log" "$WORK/probe.err" "$BIN/nemo-probe" send --target '[2001:db8:100::2]:7007' --interval-ms 2 --seconds 8
PROBE=$LAST_PID
if [ "$IPV4_CLIENT" = 1 ]; then
  spawn cn "$WORK/probe4.log" "$WORK/probe4.err" "$BIN/nemo-probe" send --target '192.0.2.250:7007' --interval-ms 2 --seconds 8
  PROBE4=$LAST_PID
fi
spawn cn "$WORK/iperf.log" "$WORK/iperf.err" timeout 20 iperf3 -c 2001:db8:100::2 -t 6 --connect-timeout 3000
IPERF=$LAST_PID
# Who the routers send the home-agent address to, with times: on failure,
# this says which member the traffic went to during the silence.
spawn home "$WORK/neigh-home.log" /dev/null ip -ts monitor neigh
spawn wan "$WORK/neigh-wan.log" /dev/null ip -ts monitor neigh
spawn ha2 "$WORK/neigh-ha2.log" /dev/null ip -ts monitor neigh
sleep 2
DIED_AT=$(date +%s.%N)
kill -9 "$PID_ha1"
[ "$DEATH" = machine ] && ip -n "${P}ha1" link set hl down
if [ "$DURING" = migration ]; then
  # The VM's link moves to hvb and the controller is told, as the home
  # agent dies: hvb's registration meets the new active.
  ip -n "${P}hva" link set dev t-acme netns "${P}hvb"
  ip -n "${P}hvb" link set t-acme up
  addr hvb t-acme 2001:db8:100::1/64
  ctl place acme hvb --reason migration >/dev/null
  echo "   the VM moved to hvb as the home agent died"
fi

TCP=survived
wait "$IPERF" || TCP=broken
wait "$PROBE" || true
[ "$IPV4_CLIENT" = 1 ] && { wait "$PROBE4" || true; }
field() { grep -o " $1=[^ ]*" "$WORK/probe.log" | cut -d= -f2; }
SENT=$(field sent); RECEIVED=$(field received); LOST=$(field lost)
OUTAGE=$(field longest_gap_ms); OUTAGE=${OUTAGE:-n/a}
# Milliseconds from the death to a Unix time, or to a log line's timestamp.
since_death() { awk -v t="$1" -v d="$DIED_AT" 'BEGIN { printf "%+.0f", (t - d) * 1000 }'; }
log_time() { date -d "$(grep -m1 "$2" "$WORK/$1.log" | cut -d' ' -f1)" +%s.%N 2>/dev/null || echo 0; }
SILENCE="none"
[ "$(field gap_from)" != 0.000000 ] && SILENCE="from $(since_death "$(field gap_from)") ms to $(since_death "$(field gap_until)") ms after the death"
TOOK_AT="$(since_death "$(log_time ha2 'election: active')") ms after the death"
TOOK=$(grep -o "election: active.*" "$WORK/ha2.log" | head -1)
AFTER="ha2=$(metric ha2 9464 nemo_ha_bindings)"
REGISTERED_AFTER=$(cat "$WORK"/mr-*.log | grep -c "driver: registered" || true)
REREGISTERED=$((REGISTERED_AFTER - REGISTERED_BEFORE))
# A migration registers once, at hvb: that one is expected.
EXPECTED_REGISTRATIONS=0
[ "$DURING" = migration ] && EXPECTED_REGISTRATIONS=1
CARE_OF_AFTER=$(grep -o 'care_of=[^ ]* status=0' "$WORK/ha2.log" | tail -1 || true)
AFTER_OK=no
x cn ping -c 3 -i 0.2 -W 1 2001:db8:100::2 >/dev/null 2>&1 && AFTER_OK=yes
IPV4_OK=yes
if [ "$IPV4_CLIENT" = 1 ]; then
  field4() { grep -o " $1=[^ ]*" "$WORK/probe4.log" | cut -d= -f2; }
  SENT4=$(field4 sent); RECEIVED4=$(field4 received); LOST4=$(field4 lost)
  OUTAGE4=$(field4 longest_gap_ms); OUTAGE4=${OUTAGE4:-n/a}
  AFTER4_OK=no
  x cn ping -c 3 -i 0.2 -W 1 192.0.2.250 >/dev/null 2>&1 && AFTER4_OK=yes
  IPV4_OK=$(awk -v o="$OUTAGE4" -v max="$MAX_OUTAGE_MS" -v after="$AFTER4_OK" \
    'BEGIN { print (o != "n/a" && o <= max && after == "yes") ? "yes" : "no" }')
fi

echo "== result"
echo "   bindings before: $BEFORE"
echo "   bindings after:  $AFTER (ha1 dead)"
echo "   takeover:        ha2 $TOOK, $TOOK_AT"
echo "   probes:          $SENT sent, $RECEIVED answered, $LOST lost (one every 2 ms)"
echo "   outage:          $OUTAGE ms (longest silence seen by the probes, $SILENCE)"
if [ "$IPV4_CLIENT" = 1 ]; then
  echo "   IPv4 probes:     $SENT4 sent, $RECEIVED4 answered, $LOST4 lost (to 192.0.2.250, translated by the pair)"
  echo "   IPv4 outage:     $OUTAGE4 ms (beside the IPv6 outage $OUTAGE ms); answers after: $AFTER4_OK"
fi
echo "   TCP connection:  $TCP ($(grep -E 'receiver' "$WORK/iperf.log" | awk '{print $7, $8}'))"
echo "   registrations after the death: $REREGISTERED (expected $EXPECTED_REGISTRATIONS: $DURING)"
[ "$DURING" = migration ] && echo "   binding on the new active: $CARE_OF_AFTER (first registration timeout $FIRST_REG_MS ms)"
cat "$WORK"/mr-*.log | grep "driver: registered" | tail -3 | sed 's/^/   | /' 
echo "   VM answers after: $AFTER_OK"
OUTAGE_OK=$(awk -v o="$OUTAGE" -v max="$MAX_OUTAGE_MS" 'BEGIN { print (o != "n/a" && o <= max) ? "yes" : "no" }')
MOVED_OK=yes
[ "$DURING" = migration ] && [[ "$CARE_OF_AFTER" != *2001:db8:3::10* ]] && MOVED_OK=no
if [ "$AFTER_OK" = yes ] && [ "$TCP" = survived ] && [ "$OUTAGE_OK" = yes ] && [ "$IPV4_OK" = yes ] \
    && [ "$REREGISTERED" = "$EXPECTED_REGISTRATIONS" ] && [ "$MOVED_OK" = yes ]; then
  echo "PASS: the tenant's traffic came through the home agent's death"
else
  echo "FAIL: limits: outage <= $MAX_OUTAGE_MS ms (IPv4 too), TCP survives, registrations as expected"
  for log in ha1 ha2 mr-a mr-b; do echo "--- $log"; tail -15 "$WORK/$log.log"; done
  for router in home wan; do
    echo "--- $router's neighbour entry for 2001:db8:1::1 (died at $(date -d "@$DIED_AT" +%T.%N))"
    grep "2001:db8:1::1 " "$WORK/neigh-$router.log" | tail -12
  done
  echo "--- ha2's neighbour entries"
  tail -20 "$WORK/neigh-ha2.log"
  tail -5 "$WORK/iperf.log"
  exit 1
fi
