#!/usr/bin/env bash
# The live-migration lab: a tenant's network follows its VM from datacenter A
# to datacenter B, with traffic running, and the outage is measured.
#
#   sudo deploy/lab/migrate.sh            # builds (release) and runs
#   NEMO_BIN=target/debug deploy/lab/migrate.sh   # uses built binaries
#   MODE=veth deploy/lab/migrate.sh       # a veth stands in for the VM (quick)
#   MODE=seed deploy/lab/migrate.sh       # the seed's variant (below)
#   WAN_DELAY_MS=20 deploy/lab/migrate.sh # control traffic 20 ms each way
#   BACKEND=seg6 deploy/lab/migrate.sh    # the data plane (default auto:
#                                         # bpf where the kernel runs it)
#
# Namespaces (all addresses from 2001:db8::/32, all links 1500 bytes):
#   cn    correspondent on the Internet            2001:db8:f::2
#   home  home site: nemo-controller, nemo-ha      2001:db8:f::1, 2001:db8:1::1
#   wan   the WAN between sites (a router)
#   hva   hypervisor in datacenter A, nemo-mr      2001:db8:2::10
#   hvb   hypervisor in datacenter B, nemo-mr      2001:db8:3::10
#         (SITE_B=nat: 192.0.2.130 behind natb, 192.0.2.99; home 192.0.2.1)
#   the tenant's VM, at its MNP address            2001:db8:100::2
#   ... and at its IPv4 address (issue 31)         192.0.2.250
#
# The correspondent is an IPv4 client too (192.0.2.241, linked to the home
# site's 192.0.2.242): the operator gives the VM the IPv4 address
# 192.0.2.250 from a pool at the controller (`nemoctl ipv4 allocate`,
# mapped to 2001:db8:100::2), the home agent translates it ([translator],
# RFC 7915; the VM sees the client as 2001:db8:64::c000:2f1), and a second
# probe runs to it through the migration: its outage is printed beside the
# IPv6 one. IPV4_CLIENT=0 leaves it out; MODE=seed has none.
#
# MODE=vm (default): the VM is a real QEMU guest (deploy/lab/vm.sh: a
# Debian kernel and a busybox initramfs answering the probe and the TCP
# stream), on a tap port of hva. The orchestrator prepares the same port
# on hvb, starts QEMU there with -incoming, and migrates over QMP
# (max-bandwidth 2 GB/s, downtime-limit 300 ms); the migration stream
# crosses the lab's WAN, the same links as the tenant's traffic (hva to
# hvb through the WAN router). HOOK says how nemo learns of the move:
#   resume (default)  `nemoctl place --when-qmp` on the destination's
#                     monitor: placed when QEMU reports RESUME there
#   stop              the same on the source's monitor: placed when the VM
#                     pauses for the migration's last copy (the binding
#                     moves during QEMU's downtime)
#   after             the orchestrator places once `migrate` completed
#   early             the orchestrator places as it starts `migrate`, on
#                     the VM's announcement (`--on-announcement`):
#                     make-before-break: the home agent copies the
#                     tenant's packets to A too for [dataplane] bicast_ms
#                     (BICAST_MS here), hva keeps the tenant's data path
#                     while its VM runs there, and hvb drops what arrives
#                     for the tenant until the VM's RARP there (rather than
#                     queue it in the paused VM's tap, to be answered
#                     before anything newer)
#   none              nobody tells nemo (a plain `virsh migrate`): the
#                     controller follows arrivals (arrivals = "follow");
#                     nemo-mr on hvb reports QEMU attaching the VM's port
#                     (the destination's QEMU starting: the tenant is
#                     placed there on its announcement, as with `early`),
#                     then the VM's first frame on it (QEMU's RARP as it
#                     resumes)
# FAILBACK=1 (with HOOK=none): the migration fails after the switch-over:
# once the tenant moved, the destination's QEMU ends and the source's VM
# resumes (`cont`), as an orchestrator recovers it; nobody tells nemo, and
# the tenant must move back to datacenter A on the VM's frames there. The
# outage printed is then the one of the way back.
# ABANDON=1 (with HOOK=none): the migration never happens: the destination's
# QEMU, started for it (nemo-mr on hvb reported QEMU attaching the port, and
# the tenant moved there on its VM's announcement), ends before `migrate`.
# hvb reports its port losing its carrier, the tenant goes back to
# datacenter A; the VM ran there all along and must lose nothing
# (MAX_OUTAGE_MS bounds the probes' longest silence).
# ACCEL=auto|kvm|tcg picks QEMU's accelerator (auto: KVM when a guest
# really runs under it, else TCG; said in the output).
#
# MODE=veth: a veth stands in for the VM; the migration moves it to hvb
# (as a live migration moves a VM's tap) and tells the controller
# (MODE=orchestrated is the same).
#
# MODE=seed is the WIDE Cloud design: the mobile router is itself a VM
# (namespace mrvm, 2001:db8:2::20) that migrates with the tenant. Its uplink
# moves from datacenter A's network to B's (a bridge port changes bridge) and
# gets an address there, as DHCP or SLAAC would give it; nemo-mr notices the
# new care-of address through netlink and re-registers. Nobody tells the
# controller anything.
#
# ORDER (MODE=veth) is the orchestrator's order: port-first (default:
# the VM's port exists on hvb, then the controller is told) or place-first
# (the controller is told, and the port appears on hvb 300 ms later). Either
# way the tenant must be reachable once both exist: nemo-mr registers only
# once it could attach the tenant's data path.
#
# SITE_B=nat makes datacenter B an IPv4-only site behind a NAT (issue 30,
# RFC 5555): hvb's uplink has only 192.0.2.130, behind the router natb that
# masquerades it (nftables, changing ports) to 192.0.2.99 on the WAN; the
# home agent has 192.0.2.1 ([ipv4], keepalive NAT_KEEPALIVE_SECS, default
# 5); nemo-mr on hvb registers its IPv4 care-of address in UDP and the
# tenant's traffic crosses the NAT IPv6-in-UDP. The migration stream takes
# a link of its own between the hypervisors (2001:db8:e::/64), as an
# operator's migration network would. SITE_B=ipv6 (default) is the plain
# IPv6 site.
#
# WAN_DELAY_MS (default 0) puts nemo-delay-relay in the WAN router between
# the mobile routers and the home agent: Binding Updates and their answers
# take that long each way (20 for the seed's 40 ms round trip between sites).
# Only the control traffic is delayed; the tenant's packets are not.
#
# Prints the binding before and after (the home agent's admin API), the
# handover (address change or placement to Binding Acknowledgement, and move
# to the first packet answered through the new care-of address), packets
# lost, the outage, whether the TCP connection survived, and for the VM
# QEMU's total time and downtime and the network's share of the outage
# (outage less QEMU's downtime), and the path of a results folder
# (RESULTS_DIR, default /var/tmp/nemo-lab-results; kept) with summary.json,
# timeline.svg (round trip of every probe, the outage shaded, the moments
# marked) and probes.csv; exits non-zero when the migration did not work.
# Cleans up everything it created, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."

