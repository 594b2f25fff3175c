// SPDX-License-Identifier: MIT
/* Lab switch ports with 802.1p priority queues: the frame's PCP -> skb->priority, at TC
 * ingress of each port of a lab switch (a Linux bridge in its own namespace;
 * vnet_router/lab/switching.py attaches it).  The bridge keeps skb->priority when it forwards
 * the frame, and the egress port's pfifo_fast (under the port's tbf) puts it in one of its three
 * bands by that priority (its fixed priomap), band 0 sent first:
 *
 *   PCP 5, 6, 7 (video, voice, network control)     -> priority 6 (TC_PRIO_INTERACTIVE) band 0
 *   PCP 0, 3, 4 (best effort, excellent, controlled) -> priority 0 (TC_PRIO_BESTEFFORT)  band 1
 *   PCP 1, 2    (background, spare)                  -> priority 1 (TC_PRIO_FILLER)      band 2
 *
 * The tag is read where the kernel put it: on veth the 802.1Q tag of a received frame is
 * moved into the skb's metadata before TC ingress (vlan_present, vlan_tci); a tag still in the
 * frame (an inner tag, or a driver that does not strip it) is read from the header.  An
 * untagged frame is PCP 0: best effort.  Every frame passes (TC_ACT_OK); nothing is counted
 * here (the port's qdiscs count what they send and drop per band).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_PRIO_BESTEFFORT 0
#define TC_PRIO_FILLER 1
#define TC_PRIO_INTERACTIVE 6

static __always_inline __u32 priority_of(__u32 pcp)
{
    if (pcp >= 5)
        return TC_PRIO_INTERACTIVE;
    if (pcp == 1 || pcp == 2)
        return TC_PRIO_FILLER;
    return TC_PRIO_BESTEFFORT;
}

SEC("tc")
int pcp_priority(struct __sk_buff *skb)
{
    __u32 pcp = 0;

    if (skb->vlan_present) {
        pcp = (skb->vlan_tci >> 13) & 7;
    } else {
        void *data = (void *)(long)skb->data;
        void *end = (void *)(long)skb->data_end;
        struct ethhdr *eth = data;

        if (data + sizeof(*eth) + 2 <= end &&
            (eth->h_proto == bpf_htons(ETH_P_8021Q) || eth->h_proto == bpf_htons(ETH_P_8021AD)))
            pcp = bpf_ntohs(*(__be16 *)(eth + 1)) >> 13;
    }
    skb->priority = priority_of(pcp);
    return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
