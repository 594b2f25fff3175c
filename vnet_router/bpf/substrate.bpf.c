// SPDX-License-Identifier: MIT
/* The substrate's classifier, and the kernel tier of its datapath.
 *
 * substrate_tc runs at TC ingress (cls_bpf, direct action) of every Ethernet substrate
 * interface, before any queue a vNet shares with another (datapath/classifier.py loads it
 * whenever BPF loads; DESIGN section 3).  It applies the demultiplexing rule to every frame of
 * the substrate's EtherType: EtherType, VLAN id, sender MAC -> substrate link, LEN, VLI ->
 * input virtual link.  Then, per frame, one of:
 *
 *  - drop, counted by reason with no copy to user space: what the tables refuse (no link,
 *    unknown VLAN, bad peer, short, bad LEN, oversize, unknown VLI; not_member is counted as
 *    ignored), a virtual link whose action is drop, what the input virtual link's token bucket
 *    polices (the reference TokenBucket in integers), VLI-0 frames whose payload is no control
 *    message (wire/control.py plausible: the control drop, before any budget) and VLI-0 frames
 *    beyond their sender's budget (a known neighbour's own bucket, else the link's bucket for
 *    all other senders);
 *  - forward in the kernel (the kernel tier, `[node] datapath = "kernel"`): a switch
 *    (pass-through) onto an Ethernet substrate link whose output is unshaped or shaped by the
 *    kernel's HTB: the VLI swap with the output link's header (VLAN tag inline), padding
 *    trimmed by LEN, skb->priority naming the HTB class, bpf_redirect();
 *  - steer to user space: skb->mark = the queue of the frame's vNet (VLI 0: the control queue
 *    of known neighbours or the one of the rest), TC_ACT_UNSPEC.  The engine's ring sockets of
 *    the interface, bound to the substrate EtherType (served after TC ingress), form one
 *    PACKET_FANOUT group whose eBPF selector (substrate_fanout, below) returns the mark: each
 *    vNet fills its own ring, and a full ring drops only that vNet's frames.  The kernel clears
 *    a stripped VLAN tag before that delivery, so the tag is written inline (tag_inline).
 *
 * Frames of any other EtherType are TC_ACT_UNSPEC, untouched (legacy traffic).
 *
 * The tables are generation-stamped: the daemon writes generation g+1's entries, flips
 * `config.gen`, then deletes generation g's; a frame reads the generation once, so it sees one
 * whole table generation.  Counters are per CPU, read and reset by nobody: the daemon keeps the
 * last value it read and adds the difference to the counters the engine uses.  A frame the
 * program hands to user space is counted there (the engine counts its link's rx); a frame it
 * ends (drop, forward) is counted here, links before virtual links.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "vnet_names.h"     /* counter indexes: generated from vnet_router/model/names.py */

#define MAX_LINKS 1024
#define MAX_VLINKS 16384
#define MAX_PEERS 4096
#define NO_BUCKET 0xFFFFFFFFu
#define VLAN_TPID 0x8100
#define QINQ_TPID 0x88A8

/* LT_VID: "this VLAN id is used here" (key: peer 0); LT_IFACE: "a substrate interface" (key:
 * VLAN id IFACE_VID, peer 0) -- markers for the reason of a refusal */
enum link_type { LT_P2P = 0, LT_MULTI = 1, LT_VID = 2, LT_IFACE = 3 };
#define IFACE_VID 0xFFFF
enum action { A_USER = 0, A_SWITCH = 1, A_DROP = 2 };

struct config {                 /* config[0] */
	__u32 gen;              /* the table generation in force (0 or 1; 2: none, all to user) */
	__u16 ethertype;        /* the substrate's EtherType */
	__u16 pad;
	__u32 q_default;        /* queue of a frame the program leaves to the engine's rule */
	__u32 q_known;          /* VLI 0 from a known neighbour */
	__u32 q_other;          /* VLI 0 from any other sender */
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
	__u32 type;             /* enum link_type */
	__u32 ctl_bucket;       /* buckets index: VLI 0 from senders that are not known neighbours */
	__u8 local_mac[ETH_ALEN];       /* multiaccess: this node's MAC on the LAN */
	__u16 pad;
};

