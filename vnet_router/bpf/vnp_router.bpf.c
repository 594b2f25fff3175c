// SPDX-License-Identifier: MIT
/* The VNP virtual router's forwarding as a kernel-resident protocol instance (TC, cls_bpf).
 *
 * The kernel twin of vnet_host/vnp/router.py: same forwarding rule, same counters, for VNP
 * carried in Ethernet frames (EtherType 0x88B6, "VNP over Ethernet", vnet_host/vnp/wire.py)
 * on the TAP logical interfaces of the vNet.  vnet's daemon attaches it at TC ingress of each
 * logical interface of the instance (`vnetctl instance start NAME --vnet V --kernel
 * vnp_router --interface p1 --interface p2`); a frame written into a TAP by the substrate
 * datapath is received by that TAP, this program forwards it with bpf_redirect() to the
 * egress of another logical interface, which hands it back to the datapath.
 *
 * Forwarding: a host route learned from a HELLO (source address -> port it came in on, and
 * the sender's MAC) wins over a static network route (NET -> port, `--route NET=IFACE`);
 * TTL is decremented, a packet whose TTL runs out is dropped, so is one with no route, one
 * that does not parse, one that would go back out of the port it came in on or that is larger
 * than the out port's MTU.  Every outcome is counted (per CPU).
 *
 * Tables: vnet_ports and vnet_routes are filled by the daemon and are read-only for this
 * program (BPF_F_RDONLY_PROG: the verifier refuses a store into them); hosts is the
 * program's own learned table; counters is read by `vnetctl instance list` / `show`.
 */
// vnet-counters: forwarded hello no_route ttl_expired malformed same_port mtu not_vnp broadcast
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define VNP_ETHERTYPE 0x88B6
#define VNP_VERSION 1
#define VNP_HELLO 1
#define VNP_DATA 2
#define VNP_BROADCAST 0xFFFFFFFFu
#define HOLD_NS (30ULL * 1000000000ULL)   /* a learned host route lives 30 s after its HELLO */

enum counter { FORWARDED, HELLO, NO_ROUTE, TTL_EXPIRED, MALFORMED, SAME_PORT, MTU, NOT_VNP,
               BCAST, N_COUNTERS };

struct vnp_hdr {
	__u8 vt;                /* version << 4 | type */
	__u8 ttl;
	__be16 len;             /* payload bytes */
	__be32 dst;
	__be32 src;
} __attribute__((packed));

struct port {                   /* vnet_ports: a logical interface of the vNet */
	__u32 mtu;
	__u8 mac[ETH_ALEN];
	__u16 pad;
};

struct host {                   /* hosts: learned from HELLO */
	__u32 ifindex;
	__u8 mac[ETH_ALEN];
	__u16 pad;
	__u64 seen_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);                     /* ifindex */
	__type(value, struct port);
	__uint(map_flags, BPF_F_RDONLY_PROG);
} vnet_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);                     /* NET */
	__type(value, __u32);                   /* ifindex */
	__uint(map_flags, BPF_F_RDONLY_PROG);
} vnet_routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);                     /* VNP address */
	__type(value, struct host);
} hosts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, N_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline int count(__u32 which, int verdict)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);

	if (c)
		*c += 1;
	return verdict;
}

SEC("tc")
int vnp_router(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct vnp_hdr *h = (void *)(eth + 1);
	__u32 in = skb->ifindex, out, dst, src, net;
	__u8 mac[ETH_ALEN] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	struct port *op;
	struct host *hr;
	__u32 *route;
	__u8 type;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(VNP_ETHERTYPE))
		return count(NOT_VNP, TC_ACT_OK);         /* not ours: the kernel's business */
	if ((void *)(h + 1) > end || h->vt >> 4 != VNP_VERSION)
		return count(MALFORMED, TC_ACT_SHOT);
	type = h->vt & 0xf;
	if ((type != VNP_HELLO && type != VNP_DATA) ||
	    sizeof(*eth) + sizeof(*h) + bpf_ntohs(h->len) > skb->len)
		return count(MALFORMED, TC_ACT_SHOT);
	dst = bpf_ntohl(h->dst);
	src = bpf_ntohl(h->src);
	if (type == VNP_HELLO) {
		struct host nh = {.ifindex = in, .seen_ns = bpf_ktime_get_ns()};

		__builtin_memcpy(nh.mac, eth->h_source, ETH_ALEN);
		bpf_map_update_elem(&hosts, &src, &nh, BPF_ANY);
		return count(HELLO, TC_ACT_SHOT);
	}
	if (dst == VNP_BROADCAST)
		return count(BCAST, TC_ACT_SHOT);
	hr = bpf_map_lookup_elem(&hosts, &dst);
	if (hr && bpf_ktime_get_ns() - hr->seen_ns <= HOLD_NS) {
		out = hr->ifindex;
		__builtin_memcpy(mac, hr->mac, ETH_ALEN);
	} else {
		net = dst >> 16;
		route = bpf_map_lookup_elem(&vnet_routes, &net);
		if (!route)
			return count(NO_ROUTE, TC_ACT_SHOT);
		out = *route;
	}
	if (out == in)
		return count(SAME_PORT, TC_ACT_SHOT);
	op = bpf_map_lookup_elem(&vnet_ports, &out);
	if (!op)                                 /* only to a logical interface of the vNet */
		return count(NO_ROUTE, TC_ACT_SHOT);
	if (h->ttl <= 1)
		return count(TTL_EXPIRED, TC_ACT_SHOT);
	if (skb->len - sizeof(*eth) > op->mtu)
		return count(MTU, TC_ACT_SHOT);
	h->ttl -= 1;
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, op->mac, ETH_ALEN);
	count(FORWARDED, 0);
	return bpf_redirect(out, 0);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
