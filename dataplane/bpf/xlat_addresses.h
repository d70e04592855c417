/* SPDX-License-Identifier: Apache-2.0 OR BSD-2-Clause
 *
 * Addresses across the translator (included by translator.bpf.c): the
 * tenant's by its Explicit Address Mapping (RFC 7757 §3.2), the peer's in
 * the mapping's translation prefix (RFC 6052 §2.2), and the addresses no
 * packet may carry (RFC 7915 §4.1, §5.1; RFC 6052 §3.1).
 */
#ifndef NEMO_XLAT_ADDRESSES_H
#define NEMO_XLAT_ADDRESSES_H

/* The well-known prefix 64:ff9b::/96 (RFC 6052 §2.1), its first 12 octets. */
static __always_inline int well_known(const __u8 *prefix)
{
	const __u32 *x = (const __u32 *)prefix;
	return x[0] == bpf_htonl(0x0064ff9b) && x[1] == 0 && x[2] == 0;
}

static __always_inline int in_block(__u32 address, __u32 network, int length)
{
	__u32 mask = length ? ~0U << (32 - length) : 0;
	return (address & mask) == network;
}

/* RFC 7915 §4.1 and §5.1: addresses no packet may come from or go to
 * ("this network", loopback, multicast, reserved, limited broadcast). */
static __always_inline int illegal_ipv4(__be32 be)
{
	__u32 a = bpf_ntohl(be);
	return in_block(a, 0x00000000, 8) || in_block(a, 0x7f000000, 8) ||
	       in_block(a, 0xe0000000, 4) || in_block(a, 0xf0000000, 4);
}

/* RFC 6052 §3.1: the well-known prefix MUST NOT carry non-global IPv4
 * addresses: RFC 1918's, shared (RFC 6598), link-local, IETF protocol
 * assignments, documentation (RFC 5737) and benchmarking (RFC 2544). */
static __always_inline int non_global_ipv4(__be32 be)
{
	__u32 a = bpf_ntohl(be);
	return in_block(a, 0x0a000000, 8) || in_block(a, 0xac100000, 12) ||
	       in_block(a, 0xc0a80000, 16) || in_block(a, 0x64400000, 10) ||
	       in_block(a, 0xa9fe0000, 16) || in_block(a, 0xc0000000, 24) ||
	       in_block(a, 0xc0000200, 24) || in_block(a, 0xc6336400, 24) ||
	       in_block(a, 0xcb007100, 24) || in_block(a, 0xc6120000, 15);
}

/* The low `32 - length` bits of `host` under the first 32 bits' prefix
 * (RFC 7757 §3.2: a block maps bit for bit). */
static __always_inline __be32 with_host_bits(__be32 network, __be32 host, int length)
{
	__u32 mask = length >= 32 ? ~0U : (length ? ~0U << (32 - length) : 0);
	return bpf_htonl((bpf_ntohl(network) & mask) | (bpf_ntohl(host) & ~mask));
}

/* An IPv4 peer written in a /96 translation prefix (RFC 6052 §2.2). */
static __always_inline void embedded(struct in6_addr *out, const __u8 *translation, __be32 ipv4)
{
	__builtin_memcpy(out, translation, 12);
	__builtin_memcpy((__u8 *)out + 12, &ipv4, 4);
}

/* A tenant's IPv4 address as its mapping's IPv6 side (RFC 7757 §3.2). */
static __always_inline void mapped_to_ipv6(struct in6_addr *out, const struct nemo_eam4 *eam,
					   __be32 ipv4)
{
	__builtin_memcpy(out, eam->ipv6, 12);
	__be32 last;
	__builtin_memcpy(&last, eam->ipv6 + 12, 4);
	__be32 host = with_host_bits(last, ipv4, eam->ipv6_length - 96);
	__builtin_memcpy((__u8 *)out + 12, &host, 4);
}

/* A tenant's IPv6 address as its mapping's IPv4 side. */
static __always_inline __be32 mapped_to_ipv4(const struct nemo_eam6 *eam, const struct in6_addr *ipv6)
{
	__be32 network;
	__builtin_memcpy(&network, eam->ipv4, 4);
	return with_host_bits(network, ipv6->in6_u.u6_addr32[3], eam->ipv4_length);
}

#endif
