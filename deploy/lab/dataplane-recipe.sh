#!/usr/bin/env bash
# The data-plane recipe of issue #3, verified by hand with iproute2 before it
# is built over netlink: a tenant prefix (MNP) tunnelled IPv6-in-IPv6 between
# a home agent and a mobile router with seg6 (encap.red out, End.DT6 in), on
# 1500-byte links, with an "MTU gate" that makes full-size packets work.
#
# The gate: seg6 encapsulates on input, so the kernel never checks the tunnel
# MTU against the sender and full-size packets vanish (GUIDE.md). Routing the
# tenant's traffic first through a veth pair of MTU 1460 (1500 - 40) makes the
# forwarding path check the MTU *before* encapsulation: packets that would
# not fit after encapsulation get an ICMPv6 Packet Too Big from the gate's
# router, to the real sender, and path MTU discovery works. Traffic leaving
# the gate (iif g1) is looked up in the encapsulation table.
#
#   deploy/lab/dataplane-recipe.sh          # tunnel with MTU gate
#   MODE=plain deploy/lab/dataplane-recipe.sh   # same topology, routed, no tunnel
#   MODE=nogate ...   # the tunnel without its gate: what seg6 alone costs, the
#                     # bound of any gate; full-size packets vanish (no PTB)
#   MODE=bpf ...      # experiment: the gate as an lwt BPF program instead of a
#                     # veth hop (deploy/lab/lwt-gate.py; a bpffs is mounted)
#   MODE=nemo ...     # nemo's bpf backend, programmed by its own code
#                     # (dataplane-set, from NEMO_BIN, default target/release;
#                     # no seg6 needed): what the daemons run on kernels
#                     # without seg6
#   MODE=nemo4 ...    # the same over IPv4 (issue 30, RFC 5555): the WAN
#                     # link gets 192.0.2.1 and 192.0.2.10, and the tunnel
#                     # is IPv6-in-UDP-in-IPv4 between their port 4191 (what
#                     # a router behind a NAT uses, without the NAT)
#   TUNSRC=0 ...      # the outer source chosen per packet (the daemons pin it
#                     # with `ip sr tunsrc`, nemo_dataplane::tunsrc; default 1)
#   TESTS=udp ...     # only the packet rate; PERF=FILE records the kernel
#                     # (perf record -a -g, 3 s) during the cn -> vm UDP run
#
# Namespaces: cn (correspondent) -- ha -- "WAN" -- mr -- vm (tenant VM).
# Addresses: only 2001:db8::/32 (and 192.0.2.0/24 for nemo4). Needs root,
# iproute2, iputils-ping, iperf3.
set -euo pipefail
MODE=${MODE:-tunnel}
TUNSRC=${TUNSRC:-1}
P=nemo-recipe-$$-
bpffs=
for n in cn ha mr vm; do ip netns add "$P$n"; ip -n "$P$n" link set lo up; done
cleanup() {
  for n in cn ha mr vm; do ip netns del "$P$n" 2>/dev/null || true; done
  if [ -n "$bpffs" ]; then umount -l "$bpffs" 2>/dev/null || true; rmdir "$bpffs"; fi
}
trap cleanup EXIT
link() { # ns1 if1 ns2 if2: veth up before addresses (GUIDE.md lab tip)
  ip link add "$2" netns "$P$1" type veth peer name "$4" netns "$P$3"
  ip -n "$P$1" link set "$2" up; ip -n "$P$3" link set "$4" up
}
link cn c0 ha h0      # 2001:db8:f::/64, correspondent side
link ha h1 mr m0      # WAN, 1500 bytes: HA 2001:db8:1::1, MR care-of 2001:db8:2::10
link mr m1 vm v0      # tenant link, MNP 2001:db8:100::/64
ip -n "${P}cn" addr add 2001:db8:f::2/64 dev c0 nodad
ip -n "${P}cn" -6 route add default via 2001:db8:f::1
ip -n "${P}ha" addr add 2001:db8:f::1/64 dev h0 nodad
ip -n "${P}ha" addr add 2001:db8:1::1/64 dev h1 nodad
ip -n "${P}ha" -6 route add 2001:db8:2::/64 dev h1
ip -n "${P}mr" addr add 2001:db8:2::10/64 dev m0 nodad
ip -n "${P}mr" -6 route add 2001:db8:1::/64 dev m0
ip -n "${P}mr" addr add 2001:db8:100::1/64 dev m1 nodad
ip -n "${P}vm" addr add 2001:db8:100::2/64 dev v0 nodad
ip -n "${P}vm" -6 route add default via 2001:db8:100::1
for n in ha mr; do ip netns exec "$P$n" sysctl -qw net.ipv6.conf.all.forwarding=1; done

