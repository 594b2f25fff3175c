"""vNet Bandwidth Manager (VBM): divides a LAN's bandwidth between vNets and nodes.

Rules (DESIGN section 5, the paper's "vNet Bandwidth Manager"):

* a vNet is admitted with a share of the LAN; Σ shares <= 1, the vNet that would exceed it is
  refused (:class:`AdmissionError`);
* the LAN is treated as one segment whose bandwidth is the configured capacity (then nodes'
  reports are ignored: the VBM trusts only what it configured), or else the smallest capacity
  the nodes report;
* a node's entries expire when it has not reported for ``node_ttl`` seconds; at most
  ``max_nodes`` nodes are kept (a new one beyond is refused, ``table_full``);
* a vNet's pool is share x LAN bandwidth; Σ of the vNet's node aggregates <= its pool;
* a node starts at Σ of its input virtual links' minima (it reports them) and asks for more
  (AGG_REQUEST with want > current): the VBM grants what fits; a request with want <= current
  gives bandwidth back (or just reports, want == current) and always succeeds;
* after a (re)start the VBM is REBUILDING: it learns every node's current aggregate from the
  nodes' periodic reports and grants no increase until ``rebuild_time`` has passed, so it never
  hands out bandwidth a node it has not heard from yet still holds.

No I/O: ``handle(peer, msg)`` is called through ``transport.Responder`` and returns the reply.
Node identity is the sender node id of the message header.
"""
from __future__ import annotations

from vnet_router.wire import control as m
from vnet_router.control.fsm import VbmFSM, VbmState


class AdmissionError(ValueError):
    pass


class VBM(VbmFSM):
    def __init__(self, clock, *, lan_capacity: int | None = None, rebuild_time: float = 12.0,
                 counters: dict | None = None, node_ttl: float = 60.0, max_nodes: int = 1024):
        super().__init__(VbmState.REBUILDING)
        self.clock = clock
        self.started = clock()
        self.rebuild_time = rebuild_time
        self.configured_capacity = lan_capacity
        self.reported_capacity: dict[int, int] = {}
        self.shares: dict[int, float] = {}              # vNet id -> share of the LAN
        self.alloc: dict[int, dict[int, int]] = {}      # vNet id -> node id -> aggregate
        self.minimum: dict[int, dict[int, int]] = {}
        self.heard: dict[int, float] = {}               # node id -> last request
        self.node_ttl, self.max_nodes = node_ttl, max_nodes
        self.counters = counters if counters is not None else {}

    def _count(self, name):
        self.counters[name] = self.counters.get(name, 0) + 1

    # -- admission ---------------------------------------------------------------------------

    def admit(self, vnet: int, share: float):
        if not 0 < share <= 1:
            raise AdmissionError(f"vNet {vnet}: share {share} out of range (0, 1]")
        total = sum(s for v, s in self.shares.items() if v != vnet) + share
        if total > 1 + 1e-9:
            raise AdmissionError(f"vNet {vnet}: share {share} would make the LAN's shares sum to "
                                 f"{total:.3f} (> 1)")
        self.shares[vnet] = share
        self.alloc.setdefault(vnet, {})
        self.minimum.setdefault(vnet, {})

    def set_shares(self, shares: dict[int, float]):
        """Replace every share (``vnetctl vbm share``, a reload): all or nothing.  A vNet
        that loses its share is forgotten; one whose share shrank keeps its nodes' aggregates
        until they next report (then it grants at most the new pool)."""
        for vnet, share in shares.items():
            if not 0 < share <= 1:
                raise AdmissionError(f"vNet {vnet}: share {share} out of range (0, 1]")
        total = sum(shares.values())
        if total > 1 + 1e-9:
            raise AdmissionError(f"the LAN's shares would sum to {total:.3f} (> 1)")
        for vnet in [v for v in self.shares if v not in shares]:
            del self.shares[vnet]
            self.alloc.pop(vnet, None)
            self.minimum.pop(vnet, None)
        for vnet, share in shares.items():
            self.shares[vnet] = share
            self.alloc.setdefault(vnet, {})
            self.minimum.setdefault(vnet, {})

    @property
    def lan_capacity(self) -> int:
        if self.configured_capacity:
            return self.configured_capacity
        caps = [c for c in self.reported_capacity.values() if c > 0]
        return min(caps) if caps else 0

    def pool(self, vnet: int) -> int:
        return int(self.shares.get(vnet, 0) * self.lan_capacity)

    def allocated(self, vnet: int) -> int:
        return sum(self.alloc.get(vnet, {}).values())

    # -- protocol ----------------------------------------------------------------------------

    def tick(self, now: float | None = None):
        now = self.clock() if now is None else now
        if self.state == VbmState.REBUILDING and now - self.started >= self.rebuild_time:
            self.fire("rebuilt")
        for node in [n for n, t in self.heard.items() if now - t > self.node_ttl]:
            self._forget(node)
            self._count("expired")

    def _forget(self, node: int):
        self.heard.pop(node, None)
        self.reported_capacity.pop(node, None)
        for table in (*self.alloc.values(), *self.minimum.values()):
            table.pop(node, None)

    def handle(self, peer, msg):
        if not isinstance(msg, m.AggRequest):
            return None
        self.tick()
        vnet, node = msg.vnet, msg.node
        if vnet not in self.shares:
            self._count("unknown_vnet")
            return m.AggAssign(status=m.Status.UNKNOWN_VNET, vnet=vnet, rate=msg.current)
        if node not in self.heard and len(self.heard) >= self.max_nodes:
            self._count("table_full")
            return m.AggAssign(status=m.Status.DENIED, vnet=vnet, rate=0)
        self.heard[node] = self.clock()
        if msg.capacity and not self.configured_capacity:
            self.reported_capacity[node] = msg.capacity
        nodes = self.alloc[vnet]
        self.minimum[vnet][node] = msg.minimum
        others = self.allocated(vnet) - nodes.get(node, 0)
        free = max(self.pool(vnet) - others, 0)
        floor = min(msg.minimum, msg.current)
        if msg.want <= msg.current:                       # give back / report
            assigned = max(min(msg.want, free), floor)    # (over the pool only if misconfigured)
            status = m.Status.OK if assigned == msg.want else m.Status.PARTIAL
            if assigned < msg.want:
                self._count("reclaimed")
        elif self.state == VbmState.REBUILDING:
            assigned = max(min(msg.current, free), floor)
            status = m.Status.DENIED
            self._count("denied_rebuilding")
        else:
            assigned = max(min(msg.want, free), floor)
            status = (m.Status.OK if assigned >= msg.want else
                      m.Status.PARTIAL if assigned > msg.current else m.Status.DENIED)
            self._count("granted" if status == m.Status.OK else "partial")
        nodes[node] = assigned
        return m.AggAssign(status=status, vnet=vnet, rate=assigned)

    def view(self) -> dict:
        """Nodes by their id in 8 hex digits, as everywhere (``alloc``, logs, metrics)."""
        return {
            "state": self.state.name, "lan_capacity": self.lan_capacity,
            "vnets": {str(v): {"share": s, "pool": self.pool(v), "allocated": self.allocated(v),
                               "nodes": {f"{n:08x}": {"aggregate": a,
                                                  "minimum": self.minimum[v].get(n, 0)}
                                         for n, a in sorted(self.alloc[v].items())}}
                      for v, s in sorted(self.shares.items())},
            "counters": dict(self.counters),
        }