struct vli_key {
	__u32 link_slot;
	__u16 vli;
	__u8 gen;
	__u8 pad;
};

struct vli_val {                /* an input virtual link */
	__u32 in_slot;          /* vstats index of the input virtual link */
	__u32 action;           /* enum action */
	__u32 queue;            /* A_USER: the queue (fanout ring) of its vNet */
	__u32 bucket;           /* buckets index of the input policer, NO_BUCKET if none */
	/* A_SWITCH only */
	__u32 out_slot;         /* vstats index of the output virtual link */
	__u32 out_link_slot;
	__u32 out_ifindex;
	__u32 out_payload_mtu;
	__u32 priority;         /* skb->priority: the HTB class of a kernel-shaped output, or 0 */
	__u32 hlen;             /* bytes of hdr: 16 (untagged) or 20 (tagged), VLI included */
	__u8 hdr[20];           /* dst, src, [0x8100, TCI], EtherType, VLI */
};

struct peer_key {               /* a known neighbour: (substrate link, its MAC) */
	__u32 link_slot;
	__u8 mac[ETH_ALEN];
	__u16 pad;
};

struct bucket {                 /* the reference TokenBucket in integers */
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 rate;             /* bytes (or frames, for VLI 0) per second */
	__u64 burst;            /* bytes (frames) */
	__u64 credit;           /* bytes x 1e9 (byte-nanoseconds) */
	__u64 stamp;            /* ns, bpf_ktime_get_ns */
};

struct vstat { __u64 n[VSTAT_N]; };     /* by enum vnet_vstat */
struct lstat {                          /* by enum vnet_lstat, drop reason, ignore reason */
	__u64 n[LSTAT_N];
	__u64 drops[N_REASONS];
	__u64 ignored[N_IGNORES];
};
struct nstat { __u64 drops[N_REASONS]; };      /* frames on no substrate link */

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
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PEERS);
	__type(key, struct peer_key);
	__type(value, __u32);           /* its buckets index */
	__uint(map_flags, BPF_F_RDONLY_PROG);
} peers SEC(".maps");

struct {                /* input virtual links [0, MAX_VLINKS), links' VLI 0, neighbours */
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VLINKS + MAX_LINKS + MAX_PEERS);
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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct nstat);
} nstats SEC(".maps");

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

/* A frame for the engine, in queue `queue`.  The kernel clears a stripped VLAN tag before
 * the delivery to the engine's ring: the tag goes inline, where the engine reads it as from
 * any frame. */
static __always_inline int to_user(struct __sk_buff *skb, __u32 queue)
{
	__u8 h[12];
	__u16 tpid = bpf_ntohs((__u16)skb->vlan_proto);
	__u8 tag[4] = { tpid >> 8, tpid & 0xFF, skb->vlan_tci >> 8, skb->vlan_tci & 0xFF };

	skb->mark = queue;
	if (!skb->vlan_present)
		return TC_ACT_UNSPEC;
	if (bpf_skb_load_bytes(skb, 0, h, 12) < 0 || bpf_skb_vlan_pop(skb) < 0 ||
	    bpf_skb_change_head(skb, 4, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, h, 12, 0) < 0 || bpf_skb_store_bytes(skb, 12, tag, 4, 0) < 0)
		return TC_ACT_UNSPEC;
	return TC_ACT_UNSPEC;
}

static __always_inline int node_drop(__u32 reason)
{
	__u32 zero = 0;
	struct nstat *ns = bpf_map_lookup_elem(&nstats, &zero);

	if (ns && reason < N_REASONS)
		ns->drops[reason]++;
	return TC_ACT_SHOT;
}

