// SPDX-License-Identifier: MIT
/* TAP capture: the frames a vNet's stack sends into a TAP logical interface, copied into its
 * vNet's ring, shared with the compiled engine, at TC egress of the TAP, in the sender's
 * context.
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
 *   - a frame with an offloaded VLAN tag, shorter than Ethernet or above JUMBO bytes;
 *   - a frame of a group whose ring the daemon has not created yet.
 * A ring that is full drops the frame (TC_ACT_SHOT) and counts it.
 *
 * Each vNet has a ring of its own (`rings`, by group), and holds at most its share of it
 * (the whole ring unless vNets beyond RINGS share it), so one that floods its TAPs cannot
 * take a ring or a turn of the walk from the others.  A port belongs to a group (`groups`:
 * capture slot -> group, one group per vNet, written by the daemon); the program counts the
 * ring bytes it reserves for each group (`produced`), the engine publishes the bytes of each
 * group's records it has walked past (`consumed`: an array the engine has mmap'd and stores
 * into after each batch, no system call), and a frame whose group would then hold more than
 * its `budget` (bytes, written by the daemon: the ring's share of the group) is dropped
 * (TC_ACT_SHOT), counted as over_share.
 * The check and the reservation are not one atomic step: each CPU may overshoot by one
 * record, which the daemon leaves out of the shares (datapath/tapcap.py: shares()).  So a
 * frame refused (the flood's path) costs reads only, no atomic operation on a line every CPU
 * of the flooding vNet writes.
 * Every frame dropped here (over its share or ring full) is also counted by its port's slot
 * (`refused`, per CPU): the daemon adds them to the ring_full drops of the port's vNet.
 *
 * Records: struct rec (8 bytes) then the frame; reserved at one of three fixed sizes (the
 * verifier wants a constant size), so small frames take little ring.  A record carries its
 * group, so the engine credits it without asking which port it came from (a port may be gone).
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
#define SLOTS 4096              /* capture slots = entries of `ports` (tapcap.py: id & 0xFFF) */
#define SLOT_MASK (SLOTS - 1)
#define GROUPS SLOTS            /* at most one group per port */
#define RINGS 64                /* rings (tapcap.py: RINGS), one per group below it */
#define RING_BYTES (1 << 21)    /* each ring's data bytes (tapcap.py: RING_BYTES) */
/* the ring bytes a record of SIZE frame bytes takes: ring header, struct rec, frame, to 8 */
#define FOOTPRINT(SIZE) ((8 + sizeof(struct rec) + (SIZE) + 7) & ~7UL)

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
	__u16 len;
	__u16 group;            /* the group whose `consumed` the engine credits with it */
	__u8 data[];
};

/* the field of the kernel's struct sk_buff the program reads (CO-RE: its place from BTF) */
struct sk_buff___vn {
	__u8 ip_summed:2;
} __attribute__((preserve_access_index));

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* One ring per vNet (its group; groups beyond RINGS share ring group % RINGS), so a vNet's
 * frames never wait behind another's: the engine walks the rings in turns.  The daemon
 * creates a ring when a group first needs it and puts it here (tapcap.py: TapCapture._ring);
 * a group without one yet leaves its frames to the TAP (read()). */
struct ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RING_BYTES);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, RINGS);
	__type(key, __u32);
	__array(values, struct ring);
} rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct port_key);
	__type(value, struct port_val);
	__uint(map_flags, BPF_F_RDONLY_PROG);
} ports SEC(".maps");

/* capture slot -> its port's group */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(map_flags, BPF_F_RDONLY_PROG);
} groups SEC(".maps");

/* group -> ring bytes its records may hold at once */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GROUPS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(map_flags, BPF_F_RDONLY_PROG);
} budget SEC(".maps");

/* group -> ring bytes reserved for it, ever (this program's, atomic adds) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GROUPS);
	__type(key, __u32);
	__type(value, __u64);
} produced SEC(".maps");

/* group -> ring bytes of its records the engine has walked past, ever (the engine's stores) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GROUPS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(map_flags, BPF_F_MMAPABLE);
} consumed SEC(".maps");

/* capture slot -> frames of its port dropped here (over share or ring full) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} refused SEC(".maps");

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

/* Drop the frame: counted by reason and by its port's slot. */
static __always_inline int refuse(__u32 c, __u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&refused, &slot);

	if (v)
		*v += 1;
	count(c);
	return TC_ACT_SHOT;
}

/* Would the group hold more than its budget with ``fp`` more bytes?  ``consumed`` is read
 * first: what it counts was added to ``produced`` before (the program adds before it submits
 * the record, the engine stores after it walked past it), so the difference is never below
 * what the group holds. */
static __always_inline int over_share(__u64 *bud, __u64 *prod, __u64 *cons, __u64 fp)
{
	__s64 c = *(volatile __u64 *)cons;
	__s64 held = *(volatile __u64 *)prod - c;

	if (held < 0)           /* not while both only grow; a guard, not a case */
		held = 0;
	return held + fp > *bud;
}

#define TAKE(SIZE)                                                                     \
	do {                                                                           \
		struct rec *r;                                                         \
		if (over_share(bud, prod, cons, FOOTPRINT(SIZE)))                      \
			return refuse(CAP_OVER_SHARE, slot);                           \
		r = bpf_ringbuf_reserve(ring, sizeof(struct rec) + SIZE, 0);           \
		if (!r)                                                                \
			return refuse(CAP_RING_FULL, slot);                            \
		__sync_fetch_and_add(prod, FOOTPRINT(SIZE));                           \
		r->id = p->id;                                                         \
		r->len = len;                                                          \
		r->group = group;                                                      \
		if (len > SIZE || bpf_skb_load_bytes(skb, 0, r->data, len) != 0) {     \
			bpf_ringbuf_discard(r, 0);                                     \
			count(CAP_PASSED);                                             \
			return TC_ACT_OK;                                              \
		}                                                                      \
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
	__u64 *bud, *prod, *cons;
	__u32 len = skb->len, slot, group, ri, *g;
	void *ring;

	if (!p)
		return TC_ACT_OK;
	kskb = bpf_cast_to_kern_ctx(skb);
	slot = p->id & SLOT_MASK;
	g = bpf_map_lookup_elem(&groups, &slot);
	group = g ? *g : GROUPS;
	bud = bpf_map_lookup_elem(&budget, &group);
	prod = bpf_map_lookup_elem(&produced, &group);
	cons = bpf_map_lookup_elem(&consumed, &group);
	ri = group % RINGS;
	ring = bpf_map_lookup_elem(&rings, &ri);
	if (!ring || p->paused || skb->gso_size || skb->vlan_present || len < ETH_HLEN || len > JUMBO ||
	    BPF_CORE_READ_BITFIELD_PROBED(kskb, ip_summed) == CHECKSUM_PARTIAL ||
	    !bud || !prod || !cons) {
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
