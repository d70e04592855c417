// SPDX-License-Identifier: Apache-2.0 OR BSD-2-Clause
//
// nemo's stateless IPv4/IPv6 translator (SIIT, RFC 7915) for the tenants'
// IPv4 addresses, at the home site (issue 31).
//
// The home agent routes its IPv4 pools and its translation prefixes to a
// device of its own (nemo-xlat). What the kernel sends there leaves by the
// device's tc egress hook, where nemo_translate runs: a packet it can
// translate comes back into the stack at the device's ingress in the other
// family (bpf_redirect, BPF_F_INGRESS), and the kernel routes it as it
// routes any packet: to a tenant's prefix (the tunnel to wherever the
// tenant is now) or to the IPv4 Internet. Routing, the TTL and Hop Limit
// (RFC 7915 §4.1, §5.1: "the translator is a router"), ICMP errors of the
// routers' own and fragmentation at the route's MTU stay the kernel's.
// The same translation runs earlier too, at tc ingress of the interfaces
// packets arrive on (nemo_translate_at_arrival, xlat_arrival.h): there the
// common case of what the kernel would route to the device is translated
// and forwarded once; the rest goes on to the device.
//
// - IPv4 -> IPv6 (RFC 7915 §4): the destination is a tenant's, found in
//   nemo_eam4 (its Explicit Address Mapping, RFC 7757 §3.2: the IPv6
//   prefix, the IPv4 host bits below it); the source is written in the
//   mapping's translation prefix (RFC 6052 §2.2, a /96).
// - IPv6 -> IPv4 (RFC 7915 §5): the source is a tenant's mapped address
//   (nemo_eam6), the destination an address in that mapping's translation
//   prefix: its last 32 bits are the IPv4 peer.
//
// What is translated: TCP and UDP (checksums adjusted for the new
// pseudo-header, RFC 7915 §4.5, §5.5; an IPv4 UDP datagram without one
// gets one, xlat_checksum.h), ICMP Echo and Echo Reply (types, and the
// ICMPv6 pseudo-header added or taken out, §4.2, §5.2), ICMP errors with
// the packet in error inside them (xlat_icmp.h), every other transport
// protocol as it is ("translators MUST forward all transport protocols",
// §4.5, §5.5), fragments one by one, IPv4 options and IPv6 extension
// headers left out (xlat_headers.h). What is not, dropped and counted by
// reason (nemo_xlat_counters): packets to or from no mapping, non-global
// IPv4 peers in the well-known prefix (RFC 6052 §3.1), illegal addresses
// (RFC 7915 §4.1, RFC 1812 §5.3.7), unexpired source routes, ICMP
// fragments (the ICMPv6 checksum sums the whole message's length, which a
// stateless translator does not know), ICMP messages of other types, IPv4
// UDP without a checksum when so configured or in a fragment, truncated
// packets.

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

#include "nemo_xlat.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define NEMO_IPPROTO_ICMPV6 58

/* linux/icmp.h, icmpv6.h and tcp.h pull in the C library's headers, which
 * the BPF target lacks: the few values used, from RFC 792, 4443 and 9293. */
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

/* The first octets of an ICMP or ICMPv6 message (RFC 792, RFC 4443 §2.1). */
struct icmp_start {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest;
};

/* A TCP header without options (RFC 9293 §3.1): the checksum at 16. */
struct tcp_start {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__be16 flags;
	__be16 window;
	__sum16 check;
	__be16 urg_ptr;
};
#define IPV4_MF 0x2000
#define IPV4_OFFSET 0x1fff
#define IPV4_DF 0x4000
/* RFC 7915 §5.1: DF is set on what is bigger than this once in IPv4. */
#define NEMO_DF_ABOVE 1260

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct nemo_ipv4_prefix);
	__type(value, struct nemo_eam4);
	__uint(max_entries, NEMO_MAX_MAPPINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} nemo_eam4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct nemo_ipv6_prefix);
	__type(value, struct nemo_eam6);
	__uint(max_entries, NEMO_MAX_MAPPINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} nemo_eam6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, NEMO_XLAT_COUNTERS);
} nemo_xlat_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct nemo_translation_prefix);
	__type(value, __u8);
	__uint(max_entries, NEMO_MAX_TRANSLATION_PREFIXES);
} nemo_xlat_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct nemo_xlat_config);
	__uint(max_entries, 1);
} nemo_xlat_config SEC(".maps");