/* A frame on link `ls` that ends here: counted on the link (rx), then dropped for `reason` */
static __always_inline struct lstat *link_rx(__u32 slot, __u32 n)
{
	struct lstat *ls = bpf_map_lookup_elem(&lstats, &slot);

	if (ls) {
		ls->n[LSTAT_RX_PACKETS]++;
		ls->n[LSTAT_RX_BYTES] += n;
	}
	return ls;
}

static __always_inline int link_drop(__u32 slot, __u32 n, __u32 reason)
{
	struct lstat *ls = link_rx(slot, n);

	if (ls && reason < N_REASONS)
		ls->drops[reason]++;
	return TC_ACT_SHOT;
}

static __always_inline int vlink_drop(__u32 slot, __u32 n, __u32 vslot, __u32 counter)
{
	link_rx(slot, n);
	struct vstat *vs = bpf_map_lookup_elem(&vstats, &vslot);
	if (vs && counter < VSTAT_N)
		vs->n[counter]++;
	return TC_ACT_SHOT;
}

static __always_inline int kernel_switch(struct __sk_buff *skb, struct vli_val *e, __u32 lslot,
					 __u32 n, __u32 len, int inline_tag);

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

SEC("tc")
int substrate_tc(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	__u8 h[22];
	__u16 proto, vid = 0;
	__u32 off = 14, n;
	int inline_tag = 0;

	/* a substrate frame: the substrate's EtherType at 12, or at 16 behind an inline 802.1Q
	 * or 802.1ad tag (what the engine's classic filter, packet_io.substrate_filter, keeps) */
	if (!cfg || bpf_skb_load_bytes(skb, 0, h, 14) < 0)
		return TC_ACT_UNSPEC;
	proto = (h[12] << 8) | h[13];
	if (skb->vlan_present)
		vid = skb->vlan_tci & 0x0FFF;
	if (proto != cfg->ethertype) {
		if (proto != VLAN_TPID && proto != QINQ_TPID)
			return TC_ACT_UNSPEC;
		if (bpf_skb_load_bytes(skb, 14, h + 14, 4) < 0 ||
		    ((h[16] << 8) | h[17]) != cfg->ethertype)
			return TC_ACT_UNSPEC;
		if (skb->vlan_present)          /* a tag behind the stripped one: the engine's */
			return to_user(skb, cfg->q_default);
		vid = ((h[14] << 8) | h[15]) & 0x0FFF;
		off = 18;
		inline_tag = 1;
	}
	if (cfg->gen > 1)                       /* no tables: the engine decides everything */
		return to_user(skb, cfg->q_default);
	n = skb->len + (skb->vlan_present ? 4 : 0);     /* as the engine sees it, tag inline */

	/* the substrate link */
	struct link_key lk = { .ifindex = skb->ifindex, .vid = vid, .gen = cfg->gen };
	if (vid)
		__builtin_memcpy(lk.peer, h + 6, ETH_ALEN);
	struct link_val *l = bpf_map_lookup_elem(&links, &lk);
	if (!l || l->type == LT_VID || l->type == LT_IFACE) {
		if (!vid)
			return node_drop(R_NO_LINK);
		__builtin_memset(lk.peer, 0, ETH_ALEN);
		l = bpf_map_lookup_elem(&links, &lk);
		if (l && l->type == LT_VID)
			return node_drop(R_BAD_PEER);
		lk.vid = IFACE_VID;
		l = bpf_map_lookup_elem(&links, &lk);
		return node_drop(l && l->type == LT_IFACE ? R_UNKNOWN_VLAN : R_NO_LINK);
	}
	__u32 slot = l->slot;

	/* VLI and LEN, at off in the skb (n counts a stripped tag; the skb does not hold it) */
	if (skb->len < off + 4)
		return link_drop(slot, n, R_SHORT);
	if (bpf_skb_load_bytes(skb, inline_tag ? 18 : 14, h + 18, 4) < 0)
		return link_drop(slot, n, R_SHORT);
	__u16 vli = (h[18] << 8) | h[19];
	__u32 len = (h[20] << 8) | h[21];
	if (off + 4 + len > skb->len)
		return link_drop(slot, n, R_BAD_LEN);
	if (len > l->payload_mtu)
		return link_drop(slot, n, R_OVERSIZE);

	/* the input virtual link */
	struct vli_key vk = { .link_slot = slot, .vli = vli, .gen = cfg->gen };
	struct vli_val *e = bpf_map_lookup_elem(&vlis, &vk);
	if (!e) {
		if (vli == 0) {                 /* control: known neighbours apart, each budgeted */
			/* what no receiver would take (wire/control.py plausible) costs no budget */
			__u8 c[4];
			if (len < CTL_HEADER_LEN || bpf_skb_load_bytes(skb, off + 4, c, 4) < 0 ||
			    c[0] != CTL_VERSION || c[1] < 1 || c[1] > CTL_MAX_TYPE ||
			    (((c[2] << 8) | c[3]) & ~CTL_FLAGS))
				return link_drop(slot, n, R_CONTROL);
			struct peer_key pk = { .link_slot = slot };
			__builtin_memcpy(pk.mac, h + 6, ETH_ALEN);
			__u32 *pb = bpf_map_lookup_elem(&peers, &pk);
			__u32 bucket = pb ? *pb : l->ctl_bucket;
			if (bucket != NO_BUCKET && !take(bucket, 1))
				return link_drop(slot, n, R_CONTROL_POLICED);
			return to_user(skb, pb ? cfg->q_known : cfg->q_other);
		}
		if (l->type == LT_MULTI && !same_mac(h, l->local_mac)) {
			/* flooded on the LAN for a vNet this node does not host: not a fault */
			struct lstat *ls = link_rx(slot, n);
			if (ls)
				ls->ignored[I_NOT_MEMBER]++;
			return TC_ACT_SHOT;
		}
		return link_drop(slot, n, R_UNKNOWN_VLI);
	}
	if (e->bucket != NO_BUCKET && !take(e->bucket, len))
		return vlink_drop(slot, n, e->in_slot, VSTAT_POLICED);
	if (e->action == A_DROP)
		return vlink_drop(slot, n, e->in_slot, VSTAT_VLI_DROP);
	if (e->action == A_USER)
		return to_user(skb, e->queue);
	return kernel_switch(skb, e, slot, n, len, inline_tag);
}

