"""The kernel tier (``[node] datapath = "kernel"``): the compiled engine with the substrate's
common case forwarded in the kernel by ``bpf/substrate.bpf.c``.

``KernelEngine`` is the compiled engine (``_fastpath.CEngine``) with a ``KernelTier`` as an
add-on.  The tier loads the program once (``ops.ebpf``, the one owner of BPF loading),
attaches it at TC ingress of every Ethernet substrate interface and binds the engine's receive
ring there to the substrate EtherType (served after TC ingress, where ETH_P_ALL taps are served
before it), so a frame is handled by exactly one of them: the kernel forwards what its tables
hold, the engine's ring sees only the rest (control, deliveries to logical interfaces, UDP
tunnels, user-space shaping, every malformed frame), its VLAN tag written inline by the
program since the kernel clears it before that delivery.

How the two are put together: composition.  ``KernelEngine`` holds the compiled engine
(``self.inner``) and the tier (``self.tier``: its program, attachments, tables and counters,
``None`` once it cannot run).  The ``Engine`` methods where the tier has work --
``sync_substrate`` (attach), ``start`` (the counter timer), ``install``, ``retune``, ``flush``
and ``sync_counters`` (counters), ``close``, ``stats``, ``tier_of`` -- run the compiled
engine's step, then the tier's; the others (``process_eth``, ``process_udp``, ``on_tap``,
``flush_tx``) are the compiled engine's, reached through ``engine.delegate`` with no forwarder
written.  Nothing of the compiled engine but what it exposes (``rings``) is touched from here.
Why not hooks in the core: the core would then know about a tier only one engine has.  What
differs for the core is declared in ``capabilities`` (``kernel_tier``); once the tier stopped
(it could not load, or an attach or a map write failed at run time), the engine's ``name`` and
``capabilities`` are the compiled engine's: ``vnetctl show`` says ``fast``, and nothing writes
into the core.

What the kernel takes, decided from the same entries the engine runs on (``entries.Compiled``:
the core binds meters and encapsulations once, both tiers read them): a switch
(pass-through) from an Ethernet substrate link onto an Ethernet substrate link whose output
virtual link is unshaped or shaped by the kernel (HTB; the program sets ``skb->priority`` to
the class the link's send socket names), with input policing by the virtual link's token
bucket in the program.  Why shaping is the kernel's HTB and not a queue in the program: a
program cannot hold a frame, and this kernel has no fq qdisc for departure-time pacing; HTB is
the kernel's shaper and the node already manages one class per output virtual link
(``[tm] kernel_shaping``).  A switch whose output the user-space shaper shapes stays in the
engine (the engine's shaper is the one FIFO of that link).

A reload writes the new table generation beside the old, flips the program's generation word,
then removes the old entries: a frame sees one generation.  Counters are per CPU in the
program; ``sync`` (every ``SYNC_S``, at every install and at close) adds what moved since the
last read to the same counters the engines use (virtual links, substrate links, drops by
reason), and ``stats`` says how many frames each tier handled.

If BPF is unavailable (no libbpf, no object built with the package and no clang to build one,
no privilege, the verifier refuses, an attach fails), the engine logs one error line and the
compiled engine forwards everything.
"""
from __future__ import annotations

import logging
import socket
import struct
import time
from dataclasses import replace

from vnet_router.datapath import packet_io
from vnet_router.datapath._fastpath import CEngine
from vnet_router.datapath.engine import delegate
from vnet_router.datapath.meters import TokenBucket
from vnet_router.model.names import LINK_COUNTERS, VLINK_COUNTERS
from vnet_router.model.tables import IN, SWITCH
from vnet_router.ops import ebpf
from vnet_router.wire import substrate as wire

log = logging.getLogger(__name__)

SOURCE = str(ebpf.BPF_DIR / "substrate.bpf.c")
TC_HANDLE, TC_PRIORITY = 0x564E, 1
SYNC_S = 0.5
NO_BUCKET = 0xFFFFFFFF
BPF_F_LOCK = 4
SO_DETACH_FILTER = 27
EMPTY_GEN = 2                       # the tables hold generations 0 and 1 only
_CONFIG = struct.Struct("<IHH")
_LINK_KEY = struct.Struct("<IHBB6sH")
_LINK_VAL = struct.Struct("<III")
_VLI_KEY = struct.Struct("<IHBB")
_VLI_VAL = struct.Struct("<8I20s")
_BUCKET = struct.Struct("<IIQQQQ")          # lock, pad, rate B/s, burst B, credit B*ns, stamp
_VSTAT = struct.Struct(f"<{len(VLINK_COUNTERS.names)}Q")    # u64 by index: model/names.py
_LSTAT = struct.Struct(f"<{len(LINK_COUNTERS.names)}Q")
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


