"""The classifier: ``bpf/substrate.bpf.c`` at TC ingress of every Ethernet substrate interface,
its tables and its counters -- classification before any queue vNets share.

Both BPF modes of the node run it (``ktier.py``: ``datapath = "fast"`` classifies only,
``"kernel"`` also forwards the switches the kernel can take).  Per frame the program drops
what the tables refuse (counted by reason, no copy to user space), polices input virtual links
by their token buckets, forwards kernel switches, and steers every other frame to the ring of
its vNet: the engine's rings of an interface form a PACKET_FANOUT group whose eBPF selector
returns the queue the program wrote into ``skb->mark``.

The queues of an interface (``RX_QUEUES`` rings, one fanout group):

* ``Q_DEFAULT`` (0): frames the program leaves to the engine's rule (no tables yet, a tag
  behind a stripped one) and the vNets beyond the number of rings;
* ``Q_KNOWN`` (1): VLI 0 from known neighbours (the peer of a p2p link, the neighbours the
  control plane names with ``set_peers``), each within its own budget (``KNOWN_BUDGET``);
* ``Q_OTHER`` (2): VLI 0 from any other sender, within one budget per link (``OTHER_BUDGET``);
* ``FIRST_VNET_Q`` (3) on: one per vNet with an input virtual link on an Ethernet substrate
  link, by name (more vNets than rings: they share, round-robin).

The engine serves them in rounds (``_Engine.serve``): a ring that was empty at its last look
first (a quiet vNet's frame), then the backlogged ones, known neighbours' control first, each
vNet's ring up to its quantum (``quanta``: ``TURN`` frames scaled by the vNet's rate, at least
``MIN_QUANTUM``), strangers' control last and least.  A full ring drops only its own frames:
the kernel counts them on that ring's socket and the engine adds them as its vNet's
``ring_full``.

Tables are written as generation g+1 beside g, ``config.gen`` flips, then g's entries go (a
frame sees one generation).  Counters are per CPU in the program: ``sync`` adds what moved
since the last read to the datapath's counters (node drops, per link rx/tx, drops and ignored,
per virtual link packets, bytes, policed, too_big, vli_drop).
"""
from __future__ import annotations

import logging
import socket
import struct
import time

from vnet_router.datapath.meters import TokenBucket
from vnet_router.model.names import DROP_REASONS, IGNORE_REASONS, LINK_COUNTERS, \
    VLINK_COUNTERS
from vnet_router.model.tables import DROP, SWITCH
from vnet_router.ops import ebpf
from vnet_router.wire import substrate as wire

log = logging.getLogger(__name__)

SOURCE = str(ebpf.BPF_DIR / "substrate.bpf.c")
TC_HANDLE, TC_PRIORITY = 0x564E, 1
NO_BUCKET = 0xFFFFFFFF
BPF_F_LOCK = 4
EMPTY_GEN = 2                       # the tables hold generations 0 and 1; 2: every frame to user
MAX_VLINKS, MAX_LINKS = 16384, 1024  # as substrate.bpf.c
RX_QUEUES = 8
Q_DEFAULT, Q_KNOWN, Q_OTHER, FIRST_VNET_Q = 0, 1, 2, 3
RING_FRAMES = {Q_DEFAULT: 1024, Q_KNOWN: 256, Q_OTHER: 256}     # the vNets' rings: VNET_FRAMES
VNET_FRAMES = 2048
TURN, MIN_QUANTUM, OTHER_QUANTUM = 256, 32, 16   # frames per ring and turn (see quanta)
KNOWN_BUDGET = (5000, 1000)         # VLI-0 frames per second, burst: each known neighbour
OTHER_BUDGET = (1000, 200)          # ... all other senders of one substrate link together
LT_P2P, LT_MULTI, LT_VID, LT_IFACE, IFACE_VID = 0, 1, 2, 3, 0xFFFF
A_USER, A_SWITCH, A_DROP = 0, 1, 2

