// SPDX-License-Identifier: MIT
/* The kernel tier of the substrate datapath (`[node] datapath = "kernel"`).
 *
 * substrate_tc, at TC ingress (cls_bpf, direct action) of every Ethernet substrate interface,
 * forwards the frames whose virtual link the tables give to the kernel: the demultiplexing
 * rule of DESIGN section 3 (EtherType, VLAN id, sender MAC -> substrate link, VLI -> virtual
 * link), input policing by the virtual link's token bucket, the VLI swap of a pass-through
 * (switch) onto an Ethernet substrate link with the output link's header (VLAN tag written
 * inline, as the user-space engine writes it), padding trimmed by LEN, and bpf_redirect() to
 * the output interface; an output shaped by the kernel goes through its HTB class
 * (skb->priority names it, as the engine's per-link socket's SO_PRIORITY does).  Every other
 * frame is TC_ACT_UNSPEC (on to the next filter, then on as usual): legacy traffic to the
 * kernel's stack, substrate frames to the user-space engine, whose ring socket is bound to the
 * substrate EtherType and so is served after TC ingress (it never copies what the kernel
 * forwarded); the program writes their VLAN tag inline (tag_inline), since the kernel clears
 * it before that delivery.
 *
 * The tables are generation-stamped: the daemon writes generation g+1's entries, flips
 * `config.gen`, then deletes generation g's; a frame reads the generation once, so it sees
 * one whole table generation.  Counters are per CPU, read and reset by nobody: the daemon
 * keeps the last value it read and adds the difference to the same counters the engine uses.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "vnet_names.h"     /* counter indexes: generated from vnet_router/model/names.py */

#define MAX_LINKS 1024
#define MAX_VLINKS 16384
#define NO_BUCKET 0xFFFFFFFFu
#define VLAN_TPID 0x8100
#define QINQ_TPID 0x88A8

enum verdict { LEGACY, USER, KERNEL };

struct config {                 /* config[0] */
	__u32 gen;              /* the table generation in force (0 or 1) */
	__u16 ethertype;        /* the substrate's EtherType */
	__u16 pad;
};

struct link_key {               /* (interface, VLAN id or 0, sender MAC or 0 for multiaccess) */
	__u32 ifindex;
	__u16 vid;
	__u8 gen;
	__u8 pad;
	__u8 peer[ETH_ALEN];
	__u16 pad2;
};

struct link_val {
	__u32 slot;             /* lstats index */
	__u32 payload_mtu;
	__u32 multiaccess;
};

struct vli_key {
	__u32 link_slot;
	__u16 vli;
	__u8 gen;
	__u8 pad;
};

struct vli_val {                /* a switch handled in the kernel */
	__u32 in_slot;          /* vstats index of the input virtual link */
	__u32 out_slot;         /* ... of the output virtual link */
	__u32 out_link_slot;
	__u32 out_ifindex;
	__u32 out_payload_mtu;
	__u32 priority;         /* skb->priority: the HTB class of a kernel-shaped output, or 0 */
	__u32 bucket;           /* buckets index of the input policer, NO_BUCKET if none */
	__u32 hlen;             /* bytes of hdr: 16 (untagged) or 20 (tagged), VLI included */
	__u8 hdr[20];           /* dst, src, [0x8100, TCI], EtherType, VLI */
};

struct bucket {                 /* the reference TokenBucket in integers */
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 rate;             /* bytes per second */
	__u64 burst;            /* bytes */
	__u64 credit;           /* bytes x 1e9 (byte-nanoseconds) */
	__u64 stamp;            /* ns, bpf_ktime_get_ns */
};

struct vstat { __u64 n[VSTAT_N]; };     /* by enum vnet_vstat */
struct lstat { __u64 n[LSTAT_N]; };     /* by enum vnet_lstat */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * MAX_LINKS);
	__type(key, struct link_key);
	__type(value, struct link_val);
	__uint(map_flags, BPF_F_RDONLY_PROG);
} links SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * MAX_VLINKS);
	__type(key, struct vli_key);
	__type(value, struct vli_val);
	__uint(map_flags, BPF_F_RDONLY_PROG);
} vlis SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VLINKS);
	__type(key, __u32);
	__type(value, struct bucket);
} buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_VLINKS);
	__type(key, __u32);
	__type(value, struct vstat);
} vstats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_LINKS);
	__type(key, __u32);
	__type(value, struct lstat);
} lstats SEC(".maps");

