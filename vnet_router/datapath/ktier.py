"""The BPF engines: the compiled engine (``_fastpath.CEngine``) behind the classifier
(``classifier.Classifier``, ``bpf/substrate.bpf.c`` at TC ingress), with or without the kernel
tier.

``FastEngine`` (``datapath = "fast"``, and ``auto``) classifies in the kernel: it drops what
the tables refuse, polices input virtual links, and steers every other frame to the ring of
its vNet (the engine's rings of an interface form one PACKET_FANOUT group, served in weighted
rounds).  ``KernelEngine`` (``datapath = "kernel"``) also forwards in the kernel the switches
whose output is unshaped or shaped by the kernel's HTB (the program sets ``skb->priority`` to
the class the link's send socket names).  Why shaping is the kernel's HTB and not a queue in
the program: a program cannot hold a frame, and this kernel has no fq qdisc for departure-time
pacing.  A switch whose output the user-space shaper shapes stays in the engine.

How they are put together: composition.  The engine holds the compiled engine
(``self.inner``) and the classifier (``self.tier``, ``None`` once it cannot run).  The
``Engine`` methods where the classifier has work -- ``sync_substrate`` (attach before the
rings open: they are bound after TC ingress, and the program writes the VLAN tag the kernel
clears before that delivery inline), ``start`` (the counter timer), ``install``, ``retune``,
``flush`` and ``sync_counters`` (counters), ``close``, ``stats``, ``tier_of`` -- run both; the
others (``process_eth``, ``process_udp``, ``on_tap``, ``flush_tx``) are the compiled engine's,
reached through ``engine.delegate``.  What differs for the core is declared in
``capabilities`` (``kernel_tier``).

If BPF is unavailable (no libbpf, no object built with the package and no clang to build one,
no privilege, the verifier refuses, an attach fails), the engine logs one line and the
compiled engine alone reads every frame, from one ring per interface with its classic filter
(``vnetctl show`` says so: ``fast`` without ``classified``).  Once it stopped at run time (a
map write failed), the rings are opened again that way and the tier is gone.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from vnet_router.datapath._fastpath import CEngine
from vnet_router.datapath.classifier import Classifier, RX_QUEUES, quanta, ring_frames
from vnet_router.datapath.engine import delegate
from vnet_router.ops import ebpf

log = logging.getLogger(__name__)

SYNC_S = 0.5


@delegate("process_eth", "process_udp", "on_tap", "flush_tx", to="inner")
class KernelEngine:
    """The compiled engine behind the classifier, with the kernel tier (see the module
    docstring)."""

    name = "kernel"
    capabilities = replace(CEngine.capabilities, kernel_tier=True)
    forward = True

    def __init__(self, dp):
        self.dp = dp
        self.inner = CEngine(dp)
        self.tier: Classifier | None = None
        self._timer = None
        why = ebpf.available(compiler=False)
        if why is None:
            try:
                self.tier = Classifier(dp, self.forward)
            except (ebpf.BpfError, OSError) as e:
                why = str(e).splitlines()[0]
        if why is not None:
            self._cannot_run(why)
            self._engine_only()
        else:
            self.inner.fanout = (self.tier.fanout_fd, ring_frames(RX_QUEUES))

    def _cannot_run(self, why: str):
        log.error("datapath: the kernel tier cannot run (%s); the compiled engine "
                  "forwards everything", why)

    def _engine_only(self):
        """The compiled engine alone from now on: its label and capabilities are this one's."""
        self.name, self.capabilities = CEngine.name, CEngine.capabilities

    def _fail(self, e: Exception, snap=None):
        log.error("datapath: the classifier stops (%s); the compiled engine reads every "
                  "frame", str(e).splitlines()[0])
        tier, self.tier = self.tier, None
        tier.release()
        self._engine_only()
        snap = snap if snap is not None else self.dp.snap
        if snap is not None:
            self.inner.reopen_rings(snap, None)
        tier.prog.close()

    # -- the hooks: the compiled engine's step, then the tier's --------------------------------

    def sync_substrate(self, snap, close):
        if self.tier is not None:
            try:
                self.tier.attach(snap)
            except (ebpf.BpfError, OSError) as e:
                self._fail(e, snap)
        self.inner.sync_substrate(snap, close)

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
        if self.tier is not None:
            try:
                self.tier.install(snap)
            except (ebpf.BpfError, OSError) as e:
                self._fail(e, snap)
        tier = self.tier
        self.inner._engine.kpoliced = frozenset(tier.policed) if tier is not None else ()
        self.inner.install(snap)
        if tier is not None:
            alone = {}
            for name, q in tier.queues.items():
                alone[q] = name if q not in alone else None
            self.inner.shape_service(quanta(snap, tier.queues, tier.nqueues),
                                     {q: n for q, n in alone.items() if n is not None})

    def set_peers(self, peers):
        """The control plane's known neighbours (link id -> MACs): their VLI-0 frames go to
        the control queue served first."""
        if self.tier is not None:
            try:
                self.tier.set_peers(peers)
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
        self.inner.close()          # the rings first: they would misread frames untagged
        if self.tier is not None:
            self.tier.close()
            st = self.tier.stats()
            log.info("classifier: %d frames ended in the kernel (forwarded or dropped)",
                     st["kernel_frames"])
            self.tier = None

    def stats(self) -> dict[str, int]:
        st = dict(self.inner.stats())
        st.update(self.tier.stats() if self.tier is not None else
                  {"kernel_frames": 0, "kernel_switches": 0, "kernel_interfaces": 0,
                   "classified": 0})
        return st

    def tier_of(self, key) -> str:
        """Which tier forwards the frames of input virtual link ``key``."""
        return "kernel" if self.tier is not None and key in self.tier.kernel_vlinks else "engine"


class FastEngine(KernelEngine):
    """The compiled engine behind the classifier, every switch in user space."""

    name = "fast"
    capabilities = CEngine.capabilities
    forward = False

    def _cannot_run(self, why: str):
        log.warning("datapath: no classification in the kernel (%s); the compiled engine "
                    "reads every frame from one ring per interface", why)