_CONFIG = struct.Struct("<IHHIII")              # gen, ethertype, pad, queues: default, known, other
_LINK_KEY = struct.Struct("<IHBB6sH")
_LINK_VAL = struct.Struct("<IIII6sH")           # slot, payload MTU, type, ctl bucket, local MAC
_VLI_KEY = struct.Struct("<IHBB")
_VLI_VAL = struct.Struct("<10I20s")
_PEER_KEY = struct.Struct("<I6sH")
_BUCKET = struct.Struct("<IIQQQQ")          # lock, pad, rate B/s, burst B, credit B*ns, stamp
_VSTAT = struct.Struct(f"<{len(VLINK_COUNTERS.names)}Q")    # u64 by index: model/names.py
_LSTAT = struct.Struct(f"<{len(LINK_COUNTERS.names) + len(DROP_REASONS) + len(IGNORE_REASONS)}Q")
_NSTAT = struct.Struct(f"<{len(DROP_REASONS)}Q")
NS = 1_000_000_000


class _Slots:
    """Stable small integers for keys (counter and bucket indexes), reused when freed."""

    def __init__(self, size: int):
        self.size, self.of, self.free = size, {}, []

    def get(self, key) -> int | None:
        if key in self.of:
            return self.of[key]
        if self.free:
            n = self.free.pop()
        elif len(self.of) < self.size:
            n = len(self.of)
        else:
            return None
        self.of[key] = n
        return n

    def keep(self, keys):
        for key in [k for k in self.of if k not in keys]:
            self.free.append(self.of.pop(key))


def ring_frames(nqueues: int = RX_QUEUES) -> list[int]:
    """Slots of each ring of an interface (a vNet's ring holds a burst at line rate)."""
    return [RING_FRAMES.get(q, VNET_FRAMES) for q in range(nqueues)]


def vnet_queues(snap, nqueues: int = RX_QUEUES) -> dict[str, int]:
    """The ring of each vNet with an input virtual link on an Ethernet substrate link."""
    names = sorted({e.vlink.vnet for e in snap.inputs.values() if e.ctx.kind != "udp"})
    per = max(1, nqueues - FIRST_VNET_Q)
    return {name: FIRST_VNET_Q + i % per for i, name in enumerate(names)}


def quanta(snap, queues: dict[str, int], nqueues: int = RX_QUEUES) -> dict[int, int]:
    """Frames each ring may give per turn of the ring thread: a vNet's in proportion to the
    sum of its input virtual links' rates (unrated vNets count as the largest), at least
    MIN_QUANTUM; known neighbours' control and the default ring a whole TURN.  The quanta
    weigh backlogged rings against each other; a quiet ring's frame does not wait for a turn
    (``_Engine.serve``: it is served first, and a walk yields to it every YIELD_EVERY frames)."""
    rate: dict[str, float] = {}
    for e in snap.inputs.values():
        r = e.vlink.rate
        bps = (r.cur or r.max) if r is not None else None
        if e.ctx.kind != "udp" and bps:
            rate[e.vlink.vnet] = rate.get(e.vlink.vnet, 0) + bps
    top = max(rate.values(), default=0)
    out = {Q_DEFAULT: TURN, Q_KNOWN: TURN, Q_OTHER: OTHER_QUANTUM}
    for q in range(FIRST_VNET_Q, nqueues):
        out[q] = MIN_QUANTUM
    for name, q in queues.items():
        share = rate.get(name, top) / top if top else 1.0
        out[q] = max(out[q], MIN_QUANTUM, int(TURN * share))
    return out