static __always_inline int dropped(__u32 reason)
{
	__u64 *value = bpf_map_lookup_elem(&nemo_xlat_counters, &reason);
	if (value)
		*value += 1;
	return TC_ACT_SHOT;
}

static __always_inline void count(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&nemo_xlat_counters, &counter);
	if (value)
		*value += 1;
}

#include "xlat_addresses.h"

/* RFC 7915 §4.1, §5.1: the translator is a router and decrements the TTL
 * (Hop Limit) once. The kernel forwards a translated packet twice, into
 * nemo-xlat and out of it again, each time decrementing: one is given back
 * here. A packet the host sent itself (its own ICMP errors) was not
 * forwarded in, and leaves with the TTL it was sent with (at most 255). */
static __always_inline __u8 given_back(__u8 hops)
{
	return hops == 255 ? 255 : hops + 1;
}

/* The checksum field's offset from the transport header, for what is
 * translated; -1 for what is not. */
static __always_inline int checksum_offset(__u8 protocol)
{
	switch (protocol) {
	case IPPROTO_TCP:
		return offsetof(struct tcp_start, check);
	case IPPROTO_UDP:
		return offsetof(struct udphdr, check);
	case IPPROTO_ICMP:
	case NEMO_IPPROTO_ICMPV6:
		return offsetof(struct icmp_start, checksum);
	}
	return -1;
}

struct pseudo6 {
	struct in6_addr saddr;
	struct in6_addr daddr;
	__be32 length;
	__u8 zero[3];
	__u8 next_header;
};

/* An IPv6 header for an IPv4 one (RFC 7915 §4.1): TOS to traffic class,
 * flow label 0, ICMP to ICMPv6; the addresses are the caller's. */
static __always_inline void ipv6_from(struct ipv6hdr *ip6, const struct iphdr *ip, __u16 payload,
				      __u8 hops)
{
	ip6->version = 6;
	ip6->priority = ip->tos >> 4;
	ip6->flow_lbl[0] = (ip->tos & 0x0f) << 4;
	ip6->payload_len = bpf_htons(payload);
	ip6->nexthdr = ip->protocol == IPPROTO_ICMP ? NEMO_IPPROTO_ICMPV6 : ip->protocol;
	ip6->hop_limit = hops;
}

/* How the IPv4 header of a translated packet is flagged. */
enum fragmentable {
	/* RFC 7915 §5.1: DF above 1260 octets, else a new Identification. */
	BY_SIZE,
	/* A packet in error, quoted: neither. */
	QUOTED,
	/* RFC 7915 §5.1.1: the Fragment header's Identification (its low 16
	 * bits), offset and M flag; DF clear. */
	AS_FRAGMENT,
};

/* The fields of an IPv4 fragment, as the IPv6 one's (RFC 7915 §5.1.1). */
struct ipv4_fragment_fields {
	__be16 id;
	__be16 frag_off;
};
#define UNFRAGMENTED ((struct ipv4_fragment_fields){})

/* An IPv4 header for an IPv6 one (RFC 7915 §5.1), checksum filled in;
 * 0, or -1 when the checksum helper refused. `fragment` counts only
 * AS_FRAGMENT. */
static __always_inline int ipv4_from(struct iphdr *ip, const struct ipv6hdr *ip6, __u16 total,
				     __u8 ttl, __be32 source, __be32 destination,
				     enum fragmentable flags, struct ipv4_fragment_fields fragment)
{
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	ip->tot_len = bpf_htons(total);
	/* RFC 6864 §4.1: a datagram that may be fragmented needs an
	 * Identification of its own. */
	if (flags == BY_SIZE && total > NEMO_DF_ABOVE)
		ip->frag_off = bpf_htons(IPV4_DF);
	else if (flags == BY_SIZE)
		ip->id = (__be16)bpf_get_prandom_u32();
	if (flags == AS_FRAGMENT) {
		ip->id = fragment.id;
		ip->frag_off = fragment.frag_off;
	}
	ip->ttl = ttl;
	ip->protocol = ip6->nexthdr == NEMO_IPPROTO_ICMPV6 ? IPPROTO_ICMP : ip6->nexthdr;
	ip->saddr = source;
	ip->daddr = destination;
	ip->check = 0;
	__s64 sum = bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0);
	if (sum < 0)
		return -1;
	__u32 folded = (__u32)sum;
	folded = (folded & 0xffff) + (folded >> 16);
	folded = (folded & 0xffff) + (folded >> 16);
	ip->check = (__u16)~folded;
	return 0;
}