struct decision {
	struct vli_val *e;
	struct link_val *l;
	__u32 off;              /* offset of VLI in the frame as it is (18 if the tag is inline) */
	__u32 len;              /* LEN */
	__u32 inline_tag;
};

static __always_inline int decide(struct __sk_buff *skb, struct decision *d)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	__u8 h[22];
	__u16 proto, vid = 0;
	__u32 off = 14;

	/* a substrate frame is one the engine's classic filter (packet_io.substrate_filter)
	 * keeps: the substrate's EtherType at 12, or at 16 behind an inline 802.1Q or 802.1ad tag */
	if (!cfg || bpf_skb_load_bytes(skb, 0, h, 14) < 0)
		return LEGACY;
	proto = (h[12] << 8) | h[13];
	if (skb->vlan_present)
		vid = skb->vlan_tci & 0x0FFF;
	d->inline_tag = 0;
	if (proto != cfg->ethertype) {
		if (proto != VLAN_TPID && proto != QINQ_TPID)
			return LEGACY;
		if (bpf_skb_load_bytes(skb, 14, h + 14, 4) < 0 ||
		    ((h[16] << 8) | h[17]) != cfg->ethertype)
			return LEGACY;
		if (skb->vlan_present)
			return USER;            /* a tag behind the stripped one: the engine's */
		vid = ((h[14] << 8) | h[15]) & 0x0FFF;
		off = 18;
		d->inline_tag = 1;
	}
	/* VLI and LEN; shorter is the engine's to count (short) */
	if (off == 14) {
		if (bpf_skb_load_bytes(skb, 14, h + 14, 4) < 0)
			return USER;
	} else if (bpf_skb_load_bytes(skb, 18, h + 18, 4) < 0) {
		return USER;
	}
	struct link_key lk = { .ifindex = skb->ifindex, .vid = vid, .gen = cfg->gen };
	if (vid)
		__builtin_memcpy(lk.peer, h + 6, ETH_ALEN);
	struct link_val *l = bpf_map_lookup_elem(&links, &lk);
	if (!l)
		return USER;
	__u16 vli, len;
	if (off == 14) {
		vli = (h[14] << 8) | h[15];
		len = (h[16] << 8) | h[17];
	} else {
		vli = (h[18] << 8) | h[19];
		len = (h[20] << 8) | h[21];
	}
	if (off + 4 + (__u32)len > skb->len || len > l->payload_mtu)
		return USER;            /* truncated or oversize: the engine counts it */
	struct vli_key vk = { .link_slot = l->slot, .vli = vli, .gen = cfg->gen };
	struct vli_val *e = bpf_map_lookup_elem(&vlis, &vk);
	if (!e)
		return USER;
	d->e = e;
	d->l = l;
	d->off = off;
	d->len = len;
	return KERNEL;
}

static __always_inline int take(__u32 idx, __u32 nbytes)
{
	struct bucket *b = bpf_map_lookup_elem(&buckets, &idx);
	__u64 now = bpf_ktime_get_ns(), need = (__u64)nbytes * 1000000000ULL;
	int ok;

	if (!b)
		return 1;
	bpf_spin_lock(&b->lock);
	/* now was read before the lock: another CPU may have stamped a later time since */
	__u64 full = b->burst * 1000000000ULL, dt = now > b->stamp ? now - b->stamp : 0;
	/* dt x rate up to the burst, as the reference; dt x rate is only computed below the
	 * time that fills an empty bucket, so it cannot overflow */
	if (b->rate && dt >= full / b->rate)
		b->credit = full;
	else {
		b->credit += dt * b->rate;
		if (b->credit > full)
			b->credit = full;
	}
	if (now > b->stamp)
		b->stamp = now;
	ok = b->credit >= need;
	if (ok)
		b->credit -= need;
	bpf_spin_unlock(&b->lock);
	return ok;
}