. deploy/lab/lib.sh
MODE=${MODE:-vm}
[ "$MODE" != orchestrated ] || MODE=veth
SITE_B=${SITE_B:-ipv6}
case "$SITE_B" in ipv6) NAT_TOOLS=();; nat) NAT_TOOLS=(nft conntrack);; *) echo "migrate.sh: SITE_B is ipv6 or nat" >&2; exit 2;; esac
case "$MODE" in
  vm) lab_prepare migrate.sh ip setpriv ping iperf3 qemu-system-x86_64 busybox cpio python3 dumpcap tshark "${NAT_TOOLS[@]}";;
  veth|seed) lab_prepare migrate.sh ip setpriv ping iperf3 "${NAT_TOOLS[@]}";;
  *) echo "migrate.sh: MODE is vm, veth or seed" >&2; exit 2;;
esac
. deploy/lab/vm.sh
MAX_OUTAGE_MS=${MAX_OUTAGE_MS:-1000}   # longest silence the tenant may see
WAN_DELAY_MS=${WAN_DELAY_MS:-0}
ORDER=${ORDER:-port-first}
HOOK=${HOOK:-resume}
case "$ORDER" in port-first|place-first) ;; *) echo "migrate.sh: ORDER is port-first or place-first" >&2; exit 2;; esac
case "$HOOK" in resume|stop|after|early|none) ;; *) echo "migrate.sh: HOOK is resume, stop, after, early or none" >&2; exit 2;; esac
BICAST_MS=${BICAST_MS:-2000}
FAILBACK=${FAILBACK:-0}
if [ "$FAILBACK" = 1 ] && { [ "$MODE" != vm ] || [ "$HOOK" != none ]; }; then
  echo "migrate.sh: FAILBACK=1 needs MODE=vm HOOK=none" >&2; exit 2
fi
ABANDON=${ABANDON:-0}
if [ "$ABANDON" = 1 ] && { [ "$MODE" != vm ] || [ "$HOOK" != none ] || [ "$FAILBACK" = 1 ]; }; then
  echo "migrate.sh: ABANDON=1 needs MODE=vm HOOK=none (and no FAILBACK)" >&2; exit 2
fi

IPV4_CLIENT=${IPV4_CLIENT:-1}
[ "$MODE" = seed ] && IPV4_CLIENT=0
if [ "$SITE_B" = nat ] && [ "$MODE" = seed ]; then
  echo "migrate.sh: SITE_B=nat needs MODE=vm or veth" >&2; exit 2
fi
NAT_KEEPALIVE_SECS=${NAT_KEEPALIVE_SECS:-5}

lab_begin "nemo-lab-$$-" cn home wan hva hvb mrvm vm natb

