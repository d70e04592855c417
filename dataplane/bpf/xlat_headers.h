/* SPDX-License-Identifier: Apache-2.0 OR BSD-2-Clause
 *
 * What sits between the IP header and the transport header, across the
 * translator (included by translator.bpf.c after its helpers):
 *
 * - IPv4 options are ignored (RFC 7915 §4.1), but an unexpired source
 *   route is not translated (counted source_route; the ICMPv4 Source Route
 *   Failed the RFC says SHOULD be sent is not).
 * - IPv6 Hop-by-Hop, Destination Options and Routing headers with no
 *   segments left are skipped (RFC 7915 §5.1); a Routing header with
 *   segments left is not translated (counted source_route).
 * - Fragments are translated one by one (RFC 7915 §4.1, §5.1.1): an IPv4
 *   fragment gets a Fragment header with its offset, M flag and
 *   Identification; an IPv6 Fragment header's become the IPv4 header's.
 *   An IPv4 packet not fragmented gets no Fragment header, DF set or not
 *   (RFC 7915 §4, RFC 8021 §4: no atomic fragments): the kernel fragments
 *   a DF-clear packet too big to fit once translated before it reaches
 *   the program (the pools' route MTU is lowest-ipv6-mtu - 28).
 *
 * Options and extension headers are taken out of the packet before it is
 * translated (bpf_skb_adjust_room at the network layer removes right
 * after the fixed header), so that the translation sees a 20- or 40-octet
 * header with the transport header behind it. Read with helpers at
 * offsets: packet and stack pointers moved by a variable are refused
 * without CAP_PERFMON, which the daemons do not have; the loops are
 * unrolled (xlat_checksum.h says why).
 */
#ifndef NEMO_XLAT_HEADERS_H
#define NEMO_XLAT_HEADERS_H

#define IPV4_OPTION_END 0
#define IPV4_OPTION_NOP 1
#define IPV4_OPTION_LSRR 131 /* RFC 791 §3.1 */
#define IPV4_OPTION_SSRR 137
#define IPV6_HOP_BY_HOP 0 /* RFC 8200 §4 */
#define IPV6_ROUTING 43
#define IPV6_FRAGMENT 44
#define IPV6_DESTINATION 60
#define IPV6_AH 51
#define IPV6_MOBILITY 135
/* The longest IPv4 options area (RFC 791: IHL at most 15). */
#define IPV4_OPTIONS_MAX 40
/* Extension headers walked before the transport header; a packet with
 * more is not translated (counted malformed). */
#define IPV6_EXTENSIONS_MAX 6

/* Which part of a datagram a packet is (RFC 791 §3.2, RFC 8200 §4.5). */
enum fragment_kind {
	WHOLE = 0,
	/* Offset 0, more to come: the transport header is here. */
	FIRST_FRAGMENT,
	/* No transport header: nothing of it is read or adjusted. */
	LATER_FRAGMENT,
};

/* A fragment's place in its datagram, carried across. */
struct fragment {
	__u32 identification; /* IPv4: its 16 bits; IPv6: the header's 32 */
	__u16 offset;         /* in 8-octet units */
	__u8 more;
	__u8 kind; /* enum fragment_kind */
};

/* The Fragment header (RFC 8200 §4.5):
 *
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |  Next Header  |   Reserved    |      Fragment Offset    |Res|M|
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                         Identification                        |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 */
struct fragment_header {
	__u8 next_header;
	__u8 reserved;
	__be16 offset_and_more;
	__be32 identification;
};

static __always_inline enum fragment_kind kind_of(__u16 offset, __u8 more)
{
	if (offset)
		return LATER_FRAGMENT;
	return more ? FIRST_FRAGMENT : WHOLE;
}

/* An IPv4 header's fragment fields. */
static __always_inline struct fragment ipv4_fragment(const struct iphdr *ip)
{
	struct fragment f = {};
	__u16 flags = bpf_ntohs(ip->frag_off);
	f.offset = flags & IPV4_OFFSET;
	f.more = (flags & IPV4_MF) != 0;
	f.identification = bpf_ntohs(ip->id);
	f.kind = kind_of(f.offset, f.more);
	return f;
}

/* The Fragment header for an IPv4 fragment (RFC 7915 §4.1): its offset
 * and M flag copied, the Identification's low 16 bits from IPv4's. */
static __always_inline struct fragment_header fragment_header_for(const struct fragment *f,
								  __u8 next_header)
{
	struct fragment_header h = {};
	h.next_header = next_header;
	h.offset_and_more = bpf_htons((f->offset << 3) | f->more);
	h.identification = bpf_htonl(f->identification);
	return h;
}

/* RFC 791 §3.1: a source route whose pointer has not passed its end. */
static __always_inline int unexpired_source_route(struct __sk_buff *skb, __u32 option, __u8 length)
{
	__u8 pointer;
	if (length < 3 || bpf_skb_load_bytes(skb, option + 2, &pointer, 1))
		return 0;
	return pointer <= length;
}

/* Takes an IPv4 packet's options out (RFC 7915 §4.1: "they MUST be
 * ignored"), leaving a 20-octet header, the length fixed; its checksum is
 * not (the header is replaced whole). TC_ACT_OK when the packet goes on,
 * else the verdict (counted). */
static __always_inline int ipv4_without_options(struct __sk_buff *skb)
{
	__u8 start[4]; /* version and IHL, TOS, total length */
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), start, sizeof(start)))
		return dropped(NEMO_XLAT_MALFORMED);
	__u32 ihl = start[0] & 0x0f;
	if (start[0] >> 4 != 4 || ihl < 5)
		return dropped(NEMO_XLAT_MALFORMED);
	if (ihl == 5)
		return TC_ACT_OK;
	__u32 length = (ihl - 5) * 4;
	__u32 first = sizeof(struct ethhdr) + sizeof(struct iphdr);
	__u32 at = first;