/* The kernel tier: switch onto an Ethernet substrate link (see the file's comment) */
static __always_inline int kernel_switch(struct __sk_buff *skb, struct vli_val *e, __u32 lslot,
					 __u32 n, __u32 len, int inline_tag)
{
	struct lstat *lin, *lout;
	struct vstat *vin, *vout;

	lin = bpf_map_lookup_elem(&lstats, &lslot);
	vin = bpf_map_lookup_elem(&vstats, &e->in_slot);
	vout = bpf_map_lookup_elem(&vstats, &e->out_slot);
	lout = bpf_map_lookup_elem(&lstats, &e->out_link_slot);
	if (!lin || !vin || !vout || !lout)
		return TC_ACT_SHOT;
	lin->n[LSTAT_RX_PACKETS]++;
	lin->n[LSTAT_RX_BYTES] += n;
	vin->n[VSTAT_PACKETS]++;
	vin->n[VSTAT_BYTES] += len;
	if (len > e->out_payload_mtu) {
		vout->n[VSTAT_TOO_BIG]++;
		return TC_ACT_SHOT;
	}
	__u32 hlen = e->hlen, ifindex = e->out_ifindex, priority = e->priority;
	__u8 hdr[20];
	__builtin_memcpy(hdr, e->hdr, sizeof(hdr));
	/* the input tag goes (metadata or inline): the output's is written inline */
	if (skb->vlan_present || inline_tag)
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

/* The PACKET_FANOUT selector of the engine's rings of one interface (PACKET_FANOUT_EBPF):
 * the ring of the queue substrate_tc chose (the kernel takes it modulo the group's size). */
SEC("socket")
int substrate_fanout(struct __sk_buff *skb)
{
	return skb->mark;
}

char LICENSE[] SEC("license") = "MIT";