echo "== building the lab ($MODE)"
NAMESPACES="cn home wan"
case "$MODE" in
  seed) NAMESPACES="$NAMESPACES vm mrvm";;
  veth) NAMESPACES="$NAMESPACES vm hva hvb";;
  vm) NAMESPACES="$NAMESPACES hva hvb";;
esac
[ "$SITE_B" = nat ] && NAMESPACES="$NAMESPACES natb"
for n in $NAMESPACES; do ip netns add "$P$n"; ip -n "$P$n" link set lo up; done
link cn c0 home h0
link home h1 wan w1
addr cn c0 2001:db8:f::2/64;   ip -n "${P}cn" -6 route add default via 2001:db8:f::1
addr home h0 2001:db8:f::1/64
addr home h1 2001:db8:1::1/64; ip -n "${P}home" -6 route add 2001:db8:2::/47 via 2001:db8:1::fe
addr wan w1 2001:db8:1::fe/64
if [ "$MODE" = seed ]; then
  # Datacenters A and B as two bridges in the WAN router.
  for dc in a b; do ip -n "${P}wan" link add "br$dc" type bridge; ip -n "${P}wan" link set "br$dc" up; done
  addr wan bra 2001:db8:2::fe/64
  addr wan brb 2001:db8:3::fe/64
  link mrvm u0 wan mrup
  ip -n "${P}wan" link set mrup master bra
  addr mrvm u0 2001:db8:2::20/64; ip -n "${P}mrvm" -6 route add default via 2001:db8:2::fe
  link vm v0 mrvm t-acme
  addr mrvm t-acme 2001:db8:100::1/64
  ROUTERS="wan mrvm"
else
  if [ "$SITE_B" = nat ]; then lab_hypervisors_b_behind_nat; else lab_hypervisors; fi
  if [ "$MODE" = vm ]; then
    # The VM's port on both hypervisors: hvb's prepared before the move.
    vm_port hva
    vm_port hvb
  else
    lab_vm_namespace
  fi
  ROUTERS="wan hva hvb"
fi
if [ "$MODE" = seed ]; then
  addr vm v0 2001:db8:100::2/64; ip -n "${P}vm" -6 route add default via 2001:db8:100::1
fi
for n in home $ROUTERS; do x "$n" sysctl -qw net.ipv6.conf.all.forwarding=1; done
if [ "$IPV4_CLIENT" = 1 ]; then
  # The IPv4 client beside the correspondent; the tenants' IPv4 pool
  # (192.0.2.248/29) routed to the home site, which translates it.
  ip -n "${P}cn" addr add 192.0.2.241/30 dev c0
  ip -n "${P}home" addr add 192.0.2.242/30 dev h0
  ip -n "${P}cn" route add 192.0.2.248/29 via 192.0.2.242
  x home sysctl -qw net.ipv4.ip_forward=1
fi
# Where the migration stream goes: hvb's uplink, or (behind a NAT) its end
# of the migration link.
MIGRATION_TO="tcp:[2001:db8:3::10]:4444"
HA_IPV4=""
if [ "$SITE_B" = nat ]; then
  MIGRATION_TO="tcp:[2001:db8:e::2]:4444"
  HA_IPV4=192.0.2.1
fi

echo "== starting the control plane"
HA_UDP="[2001:db8:1::1]:4191"
if [ "$WAN_DELAY_MS" != 0 ]; then
  HA_UDP="[2001:db8:1::fe]:4192"   # the relay in the WAN router
fi
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$TOKEN" > "$WORK/token"
# Behind the NAT, hvb reaches the controller over IPv4: it listens on both.
CONTROLLER_LISTEN="[2001:db8:1::1]:50051"
[ -n "$HA_IPV4" ] && CONTROLLER_LISTEN="[::]:50051"
cat > "$WORK/controller.toml" <<EOF
listen = "$CONTROLLER_LISTEN"
store = "$WORK/controller"
token_file = "$WORK/token"
arrivals = "$([ "$HOOK" = none ] && echo follow || echo refuse)"
EOF
cat > "$WORK/ha.toml" <<EOF
[home_agent]
home_prefixes = ["2001:db8:1::/64"]
[store]
path = "$WORK/ha"
[udp]
listen = ["[2001:db8:1::1]:4191"$([ -n "$HA_IPV4" ] && echo ", \"$HA_IPV4:4191\"")]
[admin]
listen = "[::1]:50052"
[dataplane]
backend = "$BACKEND"
uplink = "h1"
local_address = "2001:db8:1::1"
pin_dir = "$WORK/bpf/ha"
aggregates = ["2001:db8:100::/48"]
bicast_ms = $BICAST_MS
[controller]
endpoint = "http://[2001:db8:1::1]:50051"
token_file = "$WORK/token"
home_agent = "ha1"
EOF
if [ -n "$HA_IPV4" ]; then
  printf '[ipv4]\naddress = "%s"\nnat_keepalive_secs = %s\n' "$HA_IPV4" "$NAT_KEEPALIVE_SECS" >>"$WORK/ha.toml"
