/* SPDX-License-Identifier: Apache-2.0 OR BSD-2-Clause
 *
 * ICMP errors across the translator (RFC 7915 §4.2-4.3, §5.2-5.3):
 * included by translator.bpf.c after its helpers. The message's type and
 * code are translated, and the packet in error inside it too (its
 * addresses by the same mapping, its TTL not decremented); the IPv4 packet
 * in error grows by 20 octets into IPv6 and the IPv6 one shrinks by 20,
 * so the packet is reshaped around them:
 *
 *   IPv4 20 | ICMP 8 | IPv4 20 | rest      IPv6 40 | ICMPv6 8 | IPv6 40 | rest
 *
 * bpf_skb_change_proto changes the outer header's room and
 * bpf_skb_adjust_room (at the network layer: right after the outer header)
 * the inner's; the headers are written whole, the rest stays where it is.
 * The checksum is the old one with the old headers taken out and the new
 * ones (and ICMPv6's pseudo-header) put in: the rest is not read. The
 * packet in error's TCP or UDP checksum, when quoted, is adjusted for its
 * new pseudo-header as a packet's own is (RFC 7915 §4.3: "translated just
 * like a normal IP packet"); a zero UDP checksum stays zero.
 *
 * An ICMPv6 error from an address no mapping holds (a router on the IPv6
 * side, the home agent itself) leaves from the RFC 6791 address in
 * nemo_xlat_config, or is dropped (counted icmp_unmapped_source) when none
 * is set.
 */
#ifndef NEMO_XLAT_ICMP_H
#define NEMO_XLAT_ICMP_H

#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4

/* What an ICMPv4 error becomes (RFC 7915 §4.2); 0 in `ok` drops it. */
struct icmp_translation {
	__u8 ok;
	__u8 type;
	__u8 code;
	__be32 rest; /* the ICMPv6 header's last four octets */
};

/* RFC 1191 §7's plateaus, for a Fragmentation Needed without an MTU. */
static __always_inline __u32 plateau(__u32 total)
{
	if (total > 65535)
		return 65535;
	if (total > 32000)
		return 32000;
	if (total > 17914)
		return 17914;
	if (total > 8166)
		return 8166;
	if (total > 4352)
		return 4352;
	if (total > 2002)
		return 2002;
	return 1280;
}

/* RFC 7915 §4.2, Figure 3: an IPv4 pointer's IPv6 twin; -1: none. */
static __always_inline int pointer_4to6(__u8 pointer)
{
	if (pointer <= 1)
		return pointer;
	if (pointer <= 3)
		return 4;
	if (pointer == 8)
		return 7;
	if (pointer == 9)
		return 6;
	if (pointer >= 12 && pointer <= 15)
		return 8;
	if (pointer >= 16 && pointer <= 19)
		return 24;
	return -1;
}

/* RFC 7915 §5.2, Figure 6: an IPv6 pointer's IPv4 twin; -1: none. */
static __always_inline int pointer_6to4(__u32 pointer)
{
	if (pointer <= 1)
		return pointer;
	if (pointer == 4 || pointer == 5)
		return 2;
	if (pointer == 6)
		return 9;
	if (pointer == 7)
		return 8;
	if (pointer >= 8 && pointer <= 23)
		return 12;
	if (pointer >= 24 && pointer <= 39)
		return 16;
	return -1;
}

/* RFC 7915 §4.2: an ICMPv4 error's type and code in ICMPv6. */
static __always_inline struct icmp_translation error_4to6(const struct icmp_start *icmp,
							  __u16 inner_total)
{
	struct icmp_translation t = { .ok = 1 };
	__u8 code = icmp->code;
	if (icmp->type == ICMP_TIME_EXCEEDED) {
		t.type = ICMPV6_TIME_EXCEED;
		t.code = code;
		return t;
	}
	if (icmp->type == ICMP_PARAMETERPROB) {
		int pointer = pointer_4to6(((const __u8 *)&icmp->rest)[0]);
		if ((code != 0 && code != 2) || pointer < 0) {
			t.ok = 0;
			return t;
		}
		t.type = ICMPV6_PARAMPROB;
		t.code = 0;
		t.rest = bpf_htonl(pointer);
		return t;
	}
	t.type = ICMPV6_DEST_UNREACH;
	switch (code) {
	case 0: case 1: case 5: case 6: case 7: case 8: case 11: case 12:
		t.code = 0;
		break;
	case 2: /* Protocol Unreachable: a Parameter Problem at Next Header */
		t.type = ICMPV6_PARAMPROB;
		t.code = 1;
		t.rest = bpf_htonl(6);
		break;
	case 3:
		t.code = 4;
		break;
	case 4: { /* Fragmentation Needed: Packet Too Big, 20 more */
		__u32 mtu = bpf_ntohs(((const __be16 *)&icmp->rest)[1]);
		mtu = mtu ? mtu + 20 : plateau(inner_total);
		t.type = ICMPV6_PKT_TOOBIG;
		t.code = 0;
		t.rest = bpf_htonl(mtu < 1280 ? 1280 : mtu);
		break;
	}
	case 9: case 10: case 13: case 15:
		t.code = 1;
		break;
	default:
		t.ok = 0;
	}
	return t;
}

