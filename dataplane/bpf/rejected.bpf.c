// SPDX-License-Identifier: Apache-2.0 OR BSD-2-Clause
//
// A test fixture, never loaded by the daemons: a program the verifier must
// refuse (it reads the packet without checking its length), so that a test
// can see the verifier's own words reach the error nemo reports
// (dataplane/tests/bpf_programs.rs).

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int nemo_rejected(struct __sk_buff *skb)
{
	unsigned char *data = (void *)(long)skb->data;
	return data[20] == 0x86 ? TC_ACT_OK : TC_ACT_SHOT;
}