fi
if [ "$IPV4_CLIENT" = 1 ]; then
  # Translated where it arrives: from the IPv4 client (h0), and from the
  # tenant's tunnel (the uplink h1).
  printf '[translator]\nipv4_pools = ["192.0.2.248/29"]\nicmp_source = "192.0.2.242"\narrival_interfaces = ["h0", "h1"]\n[metrics]\nlisten = "[::1]:9464"\n' >>"$WORK/ha.toml"
fi
if [ "$MODE" != seed ]; then
for hv in hva hvb; do
CONTROLLER_ENDPOINT="http://[2001:db8:1::1]:50051"
[ "$hv" = hvb ] && [ -n "$HA_IPV4" ] && CONTROLLER_ENDPOINT="http://$HA_IPV4:50051"
cat > "$WORK/$hv.toml" <<EOF
[mobile_router]
uplink = "u0"
[transport]
home_agent_udp = "$HA_UDP"
$([ -n "$HA_IPV4" ] && echo "home_agent_udp_ipv4 = \"$HA_IPV4:4191\"")
[dataplane]
backend = "$BACKEND"
pin_dir = "$WORK/bpf/$hv"
[controller]
endpoint = "$CONTROLLER_ENDPOINT"
token_file = "$WORK/token"
hypervisor = "$hv"
EOF
done
fi
lab_start home controller nemo-controller controller.toml
export NEMO_ENDPOINT=http://[2001:db8:1::1]:50051 NEMO_TOKEN=$TOKEN
ctl() { x home "$BIN/nemoctl" "$@"; }
ctl ha register ha1 --address 2001:db8:1::1 --home-prefix 2001:db8:1::/64 --udp '[2001:db8:1::1]:4191' >/dev/null
lab_start home ha nemo-ha ha.toml
echo "   data plane: $(lab_backend "$WORK/ha.log") (BACKEND=$BACKEND)"
if [ "$WAN_DELAY_MS" != 0 ]; then
  fifo="$WORK/relay.ready"; mkfifo "$fifo"
  spawn wan "$fifo" "$WORK/relay.log" "$BIN/nemo-delay-relay" --listen "$HA_UDP" \
      --upstream '[2001:db8:1::1]:4191' --one-way-ms "$WAN_DELAY_MS"
  read -r -t 20 line <"$fifo" || { echo "relay did not start:"; cat "$WORK/relay.log"; exit 1; }
  echo "   $line"
fi

echo "== allocating the tenant's prefix and placing it in datacenter A"
ctl pool create core 2001:db8:100::/48 --tenant-length 64 >/dev/null
ctl tenant create acme >/dev/null
ctl prefix allocate acme --pool core
if [ "$IPV4_CLIENT" = 1 ]; then
  # 192.0.2.241 is not a global address: RFC 6052 §3.1 keeps it out of the
  # well-known prefix, so the pool has an operator's /96.
  ctl pool create v4 192.0.2.248/29 --translation-prefix 2001:db8:64::/96 >/dev/null
  ctl ipv4 allocate acme --pool v4 --address 192.0.2.250 --to 2001:db8:100::2
fi
ctl --output json mr create acme --home-agent ha1 --explicit >"$WORK/mr.json"
sed 's/"key":"[0-9a-f]*"/"key":"<shown once>"/' "$WORK/mr.json"
if [ "$MODE" = seed ]; then
  # The mobile-router VM carries its tenant's identity in its own config.
  KEY=$(grep -o '"key":"[0-9a-f]*"' "$WORK/mr.json" | cut -d'"' -f4)
  HOA=$(grep -o '"home_address":"[^"]*"' "$WORK/mr.json" | cut -d'"' -f4)
  SPI=$(grep -o '"spi":[0-9]*' "$WORK/mr.json" | cut -d: -f2)
  cat > "$WORK/mrvm.toml" <<EOF
[mobile_router]
uplink = "u0"
[transport]
home_agent_udp = "$HA_UDP"
[dataplane]
backend = "$BACKEND"
pin_dir = "$WORK/bpf/mrvm"
[[instance]]
name = "acme"
home_address = "$HOA"
home_agent = "2001:db8:1::1"
spi = $SPI
key = "$KEY"
prefixes = ["2001:db8:100::/64"]
tenant_interface = "t-acme"
table = 100
EOF
  lab_start mrvm mr-vm nemo-mr mrvm.toml
  NEW_CARE_OF=2001:db8:3::20
else
  lab_start hva mr-a nemo-mr hva.toml
  lab_start hvb mr-b nemo-mr hvb.toml
  for i in $(seq 1 100); do  # the daemons register their hypervisors as they start
    [ "$(ctl --output json hv list)" = '[{"name":"hva"},{"name":"hvb"}]' ] && break
    [ "$i" = 100 ] && { echo "FAIL: hypervisors never registered: $(ctl --output json hv list)"; exit 1; }
    sleep 0.1
  done
  ctl place acme hva --reason initial >/dev/null
  B_CARE_OF=2001:db8:3::10
  [ "$SITE_B" = nat ] && B_CARE_OF=192.0.2.130
  NEW_CARE_OF=$B_CARE_OF