/* An ICMP Echo or Echo Reply at `l4` retyped to `type` (RFC 7915 §4.2,
 * §5.2), its checksum adjusted for the type and for ICMPv6's
 * pseudo-header (RFC 4443 §2.3), which `adding` puts in or takes out. */
static __always_inline int retype_echo(struct __sk_buff *skb, __u32 l4,
				       const struct icmp_start *icmp, __u8 type,
				       const struct pseudo6 *pseudo, int adding)
{
	__be16 old_word = *(const __be16 *)icmp;
	__u8 new_bytes[2] = { type, icmp->code };
	__be16 new_word;
	__builtin_memcpy(&new_word, new_bytes, 2);
	__s64 sum = adding ? bpf_csum_diff(NULL, 0, (__be32 *)pseudo, sizeof(*pseudo), 0)
			   : bpf_csum_diff((__be32 *)pseudo, sizeof(*pseudo), NULL, 0, 0);
	__u32 csum_at = l4 + offsetof(struct icmp_start, checksum);
	if (sum < 0 ||
	    bpf_l4_csum_replace(skb, csum_at, old_word, new_word, sizeof(new_word)) ||
	    bpf_l4_csum_replace(skb, csum_at, 0, sum, 0) ||
	    bpf_skb_store_bytes(skb, l4, new_bytes, 2, 0))
		return -1;
	return 0;
}

#include "xlat_arrival.h"
#include "xlat_icmp.h"
#include "xlat_headers.h"
#include "xlat_checksum.h"