/* RFC 7915 §5.2: an ICMPv6 error's type and code in ICMPv4. */
static __always_inline struct icmp_translation error_6to4(const struct icmp_start *icmp)
{
	struct icmp_translation t = { .ok = 1 };
	__u8 code = icmp->code;
	switch (icmp->type) {
	case ICMPV6_DEST_UNREACH:
		t.type = ICMP_DEST_UNREACH;
		if (code == 0 || code == 2 || code == 3)
			t.code = 1;
		else if (code == 1)
			t.code = 10;
		else if (code == 4)
			t.code = 3;
		else
			t.ok = 0;
		break;
	case ICMPV6_PKT_TOOBIG: {
		__u32 mtu = bpf_ntohl(icmp->rest);
		mtu = mtu < 20 + 68 ? 68 : mtu - 20;
		if (mtu > 0xffff)
			mtu = 0xffff;
		t.type = ICMP_DEST_UNREACH;
		t.code = 4;
		t.rest = bpf_htonl(mtu);
		break;
	}
	case ICMPV6_TIME_EXCEED:
		t.type = ICMP_TIME_EXCEEDED;
		t.code = code;
		break;
	case ICMPV6_PARAMPROB:
		if (code == 0) {
			int pointer = pointer_6to4(bpf_ntohl(icmp->rest));
			if (pointer < 0) {
				t.ok = 0;
				break;
			}
			t.type = ICMP_PARAMETERPROB;
			t.code = 0;
			t.rest = bpf_htonl((__u32)pointer << 24);
		} else if (code == 1) {
			t.type = ICMP_DEST_UNREACH;
			t.code = 2;
		} else {
			t.ok = 0;
		}
		break;
	default:
		t.ok = 0;
	}
	return t;
}

