// SPDX-License-Identifier: Apache-2.0 OR BSD-2-Clause
//
// nemo's BPF data plane: IPv6-in-IPv6 tunnels (RFC 2473) whose endpoints
// are looked up in maps the daemons update in place, so that a binding
// costs one map entry and no route.
//
// - nemo_encap_dst (lwt_xmit, home agent): a route per home prefix or
//   aggregate carries it; the packet's destination (a home address or an
//   address in a Mobile Network Prefix) finds its care-of address in
//   nemo_bindings, and the packet leaves IPv6-in-IPv6 to it, from the
//   address in nemo_local.
// - nemo_encap_src (lwt_xmit, mobile router): the tenant's routing table
//   carries it; the packet's source (an address in the tenant's prefix)
//   finds the home agent in nemo_bindings (reverse tunnelling, RFC 3963
//   §5.5).
// - nemo_decap_src (tc ingress, clsact direct action, on the uplink; home
//   agent): a packet IPv6-in-IPv6 to this host's tunnel address is taken
//   out of the tunnel only when its outer source is the care-of address
//   nemo_bindings holds for its inner source (RFC 3963 §6.4), else dropped
//   and counted.
// - nemo_decap_dst (the same, mobile router): the peer allowed is the home
//   agent nemo_bindings holds for the inner destination (the tenant's
//   prefix), so tenants of different home agents stay apart.
//
// - nemo_bicast (tc egress, on the uplink; home agent): while a tenant moves
//   (issue 29, make-before-break), nemo_also holds a second care-of address
//   for its destinations; a packet this host tunnelled to the first leaves
//   once more, the same packet with the outer destination rewritten, to the
//   second (RFC 5648 §6.1: "This document does not provide any mechanism
//   to select the suitable binding for forwarding data packets"; nemo's
//   choice during a move is both). The reverse
//   tunnel takes packets from either peer meanwhile (nemo_decap_src), and
//   stamps when the second last sent (the daemon copies on while it does).
// - nemo_release (tc ingress of a held tenant's port; mobile router): the
//   VM's first frame there (QEMU's RARP as it resumes) points the tenant's
//   prefixes at its home agent again (nemo_holds), in the kernel.
//
// IPv4 peers (Dual-Stack Mobile IPv6, RFC 5555 §4.1; the encoding in
// nemo_maps.h): the same programs put the packet IPv6-in-IPv4 (protocol 41)
// or IPv6-in-UDP-in-IPv4 (to the port of a NAT's mapping) from the address
// and port in nemo_local4, and take such packets to that address and port
// out of the tunnel under the same rule: only from the peer bound to the
// inner source (destination). A UDP datagram whose inner packet is a
// Mobility Header message is signalling, left to the daemon's socket (its
// Binding Update may come from a new NAT mapping). Copies during a move
// (nemo_bicast) stay within IPv6.
//
// Packets too big for the tunnel: the route's headroom (40, more than the
// 28 of IPv4 and UDP) lowers the path MTU the kernel checks before the
// program runs, so senders get an ICMPv6 Packet Too Big (RFC 8201) instead
// of a silent drop.

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "nemo_maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* RFC 2473 §6.3: the tunnel entry point's hop limit, a default of its own. */
#define TUNNEL_HOP_LIMIT 64

/* BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (kernel 6.3): the packet is IPv6 once the
 * outer IPv4 header is gone. Debian 12's headers predate it. */
#define NEMO_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)

/* The Mobility Header's protocol number (RFC 6275 §6.1). */
#define NEMO_IPPROTO_MH 135

/* RFC 6864 §4.1: an atomic datagram (DF set, not a fragment) may carry any
 * Identification; the tunnel never fragments, as its IPv6 twin cannot. */
#define NEMO_IPV4_DF 0x4000
#define NEMO_IPV4_FRAGMENT 0x3fff

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct nemo_prefix);
	__type(value, struct nemo_peer);
	__uint(max_entries, NEMO_MAX_BINDINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} nemo_bindings SEC(".maps");