/* IPv4 -> IPv6 (RFC 7915 §4.1). */
static __always_inline int translate_ipv4(struct __sk_buff *skb, enum entry entry)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > data_end)
		return refused(entry, NEMO_XLAT_MALFORMED);
	/* The common case, a 20-octet header, read in place: the options
	 * walk's helper calls cost on every packet. */
	if (ip->version != 4 || ip->ihl != 5) {
		if (entry == AT_ARRIVAL)
			return TC_ACT_OK;
		int verdict = ipv4_without_options(skb);
		if (verdict != TC_ACT_OK)
			return verdict;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		ip = data + sizeof(struct ethhdr);
		if ((void *)(ip + 1) > data_end)
			return refused(entry, NEMO_XLAT_MALFORMED);
	}
	__u16 total = bpf_ntohs(ip->tot_len);
	if (total < sizeof(struct iphdr) || total > skb->len - sizeof(struct ethhdr))
		return refused(entry, NEMO_XLAT_MALFORMED);
	struct fragment fragment = ipv4_fragment(ip);
	/* A fragment, a TTL that runs out here: the device's. */
	if (entry == AT_ARRIVAL && (fragment.kind != WHOLE || ip->ttl <= 1))
		return TC_ACT_OK;

	struct nemo_ipv4_prefix key = { .prefixlen = 32 };
	__builtin_memcpy(key.addr, &ip->daddr, 4);
	struct nemo_eam4 *eam = bpf_map_lookup_elem(&nemo_eam4, &key);
	if (!eam)
		return refused(entry, NEMO_XLAT_UNMAPPED);
	if (ip->protocol == IPPROTO_ICMP) {
		if (fragment.kind != WHOLE)
			return refused(entry, NEMO_XLAT_FRAGMENT);
		struct icmp_start *icmp = (void *)(ip + 1);
		if ((void *)(icmp + 1) > data_end)
			return refused(entry, NEMO_XLAT_MALFORMED);
		/* RFC 7915 §4.1: an error's "illegal" source is translated,
		 * for trouble shooting. */
		if (icmp->type == ICMP_DEST_UNREACH || icmp->type == ICMP_TIME_EXCEEDED ||
		    icmp->type == ICMP_PARAMETERPROB)
			return entry == AT_ARRIVAL ? TC_ACT_OK : icmp4_error(skb, eam);
	}
	if (illegal_ipv4(ip->saddr))
		return refused(entry, NEMO_XLAT_ILLEGAL_ADDRESS);
	if (well_known(eam->translation) && non_global_ipv4(ip->saddr))
		return refused(entry, NEMO_XLAT_NOT_GLOBAL);
	if (entry == AT_ARRIVAL) {
		struct bpf_fib_lookup fib = {
			.family = NEMO_AF_INET,
			.tos = ip->tos,
			.l4_protocol = ip->protocol,
			.tot_len = on_the_wire(skb, total, sizeof(struct iphdr), ip->protocol,
					       (void *)(ip + 1), data_end),
			.ipv4_src = ip->saddr,
			.ipv4_dst = ip->daddr,
		};
		if (!routed_to_device(skb, &fib))
			return TC_ACT_OK;
	}

	/* The IPv6 header, and a Fragment header behind it for a fragment
	 * (RFC 7915 §4.1: none for a whole packet, DF set or not). */
	struct {
		struct ipv6hdr ip6;
		struct fragment_header fragment;
	} headers = {};
	__u16 payload = total - sizeof(struct iphdr);
	/* At arrival the kernel forwards it once, after this. */
	ipv6_from(&headers.ip6, ip, payload, entry == AT_DEVICE ? given_back(ip->ttl) : ip->ttl);
	embedded(&headers.ip6.saddr, eam->translation, ip->saddr);
	mapped_to_ipv6(&headers.ip6.daddr, eam, ip->daddr);
	if (fragment.kind != WHOLE) {
		headers.fragment = fragment_header_for(&fragment, headers.ip6.nexthdr);
		headers.ip6.nexthdr = IPV6_FRAGMENT;
		headers.ip6.payload_len = bpf_htons(payload + sizeof(struct fragment_header));
	}

	int csum_at = checksum_offset(ip->protocol);
	__u32 l4 = sizeof(struct ethhdr) + sizeof(struct iphdr);
	__be32 old_addresses[2] = { ip->saddr, ip->daddr };
	__u8 protocol = ip->protocol;

	/* A later fragment has no transport header; other protocols'
	 * headers are not ours to change (RFC 7915 §4.5). */
	if (fragment.kind == LATER_FRAGMENT || csum_at < 0) {
	} else if (protocol == IPPROTO_ICMP) {
		struct icmp_start *icmp = (void *)(ip + 1);
		if ((void *)(icmp + 1) > data_end)
			return refused(entry, NEMO_XLAT_MALFORMED);
		__u8 type;
		if (icmp->type == ICMP_ECHO)
			type = ICMPV6_ECHO_REQUEST;
		else if (icmp->type == ICMP_ECHOREPLY)
			type = ICMPV6_ECHO_REPLY;
		else
			return refused(entry, NEMO_XLAT_ICMP_UNTRANSLATED);
		struct pseudo6 pseudo = {};
		pseudo.saddr = headers.ip6.saddr;
		pseudo.daddr = headers.ip6.daddr;
		pseudo.length = bpf_htonl(payload);
		pseudo.next_header = NEMO_IPPROTO_ICMPV6;
		if (retype_echo(skb, l4, icmp, type, &pseudo, 1))
			return dropped(NEMO_XLAT_FAILED);
	} else {
		__u32 udp_zero = 0;
		if (protocol == IPPROTO_UDP) {
			struct udphdr *udp = (void *)(ip + 1);
			if ((void *)(udp + 1) > data_end)
				return refused(entry, NEMO_XLAT_MALFORMED);
			udp_zero = udp->check == 0;
			if (udp_zero && entry == AT_ARRIVAL)
				return TC_ACT_OK;
			if (udp_zero) {
				int verdict = zero_checksum_filled(skb, l4, udp, payload, &headers.ip6,
							       fragment.kind);
				if (verdict != TC_ACT_OK)
					return verdict;
			}
		} else {
			struct tcp_start *tcp = (void *)(ip + 1);
			if ((void *)(tcp + 1) > data_end)
				return refused(entry, NEMO_XLAT_MALFORMED);
		}
		/* Only the addresses differ: the length and protocol sum
		 * the same in both pseudo-headers (RFC 7915 §4.5). */
		if (!udp_zero) {
			__s64 sum = bpf_csum_diff(old_addresses, sizeof(old_addresses),
						  (__be32 *)&headers.ip6.saddr, 32, 0);
			__u64 flags = BPF_F_PSEUDO_HDR |
				      (protocol == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
			if (sum < 0 ||
			    bpf_l4_csum_replace(skb, l4 + csum_at, 0, sum, flags))
				return dropped(NEMO_XLAT_FAILED);
		}
	}
	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0))
		return dropped(NEMO_XLAT_FAILED);
	/* Room for the Fragment header right after the IPv6 header. */
	if (fragment.kind != WHOLE &&
	    bpf_skb_adjust_room(skb, sizeof(struct fragment_header), BPF_ADJ_ROOM_NET, 0))
		return dropped(NEMO_XLAT_FAILED);
	if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &headers,
				fragment.kind != WHOLE ? sizeof(headers) : sizeof(struct ipv6hdr), 0))
		return dropped(NEMO_XLAT_FAILED);
	return translated(skb, ETH_P_IPV6, NEMO_XLAT_4TO6, entry);
}