# Both tunnel ends take tunnelled packets out (End.DT6) before the local
# table would deliver them: the decapsulation rule, the local table behind;
# a source-specific route per peer, so that only the peer's tunnel is taken
# (nemo-dataplane's layout: a rule per peer would cost a walk of every route
# at each change).
decapsulation() {
  for n in ha mr; do
    ip -n "$P$n" -6 rule add pref 1000 lookup local
    ip -n "$P$n" -6 rule del pref 0 lookup local
  done
  ip -n "${P}ha" -6 rule add ipproto 41 lookup 101 pref 500
  ip -n "${P}ha" -6 route add 2001:db8:1::1/128 from 2001:db8:2::10/128 encap seg6local action End.DT6 table main dev h1 table 101
  ip -n "${P}mr" -6 rule add ipproto 41 lookup 202 pref 500
  ip -n "${P}mr" -6 route add 2001:db8:2::10/128 from 2001:db8:1::1/128 encap seg6local action End.DT6 table main dev m0 table 202
}
# Encapsulation routes: HA -> care-of address in table 100, MR -> HA in 200.
encapsulation() {
  ip -n "${P}ha" -6 route add 2001:db8:100::/64 encap seg6 mode encap.red segs 2001:db8:2::10 dev h1 table 100
  ip -n "${P}mr" -6 route add default encap seg6 mode encap.red segs 2001:db8:1::1 dev m0 table 200
  ip -n "${P}mr" -6 route add throw 2001:db8:1::1/128 table 200
}
if [ "$MODE" = nemo4 ]; then
  bin=${NEMO_BIN:-target/release}
  bpffs=$(mktemp -d /tmp/nemo-recipe-bpf.XXXXXX)
  mount -t bpf bpf "$bpffs"
  ip -n "${P}ha" addr add 192.0.2.1/24 dev h1
  ip -n "${P}mr" addr add 192.0.2.10/24 dev m0
  ip netns exec "${P}ha" "$bin/dataplane-set" ha h1 2001:db8:1::1 "$bpffs/ha" \
    2001:db8:100::/48 2001:db8:1::100 192.0.2.10:4191 2001:db8:100::/64 192.0.2.1:4191
  ip netns exec "${P}mr" "$bin/dataplane-set" mr m0 2001:db8:2::10 "$bpffs/mr" \
    m1 2001:db8:100::/64 192.0.2.1:4191 100 192.0.2.10:4191
elif [ "$MODE" = nemo ]; then
  bin=${NEMO_BIN:-target/release}
  bpffs=$(mktemp -d /tmp/nemo-recipe-bpf.XXXXXX)
  mount -t bpf bpf "$bpffs"
  ip netns exec "${P}ha" "$bin/dataplane-set" ha h1 2001:db8:1::1 "$bpffs/ha" \
    2001:db8:100::/48 2001:db8:1::100 2001:db8:2::10 2001:db8:100::/64
  ip netns exec "${P}mr" "$bin/dataplane-set" mr m0 2001:db8:2::10 "$bpffs/mr" \
    m1 2001:db8:100::/64 2001:db8:1::1 100
elif [ "$MODE" = plain ]; then
  ip -n "${P}ha" -6 route add 2001:db8:100::/64 via 2001:db8:2::10
  ip -n "${P}mr" -6 route add default via 2001:db8:1::1
elif [ "$MODE" = nogate ]; then
  decapsulation; encapsulation
  ip -n "${P}ha" -6 rule add iif h0 lookup 100 pref 900
  ip -n "${P}mr" -6 rule add iif m1 from 2001:db8:100::/64 lookup 200 pref 800
elif [ "$MODE" = bpf ]; then
  # The forwarding path checks the MTU of a route whose lwt BPF program runs
  # at transmit (the uplink's minus the 40 of headroom declared), so a packet
  # that would not fit gets its Packet Too Big before the program; the
  # program marks the packet and has it routed again (BPF_LWT_REROUTE), an
  # output lookup that the mark sends to the encapsulation route.
  bpffs=$(mktemp -d /tmp/nemo-recipe-bpf.XXXXXX)
  mount -t bpf bpf "$bpffs"
  python3 "$(dirname "$0")/lwt-gate.py" "$bpffs/gate" 0x4e454d4f
  decapsulation; encapsulation
  ip -n "${P}ha" -6 route add 2001:db8:100::/64 encap bpf xmit pinned "$bpffs/gate" headroom 40 dev h1
  ip -n "${P}ha" -6 rule add fwmark 0x4e454d4f lookup 100 pref 900
  ip -n "${P}mr" -6 rule add iif m1 from 2001:db8:100::/64 lookup 201 pref 800
  ip -n "${P}mr" -6 route add default encap bpf xmit pinned "$bpffs/gate" headroom 40 dev m0 table 201
  ip -n "${P}mr" -6 rule add fwmark 0x4e454d4f from 2001:db8:100::/64 lookup 200 pref 900