/* The same keys as nemo_bindings: a destination's second peer while its
 * tenant moves (home agent only; empty on a mobile router). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct nemo_prefix);
	__type(value, struct nemo_second);
	__uint(max_entries, NEMO_MAX_BICASTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} nemo_also SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct nemo_local);
	__uint(max_entries, 1);
} nemo_local SEC(".maps");

/* This host's IPv4 tunnel address and UDP port (nemo_maps.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct nemo_local);
	__uint(max_entries, 1);
} nemo_local4 SEC(".maps");

/* A held tenant's port (ifindex) to what releases it (mobile router). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct nemo_hold);
	__uint(max_entries, NEMO_MAX_HOLDS);
} nemo_holds SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, NEMO_COUNTERS);
} nemo_counters SEC(".maps");

static __always_inline void count(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&nemo_counters, &counter);
	if (value)
		*value += 1;
}

static __always_inline int held(const struct nemo_peer *peer)
{
	const __u32 *x = (const __u32 *)peer->addr;
	return (x[0] | x[1] | x[2] | x[3]) == 0;
}

/* An IPv4 peer as nemo_maps.h writes it: 8 zero octets, a port, 0xffff. */
static __always_inline int ipv4_peer(const __u8 *a)
{
	const __u32 *x = (const __u32 *)a;
	return x[0] == 0 && x[1] == 0 && a[10] == 0xff && a[11] == 0xff;
}

static __always_inline int same_peer(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a;
	const __u32 *y = (const __u32 *)b;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline int same_address(const __u8 *a, const struct in6_addr *b)
{
	const __u32 *x = (const __u32 *)a;
	return x[0] == b->in6_u.u6_addr32[0] && x[1] == b->in6_u.u6_addr32[1] &&
	       x[2] == b->in6_u.u6_addr32[2] && x[3] == b->in6_u.u6_addr32[3];
}

struct nemo_outer4 {
	struct iphdr ip;
	struct udphdr udp;
} __attribute__((packed));

/* RFC 5555 §4.1: IPv4, then UDP when the peer has a port, then the IPv6
 * packet. The traffic class goes to the TOS octet (RFC 5555 §4.1.1, RFC
 * 2983), the UDP checksum is zero (RFC 768 allows it over IPv4; the inner
 * packet has its own), the header checksum is the kernel's. */
static __always_inline int encapsulate_ipv4(struct __sk_buff *skb, struct ipv6hdr *inner,
					    const struct nemo_peer *peer)
{
	__u32 zero = 0;
	struct nemo_local *local = bpf_map_lookup_elem(&nemo_local4, &zero);
	if (!local || !ipv4_peer(local->addr)) {
		count(NEMO_ENCAP_NO_TUNNEL); /* no IPv4 tunnel address here */
		return BPF_DROP;
	}
	struct nemo_outer4 outer = {};
	outer.ip.version = 4;
	outer.ip.ihl = 5;
	outer.ip.tos = (inner->priority << 4) | (inner->flow_lbl[0] >> 4);
	outer.ip.frag_off = bpf_htons(NEMO_IPV4_DF);
	outer.ip.ttl = TUNNEL_HOP_LIMIT;
	__builtin_memcpy(&outer.ip.saddr, local->addr + 12, 4);
	__builtin_memcpy(&outer.ip.daddr, peer->addr + 12, 4);
	__u16 port;
	__builtin_memcpy(&port, peer->addr + 8, 2);
	int failed;
	if (port) {
		outer.ip.protocol = IPPROTO_UDP;
		outer.ip.tot_len = bpf_htons((__u16)(skb->len + sizeof(outer)));
		__builtin_memcpy(&outer.udp.source, local->addr + 8, 2);
		outer.udp.dest = port;
		outer.udp.len = bpf_htons((__u16)(skb->len + sizeof(struct udphdr)));
		failed = bpf_lwt_push_encap(skb, BPF_LWT_ENCAP_IP, &outer, sizeof(outer));
	} else {
		outer.ip.protocol = IPPROTO_IPV6;
		outer.ip.tot_len = bpf_htons((__u16)(skb->len + sizeof(struct iphdr)));
		failed = bpf_lwt_push_encap(skb, BPF_LWT_ENCAP_IP, &outer, sizeof(struct iphdr));
	}
	if (failed) {
		count(NEMO_ENCAP_FAILED);
		return BPF_DROP;
	}
	count(NEMO_ENCAPSULATED);
	return BPF_LWT_REROUTE;
}

/* Puts the outer header in front of the packet (its IPv6 header at
 * skb->data, as LWT programs see it) and hands it back to routing. */
static __always_inline int encapsulate(struct __sk_buff *skb, int by_source)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ipv6hdr *inner = data;

	if ((void *)(inner + 1) > data_end || inner->version != 6) {
		count(NEMO_MALFORMED);
		return BPF_DROP;
	}
	struct nemo_prefix key = { .prefixlen = 128 };
	__builtin_memcpy(key.addr, by_source ? &inner->saddr : &inner->daddr, 16);
	struct nemo_peer *peer = bpf_map_lookup_elem(&nemo_bindings, &key);
	__u32 zero = 0;
	struct nemo_local *local = bpf_map_lookup_elem(&nemo_local, &zero);
	if (!peer || !local) {
		count(NEMO_ENCAP_NO_TUNNEL);
		return BPF_DROP;
	}
	if (held(peer)) {
		count(NEMO_HELD);
		return BPF_DROP;
	}
	if (ipv4_peer(peer->addr))
		return encapsulate_ipv4(skb, inner, peer);

	/* RFC 2473 §5.1: a new IPv6 header, next header 41; the traffic class
	 * and flow label copied from the inner packet (§6.5, §6.6 allow it and
	 * it keeps ECMP and QoS working on the underlay). */
	struct ipv6hdr outer = {};
	outer.version = 6;
	outer.priority = inner->priority;
	outer.flow_lbl[0] = inner->flow_lbl[0];
	outer.flow_lbl[1] = inner->flow_lbl[1];
	outer.flow_lbl[2] = inner->flow_lbl[2];
	outer.payload_len = bpf_htons((__u16)skb->len);
	outer.nexthdr = IPPROTO_IPV6;
	outer.hop_limit = TUNNEL_HOP_LIMIT;
	__builtin_memcpy(&outer.saddr, local->addr, 16);
	__builtin_memcpy(&outer.daddr, peer->addr, 16);

	if (bpf_lwt_push_encap(skb, BPF_LWT_ENCAP_IP, &outer, sizeof(outer))) {
		count(NEMO_ENCAP_FAILED);
		return BPF_DROP;
	}
	count(NEMO_ENCAPSULATED);
	return BPF_LWT_REROUTE;
}