fi
# The correspondent reaches the tenant prefix through the home site.
ip -n "${P}cn" -6 route replace 2001:db8:100::/48 via 2001:db8:f::1
HOA=$(grep -o '"home_address":"[^"]*"' "$WORK/mr.json" | cut -d'"' -f4)
# The binding as the home agent's admin API shows it.
binding() {
  x home "$BIN/nemoctl" --ha-admin 'http://[::1]:50052' --output json bindings show "$HOA" 2>/dev/null | tr -d '\n' || echo '[]'
}
RESULTS_DIR=${RESULTS_DIR:-/var/tmp/nemo-lab-results}

if [ "$MODE" = vm ]; then
  echo "== the tenant's VM on QEMU in datacenter A"
  vm_prepare
  vm_start hva vm-a
  for i in $(seq 1 240); do
    grep -q "nemo-guest ready" "$WORK/vm-a.console" 2>/dev/null && break
    [ "$i" = 240 ] && { echo "FAIL: the VM did not boot within 120 s"; tail -n 20 "$WORK/vm-a.console" "$WORK"/vm-a.qemu.err; exit 1; }
    sleep 0.5
  done
  echo "   VM booted in about $((i / 2)) s ($(grep -o 'nemo-guest ready.*' "$WORK/vm-a.console"))"
  # The destination, waiting for the migration on hvb's uplink address.
  vm_start hvb vm-b "$MIGRATION_TO"
  python3 deploy/lab/qmp.py ready "$WORK/vm-b.qmp" inmigrate 30 \
    || { echo "FAIL: the destination QEMU did not start"; cat "$WORK"/vm-b.qemu.err; exit 1; }
  # What the VM sends on each side, in the probes' clock (the host's): its
  # last frame at the source, its first at the destination (QEMU's
  # announcement or the guest's own), for the network's share.
  vm_capture hva a
  vm_capture hvb b
fi

for i in $(seq 1 100); do
  x cn ping -c 1 -W 1 2001:db8:100::2 >/dev/null 2>&1 && break
  [ "$i" = 100 ] && { echo "FAIL: the VM never answered at 2001:db8:100::2 before the migration"; lab_daemon_errors; exit 1; }
  sleep 0.1
done
BEFORE=$(binding); echo "$BEFORE" > "$WORK/binding-before.json"
echo "   VM answers at its MNP address through datacenter A"
if [ "$IPV4_CLIENT" = 1 ]; then
  for i in $(seq 1 100); do
    x cn ping -c 1 -W 1 192.0.2.250 >/dev/null 2>&1 && break
    [ "$i" = 100 ] && { echo "FAIL: the VM never answered at 192.0.2.250 (translated) before the migration"; lab_daemon_errors; exit 1; }
    sleep 0.1
  done
  echo "   VM answers the IPv4 client at 192.0.2.250 (translated at the home site)"
fi

echo "== traffic: a UDP probe every 2 ms and a TCP stream, then the migration"
IPERF_RATE=()
if [ "$MODE" = vm ]; then
  # The guest answers both itself; a paced stream, as a tenant's service
  # sends, keeps the guest's dirty pages within what the migration copies.
  # The guest sends (-R), so that the correspondent's 100 ms reports (iperf3
  # goes no finer) show what arrived: the stream's stall, measured.
  IPERF_RATE=(-b 20M -i 0.1 -R)
else
  # In the foreground of its own process (not -D, which would fork away
  # from the PID the clean-up ends).
  spawn vm "$WORK/iperf-server.log" "$WORK/iperf-server.err" iperf3 -s -1
  spawn vm /dev/null /dev/null "$BIN/nemo-probe" echo --listen '[2001:db8:100::2]:7007'
fi
sleep 0.3
# Probes on a fixed 2 ms schedule for 8 s, covering the whole stream and the
# migration (ping would slow down while unanswered and hide the outage).
spawn cn "$WORK/probe.log" "$WORK/probe.err" "$BIN/nemo-probe" send --target '[2001:db8:100::2]:7007' --interval-ms 2 --seconds 8 --csv "$WORK/probes.csv"
PROBE=$LAST_PID
if [ "$IPV4_CLIENT" = 1 ]; then
  spawn cn "$WORK/probe4.log" "$WORK/probe4.err" "$BIN/nemo-probe" send --target '192.0.2.250:7007' --interval-ms 2 --seconds 8 --csv "$WORK/probes4.csv"
  PROBE4=$LAST_PID
fi
spawn cn "$WORK/iperf.log" "$WORK/iperf.err" timeout 20 iperf3 -c 2001:db8:100::2 -t 6 --connect-timeout 3000 "${IPERF_RATE[@]}"
IPERF=$LAST_PID
sleep 2

