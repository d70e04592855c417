/* SPDX-License-Identifier: Apache-2.0 OR BSD-2-Clause
 *
 * Where a packet is translated (included by translator.bpf.c): at the
 * translator's device, everything routed there; or where it arrives, the
 * common case only, what the kernel would route to the device (asked with
 * bpf_fib_lookup), forwarded once instead of twice.
 */
#ifndef NEMO_XLAT_ARRIVAL_H
#define NEMO_XLAT_ARRIVAL_H

/* Where a packet is translated. */
enum entry {
	/* At tc egress of nemo-xlat: whatever the kernel routed there, all
	 * of RFC 7915 this program does; sent back in at the device's
	 * ingress, the kernel forwards it a second time. */
	AT_DEVICE,
	/* At tc ingress of an interface packets to be translated arrive on
	 * (nemo_translate_at_arrival): the common case only, and only what
	 * the kernel would route to the device; it goes on into the stack in
	 * its new family and is forwarded once. Whatever else arrives goes on
	 * untouched: to the device, if routed there (its errors, fragments,
	 * options, TTL running out, size and drops are the device's). */
	AT_ARRIVAL,
};

/* A packet this program does not translate: at the device, dropped and
 * counted by `reason`; at arrival, left to go on. */
static __always_inline int refused(enum entry entry, __u32 reason)
{
	return entry == AT_ARRIVAL ? TC_ACT_OK : dropped(reason);
}

/* The translated packet, its Ethernet type set, counted; at the device,
 * back in at its ingress (the kernel routes it there), at arrival on into
 * the stack. */
static __always_inline int translated(struct __sk_buff *skb, __u16 ethertype, __u32 counter,
				      enum entry entry)
{
	__be16 type = bpf_htons(ethertype);
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &type, 2, 0))
		return dropped(NEMO_XLAT_FAILED);
	bpf_csum_level(skb, BPF_CSUM_LEVEL_RESET);
	count(counter);
	if (entry == AT_ARRIVAL) {
		count(NEMO_XLAT_AT_ARRIVAL);
		return TC_ACT_OK;
	}
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

/* linux/bpf.h of kernel 6.3 on; Debian 12's headers lack it. */
#ifndef BPF_FIB_LOOKUP_SKIP_NEIGH
#define BPF_FIB_LOOKUP_SKIP_NEIGH (1U << 2)
#endif
#define NEMO_AF_INET 2
#define NEMO_AF_INET6 10

/* The length of the packets that leave for this one: a GSO packet (GRO
 * made it of many, or a local sender) is cut into segments of gso_size
 * octets of payload behind the headers, and the MTU is about those. */
static __always_inline __u16 on_the_wire(struct __sk_buff *skb, __u16 length, __u16 ip_header,
					 __u8 protocol, void *l4, void *data_end)
{
	__u32 segment = skb->gso_size;
	if (!segment)
		return length;
	if (protocol == IPPROTO_TCP) {
		struct tcp_start *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return length;
		/* The data offset: the high four bits, in 32-bit words. */
		__u16 header = (bpf_ntohs(tcp->flags) >> 12) * 4;
		return ip_header + header + segment;
	}
	if (protocol == IPPROTO_UDP)
		return ip_header + sizeof(struct udphdr) + segment;
	return length;
}

/* Whether the kernel routes `fib`'s destination to the translator's
 * device, within the route's MTU (RFC 7915 §4.6, §5.6: what is routed
 * elsewhere is not translated; what is too big is the device's to
 * fragment or refuse). */
static __always_inline int routed_to_device(struct __sk_buff *skb, struct bpf_fib_lookup *fib)
{
	__u32 zero = 0;
	struct nemo_xlat_config *config = bpf_map_lookup_elem(&nemo_xlat_config, &zero);
	if (!config || !config->device)
		return 0;
	fib->ifindex = skb->ingress_ifindex;
	long found = bpf_fib_lookup(skb, fib, sizeof(*fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	return found == BPF_FIB_LKUP_RET_SUCCESS && fib->ifindex == config->device;
}

#endif