static __always_inline __u16 fold(__s64 sum)
{
	__u32 s = (__u32)sum;
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* The four octets of a quoted TCP or UDP header that hold its checksum
 * (UDP: length and checksum; TCP: checksum and urgent pointer), and where
 * the checksum is among them. */
struct quoted_word {
	__be32 word;
	__u8 present;
	__u8 checksum_at; /* 2 (UDP) or 0 (TCP) */
	__u8 offset;      /* from the transport header */
};

/* The quoted checksum word of the packet in error whose transport header
 * starts `l4` octets into the packet, if it is there (and, for UDP, not
 * zero). Read with a helper at an offset: a packet pointer moved by an
 * offset that depends on the protocol is refused without CAP_PERFMON. */
static __always_inline struct quoted_word quoted_word(struct __sk_buff *skb, __u8 protocol,
						      __u32 l4)
{
	struct quoted_word q = {};
	if (protocol == IPPROTO_UDP) {
		q.checksum_at = 2;
		q.offset = 4;
	} else if (protocol == IPPROTO_TCP) {
		q.checksum_at = 0;
		q.offset = 16;
	} else {
		return q;
	}
	if (bpf_skb_load_bytes(skb, l4 + q.offset, &q.word, 4) < 0)
		return q;
	__u16 halves[2];
	__builtin_memcpy(halves, &q.word, 4);
	/* A UDP checksum of zero: none was computed; it stays so. */
	q.present = !(protocol == IPPROTO_UDP && halves[1] == 0);
	return q;
}

/* The word with its checksum adjusted from the `from` addresses' sum to
 * the `to` addresses' (the pseudo-header's other fields sum the same). */
static __always_inline int adjusted_word(struct quoted_word *q, __be32 *from, __u32 from_size,
					 __be32 *to, __u32 to_size)
{
	if (!q->present)
		return 0;
	/* Halves by name, not by a variable offset into the stack (refused
	 * without CAP_PERFMON). */
	__u16 halves[2];
	__builtin_memcpy(halves, &q->word, 4);
	__u16 old = q->checksum_at ? halves[1] : halves[0];
	__s64 sum = bpf_csum_diff(from, from_size, to, to_size, (__u16)~old);
	if (sum < 0)
		return -1;
	__u16 new = ~fold(sum);
	if (q->checksum_at)
		halves[1] = new;
	else
		halves[0] = new;
	__builtin_memcpy(&q->word, halves, 4);
	return 0;
}

/* The offsets of the headers of an ICMP error, as it arrives and as it
 * leaves (after the Ethernet header). */
#define ERR4_ICMP (sizeof(struct ethhdr) + sizeof(struct iphdr))
#define ERR4_INNER (ERR4_ICMP + sizeof(struct icmp_start))
#define ERR6_ICMP (sizeof(struct ethhdr) + sizeof(struct ipv6hdr))
#define ERR6_INNER (ERR6_ICMP + sizeof(struct icmp_start))

/* IPv4 -> IPv6 of an ICMPv4 error to a tenant's mapped address (`eam`). */
static __always_inline int icmp4_error(struct __sk_buff *skb, const struct nemo_eam4 *eam)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct icmp_start *icmp = data + ERR4_ICMP;
	struct iphdr *inner = data + ERR4_INNER;
	if ((void *)(inner + 1) > data_end)
		return dropped(NEMO_XLAT_MALFORMED);
	if (inner->ihl != 5 || inner->version != 4)
		return dropped(NEMO_XLAT_IPV4_OPTIONS);
	if (inner->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET))
		return dropped(NEMO_XLAT_FRAGMENT);
	/* An error about an error is not answered (RFC 1812 §4.3.2.7). */
	if (inner->protocol == IPPROTO_ICMP) {
		struct icmp_start *about = (void *)(inner + 1);
		if ((void *)(about + 1) > data_end)
			return dropped(NEMO_XLAT_MALFORMED);
		if (about->type != ICMP_ECHO && about->type != ICMP_ECHOREPLY)
			return dropped(NEMO_XLAT_ICMP_UNTRANSLATED);
	}
	struct icmp_translation t = error_4to6(icmp, bpf_ntohs(inner->tot_len));
	if (!t.ok)
		return dropped(NEMO_XLAT_ICMP_UNTRANSLATED);
	if (well_known(eam->translation) && non_global_ipv4(ip->saddr))
		return dropped(NEMO_XLAT_NOT_GLOBAL);
	/* The packet in error came from the tenant: its source is mapped. */
	struct nemo_ipv4_prefix key = { .prefixlen = 32 };
	__builtin_memcpy(key.addr, &inner->saddr, 4);
	struct nemo_eam4 *from = bpf_map_lookup_elem(&nemo_eam4, &key);
	if (!from)
		return dropped(NEMO_XLAT_UNMAPPED);
	__u16 total = bpf_ntohs(ip->tot_len);
	if (total < ERR4_INNER - sizeof(struct ethhdr) + sizeof(struct iphdr) ||
	    total > skb->len - sizeof(struct ethhdr))
		return dropped(NEMO_XLAT_MALFORMED);

	/* 40 more: 20 for the outer header, 20 for the inner. */
	struct ipv6hdr outer = {};
	ipv6_from(&outer, ip, total - sizeof(struct iphdr) + 20, given_back(ip->ttl));
	embedded(&outer.saddr, eam->translation, ip->saddr);
	mapped_to_ipv6(&outer.daddr, eam, ip->daddr);

	/* The packet in error, translated as the tenant sent it (its TTL
	 * as it was, RFC 7915 §4.3). */
	__u16 inner_total = bpf_ntohs(inner->tot_len);
	struct ipv6hdr in6 = {};
	ipv6_from(&in6, inner, inner_total > 20 ? inner_total - 20 : 0, inner->ttl);
	mapped_to_ipv6(&in6.saddr, from, inner->saddr);
	embedded(&in6.daddr, eam->translation, inner->daddr);

	/* The quoted transport checksum, for the new pseudo-header. */
	struct quoted_word quoted =
		quoted_word(skb, inner->protocol, ERR4_INNER + sizeof(struct iphdr));
	__be32 old_word = quoted.word;
	__be32 old_addresses[2] = { inner->saddr, inner->daddr };
	if (adjusted_word(&quoted, old_addresses, sizeof(old_addresses), (__be32 *)&in6.saddr, 32))
		return dropped(NEMO_XLAT_FAILED);

	/* The old headers (checksum zeroed) out, the new ones in. */
	struct {
		struct icmp_start icmp;
		struct iphdr ip;
		__be32 word;
	} __attribute__((packed)) old_headers = { *icmp, *inner, old_word };
	old_headers.icmp.checksum = 0;
	struct {
		struct icmp_start icmp;
		struct ipv6hdr ip;
		__be32 word;
	} __attribute__((packed)) new_headers = {};
	new_headers.icmp.type = t.type;
	new_headers.icmp.code = t.code;
	new_headers.icmp.rest = t.rest;
	new_headers.ip = in6;
	new_headers.word = quoted.word;
	struct pseudo6 pseudo = {};
	pseudo.saddr = outer.saddr;
	pseudo.daddr = outer.daddr;
	pseudo.length = bpf_htonl(total - sizeof(struct iphdr) + 20);
	pseudo.next_header = NEMO_IPPROTO_ICMPV6;
	__s64 sum = bpf_csum_diff((__be32 *)&old_headers, sizeof(old_headers),
				  (__be32 *)&new_headers, sizeof(new_headers),
				  (__u16)~icmp->checksum);
	if (sum < 0)
		return dropped(NEMO_XLAT_FAILED);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&pseudo, sizeof(pseudo), (__u32)sum);
	if (sum < 0)
		return dropped(NEMO_XLAT_FAILED);
	new_headers.icmp.checksum = ~fold(sum);

	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0) ||
	    bpf_skb_adjust_room(skb, 20, BPF_ADJ_ROOM_NET, 0) ||
	    bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &outer, sizeof(outer), 0) ||
	    bpf_skb_store_bytes(skb, ERR6_ICMP, &new_headers,
				sizeof(new_headers) - sizeof(new_headers.word), 0))
		return dropped(NEMO_XLAT_FAILED);
	if (quoted.present &&
	    bpf_skb_store_bytes(skb, ERR6_INNER + sizeof(struct ipv6hdr) + (quoted.offset & 16) +
					 (quoted.offset & 4),
				&quoted.word, 4, 0))
		return dropped(NEMO_XLAT_FAILED);
	return translated(skb, ETH_P_IPV6, NEMO_XLAT_4TO6, AT_DEVICE);
}