SEC("lwt_xmit")
int nemo_encap_dst(struct __sk_buff *skb)
{
	return encapsulate(skb, 0);
}

SEC("lwt_xmit")
int nemo_encap_src(struct __sk_buff *skb)
{
	return encapsulate(skb, 1);
}

/* Whether a tunnelled packet's inner packet may come from `from` (written
 * as nemo_peer is): the peer nemo_bindings holds for its inner source
 * (home agent) or inner destination (mobile router), or during a move the
 * second peer (RFC 3963 §6.4). TC_ACT_OK, or the verdict that drops it. */
static __always_inline int from_its_peer(const struct ipv6hdr *inner, const struct nemo_peer *from,
					 int by_source)
{
	struct nemo_prefix key = { .prefixlen = 128 };
	__builtin_memcpy(key.addr, by_source ? &inner->saddr : &inner->daddr, 16);
	struct nemo_peer *peer = bpf_map_lookup_elem(&nemo_bindings, &key);
	if (peer && held(peer)) {
		count(NEMO_HELD);
		return TC_ACT_SHOT;
	}
	if (!peer || !same_peer(peer->addr, from->addr)) {
		/* During a move the second care-of address is the tenant's too:
		 * its VM still runs there until it stops. */
		struct nemo_second *also = bpf_map_lookup_elem(&nemo_also, &key);
		if (!also || !same_peer(also->addr, from->addr)) {
			count(NEMO_DECAP_SPOOFED);
			return TC_ACT_SHOT;
		}
		/* Heard from: the copies go on while it sends. */
		also->heard_ns = bpf_ktime_get_ns();
	}
	return TC_ACT_OK;
}

/* The verdict on a packet taken out of its tunnel: the next tc filter
 * (the translator's, at arrival) sees the inner packet; with none it goes
 * on into the stack as with TC_ACT_OK. */
#define DECAPSULATED TC_ACT_UNSPEC

/* Takes a packet out of the tunnel when it is IPv6-in-IPv6 to our tunnel
 * address from the peer nemo_bindings holds for its inner source (home agent)
 * or inner destination (mobile router). */