class Classifier:
    """The program, its attachments, tables and counters (see the module docstring).
    ``forward``: also forward the switches the kernel can take (the kernel tier)."""

    def __init__(self, dp, forward: bool, nqueues: int = RX_QUEUES):
        self.dp = dp
        self.forward = forward
        self.nqueues = nqueues
        self.prog = ebpf.load_shipped(SOURCE)
        self.tc_fd = self.prog.programs["substrate_tc"]
        self.fanout_fd = self.prog.programs["substrate_fanout"]
        self.attached: dict[int, ebpf.Attachment] = {}
        self.gen = EMPTY_GEN
        self.ethertype = 0
        self.keys: list[tuple[str, bytes]] = []      # entries of the generation in force
        self.link_slots = _Slots(MAX_LINKS)
        self.vlink_slots = _Slots(MAX_VLINKS)
        self.peer_slots = _Slots(self.prog.maps["peers"].max_entries)
        self.peers_written: dict[bytes, bytes] = {}  # peers map key -> value
        self.control_peers: dict[str, frozenset] = {}   # link id -> MACs (the control plane's)
        self.last: dict[tuple, tuple] = {}           # (map, slot) -> counters last read
        self.kernel_vlinks: dict[tuple, object] = {}  # input key -> (in entry, out entry)
        self.policed: set = set()                    # input keys the program polices
        self.queues: dict[str, int] = {}             # vNet -> queue
        self.bucket_of: dict[int, tuple] = {}        # bucket index -> (rate, burst, owner)
        self.frames = 0                              # frames the kernel ended (forward, drop)

    # -- attach --------------------------------------------------------------------------------

    def _config(self, gen: int):
        self.prog.update("config", bytes(4), _CONFIG.pack(gen, self.ethertype, 0, Q_DEFAULT,
                                                          Q_KNOWN, Q_OTHER))

    def attach(self, snap):
        """TC ingress of every substrate interface of ``snap``; detach the ones it lost.  Until
        the first install the program leaves every substrate frame to the engine (tag inline,
        ``Q_DEFAULT``)."""
        self.ethertype = snap.ethertype
        self._config(self.gen)
        for ifindex in snap.ifaces:
            if ifindex not in self.attached:
                created = ebpf.tc_attach(self.tc_fd, ifindex, TC_HANDLE, TC_PRIORITY,
                                         replace=True)   # ours from a killed run: stale
                self.attached[ifindex] = ebpf.Attachment(snap.ifaces[ifindex].ifname, ifindex,
                                                         TC_HANDLE, TC_PRIORITY, created)
                log.info("classifier: attached at TC ingress of %s", snap.ifaces[ifindex].ifname)
        for ifindex in [i for i in self.attached if i not in snap.ifaces]:
            self._detach(self.attached.pop(ifindex))

    def _detach(self, a: ebpf.Attachment):
        try:
            ebpf.tc_detach(a.ifindex, a.handle, a.priority, a.created_qdisc)
        except ebpf.BpfError as e:
            log.warning("classifier: %s: %s", a.ifname, e)

    def release(self):
        """Leave every frame to the engine (tag inline, ``Q_DEFAULT``), then detach."""
        self.sync()
        try:
            self._config(EMPTY_GEN)
        except ebpf.BpfError:
            pass
        for a in self.attached.values():
            self._detach(a)
        self.attached.clear()

    def close(self):
        self.release()
        self.prog.close()

    # -- tables --------------------------------------------------------------------------------

    def install(self, snap):
        """Write ``snap``'s entries as the next generation and make it the one in force."""
        self.sync()
        self.ethertype = snap.ethertype
        gen = 0 if self.gen == EMPTY_GEN else self.gen ^ 1
        links: dict[bytes, bytes] = {}
        vlis: dict[bytes, bytes] = {}
        eth = {lid: c for lid, c in snap.links.items() if c.kind != "udp"}
        self.link_slots.keep(eth)
        for ifindex in snap.ifaces:
            links[_LINK_KEY.pack(ifindex, IFACE_VID, gen, 0, bytes(6), 0)] = _LINK_VAL.pack(
                NO_BUCKET, 0, LT_IFACE, NO_BUCKET, bytes(6), 0)
        for lid, ctx in eth.items():
            slot = self._slot(self.link_slots, "lstats", lid)
            if slot is None:
                raise ebpf.BpfError(f"more than {MAX_LINKS} Ethernet substrate links")
            ctl = MAX_VLINKS + slot
            self._bucket(ctl, *OTHER_BUDGET)
            if ctx.kind == "p2p":
                vid, peer, ltype, mac = ctx.vlan.vid, ctx.peer_mac, LT_P2P, bytes(6)
                links.setdefault(_LINK_KEY.pack(ctx.ifindex, vid, gen, 0, bytes(6), 0),
                                 _LINK_VAL.pack(NO_BUCKET, 0, LT_VID, NO_BUCKET, bytes(6), 0))
            else:
                vid, peer, ltype, mac = 0, bytes(6), LT_MULTI, ctx.local_mac or bytes(6)
            links[_LINK_KEY.pack(ctx.ifindex, vid, gen, 0, peer, 0)] = _LINK_VAL.pack(
                slot, ctx.payload_mtu, ltype, ctl, mac, 0)
        queues = vnet_queues(snap, self.nqueues)
        chosen, policed = {}, set()
        inputs = {k: e for k, e in snap.inputs.items() if e.ctx.kind != "udp"}
        switches = {k: e for k, e in inputs.items() if self._kernel_switch(e)}
        self.vlink_slots.keep(set(inputs) | {e.out.key for e in switches.values()})
        for key, e in inputs.items():
            lslot = self.link_slots.of[e.vlink.link_id]
            islot = self._slot(self.vlink_slots, "vstats", key)
            bucket = NO_BUCKET
            if islot is not None and isinstance(e.meter, TokenBucket):
                bucket = islot
                self._bucket(islot, int(e.meter.rate), int(e.meter.burst), key)
                policed.add(key)
            val = None
            if key in switches and islot is not None:
                val = self._switch_val(e, islot, bucket)
            if val is not None:
                chosen[key] = (e, e.out)
            elif e.action == DROP and islot is not None:
                val = _VLI_VAL.pack(islot, A_DROP, 0, bucket, 0, 0, 0, 0, 0, 0, bytes(20))
            else:
                val = _VLI_VAL.pack(NO_BUCKET if islot is None else islot, A_USER,
                                    queues.get(e.vlink.vnet, Q_DEFAULT), bucket,
                                    0, 0, 0, 0, 0, 0, bytes(20))
            vlis[_VLI_KEY.pack(lslot, e.vlink.vli, gen, 0)] = val
        for k, val in links.items():
            self.prog.update("links", k, val)
        for k, val in vlis.items():
            self.prog.update("vlis", k, val)
        self._write_peers(snap)
        self._config(gen)
        for name, k in self.keys:
            self.prog.delete(name, k)
        self.gen = gen
        self.keys = [("links", k) for k in links] + [("vlis", k) for k in vlis]
        self.kernel_vlinks, self.policed, self.queues = chosen, policed, queues

    def _kernel_switch(self, e) -> bool:
        """A switch the kernel forwards: onto an Ethernet link, its output unshaped or shaped
        by the kernel's HTB, its input unpoliced or policed by a plain token bucket."""
        return self.forward and e.action == SWITCH and e.out is not None and \
            e.out.ctx.kind != "udp" and e.out.meter is None and \
            (e.meter is None or isinstance(e.meter, TokenBucket))

    def _switch_val(self, e, islot: int, bucket: int) -> bytes | None:
        out, octx = e.out, e.out.ctx
        oslot = self.link_slots.of.get(out.vlink.link_id)
        outslot = self._slot(self.vlink_slots, "vstats", out.key)
        if oslot is None or outslot is None:                 # counters full: the engine's
            return None
        hdr = out.encap if octx.kind == "p2p" else (out.dst or wire.BROADCAST_MAC) + out.encap
        prio = out.txsock.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY) \
            if out.txsock is not None else 0
        return _VLI_VAL.pack(islot, A_SWITCH, 0, bucket, outslot, oslot, octx.ifindex,
                             octx.payload_mtu, prio, len(hdr), hdr.ljust(20, b"\0"))

    def set_peers(self, peers: dict[str, frozenset]):
        """The control plane's known neighbours: substrate link id -> their MACs."""
        self.control_peers = {lid: frozenset(m) for lid, m in peers.items()}
        if self.gen != EMPTY_GEN and self.dp.snap is not None:
            self._write_peers(self.dp.snap)

    def _write_peers(self, snap):
        want: dict[bytes, tuple] = {}
        for lid, ctx in snap.links.items():
            slot = self.link_slots.of.get(lid)
            if slot is None:
                continue
            macs = set(self.control_peers.get(lid, ()))
            if ctx.kind == "p2p":
                macs.add(ctx.peer_mac)
            for mac in macs:
                want[_PEER_KEY.pack(slot, bytes(mac), 0)] = (lid, bytes(mac))
        self.peer_slots.keep(set(want.values()))
        for k in [k for k in self.peers_written if k not in want]:
            self.prog.delete("peers", k)
            del self.peers_written[k]
        for k, who in want.items():
            n = self.peer_slots.get(who)
            if n is None:
                continue                    # more neighbours than budgets: theirs is the link's
            idx = MAX_VLINKS + MAX_LINKS + n
            self._bucket(idx, *KNOWN_BUDGET)
            val = idx.to_bytes(4, "little")
            if self.peers_written.get(k) != val:
                self.prog.update("peers", k, val)
                self.peers_written[k] = val

    def _slot(self, slots: _Slots, counters: str, key) -> int | None:
        new = key not in slots.of
        n = slots.get(key)
        if n is not None and new:            # a reused slot: its counts are someone else's
            self.last[(counters, n)] = self._read(counters, n)
        return n

    def _bucket(self, idx: int, rate: int, burst: int, key=None):
        if self.bucket_of.get(idx) == (rate, burst, key):
            return
        cur = self.prog.lookup("buckets", idx.to_bytes(4, "little"))
        credit = burst * NS
        stamp = 0
        old = self.bucket_of.get(idx)
        if old is not None and old[2] == key and cur:
            # as TokenBucket.set_rate: refilled up to now at the old rate, then the new one
            _l, _p, old_rate, old_burst, credit, stamp = _BUCKET.unpack(cur[0])
            now = time.monotonic_ns()           # the program's clock (bpf_ktime_get_ns)
            if now > stamp:
                credit, stamp = min(credit + (now - stamp) * old_rate, old_burst * NS), now
            credit = min(credit, burst * NS)
        self.prog.update("buckets", idx.to_bytes(4, "little"),
                         _BUCKET.pack(0, 0, rate, burst, credit, stamp), BPF_F_LOCK)
        self.bucket_of[idx] = (rate, burst, key)

    def retune(self, e):
        """Entry ``e``'s token bucket got a new rate: the program's bucket follows."""
        if e.key in self.policed and isinstance(e.meter, TokenBucket):
            self._bucket(self.vlink_slots.of[e.key], int(e.meter.rate), int(e.meter.burst),
                         e.key)

    # -- counters ------------------------------------------------------------------------------

    def _read(self, counters: str, slot: int) -> tuple:
        per_cpu = self.prog.lookup(counters, slot.to_bytes(4, "little")) or []
        fmt = {"vstats": _VSTAT, "lstats": _LSTAT, "nstats": _NSTAT}[counters]
        return tuple(map(sum, zip(*(fmt.unpack(b) for b in per_cpu)))) or (0,) * (fmt.size // 8)

    def _delta(self, counters: str, slot: int) -> tuple:
        now = self._read(counters, slot)
        before = self.last.get((counters, slot), (0,) * len(now))
        self.last[(counters, slot)] = now
        return tuple(a - b for a, b in zip(now, before))

    def sync(self):
        """Add what the program counted since the last sync to the datapath's counters."""
        dp = self.dp
        snap = dp.snap
        links = snap.links if snap is not None else {}
        count = dp.count_drops
        for reason, n in zip(DROP_REASONS, self._delta("nstats", 0)):
            if n:
                count(reason, n)
                self.frames += n
        # virtual links first: the program counts a frame on its links before its virtual
        # links, so each read sees on the links every frame it sees on the virtual links
        names = VLINK_COUNTERS.ordered()
        for key, slot in list(self.vlink_slots.of.items()):
            d = dict(zip(names, self._delta("vstats", slot)))
            v = dp.tables.vlinks.get(key)
            if v is None:
                continue
            v.packets += d["packets"]
            v.bytes += d["bytes"]
            for reason in ("policed", "too_big", "vli_drop"):   # named as drop reasons
                if n := d[reason]:
                    count(reason, n, links.get(v.link_id), v)
        nl = len(LINK_COUNTERS.names)
        for lid, slot in list(self.link_slots.of.items()):
            d = self._delta("lstats", slot)
            rxp, rxb, txp, txb = d[:4]
            ctx = links.get(lid)
            if ctx is None:
                continue
            st = ctx.state
            st.rx_packets += rxp
            st.rx_bytes += rxb
            st.tx_packets += txp
            st.tx_bytes += txb
            self.frames += rxp
            for reason, n in zip(DROP_REASONS, d[nl:nl + len(DROP_REASONS)]):
                if n:
                    count(reason, n, ctx)
            for reason, n in zip(IGNORE_REASONS, d[nl + len(DROP_REASONS):]):
                if n:
                    dp.ignored[reason] += n
                    st.ignored[reason] += n

    def stats(self) -> dict[str, int]:
        runs, ns = self.prog.run_stats("substrate_tc")
        return {"kernel_frames": self.frames, "kernel_switches": len(self.kernel_vlinks),
                "kernel_interfaces": len(self.attached), "classified": 1,
                # the program's runs and time in them (kernel.bpf_stats_enabled = 1; else 0)
                "classifier_runs": runs, "classifier_run_ns": ns}