#pragma clang loop unroll(full)
	for (int n = 0; n < IPV4_OPTIONS_MAX; n++) {
		if (at >= first + length)
			break;
		__u8 type;
		if (bpf_skb_load_bytes(skb, at, &type, 1))
			return dropped(NEMO_XLAT_MALFORMED);
		if (type == IPV4_OPTION_END)
			break;
		if (type == IPV4_OPTION_NOP) {
			at += 1;
			continue;
		}
		__u8 option_length;
		if (bpf_skb_load_bytes(skb, at + 1, &option_length, 1) || option_length < 2 ||
		    at + option_length > first + length)
			return dropped(NEMO_XLAT_MALFORMED);
		if ((type == IPV4_OPTION_LSRR || type == IPV4_OPTION_SSRR) &&
		    unexpired_source_route(skb, at, option_length))
			return dropped(NEMO_XLAT_SOURCE_ROUTE);
		at += option_length;
	}
	__u16 total = ((__u16)start[2] << 8) | start[3];
	if (total < sizeof(struct iphdr) + length)
		return dropped(NEMO_XLAT_MALFORMED);
	__u8 fixed[4] = { 0x45, start[1] };
	__be16 shorter = bpf_htons(total - length);
	__builtin_memcpy(fixed + 2, &shorter, 2);
	if (bpf_skb_adjust_room(skb, -(__s32)length, BPF_ADJ_ROOM_NET, 0) ||
	    bpf_skb_store_bytes(skb, sizeof(struct ethhdr), fixed, sizeof(fixed), 0))
		return dropped(NEMO_XLAT_FAILED);
	return TC_ACT_OK;
}

/* RFC 7915 §5.1.1: a Fragment header followed by an extension header
 * (ESP excepted, AH included) SHOULD be dropped. */
static __always_inline int extension(__u8 next_header)
{
	return next_header == IPV6_HOP_BY_HOP || next_header == IPV6_ROUTING ||
	       next_header == IPV6_FRAGMENT || next_header == IPV6_DESTINATION ||
	       next_header == IPV6_AH || next_header == IPV6_MOBILITY;
}

/* Takes an IPv6 packet's extension headers out: Hop-by-Hop, Destination
 * Options, Routing with no segments left skipped (RFC 7915 §5.1), a
 * Fragment header's fields kept in `fragment` (§5.1.1); Next Header and
 * Payload Length fixed. TC_ACT_OK when the packet goes on, else the
 * verdict (counted). */
static __always_inline int ipv6_without_extensions(struct __sk_buff *skb,
						   struct fragment *fragment)
{
	__u8 start[8]; /* version..flow label, payload length, next header, hops */
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), start, sizeof(start)))
		return dropped(NEMO_XLAT_MALFORMED);
	__u8 next = start[6];
	__u32 first = sizeof(struct ethhdr) + sizeof(struct ipv6hdr);
	__u32 at = first;
	int n;
#pragma clang loop unroll(full)
	for (n = 0; n < IPV6_EXTENSIONS_MAX; n++) {
		if (next == IPV6_FRAGMENT) {
			struct fragment_header h;
			if (bpf_skb_load_bytes(skb, at, &h, sizeof(h)))
				return dropped(NEMO_XLAT_MALFORMED);
			/* A second Fragment header among them. */
			if (extension(h.next_header))
				return dropped(NEMO_XLAT_FRAGMENT);
			__u16 field = bpf_ntohs(h.offset_and_more);
			fragment->offset = field >> 3;
			fragment->more = field & 1;
			fragment->identification = bpf_ntohl(h.identification);
			fragment->kind = kind_of(fragment->offset, fragment->more);
			/* RFC 8200 §4.5: a Fragment header with offset 0 and
			 * M clear (an atomic fragment) is a whole packet: its
			 * Identification is carried all the same. */
			if (fragment->kind == WHOLE)
				fragment->kind = FIRST_FRAGMENT;
			next = h.next_header;
			at += sizeof(h);
			continue;
		}
		if (next != IPV6_HOP_BY_HOP && next != IPV6_DESTINATION && next != IPV6_ROUTING)
			break;
		__u8 head[4]; /* next header, length in 8 octets - 1; routing type, segments left */
		if (bpf_skb_load_bytes(skb, at, head, sizeof(head)))
			return dropped(NEMO_XLAT_MALFORMED);
		if (next == IPV6_ROUTING && head[3] != 0)
			return dropped(NEMO_XLAT_SOURCE_ROUTE);
		next = head[0];
		at += ((__u32)head[1] + 1) * 8;
	}
	if (n == IPV6_EXTENSIONS_MAX)
		return dropped(NEMO_XLAT_MALFORMED);
	if (at == first)
		return TC_ACT_OK;
	__u32 length = at - first;
	__u16 payload = ((__u16)start[4] << 8) | start[5];
	if (length > payload || length > 0xfff)
		return dropped(NEMO_XLAT_MALFORMED);
	__u8 fixed[3];
	__be16 shorter = bpf_htons(payload - length);
	__builtin_memcpy(fixed, &shorter, 2);
	fixed[2] = next;
	if (bpf_skb_adjust_room(skb, -(__s32)length, BPF_ADJ_ROOM_NET, 0) ||
	    bpf_skb_store_bytes(skb, sizeof(struct ethhdr) + 4, fixed, sizeof(fixed), 0))
		return dropped(NEMO_XLAT_FAILED);
	return TC_ACT_OK;
}

#endif