static __always_inline int decapsulate_ipv6(struct __sk_buff *skb, int by_source)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	struct ipv6hdr *outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end || outer->nexthdr != IPPROTO_IPV6)
		return TC_ACT_OK; /* not IPv6-in-IPv6 (or options first): not ours */
	__u32 zero = 0;
	struct nemo_local *local = bpf_map_lookup_elem(&nemo_local, &zero);
	if (!local || !same_address(local->addr, &outer->daddr))
		return TC_ACT_OK; /* tunnelled, but not to our tunnel address */

	struct ipv6hdr *inner = (void *)(outer + 1);
	if ((void *)(inner + 1) > data_end || inner->version != 6) {
		count(NEMO_DECAP_MALFORMED);
		return TC_ACT_SHOT;
	}
	struct nemo_peer from;
	__builtin_memcpy(from.addr, &outer->saddr, 16);
	int verdict = from_its_peer(inner, &from, by_source);
	if (verdict != TC_ACT_OK)
		return verdict;
	if (bpf_skb_adjust_room(skb, -(__s32)sizeof(struct ipv6hdr), BPF_ADJ_ROOM_MAC, 0)) {
		count(NEMO_DECAP_FAILED);
		return TC_ACT_SHOT;
	}
	count(NEMO_DECAPSULATED);
	return DECAPSULATED;
}

/* The same for IPv6 in IPv4, or in UDP to our port, to our IPv4 tunnel
 * address (RFC 5555 §4.1). A fragment or a header with options is left to
 * the stack: the tunnel sends neither. */
static __always_inline int decapsulate_ipv4(struct __sk_buff *skb, int by_source)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *outer = (void *)(eth + 1);

	if ((void *)(outer + 1) > data_end || outer->ihl != 5 ||
	    (outer->frag_off & bpf_htons(NEMO_IPV4_FRAGMENT)))
		return TC_ACT_OK;
	if (outer->protocol != IPPROTO_IPV6 && outer->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	__u32 zero = 0;
	struct nemo_local *local = bpf_map_lookup_elem(&nemo_local4, &zero);
	if (!local || !ipv4_peer(local->addr) ||
	    *(const __u32 *)(local->addr + 12) != outer->daddr)
		return TC_ACT_OK; /* not to our IPv4 tunnel address */

	struct nemo_peer from = {};
	from.addr[10] = 0xff;
	from.addr[11] = 0xff;
	__builtin_memcpy(from.addr + 12, &outer->saddr, 4);
	struct ipv6hdr *inner;
	__s32 strip;
	if (outer->protocol == IPPROTO_UDP) {
		struct udphdr *udp = (void *)(outer + 1);
		if ((void *)(udp + 1) > data_end)
			return TC_ACT_OK;
		if (*(const __u16 *)(local->addr + 8) != udp->dest)
			return TC_ACT_OK; /* not to our port */
		__builtin_memcpy(from.addr + 8, &udp->source, 2);
		inner = (void *)(udp + 1);
		strip = sizeof(struct iphdr) + sizeof(struct udphdr);
	} else {
		inner = (void *)(outer + 1);
		strip = sizeof(struct iphdr);
	}
	if ((void *)(inner + 1) > data_end || inner->version != 6) {
		count(NEMO_DECAP_MALFORMED);
		return TC_ACT_SHOT;
	}
	if (strip != sizeof(struct iphdr) && inner->nexthdr == NEMO_IPPROTO_MH)
		return TC_ACT_OK; /* a Binding Update or Acknowledgement: the socket's */
	int verdict = from_its_peer(inner, &from, by_source);
	if (verdict != TC_ACT_OK)
		return verdict;
	if (bpf_skb_adjust_room(skb, -strip, BPF_ADJ_ROOM_MAC, NEMO_ADJ_ROOM_DECAP_L3_IPV6)) {
		count(NEMO_DECAP_FAILED);
		return TC_ACT_SHOT;
	}
	__be16 ipv6 = bpf_htons(ETH_P_IPV6);
	bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &ipv6, sizeof(ipv6), 0);
	count(NEMO_DECAPSULATED);
	return DECAPSULATED;
}

static __always_inline int decapsulate(struct __sk_buff *skb, int by_source)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return decapsulate_ipv6(skb, by_source);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return decapsulate_ipv4(skb, by_source);
	return TC_ACT_OK;
}

SEC("tc")
int nemo_decap_src(struct __sk_buff *skb)
{
	return decapsulate(skb, 1);
}

SEC("tc")
int nemo_decap_dst(struct __sk_buff *skb)
{
	return decapsulate(skb, 0);
}

#define AF_INET6 10
#define DADDR_OFFSET (sizeof(struct ethhdr) + offsetof(struct ipv6hdr, daddr))

/* tc egress of the home agent's uplink: a packet tunnelled from here (outer
 * source nemo_local, IPv6-in-IPv6) whose inner destination has a second
 * peer in nemo_also leaves once more to it. The copy is this packet with
 * the outer destination and the link-layer addresses rewritten, cloned out
 * (bpf_clone_redirect), then the packet is put back as it was. The copy
 * passes here too and is let go: its outer destination is the second peer. */
