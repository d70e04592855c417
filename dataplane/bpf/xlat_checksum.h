/* SPDX-License-Identifier: Apache-2.0 OR BSD-2-Clause
 *
 * The checksum an IPv4 UDP datagram went without (RFC 768: zero means
 * none), computed for IPv6, where it is mandatory (RFC 8200 §8.1): RFC
 * 7915 §4.5's option 2, the default (`[translator] udp_zero_checksum`).
 * It is the one place the translator reads a whole payload: in chunks of
 * 512 octets (bpf_csum_diff's most), up to NEMO_ZERO_CHECKSUM_MAX; a
 * larger datagram without a checksum is dropped (counted
 * udp_zero_checksum). A first fragment without one is dropped too: a
 * stateless translator cannot sum what it has not seen (§4.5).
 * Included by translator.bpf.c after its helpers.
 */
#ifndef NEMO_XLAT_CHECKSUM_H
#define NEMO_XLAT_CHECKSUM_H

#define CHUNK 512
#define CHUNKS 18
/* The largest datagram summed: a 9000-octet jumbo frame's fits. */
#define NEMO_ZERO_CHECKSUM_MAX (CHUNK * CHUNKS)

struct chunk {
	__u8 octets[CHUNK];
};

/* A per-CPU buffer: 512 octets do not fit beside the rest on the stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct chunk);
	__uint(max_entries, 1);
} nemo_xlat_scratch SEC(".maps");

/* The UDP checksum (RFC 768, over IPv6's pseudo-header) of the `length`
 * octets from `l4`, whose checksum field is zero; 0 when it cannot be
 * summed (too long, a helper refused). */
static __always_inline __u16 udp_checksum(struct __sk_buff *skb, __u32 l4, __u32 length,
					  const struct pseudo6 *pseudo)
{
	__u32 zero = 0;
	struct chunk *chunk = bpf_map_lookup_elem(&nemo_xlat_scratch, &zero);
	if (!chunk || length > NEMO_ZERO_CHECKSUM_MAX)
		return 0;
	__s64 sum = bpf_csum_diff(NULL, 0, (__be32 *)pseudo, sizeof(*pseudo), 0);
	/* Unrolled: without CAP_PERFMON the verifier also walks the paths a
	 * mispredicted branch takes, and through a loop's back edge a
	 * mispredicted exit runs on past any bound. */
#pragma clang loop unroll(full)
	for (int n = 0; n < CHUNKS; n++) {
		__u32 done = n * CHUNK;
		if (sum < 0 || done >= length)
			break;
		__u32 left = length - done;
		if (left >= CHUNK) {
			if (bpf_skb_load_bytes(skb, l4 + done, chunk->octets, CHUNK))
				return 0;
			sum = bpf_csum_diff(NULL, 0, (__be32 *)chunk->octets, CHUNK, sum);
			continue;
		}
		/* The last chunk: its whole words, then the one to three
		 * octets after them in a word of zeros (RFC 768: padded). */
		__u32 words = left & (CHUNK - 4);
		if (words) {
			if (bpf_skb_load_bytes(skb, l4 + done, chunk->octets, words))
				return 0;
			sum = bpf_csum_diff(NULL, 0, (__be32 *)chunk->octets, words, sum);
		}
		__u32 tail = left & 3;
		if (tail && sum >= 0) {
			__be32 word = 0;
			if (bpf_skb_load_bytes(skb, l4 + done + words, &word, tail))
				return 0;
			sum = bpf_csum_diff(NULL, 0, &word, sizeof(word), sum);
		}
		break;
	}
	if (sum < 0)
		return 0;
	__u16 checksum = ~fold(sum);
	/* RFC 768: a computed zero is sent as all ones. */
	return checksum ? checksum : 0xffff;
}

/* RFC 7915 §4.5: the checksum of an IPv4 UDP datagram that has none, per
 * the configuration; 0 when it is dropped (counted). */
static __always_inline int zero_checksum_filled(struct __sk_buff *skb, __u32 l4,
						 const struct udphdr *udp, __u16 payload,
						 const struct ipv6hdr *ip6, enum fragment_kind kind)
{
	__u32 zero = 0;
	struct nemo_xlat_config *config = bpf_map_lookup_elem(&nemo_xlat_config, &zero);
	__u16 length = bpf_ntohs(udp->len);
	if (length < sizeof(struct udphdr) || length > payload)
		return dropped(NEMO_XLAT_MALFORMED);
	if (kind != WHOLE || !config || config->udp_zero_checksum == NEMO_UDP_ZERO_DROP)
		return dropped(NEMO_XLAT_UDP_ZERO_CHECKSUM);
	struct pseudo6 pseudo = {};
	pseudo.saddr = ip6->saddr;
	pseudo.daddr = ip6->daddr;
	pseudo.length = bpf_htonl(length);
	pseudo.next_header = IPPROTO_UDP;
	/* Summed as the octets lie in memory: stored as it is. */
	__u16 checksum = udp_checksum(skb, l4, length, &pseudo);
	if (!checksum)
		return dropped(NEMO_XLAT_UDP_ZERO_CHECKSUM);
	if (bpf_skb_store_bytes(skb, l4 + offsetof(struct udphdr, check), &checksum, 2,
				BPF_F_RECOMPUTE_CSUM))
		return dropped(NEMO_XLAT_FAILED);
	return TC_ACT_OK;
}

#endif