MOVED_AT=$(date +%s.%N)
if [ "$MODE" = seed ]; then
  # The mobile-router VM and its tenant land in datacenter B: its uplink
  # joins B's network and gets an address there.
  ip -n "${P}wan" link set mrup nomaster
  ip -n "${P}wan" link set mrup master brb
  ip -n "${P}mrvm" addr del 2001:db8:2::20/64 dev u0
  addr mrvm u0 2001:db8:3::20/64
  ip -n "${P}mrvm" -6 route replace default via 2001:db8:3::fe
  echo "   mobile-router VM moved to datacenter B (new uplink address, nobody told)"
elif [ "$MODE" = vm ]; then
  # nemo's hook, as an orchestrator installs it: connected to the
  # controller beforehand, it places the tenant at the VM's moment.
  case "$HOOK" in
    resume) spawn home "$WORK/hook.out" "$WORK/hook.err" "$BIN/nemoctl" --output json place acme hvb --reason migration \
              --when-qmp "$WORK/vm-b-hook.qmp" --qmp-event resume; HOOK_PID=$LAST_PID;;
    stop)   spawn home "$WORK/hook.out" "$WORK/hook.err" "$BIN/nemoctl" --output json place acme hvb --reason migration \
              --when-qmp "$WORK/vm-a-hook.qmp" --qmp-event stop; HOOK_PID=$LAST_PID;;
  esac
  spawn home /dev/null "$WORK/record.err" python3 deploy/lab/qmp.py record "$WORK/vm-b.qmp" "$WORK/destination-events.json"
  RECORDER=$LAST_PID
  sleep 0.2
  if [ "$HOOK" = early ]; then
    ctl --output json place acme hvb --reason migration --on-announcement >"$WORK/hook.out"
  fi
  MOVED_AT=$(date +%s.%N)
  if [ "$ABANDON" = 1 ]; then
    grep -q '"hypervisor":"hvb"' <(ctl --output json placements) \
      || { echo "FAIL: QEMU attaching hvb's port did not move the tenant there"; exit 1; }
    # The orchestrator gives up before migrating: the destination ends.
    python3 deploy/lab/qmp.py quit "$WORK/vm-b-hook.qmp"
    for i in $(seq 1 50); do
      ctl --output json placements >"$WORK/hook.out" 2>/dev/null
      grep -q '"hypervisor":"hva"' "$WORK/hook.out" && break
      sleep 0.1
    done
    grep -q '"hypervisor":"hva"' "$WORK/hook.out" \
      || { echo "FAIL: the tenant did not go back to hva"; lab_daemon_errors; exit 1; }
    NEW_CARE_OF=2001:db8:2::10
    echo "   the destination's QEMU ended before the migration; the tenant went back to datacenter A"
  else
  python3 deploy/lab/qmp.py migrate "$WORK/vm-a.qmp" "$MIGRATION_TO" "$WORK/migration.json" \
    || { echo "FAIL: the migration did not complete"; cat "$WORK/migration.json" "$WORK"/vm-*.qemu.err; exit 1; }
  fi
  if [ "$ABANDON" = 1 ]; then
    :
  elif [ "$HOOK" = after ]; then
    ctl --output json place acme hvb --reason migration >"$WORK/hook.out"
  elif [ "$HOOK" = none ]; then
    # Nobody tells nemo: the placement is the one hvb's arrival made.
    for i in $(seq 1 50); do
      ctl --output json placements >"$WORK/hook.out" 2>/dev/null
      grep -q '"hypervisor":"hvb"' "$WORK/hook.out" && break
      sleep 0.1
    done
  elif [ "$HOOK" != early ]; then
    wait "$HOOK_PID" || { echo "FAIL: the hook did not place the tenant"; cat "$WORK/hook.err"; exit 1; }
  fi
  if [ "$ABANDON" = 1 ]; then :
  elif [ "$HOOK" = none ]; then echo "   VM migrated to datacenter B over the WAN; nobody told nemo"; else echo "   VM migrated to datacenter B over the WAN; nemo told on $HOOK"; fi
  if [ "$FAILBACK" = 1 ]; then
    grep -q '"hypervisor":"hvb"' "$WORK/hook.out" || { echo "FAIL: the tenant never moved to hvb"; exit 1; }
    sleep 0.5
    # The destination dies after the switch-over; the source resumes.
    date +%s.%N >"$WORK/failback.at"
    # The recorder holds vm-b.qmp (a monitor takes one client): quit on
    # the hook's, which nobody uses without a hook.
    python3 deploy/lab/qmp.py quit "$WORK/vm-b-hook.qmp"
    python3 deploy/lab/qmp.py cont "$WORK/vm-a.qmp"
    date +%s.%N >"$WORK/failback.resumed"
    NEW_CARE_OF=2001:db8:2::10
    echo "   the destination's QEMU ended and the source's VM resumed (cont); nobody told nemo"
  fi
