// SPDX-License-Identifier: MIT
/* TAP capture: the frames a vNet's stack sends into a TAP logical interface, copied into one
 * ring shared with the compiled engine, at TC egress of the TAP, in the sender's context.
 *
 * Without it the engine reads a TAP with one read() per frame: the copy, the free of the skb
 * and the system call all land on the engine's core (benchmark row (i): 1.3 CPU-us per frame
 * there, against 0.78 for a frame that comes from a substrate interface, whose AF_PACKET ring
 * is filled in the sender's softirq).  This program moves the copy to where the frame is sent,
 * as the substrate's ring does, and the engine walks the ring (datapath/tapcap.py, _CapRing in
 * datapath/_fastpath.pyx) the way it walks a substrate ring.
 *
 * A frame is taken (copied, TC_ACT_STOLEN: consumed, no drop counted for it) when its TAP is
 * in `ports` (key: network namespace cookie and ifindex, so TAPs of different namespaces never
 * mix; value: the engine's capture id) and the port is not paused.  Left to the TAP (TC_ACT_OK:
 * the engine reads it with read() as before), counted as passed:
 *   - a paused port's frames: they wait in the TAP's queue, where the kernel's back-pressure
 *     holds the sender, until the engine resumes reading;
 *   - a GSO packet (gso_size set): the kernel cuts it into frames after TC egress;
 *   - a frame whose checksum the kernel has not finished (ip_summed CHECKSUM_PARTIAL, read
 *     from the kernel's sk_buff: bpf_cast_to_kern_ctx, CO-RE against the kernel's BTF): it is
 *     finished after TC egress too.  Every TCP segment the vNet's own stack sends is one, so a
 *     local TCP connection keeps one way to the engine (no reordering between ways) and the
 *     kernel's TCP small queues keep their back-pressure;
 *   - a frame with an offloaded VLAN tag, shorter than Ethernet or above JUMBO bytes.
 * A ring that is full drops the frame (TC_ACT_SHOT) and counts it.
 *
 * Records: struct rec (8 bytes) then the frame; reserved at one of three fixed sizes (the
 * verifier wants a constant size), so small frames take little ring.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "vnet_names.h"     /* enum vnet_cap_counter: generated from vnet_router/model/names.py */

#define SMALL 128
#define LARGE 1536
#define JUMBO 9216
#define CHECKSUM_PARTIAL 3
#define ETH_HLEN 14

struct port_key {
	__u64 netns;            /* bpf_get_netns_cookie: SO_NETNS_COOKIE of the TAP's namespace */
	__u32 ifindex;
	__u32 pad;
};

struct port_val {
	__u32 id;               /* the engine's capture id of the port */
	__u32 paused;           /* 1: leave frames to the TAP's queue (read() path) */
};

struct rec {
	__u32 id;
	__u32 len;
	__u8 data[];
};

/* the field of the kernel's struct sk_buff the program reads (CO-RE: its place from BTF) */
struct sk_buff___vn {
	__u8 ip_summed:2;
} __attribute__((preserve_access_index));

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23);
} frames SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct port_key);
	__type(value, struct port_val);
	__uint(map_flags, BPF_F_RDONLY_PROG);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CAP_N);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 c)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &c);

	if (v)
		*v += 1;
}

#define TAKE(SIZE)                                                                     \
	do {                                                                           \
		struct rec *r = bpf_ringbuf_reserve(&frames, sizeof(struct rec) + SIZE, 0); \
		if (!r) {                                                              \
			count(CAP_RING_FULL);                                          \
			return TC_ACT_SHOT;                                            \
		}                                                                      \
		if (len > SIZE || bpf_skb_load_bytes(skb, 0, r->data, len) != 0) {     \
			bpf_ringbuf_discard(r, 0);                                     \
			count(CAP_PASSED);                                             \
			return TC_ACT_OK;                                              \
		}                                                                      \
		r->id = p->id;                                                         \
		r->len = len;                                                          \
		bpf_ringbuf_submit(r, 0);                                              \
		count(CAP_TAKEN);                                                      \
		return TC_ACT_STOLEN;                                                  \
	} while (0)

SEC("tc")
int tap_capture(struct __sk_buff *skb)
{
	struct port_key k = { .netns = bpf_get_netns_cookie(skb), .ifindex = skb->ifindex };
	struct port_val *p = bpf_map_lookup_elem(&ports, &k);
	struct sk_buff___vn *kskb;
	__u32 len = skb->len;

	if (!p)
		return TC_ACT_OK;
	kskb = bpf_cast_to_kern_ctx(skb);
	if (p->paused || skb->gso_size || skb->vlan_present || len < ETH_HLEN || len > JUMBO ||
	    BPF_CORE_READ_BITFIELD_PROBED(kskb, ip_summed) == CHECKSUM_PARTIAL) {
		count(CAP_PASSED);
		return TC_ACT_OK;
	}
	if (len <= SMALL)
		TAKE(SMALL);
	if (len <= LARGE)
		TAKE(LARGE);
	TAKE(JUMBO);
}

char LICENSE[] SEC("license") = "GPL";