/* IPv6 -> IPv4 (RFC 7915 §5.1). */
static __always_inline int translate_ipv6(struct __sk_buff *skb, enum entry entry)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > data_end)
		return refused(entry, NEMO_XLAT_MALFORMED);
	/* Router and multicast listener messages of the device itself. */
	if (ip6->daddr.in6_u.u6_addr8[0] == 0xff)
		return refused(entry, NEMO_XLAT_LOCAL);
	if (entry == AT_ARRIVAL) {
		/* Most of what arrives is to no translation prefix. */
		struct nemo_translation_prefix to;
		__builtin_memcpy(to.prefix, &ip6->daddr, sizeof(to.prefix));
		if (!bpf_map_lookup_elem(&nemo_xlat_prefixes, &to) || ip6->hop_limit <= 1)
			return TC_ACT_OK;
	}
	struct fragment fragment = {};
	__u8 next = ip6->nexthdr;
	if (next == IPV6_HOP_BY_HOP || next == IPV6_ROUTING || next == IPV6_FRAGMENT ||
	    next == IPV6_DESTINATION) {
		if (entry == AT_ARRIVAL)
			return TC_ACT_OK;
		int verdict = ipv6_without_extensions(skb, &fragment);
		if (verdict != TC_ACT_OK)
			return verdict;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		ip6 = data + sizeof(struct ethhdr);
		if ((void *)(ip6 + 1) > data_end)
			return refused(entry, NEMO_XLAT_MALFORMED);
	}
	__u16 payload = bpf_ntohs(ip6->payload_len);
	if (payload > skb->len - sizeof(struct ethhdr) - sizeof(struct ipv6hdr) ||
	    payload > 0xffff - sizeof(struct iphdr))
		return refused(entry, NEMO_XLAT_MALFORMED);
	if (ip6->nexthdr == IPPROTO_ICMP)
		return refused(entry, NEMO_XLAT_PROTOCOL);
	int csum_at = checksum_offset(ip6->nexthdr);
	if (ip6->nexthdr == NEMO_IPPROTO_ICMPV6) {
		if (fragment.kind != WHOLE)
			return refused(entry, NEMO_XLAT_FRAGMENT);
		struct icmp_start *icmp6 = (void *)(ip6 + 1);
		if ((void *)(icmp6 + 1) > data_end)
			return refused(entry, NEMO_XLAT_MALFORMED);
		/* Errors (types below 128, RFC 4443 §2.1): from anywhere. */
		if (icmp6->type < 128)
			return entry == AT_ARRIVAL ? TC_ACT_OK : icmp6_error(skb);
	}

	struct nemo_ipv6_prefix key = { .prefixlen = 128 };
	__builtin_memcpy(key.addr, &ip6->saddr, 16);
	struct nemo_eam6 *eam = bpf_map_lookup_elem(&nemo_eam6, &key);
	if (!eam)
		return refused(entry, NEMO_XLAT_UNMAPPED);
	const __u32 *prefix = (const __u32 *)eam->translation;
	if (ip6->daddr.in6_u.u6_addr32[0] != prefix[0] ||
	    ip6->daddr.in6_u.u6_addr32[1] != prefix[1] ||
	    ip6->daddr.in6_u.u6_addr32[2] != prefix[2])
		return refused(entry, NEMO_XLAT_OTHER_PREFIX);
	__be32 destination = ip6->daddr.in6_u.u6_addr32[3];
	if (illegal_ipv4(destination))
		return refused(entry, NEMO_XLAT_ILLEGAL_ADDRESS);
	if (well_known(eam->translation) && non_global_ipv4(destination))
		return refused(entry, NEMO_XLAT_NOT_GLOBAL);
	if (entry == AT_ARRIVAL) {
		struct bpf_fib_lookup fib = {
			.family = NEMO_AF_INET6,
			.l4_protocol = ip6->nexthdr,
			.tot_len = on_the_wire(skb, payload + sizeof(struct ipv6hdr),
					       sizeof(struct ipv6hdr), ip6->nexthdr,
					       (void *)(ip6 + 1), data_end),
		};
		__builtin_memcpy(fib.ipv6_src, &ip6->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, 16);
		if (!routed_to_device(skb, &fib))
			return TC_ACT_OK;
	}
	__be32 source = mapped_to_ipv4(eam, &ip6->saddr);
	struct iphdr ip = {};
	struct ipv4_fragment_fields fields = {
		.id = bpf_htons(fragment.identification & 0xffff),
		.frag_off = bpf_htons(fragment.offset | (fragment.more ? IPV4_MF : 0)),
	};
	__u8 hops = entry == AT_DEVICE ? given_back(ip6->hop_limit) : ip6->hop_limit;
	if (ipv4_from(&ip, ip6, payload + sizeof(struct iphdr), hops, source,
		      destination, fragment.kind != WHOLE ? AS_FRAGMENT : BY_SIZE, fields))
		return dropped(NEMO_XLAT_FAILED);

	__u32 l4 = sizeof(struct ethhdr) + sizeof(struct ipv6hdr);
	__u8 protocol = ip6->nexthdr;
	if (fragment.kind == LATER_FRAGMENT || csum_at < 0) {
		/* No transport header here, or not one of ours to change. */
	} else if (protocol == NEMO_IPPROTO_ICMPV6) {
		struct icmp_start *icmp6 = (void *)(ip6 + 1);
		if ((void *)(icmp6 + 1) > data_end)
			return refused(entry, NEMO_XLAT_MALFORMED);
		__u8 type;
		if (icmp6->type == ICMPV6_ECHO_REQUEST)
			type = ICMP_ECHO;
		else if (icmp6->type == ICMPV6_ECHO_REPLY)
			type = ICMP_ECHOREPLY;
		else
			return refused(entry, NEMO_XLAT_ICMP_UNTRANSLATED);
		struct pseudo6 pseudo = {};
		pseudo.saddr = ip6->saddr;
		pseudo.daddr = ip6->daddr;
		pseudo.length = bpf_htonl(payload);
		pseudo.next_header = NEMO_IPPROTO_ICMPV6;
		if (retype_echo(skb, l4, icmp6, type, &pseudo, 0))
			return dropped(NEMO_XLAT_FAILED);
	} else {
		/* Branches, not a variable offset: pointer arithmetic with a
		 * scalar is refused without CAP_PERFMON, which the daemons do
		 * not have. */
		if (protocol == IPPROTO_UDP) {
			struct udphdr *udp = (void *)(ip6 + 1);
			if ((void *)(udp + 1) > data_end)
				return refused(entry, NEMO_XLAT_MALFORMED);
		} else {
			struct tcp_start *tcp = (void *)(ip6 + 1);
			if ((void *)(tcp + 1) > data_end)
				return refused(entry, NEMO_XLAT_MALFORMED);
		}
		__be32 new_addresses[2] = { source, destination };
		__s64 sum = bpf_csum_diff((__be32 *)&ip6->saddr, 32, new_addresses,
					  sizeof(new_addresses), 0);
		__u64 flags = BPF_F_PSEUDO_HDR | (protocol == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
		if (sum < 0 || bpf_l4_csum_replace(skb, l4 + csum_at, 0, sum, flags))
			return dropped(NEMO_XLAT_FAILED);
	}
	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0) ||
	    bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &ip, sizeof(ip), 0))
		return dropped(NEMO_XLAT_FAILED);
	return translated(skb, ETH_P_IP, NEMO_XLAT_6TO4, entry);
}

/* A frame by its Ethernet type. */
static __always_inline int translate(struct __sk_buff *skb, enum entry entry)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return refused(entry, NEMO_XLAT_MALFORMED);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return translate_ipv4(skb, entry);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return translate_ipv6(skb, entry);
	return refused(entry, NEMO_XLAT_PROTOCOL);
}

/* tc egress of nemo-xlat: every packet routed there is to be translated. */
SEC("tc")
int nemo_translate(struct __sk_buff *skb)
{
	return translate(skb, AT_DEVICE);
}

/* tc ingress of an interface packets to be translated arrive on (the IPv4
 * side; the uplink, after the tunnel's decapsulation): the common case
 * translated right there, the kernel forwarding it once (the device's way
 * forwards it twice). Everything else goes on untouched. */
SEC("tc")
int nemo_translate_at_arrival(struct __sk_buff *skb)
{
	return translate(skb, AT_ARRIVAL);
}