else
  move_port() {
    ip -n "${P}hva" link set dev t-acme netns "${P}hvb"
    ip -n "${P}hvb" link set t-acme up
    addr hvb t-acme 2001:db8:100::1/64
  }
  if [ "$ORDER" = place-first ]; then
    ctl place acme hvb --reason migration >/dev/null
    sleep 0.3
    move_port
    echo "   controller told, then (300 ms later) the VM link moved to datacenter B"
  else
    move_port
    ctl place acme hvb --reason migration >/dev/null
    echo "   VM link moved to datacenter B, controller told"
  fi
fi

TCP=survived
wait "$IPERF" || TCP=broken
wait "$PROBE" || true
[ "$IPV4_CLIENT" = 1 ] && { wait "$PROBE4" || true; }
AFTER=$(binding); echo "$AFTER" > "$WORK/binding-after.json"
if [ "$SITE_B" = nat ] && [ "$NEW_CARE_OF" = 192.0.2.130 ]; then
  # The home agent reports the binding at the IPv4 care-of address (and the
  # NAT's mapping, which nemo-mr cannot see) to the controller.
  for i in $(seq 1 30); do
    ctl --output json handovers 2>/dev/null | grep -q '192.0.2.130' && break
    sleep 0.1
  done
  ctl --output json handovers | grep -q '192.0.2.130' \
    || { echo "FAIL: the controller did not record the binding at 192.0.2.130"; lab_daemon_errors; exit 1; }
  echo "   controller:      recorded the move to 192.0.2.130 (the home agent's report)"
fi
NAT_FLUSH_OK=yes
if [ "$SITE_B" = nat ] && [[ "$AFTER" == *192.0.2.130* ]]; then
  # The NAT forgets its mappings while the tenant is behind it (issue 30):
  # the next packet out makes a new mapping (a new outer port), which the
  # home agent follows only from the mobile router's next authenticated
  # Binding Update, sent within the keepalive interval the BA gave it
  # (RFC 5555 §4.3). Probes every 2 ms through the flush: the longest
  # silence must stay within that interval and a second.
  NAT_SECONDS=$((NAT_KEEPALIVE_SECS * 2 + 2))
  spawn cn "$WORK/probe-nat.log" "$WORK/probe-nat.err" "$BIN/nemo-probe" send --target '[2001:db8:100::2]:7007' --interval-ms 2 --seconds "$NAT_SECONDS" --csv "$WORK/probes-nat.csv"
  NAT_PROBE=$LAST_PID
  sleep 1
  x natb conntrack -F >/dev/null 2>&1
  wait "$NAT_PROBE" || true
  NAT_OUTAGE=$(grep -o " longest_gap_ms=[^ ]*" "$WORK/probe-nat.log" | cut -d= -f2)
  NAT_OUTAGE=${NAT_OUTAGE:-n/a}
  NAT_FLUSH_OK=$(awk -v o="$NAT_OUTAGE" -v k="$NAT_KEEPALIVE_SECS" \
    'BEGIN { print (o != "n/a" && o <= k * 1000 + 1000) ? "yes" : "no" }')
fi

