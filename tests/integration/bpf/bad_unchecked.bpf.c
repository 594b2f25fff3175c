// SPDX-License-Identifier: MIT
/* Deliberately bad: reads the EtherType without checking the frame is long enough (no
 * data_end comparison), which the kernel's verifier must refuse ("invalid access to packet").
 * tests/integration/test_kernel_instance.py loads it to see it refused, with nothing attached. */
// vnet-counters: seen
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("tc")
int bad_unchecked(struct __sk_buff *skb)
{
	struct ethhdr *eth = (void *)(long)skb->data;
	__u32 k = 0;
	__u64 *c = bpf_map_lookup_elem(&counters, &k);

	if (c && eth->h_proto == 0xb688)          /* no bounds check before this load */
		*c += 1;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
