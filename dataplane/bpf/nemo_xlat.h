/* SPDX-License-Identifier: Apache-2.0 OR BSD-2-Clause
 *
 * The layout of the translator's maps (translator.bpf.c), mirrored by
 * dataplane/src/bpf/translator.rs.
 */
#ifndef NEMO_XLAT_H
#define NEMO_XLAT_H

#include <linux/types.h>

/* Keys of the LPM tries: the length in bits, then the address. */
struct nemo_ipv4_prefix {
	__u32 prefixlen;
	__u8 addr[4];
};

struct nemo_ipv6_prefix {
	__u32 prefixlen;
	__u8 addr[16];
};

/* nemo_eam4's value, keyed by a mapping's IPv4 block: its IPv6 side (a
 * prefix of as many addresses: ipv6_length = 96 + the block's length) and
 * the translation prefix its tenant sees IPv4 peers in (a /96: 12 octets). */
struct nemo_eam4 {
	__u8 ipv6[16];
	__u8 translation[12];
	__u8 ipv6_length;
	__u8 reserved[3];
};

/* nemo_eam6's value, keyed by a mapping's IPv6 side: its IPv4 block and the
 * same translation prefix. */
struct nemo_eam6 {
	__u8 ipv4[4];
	__u8 translation[12];
	__u8 ipv4_length;
	__u8 reserved[3];
};

/* Slots of nemo_xlat_counters (Rust: XlatCounter). */
enum nemo_xlat_counter {
	NEMO_XLAT_4TO6 = 0,
	NEMO_XLAT_6TO4 = 1,
	NEMO_XLAT_UNMAPPED = 2,          /* no mapping for the tenant's side */
	NEMO_XLAT_OTHER_PREFIX = 3,      /* IPv6 peer not in the mapping's translation prefix */
	NEMO_XLAT_NOT_GLOBAL = 4,        /* RFC 6052 §3.1: non-global IPv4 in 64:ff9b::/96 */
	NEMO_XLAT_ILLEGAL_ADDRESS = 5,   /* RFC 7915 §4.1, §5.1 */
	NEMO_XLAT_FRAGMENT = 6,          /* ICMP fragments; a Fragment header before another extension */
	NEMO_XLAT_IPV4_OPTIONS = 7,      /* in a packet in error quoted by an ICMP error */
	NEMO_XLAT_PROTOCOL = 8,          /* ICMPv4 inside IPv6; neither IPv4 nor IPv6 */
	NEMO_XLAT_ICMP_UNTRANSLATED = 9, /* ICMP other than Echo and Echo Reply */
	NEMO_XLAT_UDP_ZERO_CHECKSUM = 10,
	NEMO_XLAT_MALFORMED = 11,        /* truncated, lengths that disagree */
	NEMO_XLAT_FAILED = 12,           /* a helper refused */
	NEMO_XLAT_LOCAL = 13,            /* the device's own link-local traffic */
	NEMO_XLAT_ICMP_UNMAPPED_SOURCE = 14, /* an ICMPv6 error from no mapping, no RFC 6791 address */
	NEMO_XLAT_SOURCE_ROUTE = 15,     /* RFC 7915 §4.1, §5.1: an unexpired source route */
	NEMO_XLAT_AT_ARRIVAL = 16,       /* of those translated, how many where they arrived */
	NEMO_XLAT_COUNTERS = 17,
};

/* What an IPv4 UDP datagram without a checksum gets (RFC 7915 §4.5's
 * configuration function). */
enum nemo_udp_zero_checksum {
	NEMO_UDP_ZERO_COMPUTE = 0, /* its IPv6 checksum computed (option 2) */
	NEMO_UDP_ZERO_DROP = 1,    /* dropped, counted udp_zero_checksum (option 1) */
};

/* Index 0 of nemo_xlat_config: the IPv4 source of ICMPv6 errors from
 * addresses no mapping holds (RFC 6791; 0: none, they are dropped), what
 * becomes of IPv4 UDP without a checksum (enum nemo_udp_zero_checksum),
 * and the translator's device (where what is routed to be translated goes:
 * the program at arrival translates only that; 0: nothing). */
struct nemo_xlat_config {
	__be32 icmp_source;
	__u8 udp_zero_checksum;
	__u8 reserved[3];
	__u32 device;
};

/* nemo_xlat_prefixes' key: a translation prefix in use, its 12 octets (a
 * /96). The program at arrival looks an IPv6 destination up there first:
 * most of what arrives is not to be translated. */
struct nemo_translation_prefix {
	__u8 prefix[12];
};

/* Most translation prefixes in use at once. */
#define NEMO_MAX_TRANSLATION_PREFIXES 1024

/* Most mappings a home agent translates. */
#define NEMO_MAX_MAPPINGS 1048576

#endif