/* A frame for the engine: its ring socket is bound to the substrate EtherType (delivered after
 * TC ingress, so it never sees what the kernel forwards) and the kernel clears the VLAN tag
 * before that delivery: the tag goes inline, where the engine reads it as from any frame. */
static __always_inline int tag_inline(struct __sk_buff *skb)
{
	__u8 h[12];
	__u16 tpid = bpf_ntohs((__u16)skb->vlan_proto);
	__u8 tag[4] = { tpid >> 8, tpid & 0xFF, skb->vlan_tci >> 8, skb->vlan_tci & 0xFF };

	if (bpf_skb_load_bytes(skb, 0, h, 12) < 0 || bpf_skb_vlan_pop(skb) < 0 ||
	    bpf_skb_change_head(skb, 4, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, h, 12, 0) < 0 || bpf_skb_store_bytes(skb, 12, tag, 4, 0) < 0)
		return TC_ACT_UNSPEC;
	return TC_ACT_UNSPEC;
}

SEC("tc")
int substrate_tc(struct __sk_buff *skb)
{
	struct decision d;
	struct vstat *vin, *vout;
	struct lstat *lin, *lout;
	__u32 slot;

	int verdict = decide(skb, &d);

	if (verdict == USER && skb->vlan_present)
		return tag_inline(skb);
	if (verdict != KERNEL)
		return TC_ACT_UNSPEC;           /* the next filter, else on as if we were not here */
	struct vli_val *e = d.e;
	slot = d.l->slot;
	lin = bpf_map_lookup_elem(&lstats, &slot);
	vin = bpf_map_lookup_elem(&vstats, &e->in_slot);
	vout = bpf_map_lookup_elem(&vstats, &e->out_slot);
	lout = bpf_map_lookup_elem(&lstats, &e->out_link_slot);
	if (!lin || !vin || !vout || !lout)
		return TC_ACT_OK;
	lin->n[LSTAT_RX_PACKETS]++;
	lin->n[LSTAT_RX_BYTES] += skb->len;
	if (e->bucket != NO_BUCKET && !take(e->bucket, d.len)) {
		vin->n[VSTAT_POLICED]++;
		return TC_ACT_SHOT;
	}
	vin->n[VSTAT_PACKETS]++;
	vin->n[VSTAT_BYTES] += d.len;
	if (d.len > e->out_payload_mtu) {
		vout->n[VSTAT_TOO_BIG]++;
		return TC_ACT_SHOT;
	}
	__u32 hlen = e->hlen, ifindex = e->out_ifindex, priority = e->priority;
	__u8 hdr[20];
	__builtin_memcpy(hdr, e->hdr, sizeof(hdr));
	__u32 len = d.len;
	/* the input tag goes (metadata or inline): the output's is written inline */
	if (skb->vlan_present || d.inline_tag)
		if (bpf_skb_vlan_pop(skb) < 0)
			return TC_ACT_SHOT;
	/* now: dst src EtherType VLI LEN payload [pad] -- 18 bytes of header */
	if (skb->len > 18 + len && bpf_skb_change_tail(skb, 18 + len, 0) < 0)
		return TC_ACT_SHOT;
	__u8 lenb[2] = { len >> 8, len & 0xFF };
	if (hlen == 20) {
		if (bpf_skb_change_head(skb, 4, 0) < 0)
			return TC_ACT_SHOT;
		if (bpf_skb_store_bytes(skb, 0, hdr, 20, 0) < 0 ||
		    bpf_skb_store_bytes(skb, 20, lenb, 2, 0) < 0)
			return TC_ACT_SHOT;
	} else {
		if (bpf_skb_store_bytes(skb, 0, hdr, 16, 0) < 0 ||
		    bpf_skb_store_bytes(skb, 16, lenb, 2, 0) < 0)
			return TC_ACT_SHOT;
	}
	skb->priority = priority;
	/* link counters before the virtual link's: the daemon reads the virtual links' first, so a
	 * frame it sees there it sees on its links too */
	lout->n[LSTAT_TX_PACKETS]++;
	lout->n[LSTAT_TX_BYTES] += len;
	vout->n[VSTAT_PACKETS]++;
	vout->n[VSTAT_BYTES] += len;
	return bpf_redirect(ifindex, 0);
}

char LICENSE[] SEC("license") = "MIT";
