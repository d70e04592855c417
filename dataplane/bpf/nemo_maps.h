/* SPDX-License-Identifier: Apache-2.0 OR BSD-2-Clause
 *
 * The layout of nemo's BPF maps: the one place both the programs
 * (tunnel.bpf.c) and Rust (dataplane/src/bpf/maps.rs) take it from. Rust
 * checks its mirror against this object's BTF in a unit test
 * (`map_layouts_match_the_programs`): change a struct here and that test
 * names what moved.
 */
#ifndef NEMO_MAPS_H
#define NEMO_MAPS_H

#include <linux/types.h>

/* Key of the LPM tries: an IPv6 prefix (BPF_MAP_TYPE_LPM_TRIE wants the
 * length first, in bits, then the address in network order). */
struct nemo_prefix {
	__u32 prefixlen;
	__u8 addr[16];
};

/* The value of nemo_bindings: a binding's tunnel peer. On the home agent a
 * home address or Mobile Network Prefix maps to its care-of address; on a
 * mobile router a tenant's prefix maps to its home agent. One entry serves
 * both directions: encapsulation sends packets for (home agent: to; mobile
 * router: from) the prefix to the peer (RFC 2473 §3: the tunnel exit
 * point), and decapsulation takes a tunnelled packet whose inner source
 * (home agent) or destination (mobile router) is in the prefix only from
 * that peer (RFC 3963 §6.4). */
struct nemo_peer {
	__u8 addr[16];
};
/* An IPv4 peer (Dual-Stack Mobile IPv6, RFC 5555 §4.1) is written in the
 * same 16 octets: 8 zero octets, the UDP port in network order (zero:
 * IPv6 in IPv4, protocol 41, with no UDP), 0xffff, the IPv4 address. With
 * a zero port it is the IPv4-mapped address (RFC 4291 §2.5.5.2); none of
 * these is an address an IPv6 tunnel goes to, so the two kinds never meet.
 * The peer of a binding behind a NAT is the NAT's address and port that
 * its Binding Update came from: decapsulation takes a packet from exactly
 * that address and port (RFC 5555 §4.2). */
/* A mobile router's peer of all zeros (::) holds the tenant: its VM is on
 * its way here (a live migration placed before it ends), and what arrives
 * for it is dropped, not queued behind in its port, until it announces
 * itself (issue 29). */

/* The value of nemo_also (home agent): while a tenant moves, the care-of
 * address its binding left, which gets a copy of each packet, and when a
 * packet from it was last taken out of the tunnel (bpf_ktime_get_ns,
 * CLOCK_MONOTONIC; 0: none yet): the VM still runs there, and the daemon
 * keeps copying while it does (issue 29). */
struct nemo_second {
	__u8 addr[16];
	__u64 heard_ns;
};

/* Index 0 of nemo_local: this host's tunnel address, the outer source of
 * what it encapsulates (the home agent's address; the mobile router's
 * care-of address) and the outer destination of what it takes. */
struct nemo_local {
	__u8 addr[16];
};

/* Index 0 of nemo_local4: this host's IPv4 tunnel address and UDP port,
 * written as an IPv4 peer is (the port is the DSMIPv6 port the daemon's
 * socket has: 4191 on a home agent, the mobile router's own port behind a
 * NAT, so that its data and its Binding Updates share one NAT mapping).
 * All zeros: no IPv4 tunnels. */

/* Slots of the per-CPU counter array (Rust: Counter). */
enum nemo_counter {
	NEMO_ENCAPSULATED = 0,
	NEMO_ENCAP_NO_TUNNEL = 1, /* destination (or source) not bound */
	NEMO_ENCAP_FAILED = 2,    /* bpf_lwt_push_encap refused */
	NEMO_DECAPSULATED = 3,
	NEMO_DECAP_SPOOFED = 4,   /* outer source not the inner source's peer */
	NEMO_DECAP_MALFORMED = 5, /* truncated or not IPv6 inside */
	NEMO_DECAP_FAILED = 6,    /* bpf_skb_adjust_room refused */
	NEMO_MALFORMED = 7,       /* encap side: not an IPv6 packet */
	NEMO_BICAST_COPIED = 8,   /* a copy sent to the second care-of address */
	NEMO_BICAST_NO_ROUTE = 9, /* no route or no neighbour to it: no copy */
	NEMO_BICAST_FAILED = 10,  /* bpf_clone_redirect refused */
	NEMO_HELD = 11,           /* mobile router: a tenant held until its VM announces itself */
	NEMO_RELEASED = 12,       /* mobile router: a held tenant's VM sent its first frame: passes */
	NEMO_COUNTERS = 13,
};

/* Most prefixes a held tenant has for nemo_release (a tenant with more is
 * released by the daemon alone). */
#define NEMO_MAX_HELD_PREFIXES 8

/* The value of nemo_holds (mobile router), keyed by the tenant port's
 * ifindex: while a tenant is held, what its prefixes point at once its VM
 * sends its first frame on the port (QEMU's RARP as it resumes). The tc
 * ingress program on the port does it in the kernel, as the frame enters:
 * no packet that arrives after it is held (issue 29). */
struct nemo_hold {
	__u8 peer[16];
	__u32 count;
	__u32 reserved;
	struct nemo_prefix keys[NEMO_MAX_HELD_PREFIXES];
};

/* Most held tenants at once (one per port). */
#define NEMO_MAX_HOLDS 4096

/* Most entries of nemo_also: destinations of tenants moving at once (a
 * full map means no copy for the next mover, said and counted by the
 * daemon). */
#define NEMO_MAX_BICASTS 65536

/* Most entries per map; a full map refuses an update (ENOSPC / E2BIG),
 * which the daemon answers as insufficient resources. */
#define NEMO_MAX_BINDINGS 4194304

#endif