/* IPv6 -> IPv4 of an ICMPv6 error to an IPv4 peer. */
static __always_inline int icmp6_error(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	struct icmp_start *icmp = data + ERR6_ICMP;
	struct ipv6hdr *inner = data + ERR6_INNER;
	if ((void *)(inner + 1) > data_end)
		return dropped(NEMO_XLAT_MALFORMED);
	if (inner->version != 6)
		return dropped(NEMO_XLAT_MALFORMED);
	if (inner->nexthdr != IPPROTO_TCP && inner->nexthdr != IPPROTO_UDP &&
	    inner->nexthdr != NEMO_IPPROTO_ICMPV6)
		return dropped(NEMO_XLAT_PROTOCOL);
	if (inner->nexthdr == NEMO_IPPROTO_ICMPV6) {
		struct icmp_start *about = (void *)(inner + 1);
		if ((void *)(about + 1) > data_end)
			return dropped(NEMO_XLAT_MALFORMED);
		if (about->type != ICMPV6_ECHO_REQUEST && about->type != ICMPV6_ECHO_REPLY)
			return dropped(NEMO_XLAT_ICMP_UNTRANSLATED);
	}
	struct icmp_translation t = error_6to4(icmp);
	if (!t.ok)
		return dropped(NEMO_XLAT_ICMP_UNTRANSLATED);
	/* The packet in error went to the tenant: its destination is mapped,
	 * and the mapping says the prefix both peers' addresses are in. */
	struct nemo_ipv6_prefix key = { .prefixlen = 128 };
	__builtin_memcpy(key.addr, &inner->daddr, 16);
	struct nemo_eam6 *to = bpf_map_lookup_elem(&nemo_eam6, &key);
	if (!to)
		return dropped(NEMO_XLAT_UNMAPPED);
	const __u32 *prefix = (const __u32 *)to->translation;
	if (ip6->daddr.in6_u.u6_addr32[0] != prefix[0] ||
	    ip6->daddr.in6_u.u6_addr32[1] != prefix[1] ||
	    ip6->daddr.in6_u.u6_addr32[2] != prefix[2] ||
	    inner->saddr.in6_u.u6_addr32[0] != prefix[0] ||
	    inner->saddr.in6_u.u6_addr32[1] != prefix[1] ||
	    inner->saddr.in6_u.u6_addr32[2] != prefix[2])
		return dropped(NEMO_XLAT_OTHER_PREFIX);
	__be32 destination = ip6->daddr.in6_u.u6_addr32[3];
	if (illegal_ipv4(destination))
		return dropped(NEMO_XLAT_ILLEGAL_ADDRESS);
	if (well_known(to->translation) && non_global_ipv4(destination))
		return dropped(NEMO_XLAT_NOT_GLOBAL);
	/* The error's own source: a mapped tenant address, or RFC 6791's. */
	__be32 source;
	__builtin_memcpy(key.addr, &ip6->saddr, 16);
	struct nemo_eam6 *from = bpf_map_lookup_elem(&nemo_eam6, &key);
	if (from) {
		source = mapped_to_ipv4(from, &ip6->saddr);
	} else {
		__u32 zero = 0;
		struct nemo_xlat_config *config = bpf_map_lookup_elem(&nemo_xlat_config, &zero);
		if (!config || !config->icmp_source)
			return dropped(NEMO_XLAT_ICMP_UNMAPPED_SOURCE);
		source = config->icmp_source;
	}
	__u16 payload = bpf_ntohs(ip6->payload_len);
	if (payload < sizeof(struct icmp_start) + sizeof(struct ipv6hdr) ||
	    payload > skb->len - ERR6_ICMP)
		return dropped(NEMO_XLAT_MALFORMED);

	/* The packet in error as the peer sent it (its TTL as it was). */
	struct iphdr in4 = {};
	if (ipv4_from(&in4, inner, bpf_ntohs(inner->payload_len) + sizeof(struct iphdr),
		      inner->hop_limit, inner->saddr.in6_u.u6_addr32[3],
		      mapped_to_ipv4(to, &inner->daddr), QUOTED, UNFRAGMENTED))
		return dropped(NEMO_XLAT_FAILED);
	struct iphdr ip = {};
	if (ipv4_from(&ip, ip6, payload, given_back(ip6->hop_limit), source, destination, BY_SIZE,
		      UNFRAGMENTED))
		return dropped(NEMO_XLAT_FAILED);

	struct quoted_word quoted =
		quoted_word(skb, inner->nexthdr, ERR6_INNER + sizeof(struct ipv6hdr));
	__be32 old_word = quoted.word;
	__be32 new_addresses[2] = { in4.saddr, in4.daddr };
	if (adjusted_word(&quoted, (__be32 *)&inner->saddr, 32, new_addresses, sizeof(new_addresses)))
		return dropped(NEMO_XLAT_FAILED);

	struct {
		struct icmp_start icmp;
		struct ipv6hdr ip;
		__be32 word;
	} __attribute__((packed)) old_headers = { *icmp, *inner, old_word };
	old_headers.icmp.checksum = 0;
	struct {
		struct icmp_start icmp;
		struct iphdr ip;
		__be32 word;
	} __attribute__((packed)) new_headers = {};
	new_headers.icmp.type = t.type;
	new_headers.icmp.code = t.code;
	new_headers.icmp.rest = t.rest;
	new_headers.ip = in4;
	new_headers.word = quoted.word;
	struct pseudo6 pseudo = {};
	pseudo.saddr = ip6->saddr;
	pseudo.daddr = ip6->daddr;
	pseudo.length = bpf_htonl(payload);
	pseudo.next_header = NEMO_IPPROTO_ICMPV6;
	__s64 sum = bpf_csum_diff((__be32 *)&pseudo, sizeof(pseudo), NULL, 0,
				  (__u16)~icmp->checksum);
	if (sum < 0)
		return dropped(NEMO_XLAT_FAILED);
	sum = bpf_csum_diff((__be32 *)&old_headers, sizeof(old_headers), (__be32 *)&new_headers,
			    sizeof(new_headers), (__u32)sum);
	if (sum < 0)
		return dropped(NEMO_XLAT_FAILED);
	new_headers.icmp.checksum = ~fold(sum);

	if (bpf_skb_adjust_room(skb, -20, BPF_ADJ_ROOM_NET, 0) ||
	    bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0) ||
	    bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &ip, sizeof(ip), 0) ||
	    bpf_skb_store_bytes(skb, ERR4_ICMP, &new_headers,
				sizeof(new_headers) - sizeof(new_headers.word), 0))
		return dropped(NEMO_XLAT_FAILED);
	if (quoted.present &&
	    bpf_skb_store_bytes(skb, ERR4_INNER + sizeof(struct iphdr) + (quoted.offset & 16) +
					 (quoted.offset & 4),
				&quoted.word, 4, 0))
		return dropped(NEMO_XLAT_FAILED);
	return translated(skb, ETH_P_IP, NEMO_XLAT_6TO4, AT_DEVICE);
}

#endif