field() { grep -o " $1=[^ ]*" "$WORK/probe.log" | cut -d= -f2; }
SENT=$(field sent); RECEIVED=$(field received); LOST=$(field lost); DUPLICATES=$(field duplicates)
OUTAGE=$(field longest_gap_ms); OUTAGE=${OUTAGE:-n/a}
# The first answer after the longest silence came through the new care-of
# address: its arrival less the moment of the move.
FIRST_MS=$(awk -v a="$(field gap_until)" -v m="$MOVED_AT" 'BEGIN { if (a > m) printf "%.0f", (a - m) * 1000; else print "n/a" }')
# The new site's registration: from its trigger (address event or placement)
# to the authenticated, durable acknowledgement, as nemo-mr logs it.
TOOK_MS=$(grep -h "registered" "$WORK"/mr-*.log | grep "$NEW_CARE_OF" | tail -1 | grep -o 'took_ms=[0-9.]*' | cut -d= -f2)
AFTER_OK=no
x cn ping -c 3 -i 0.2 -W 1 2001:db8:100::2 >/dev/null 2>&1 && AFTER_OK=yes
IPV4_OK=yes
if [ "$IPV4_CLIENT" = 1 ]; then
  field4() { grep -o " $1=[^ ]*" "$WORK/probe4.log" | cut -d= -f2; }
  SENT4=$(field4 sent); RECEIVED4=$(field4 received); LOST4=$(field4 lost)
  OUTAGE4=$(field4 longest_gap_ms); OUTAGE4=${OUTAGE4:-n/a}
  AFTER4_OK=no
  x cn ping -c 3 -i 0.2 -W 1 192.0.2.250 >/dev/null 2>&1 && AFTER4_OK=yes
  # The translator's counters (both ways, and how many of them where they
  # arrived: the client's side h0, and the tenant's tunnel on h1 after
  # its decapsulation); nothing at arrival means the fast path broke.
  sleep 1.1  # the home agent publishes its counters every second
  read -r XLATED XLATED_AT_ARRIVAL < <(x home python3 -c '
import re, urllib.request
text = urllib.request.urlopen("http://[::1]:9464/metrics", timeout=5).read().decode()
c = {k: int(float(v)) for k, v in re.findall(r"nemo_ha_translator_packets\{counter=\"(\w+)\"\} (\S+)", text)}
print(c.get("translated_4to6", 0) + c.get("translated_6to4", 0), c.get("at_arrival", 0))' 2>/dev/null || echo "0 0")
  IPV4_OK=$(awk -v o="$OUTAGE4" -v max="$MAX_OUTAGE_MS" -v after="$AFTER4_OK" -v fast="$XLATED_AT_ARRIVAL" \
    'BEGIN { print (o != "n/a" && o <= max && after == "yes" && fast > 0) ? "yes" : "no" }')
fi

echo "== result"
[ "$SITE_B" = nat ] && echo "   datacenter B:    IPv4 only, behind a NAT (192.0.2.130 as 192.0.2.99; keepalive ${NAT_KEEPALIVE_SECS} s)"
[ -n "${NAT_OUTAGE:-}" ] && echo "   NAT flushed:     conntrack -F at B after the move: longest silence $NAT_OUTAGE ms (keepalive ${NAT_KEEPALIVE_SECS} s; within it and a second: $NAT_FLUSH_OK)"
echo "   binding before:  $BEFORE"
echo "   binding after:   $AFTER"
echo "   probes:          $SENT sent, $RECEIVED answered, $LOST lost, $DUPLICATES answered twice (one every 2 ms)"
echo "   outage:          $OUTAGE ms (longest silence seen by the probes)"
if [ "$IPV4_CLIENT" = 1 ]; then
  echo "   IPv4 probes:     $SENT4 sent, $RECEIVED4 answered, $LOST4 lost (to 192.0.2.250, translated at the home site)"
  echo "   IPv4 outage:     $OUTAGE4 ms (beside the IPv6 outage $OUTAGE ms); answers after: $AFTER4_OK"
  echo "   translated:      $XLATED packets, $XLATED_AT_ARRIVAL of them where they arrived (the rest at the translator's device)"
fi
if [ "$MODE" = vm ]; then
  # From the migration's start the move to the first answer would count
  # QEMU's copying: the moments below say what follows the VM's resume.
  echo "   handover:        trigger to BA ${TOOK_MS:-n/a} ms (WAN delay ${WAN_DELAY_MS} ms each way)"
else
  echo "   handover:        trigger to BA ${TOOK_MS:-n/a} ms; move to first answer via the new care-of ${FIRST_MS} ms (WAN delay ${WAN_DELAY_MS} ms each way)"
fi
echo "   TCP connection:  $TCP ($(grep -E 'receiver' "$WORK/iperf.log" | awk '{print $7, $8}'))"
echo "   VM answers after: $AFTER_OK"
if [ "$MODE" = vm ] && [ "$ABANDON" = 1 ]; then
  kill "$RECORDER" 2>/dev/null || true; wait "$RECORDER" 2>/dev/null || true
  vm_captures_end
  echo "   abandoned:       the VM ran in datacenter A throughout; probes lost $LOST, longest silence $OUTAGE ms"
elif [ "$MODE" = vm ]; then
  kill "$RECORDER" 2>/dev/null || true; wait "$RECORDER" 2>/dev/null || true
  vm_captures_end
  RESULTS="$RESULTS_DIR/migrate-$(date -u +%Y%m%dT%H%M%SZ)-vm-$HOOK-wan${WAN_DELAY_MS}ms-b$SITE_B-$$"
  MODE=$MODE HOOK=$HOOK WAN_DELAY_MS=$WAN_DELAY_MS ACCEL_USED=$ACCEL_USED TCP=$TCP \
    B_CARE_OF=${B_CARE_OF:-2001:db8:3::10} SITE_B=$SITE_B \
    python3 deploy/lab/results.py "$WORK" "$RESULTS" "$BIN" || echo "   (the results could not be gathered)"
fi
OUTAGE_OK=$(awk -v o="$OUTAGE" -v max="$MAX_OUTAGE_MS" 'BEGIN { print (o != "n/a" && o <= max) ? "yes" : "no" }')
if [ "$AFTER_OK" = yes ] && [ "$TCP" = survived ] && [ "$OUTAGE_OK" = yes ] && [ "$IPV4_OK" = yes ] && [ "$NAT_FLUSH_OK" = yes ] && [[ "$AFTER" == *"$NEW_CARE_OF"* ]]; then
  if [ "$ABANDON" = 1 ]; then
    echo "PASS: the tenant's network stayed with its VM in datacenter A"
  else
    echo "PASS: the tenant's network followed its VM from datacenter A to B"
  fi
else
  echo "FAIL: the migration did not work (limits: outage <= $MAX_OUTAGE_MS ms, IPv4 outage too, TCP survives)"
  for log in "$WORK"/ha.log "$WORK"/mr-*.log; do echo "--- $log"; tail -15 "$log"; done
  cat "$WORK/iperf.log" | tail -5
  exit 1
fi