SEC("tc")
int nemo_bicast(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return TC_ACT_OK;
	struct ipv6hdr *outer = (void *)(eth + 1);
	struct ipv6hdr *inner = (void *)(outer + 1);
	if ((void *)(inner + 1) > data_end || outer->nexthdr != IPPROTO_IPV6)
		return TC_ACT_OK;
	__u32 zero = 0;
	struct nemo_local *local = bpf_map_lookup_elem(&nemo_local, &zero);
	if (!local || !same_address(local->addr, &outer->saddr))
		return TC_ACT_OK; /* not tunnelled by this host */
	struct nemo_prefix key = { .prefixlen = 128 };
	__builtin_memcpy(key.addr, &inner->daddr, 16);
	struct nemo_second *found = bpf_map_lookup_elem(&nemo_also, &key);
	if (!found || same_address(found->addr, &outer->daddr))
		return TC_ACT_OK; /* no move, or this is the copy */
	if (ipv4_peer(found->addr)) {
		/* A copy across address families is not made. */
		count(NEMO_BICAST_NO_ROUTE);
		return TC_ACT_OK;
	}
	struct nemo_peer also;
	__builtin_memcpy(also.addr, found->addr, 16);
	struct nemo_peer first;
	__builtin_memcpy(first.addr, &outer->daddr, 16);
	unsigned char link[2 * ETH_ALEN];
	__builtin_memcpy(link, eth, sizeof(link));

	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET6;
	fib.ifindex = skb->ifindex;
	fib.tot_len = skb->len - sizeof(struct ethhdr);
	__builtin_memcpy(fib.ipv6_src, local->addr, 16);
	__builtin_memcpy(fib.ipv6_dst, also.addr, 16);
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT) !=
	    BPF_FIB_LKUP_RET_SUCCESS) {
		/* No route, or no neighbour entry yet (the second peer was the
		 * first until a moment ago, so its next hop is normally known). */
		count(NEMO_BICAST_NO_ROUTE);
		return TC_ACT_OK;
	}
	unsigned char rewritten[2 * ETH_ALEN];
	__builtin_memcpy(rewritten, fib.dmac, ETH_ALEN);
	__builtin_memcpy(rewritten + ETH_ALEN, fib.smac, ETH_ALEN);
	if (bpf_skb_store_bytes(skb, DADDR_OFFSET, also.addr, 16, 0) ||
	    bpf_skb_store_bytes(skb, 0, rewritten, sizeof(rewritten), 0)) {
		count(NEMO_BICAST_FAILED);
		return TC_ACT_OK;
	}
	if (bpf_clone_redirect(skb, fib.ifindex, 0))
		count(NEMO_BICAST_FAILED);
	else
		count(NEMO_BICAST_COPIED);
	/* The packet itself goes on to the first peer, as it came. */
	if (bpf_skb_store_bytes(skb, DADDR_OFFSET, first.addr, 16, 0) ||
	    bpf_skb_store_bytes(skb, 0, link, sizeof(link), 0))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

/* tc ingress of a held tenant's port (mobile router): every frame entering
 * there is its VM's (QEMU writes them to the tap; what the host sends to
 * the VM leaves by egress). The first one, QEMU's RARP as the VM resumes
 * after a live migration, releases the tenant at once: its prefixes point
 * at the home agent again, before anything else reaches the port. The
 * daemon's thread that reads the same frame does it too, and tells the
 * controller; here no scheduling delay comes between (issue 29). */
SEC("tc")
int nemo_release(struct __sk_buff *skb)
{
	__u32 port = skb->ifindex;
	struct nemo_hold *hold = bpf_map_lookup_elem(&nemo_holds, &port);
	if (!hold)
		return TC_ACT_OK;
	struct nemo_peer peer;
	__builtin_memcpy(peer.addr, hold->peer, 16);
	__u32 count_held = hold->count;
	for (__u32 i = 0; i < NEMO_MAX_HELD_PREFIXES; i++) {
		if (i >= count_held)
			break;
		struct nemo_prefix key = hold->keys[i];
		bpf_map_update_elem(&nemo_bindings, &key, &peer, BPF_EXIST);
	}
	bpf_map_delete_elem(&nemo_holds, &port);
	count(NEMO_RELEASED);
	return TC_ACT_OK;
}