else
  for n in ha mr; do
    # The MTU gate: g0 -> g1, MTU 1460, fixed link-local next hop fe80::2.
    ip -n "$P$n" link add g0 mtu 1460 type veth peer name g1 mtu 1460
    ip -n "$P$n" link set g0 up; ip -n "$P$n" link set g1 up
    ip -n "$P$n" addr add fe80::1/64 dev g0 nodad
    ip -n "$P$n" addr add fe80::2/64 dev g1 nodad
  done
  decapsulation; encapsulation
  # Home agent: MNP -> gate; out of the gate -> encap to the care-of address.
  ip -n "${P}ha" -6 route add 2001:db8:100::/64 via fe80::2 dev g0
  ip -n "${P}ha" -6 rule add iif g1 lookup 100 pref 900
  # Mobile router: from the tenant link -> gate (source-specific per tenant);
  # out of the gate -> encap to the home agent, whose own address table 200
  # throws back to the main table, or the outer packet would loop.
  ip -n "${P}mr" -6 rule add iif m1 from 2001:db8:100::/64 lookup 201 pref 800
  ip -n "${P}mr" -6 route add default via fe80::2 dev g0 table 201
  ip -n "${P}mr" -6 rule add iif g1 lookup 200 pref 900
fi
if [ "$MODE" != plain ] && [ "$MODE" != nemo ] && [ "$MODE" != nemo4 ] && [ "$TUNSRC" = 1 ]; then
  # The outer source set once per namespace instead of chosen per packet.
  ip -n "${P}ha" sr tunsrc set 2001:db8:1::1
  ip -n "${P}mr" sr tunsrc set 2001:db8:2::10
fi

x() { ip netns exec "$P$1" "${@:2}"; }
echo "mode=$MODE tunsrc=$TUNSRC"
echo "--- ping cn -> vm"; x cn ping -c 3 -i 0.2 -W 2 2001:db8:100::2 | tail -2
echo "--- ping -M do -s 1452 cn -> vm (must fail with a Packet Too Big when tunnelled)"
x cn ping -c 2 -i 0.2 -W 1 -M do -s 1452 2001:db8:100::2 2>&1 | grep -E "mtu|received" || true
echo "--- ping -M do -s 1452 vm -> cn (must fail with a Packet Too Big when tunnelled)"
x vm ping -c 2 -i 0.2 -W 1 -M do -s 1452 2001:db8:f::2 2>&1 | grep -E "mtu|received" || true
echo "--- ping -M do -s 1400 vm -> cn"; x vm ping -c 2 -i 0.2 -W 1 -M do -s 1400 2001:db8:f::2 | tail -2
# Throughput: one TCP stream each way. Packet rate: UDP datagrams of 64
# bytes, sent as fast as iperf3 can; the rate is what the receiver got.
# Lines starting with "result" are what bench/dataplane.sh tabulates.
tcp() { # from-ns to-ns to-address
  x "$2" iperf3 -s -1 -D; sleep 0.5
  x "$1" timeout 20 iperf3 -c "$3" -t 5 | awk -v d="$1->$2" '/receiver/ { print "result tcp", d, $7, $8 }'
}
udp() { # from-ns to-ns to-address
  x "$2" iperf3 -s -1 -D; sleep 0.5
  if [ -n "${PERF:-}" ] && [ "$1" = cn ]; then
    (sleep 1; perf record -q -a -g -o "$PERF" -- sleep 3 >/dev/null 2>&1) &
  fi
  x "$1" timeout 20 iperf3 -c "$3" -t 5 -u -b 0 -l 64 | awk -v d="$1->$2" '
    /receiver/ { split($0, a, "("); n = split(a[1], f, " "); split(f[n], lt, "/"); sub(/\).*/, "", a[2]);
                 printf "result udp64 %s %.0f packets/s (%s lost)\n", d, (lt[2] - lt[1]) / 5, a[2] }'
}
for test in ${TESTS:-tcp udp}; do
  "$test" cn vm 2001:db8:100::2
  "$test" vm cn 2001:db8:f::2
done
