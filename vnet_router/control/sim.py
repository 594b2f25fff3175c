"""In-process simulation of the control plane: many TMs, one VBM, a lossy transport.

Used by the tests and by ``benchmarks/ctl_settling.py``.  Every node runs the real
``TrafficManager`` with a real ``Requester``/``Responder``; messages are really encoded and
decoded, delayed 1-20 ms and dropped with probability ``loss``.  Time is simulated (the
injected clock), so a run is deterministic for a seed and never depends on the machine.

Invariants checked throughout (``violations`` collects any breach):

* per node and vNet: Σ current input rates <= the node's aggregate;
* per vNet: Σ of the nodes' aggregates <= the vNet's pool (share x LAN bandwidth), both as the
  nodes hold them and as the VBM records them;
* every virtual link (both ends): min <= current <= max.

Settling: the time of the last change of any current rate or aggregate, once the demand
stopped changing.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from vnet_router.control.tm import TrafficManager
from vnet_router.control.vbm import VBM
from vnet_router.wire import auth
from vnet_router.wire import control as m
from vnet_router.control.transport import Requester, Responder

VBM_ID = -1


class SimClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@dataclass
class SimNode:
    id: int
    tm: TrafficManager
    req: Requester
    resp: Responder


EPOCH = 1_800_000_000.0              # the wall clock of sealed messages at simulated time 0


def _mac(node: int) -> bytes:
    return (node & 0xFFFFFFFFFFFF).to_bytes(6, "big")


class Simulation:
    def __init__(self, n_nodes=100, *, seed=1, loss=0.2, links_per_node=2, lan_capacity=10**10,
                 shares=(0.4, 0.3, 0.2, 0.1), min_rate=1_000_000, max_rates=(10**7, 10**8),
                 idle_fraction=0.3, idle_interval=5.0, tick=0.05, vbm_rebuild=12.0,
                 keyring=None):
        self.rng = random.Random(seed)
        self.keyring = keyring          # a wire.auth.Keyring: every message sealed and checked
        self.clock = SimClock()
        self.loss, self.tick_every = loss, tick
        self.lan_capacity = lan_capacity
        self.shares = {i + 1: s for i, s in enumerate(shares)}
        self.queue: list = []
        self._n = 0
        self.sent = self.dropped = 0
        self.violations: list[str] = []
        self.last_change = 0.0
        self.counters: dict = {}
        self.vbm_up = True
        self.vbm_rebuild = vbm_rebuild
        self.vbm_incarnation = 0
        self.nodes: list[SimNode] = []
        for i in range(n_nodes):
            self.nodes.append(self._make_node(i, idle_interval))
        self._make_vbm()
        # topology: each node sends on links_per_node virtual links to random other nodes
        self.links = []
        for node in self.nodes:
            for _ in range(links_per_node):
                peer = self.rng.randrange(n_nodes - 1)
                peer += peer >= node.id
                vnet = self.rng.choice(list(self.shares))
                hi = self.rng.randint(*max_rates)
                vli = len(self.links) % 0xFFFE + 1
                self.nodes[peer].tm.add_input(node.id, vli, vnet, min_rate, hi)
                node.tm.add_output(peer, vli, vnet, min_rate, hi)
                self.links.append((node.id, peer, vli))
        self.set_demand(idle_fraction)

    # -- building ----------------------------------------------------------------------------

    def _make_node(self, i, idle_interval) -> SimNode:
        counters = self.counters
        req = Requester(lambda peer, msg, i=i: self._send(i, peer, msg), self.clock, node=i,
                        incarnation=1, seq_start=self.rng.randrange(1 << 32),
                        rng=random.Random(self.rng.random()), counters=counters)
        resp = Responder(lambda peer, msg, i=i: self._send(i, peer, msg), self.clock, node=i,
                         incarnation=1, counters=counters)
        tm = TrafficManager(req, self.clock, idle_interval=idle_interval, vbm_peer=VBM_ID,
                            capacity=self.lan_capacity, on_rate=lambda d, k, r, i=i:
                            self._changed(i, d, k, r), counters=counters)
        return SimNode(i, tm, req, resp)

    def _make_vbm(self):
        self.vbm_incarnation += 1
        self.vbm = VBM(self.clock, lan_capacity=self.lan_capacity, counters=self.counters,
                       rebuild_time=self.vbm_rebuild)
        for v, s in self.shares.items():
            self.vbm.admit(v, s)
        self.vbm_resp = Responder(lambda peer, msg: self._send(VBM_ID, peer, msg), self.clock,
                                  node=0x7FFFFFFF, incarnation=self.vbm_incarnation,
                                  counters=self.counters)

    def set_demand(self, idle_fraction=0.3):
        for node in self.nodes:
            for link in node.tm.outputs.values():
                want = 0 if self.rng.random() < idle_fraction else self.rng.randint(0, link.max)
                node.tm.set_demand(link.key, want, active=want > 0)

    def kill_vbm(self):
        self.vbm_up = False

    def restart_vbm(self, rebuild_time=12.0):
        self._make_vbm()
        self.vbm.rebuild_time = rebuild_time
        self.vbm.started = self.clock()
        self.vbm_up = True

    # -- transport ---------------------------------------------------------------------------

    def _send(self, src, dst, msg):
        self.sent += 1
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        self._n += 1
        raw = msg.pack()
        if self.keyring is not None:
            raw = auth.seal(raw, self.keyring, _mac(src), EPOCH + self.clock())
        heapq.heappush(self.queue, (self.clock.t + self.rng.uniform(0.001, 0.02), self._n, src,
                                    dst, raw))

    def _deliver(self, src, dst, raw):
        if self.keyring is not None:
            raw = auth.unseal(raw, self.keyring, _mac(src), EPOCH + self.clock(), 30.0)
        msg = m.decode(raw)
        if dst == VBM_ID:
            if self.vbm_up:
                self.vbm_resp.handle(src, msg, self.vbm.handle)
            return
        node = self.nodes[dst]
        if msg.IS_REPLY:
            node.req.on_reply(src, msg)
        else:
            node.resp.handle(src, msg, node.tm.handle)
            self._check_node(node)

    # -- invariants --------------------------------------------------------------------------

    def _changed(self, i, direction, key, rate):
        self.last_change = self.clock.t

    def _check_node(self, node: SimNode):
        tm = node.tm
        for v, agg in tm.aggregates.items():
            s = tm.input_sum(v)
            if s > agg.rate:
                self.violations.append(f"t={self.clock.t:.2f} node {node.id} vnet {v}: "
                                       f"Σ inputs {s} > aggregate {agg.rate}")
        for link in list(tm.inputs.values()) + list(tm.outputs.values()):
            if not link.min <= link.current <= link.max:
                self.violations.append(f"t={self.clock.t:.2f} node {node.id} link "
                                       f"{link.key}: {link.current} not in "
                                       f"[{link.min}, {link.max}]")

    def check_all(self):
        for node in self.nodes:
            self._check_node(node)
        for v in self.shares:
            pool = int(self.shares[v] * self.lan_capacity)
            held = sum(n.tm.aggregates[v].rate for n in self.nodes if v in n.tm.aggregates)
            if held > pool:
                self.violations.append(f"t={self.clock.t:.2f} vnet {v}: Σ aggregates {held} "
                                       f"> pool {pool}")
            if self.vbm.allocated(v) > pool:
                self.violations.append(f"t={self.clock.t:.2f} vnet {v}: VBM allocated "
                                       f"{self.vbm.allocated(v)} > pool {pool}")

    def snapshot(self):
        return {(n.id, "agg", v): a.rate for n in self.nodes for v, a in n.tm.aggregates.items()}

    # -- running -----------------------------------------------------------------------------

    def run(self, until: float, check_every: float = 0.5):
        next_tick = self.clock.t
        next_check = self.clock.t
        while self.clock.t < until:
            t = min(next_tick, self.queue[0][0] if self.queue else next_tick)
            self.clock.t = t
            while self.queue and self.queue[0][0] <= t:
                _, _, src, dst, raw = heapq.heappop(self.queue)
                self._deliver(src, dst, raw)
            if t >= next_tick:
                for node in self.nodes:
                    node.req.tick(t)
                    node.tm.tick(t)
                self.vbm.tick(t)
                next_tick = t + self.tick_every
            if t >= next_check:
                self.check_all()
                next_check = t + check_every
        self.check_all()

    def stats(self) -> dict:
        outs = [o for n in self.nodes for o in n.tm.outputs.values()]
        demanded = [o for o in outs if o.want]
        return {
            "nodes": len(self.nodes), "virtual_links": len(outs),
            "messages_sent": self.sent, "messages_dropped": self.dropped,
            "settled_at": round(self.last_change, 3),
            "violations": len(self.violations),
            "links_at_min": sum(o.current == o.min for o in outs),
            "demand_met": sum(o.current >= min(o.want, o.max) for o in demanded),
            "demanding": len(demanded),
            "counters": dict(sorted(self.counters.items())),
        }