class KernelTier:
    """The program, its attachments and its tables (see the module docstring)."""

    def __init__(self, dp):
        self.dp = dp
        self.prog = ebpf.load_shipped(SOURCE)
        self.tc_fd = self.prog.programs["substrate_tc"]
        self.attached: dict[int, ebpf.Attachment] = {}
        self.rebound: dict[int, socket.socket] = {}  # ifindex -> its ring socket, rebound
        self.gen = 0
        self.keys: list[tuple[str, bytes]] = []      # entries of the generation in force
        self.link_slots = _Slots(self.prog.maps["lstats"].max_entries)
        self.vlink_slots = _Slots(self.prog.maps["vstats"].max_entries)
        self.last: dict[tuple, tuple] = {}           # (map, slot) -> counters last read
        self.kernel_vlinks: dict[tuple, object] = {}  # input key -> (in entry, out entry, ctxs)
        self.bucket_of: dict[tuple, tuple] = {}      # in VLink key -> (rate, burst) written
        self.frames = 0                              # frames the kernel forwarded or dropped

    # -- attach --------------------------------------------------------------------------------

    def attach(self, snap, rings: dict[int, socket.socket]):
        """TC ingress of every substrate interface of ``snap``, then its ring socket bound to
        the substrate EtherType (served after TC ingress), without a filter.  The program
        knows the EtherType first: until the first install it leaves every substrate frame to
        the engine with its tag inline (a frame it took for legacy would reach the re-bound
        ring without its tag)."""
        self.prog.update("config", bytes(4), _CONFIG.pack(self.gen, snap.ethertype, 0))
        for ifindex in snap.ifaces:
            if ifindex not in self.attached:
                created = ebpf.tc_attach(self.tc_fd, ifindex, TC_HANDLE, TC_PRIORITY,
                                         replace=True)   # ours from a killed run: stale
                self.attached[ifindex] = ebpf.Attachment(snap.ifaces[ifindex].ifname, ifindex,
                                                         TC_HANDLE, TC_PRIORITY, created)
                log.info("kernel tier: attached at TC ingress of %s",
                         snap.ifaces[ifindex].ifname)
        for ifindex, sock in rings.items():
            if ifindex in self.attached and self.rebound.get(ifindex) is not sock:
                # after TC ingress, the frames the program leaves (their tag inline), no filter
                sock.bind((self.attached[ifindex].ifname, snap.ethertype))
                sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
                self.rebound[ifindex] = sock
        for ifindex in [i for i in self.attached if i not in snap.ifaces]:
            self._detach(self.attached.pop(ifindex))
            self.rebound.pop(ifindex, None)

    def _detach(self, a: ebpf.Attachment):
        try:
            ebpf.tc_detach(a.ifindex, a.handle, a.priority, a.created_qdisc)
        except ebpf.BpfError as e:
            log.warning("kernel tier: %s: %s", a.ifname, e)

    def close(self, rings: dict[int, socket.socket] | None = None, ethertype: int = 0):
        """Detach everywhere; with ``rings`` (the engine goes on alone), bind them to ETH_P_ALL
        with the classic filter again.  In this order, so no frame is lost or forwarded twice
        on the way: the program first switches to a generation without entries (every frame
        to the engine, tag inline), then the rings go back to the tap before TC ingress, then
        the program goes."""
        self.sync()
        if rings:
            self.prog.update("config", bytes(4), _CONFIG.pack(EMPTY_GEN, ethertype, 0))
        for ifindex, sock in (rings or {}).items():
            if self.rebound.get(ifindex) is sock:
                packet_io.attach_filter(sock, packet_io.substrate_filter(ethertype))
                sock.bind((socket.if_indextoname(ifindex), packet_io.ETH_P_ALL))
        self.rebound.clear()
        for a in self.attached.values():
            self._detach(a)
        self.attached.clear()
        self.prog.close()

    # -- tables --------------------------------------------------------------------------------

    def install(self, snap):
        """Write ``snap``'s kernel entries as the next generation and make it the one in force."""
        self.sync()
        gen = self.gen ^ 1
        links: dict[bytes, bytes] = {}
        vlis: dict[bytes, bytes] = {}
        chosen = {}
        eth = {lid: c for lid, c in snap.links.items() if c.kind != "udp"}
        self.link_slots.keep(eth)
        for lid, ctx in eth.items():
            slot = self._slot(self.link_slots, "lstats", lid)
            if slot is None:
                continue
            vid = ctx.vlan.vid if ctx.kind == "p2p" else 0
            peer = ctx.peer_mac if ctx.kind == "p2p" else bytes(6)
            links[_LINK_KEY.pack(ctx.ifindex, vid, gen, 0, peer, 0)] = _LINK_VAL.pack(
                slot, ctx.payload_mtu, ctx.kind == "multiaccess")
        for key, e in snap.inputs.items():
            v = e.vlink
            if e.action != SWITCH or v.link_id not in eth or e.out is None:
                continue
            out = e.out
            octx = out.ctx
            if octx.kind == "udp" or out.meter is not None or \
                    not (e.meter is None or isinstance(e.meter, TokenBucket)):
                continue
            chosen[key] = (e, out, e.ctx, octx)
        self.vlink_slots.keep({k for vk, c in chosen.items() for k in (vk, c[1].key)})
        for key, (e, out, _ictx, octx) in list(chosen.items()):
            v = e.vlink
            lslot = self.link_slots.of.get(v.link_id)
            oslot = self.link_slots.of.get(out.vlink.link_id)
            islot = self._slot(self.vlink_slots, "vstats", key)
            outslot = self._slot(self.vlink_slots, "vstats", out.key)
            if None in (lslot, oslot, islot, outslot):       # counters full: the engine's
                del chosen[key]
                continue
            bucket = NO_BUCKET
            if isinstance(e.meter, TokenBucket):
                bucket = islot
                self._bucket(key, islot, e.meter)
            if octx.kind == "p2p":
                hdr = out.encap
            else:
                hdr = (out.dst or wire.BROADCAST_MAC) + out.encap
            prio = out.txsock.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY) \
                if out.txsock is not None else 0
            vlis[_VLI_KEY.pack(lslot, v.vli, gen, 0)] = _VLI_VAL.pack(
                islot, outslot, oslot, octx.ifindex, octx.payload_mtu, prio, bucket, len(hdr),
                hdr.ljust(20, b"\0"))
        for k, val in links.items():
            self.prog.update("links", k, val)
        for k, val in vlis.items():
            self.prog.update("vlis", k, val)
        self.prog.update("config", bytes(4), _CONFIG.pack(gen, snap.ethertype, 0))
        for name, k in self.keys:
            self.prog.delete(name, k)
        self.gen = gen
        self.keys = [("links", k) for k in links] + [("vlis", k) for k in vlis]
        self.kernel_vlinks = chosen
        for key in [k for k in self.bucket_of if k not in chosen]:
            del self.bucket_of[key]

    def _slot(self, slots: _Slots, counters: str, key) -> int | None:
        new = key not in slots.of
        n = slots.get(key)
        if n is not None and new:            # a reused slot: its counts are someone else's
            self.last[(counters, n)] = self._read(counters, n)
        return n

    def _bucket(self, key, idx: int, tb: TokenBucket):
        rate, burst = int(tb.rate), int(tb.burst)
        if self.bucket_of.get(key) == (rate, burst):
            return
        cur = self.prog.lookup("buckets", idx.to_bytes(4, "little"))
        credit = burst * NS
        stamp = 0
        if key in self.bucket_of and cur:
            # as TokenBucket.set_rate: refilled up to now at the old rate, then the new one
            _l, _p, old_rate, old_burst, credit, stamp = _BUCKET.unpack(cur[0])
            now = time.monotonic_ns()           # the program's clock (bpf_ktime_get_ns)
            if now > stamp:
                credit, stamp = min(credit + (now - stamp) * old_rate, old_burst * NS), now
            credit = min(credit, burst * NS)
        self.prog.update("buckets", idx.to_bytes(4, "little"),
                         _BUCKET.pack(0, 0, rate, burst, credit, stamp), BPF_F_LOCK)
        self.bucket_of[key] = (rate, burst)

    def retune(self, e):
        """Entry ``e``'s token bucket got a new rate: the program's bucket follows."""
        if e.key in self.kernel_vlinks and isinstance(e.meter, TokenBucket):
            self._bucket(e.key, self.vlink_slots.of[e.key], e.meter)

    # -- counters ------------------------------------------------------------------------------

    def _read(self, counters: str, slot: int) -> tuple:
        per_cpu = self.prog.lookup(counters, slot.to_bytes(4, "little")) or []
        fmt = _VSTAT if counters == "vstats" else _LSTAT
        return tuple(map(sum, zip(*(fmt.unpack(b) for b in per_cpu)))) or (0,) * (fmt.size // 8)

    def _delta(self, counters: str, slot: int) -> dict[str, int]:
        """What moved since the last read, by counter name (model/names.py: index -> name)."""
        now = self._read(counters, slot)
        before = self.last.get((counters, slot), (0,) * len(now))
        self.last[(counters, slot)] = now
        names = VLINK_COUNTERS if counters == "vstats" else LINK_COUNTERS
        return dict(zip(names.ordered(), (a - b for a, b in zip(now, before))))

    def sync(self):
        """Add what the program counted since the last sync to the datapath's counters."""
        dp = self.dp
        snap = dp.snap
        # virtual links first: the program counts a frame on its links before its virtual
        # links, so each read sees on the links every frame it sees on the virtual links
        for key, slot in list(self.vlink_slots.of.items()):
            d = self._delta("vstats", slot)
            v = dp.tables.vlinks.get(key)
            if v is None:
                continue
            v.packets += d["packets"]
            v.bytes += d["bytes"]
            ctx = snap.links.get(v.link_id) if snap is not None else None
            for reason in ("policed", "too_big"):           # counters named as drop reasons
                if n := d[reason]:
                    dp.count_drops(reason, n, ctx, v)
        for lid, slot in list(self.link_slots.of.items()):
            d = self._delta("lstats", slot)
            rxp, rxb, txp, txb = d["rx_packets"], d["rx_bytes"], d["tx_packets"], d["tx_bytes"]
            ctx = snap.links.get(lid) if snap is not None else None
            if ctx is not None and (rxp or txp):
                st = ctx.state
                st.rx_packets += rxp
                st.rx_bytes += rxb
                st.tx_packets += txp
                st.tx_bytes += txb
                self.frames += rxp

    def stats(self) -> dict[str, int]:
        return {"kernel_frames": self.frames, "kernel_switches": len(self.kernel_vlinks),
                "kernel_interfaces": len(self.attached)}


@delegate("process_eth", "process_udp", "on_tap", "flush_tx", to="inner")
class KernelEngine:
    """The compiled engine with a ``KernelTier`` (see the module docstring)."""

    name = "kernel"
    capabilities = replace(CEngine.capabilities, kernel_tier=True)

    def __init__(self, dp):
        self.dp = dp
        self.inner = CEngine(dp)
        self.tier: KernelTier | None = None
        self._timer = None
        why = ebpf.available(compiler=False)
        if why is None:
            try:
                self.tier = KernelTier(dp)
            except (ebpf.BpfError, OSError) as e:
                why = str(e).splitlines()[0]
        if why is not None:
            log.error("datapath: the kernel tier cannot run (%s); the compiled engine "
                      "forwards everything", why)
            self._engine_only()

    def _engine_only(self):
        """The compiled engine alone from now on: its label and capabilities are this one's."""
        self.name, self.capabilities = CEngine.name, CEngine.capabilities

    def _rings(self) -> dict[int, socket.socket]:
        return {ifindex: rx.sock for ifindex, (rx, _ring) in self.inner.rings.items()}

    def _fail(self, e: Exception):
        log.error("datapath: the kernel tier stops (%s); the compiled engine forwards "
                  "everything", str(e).splitlines()[0])
        tier, self.tier = self.tier, None
        tier.close(self._rings(), self.dp.tables.config.node.ethertype)
        self._engine_only()

    # -- the hooks: the compiled engine's step, then the tier's --------------------------------

    def sync_substrate(self, snap, close):
        self.inner.sync_substrate(snap, close)
        if self.tier is not None:
            try:
                self.tier.attach(snap, self._rings())
            except (ebpf.BpfError, OSError) as e:
                self._fail(e)

    def start(self):
        self.inner.start()
        if self.tier is not None and self._timer is None:
            self._timer = self.dp.loop.call_later(SYNC_S, self._tick)

    def _tick(self):
        self._timer = None
        if self.tier is not None:
            self.tier.sync()
            self._timer = self.dp.loop.call_later(SYNC_S, self._tick)

    def install(self, snap):
        self.inner.install(snap)
        if self.tier is not None:
            try:
                self.tier.install(snap)
            except (ebpf.BpfError, OSError) as e:
                self._fail(e)

    def retune(self, e):
        self.inner.retune(e)
        if self.tier is not None:
            self.tier.retune(e)

    def flush(self):
        self.inner.flush()
        if self.tier is not None:
            self.tier.sync()

    def sync_counters(self):
        self.inner.sync_counters()
        if self.tier is not None:
            self.tier.sync()

    def close(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.tier is not None:
            self.tier.close()
            st = self.tier.stats()
            log.info("kernel tier: %d frames handled in the kernel", st["kernel_frames"])
            self.tier = None
        self.inner.close()

    def stats(self) -> dict[str, int]:
        st = dict(self.inner.stats())
        st.update(self.tier.stats() if self.tier is not None else
                  {"kernel_frames": 0, "kernel_switches": 0, "kernel_interfaces": 0})
        return st

    def tier_of(self, key) -> str:
        """Which tier forwards the frames of input virtual link ``key``."""
        return "kernel" if self.tier is not None and key in self.tier.kernel_vlinks else "engine"
