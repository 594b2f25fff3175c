"""Traffic Manager (TM): the rates of one node's virtual links and its per-vNet aggregates.

Rules (DESIGN section 5, the paper's "Traffic Manager"):

* every output virtual link has {current, min, max}; ``min <= current <= max`` always;
* to raise an output link's current rate the TM asks the downstream TM (RATE_REQUEST) and
  applies only what the RATE_REPLY grants; a decrease is applied locally first and then told
  downstream (always granted);
* an output link idle for ``idle_interval`` seconds falls to its minimum;
* as the downstream, the TM grants increases of its *input* links only while
  Σ current input rates of the vNet <= the node's aggregate for that vNet; lacking room it
  grants what fits and asks the VBM for more (AGG_REQUEST); when an AGG_ASSIGN lowers an
  aggregate, input links are cut (never below their minimum) and upstream is told
  (RATE_NOTIFY); unused aggregate is given back to the VBM;
* if the VBM is unreachable, requests time out and the node keeps its current aggregates.

No I/O: requests go through an injected ``transport.Requester``; ``on_rate(direction, key,
rate)`` tells the owner (the daemon's datapath, or a simulation) that a current rate changed.
Keys are (peer, VLI): peer is the neighbour's opaque id (the daemon: (substrate link, MAC)).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vnet_router.wire import control as m
from vnet_router.control.fsm import RateFSM, RateState

IN, OUT = "in", "out"


class OutLink(RateFSM):
    """Upstream side of a virtual link: what this node sends."""

    def __init__(self, peer, vli, vnet, lo, hi, current):
        super().__init__(RateState.STABLE)
        self.peer, self.vli, self.vnet, self.min, self.max = peer, vli, vnet, lo, hi
        self.current = current
        self.want: int | None = None     # demand: rate the sender could use (None = unknown)
        self.last_active = 0.0
        self.hold_until = 0.0            # after a denial, wait before asking again

    @property
    def key(self):
        return (self.peer, self.vli)


@dataclass
class InLink:
    """Downstream side of a virtual link: what this node receives (and polices)."""

    peer: object
    vli: int
    vnet: int
    min: int
    max: int
    current: int
    asked: int = 0                   # an increase we could only partly grant (0 = none)

    @property
    def key(self):
        return (self.peer, self.vli)


@dataclass
class Aggregate:
    rate: int = 0                    # assigned by the VBM: bound on Σ input current rates
    outstanding: bool = False        # one AGG_REQUEST at a time per vNet
    last_report: float = field(default=-1e9)
    grown_at: float = field(default=-1e9)


class TrafficManager:
    def __init__(self, requester, clock, *, idle_interval: float = 10.0, vbm_peer=None,
                 capacity: int = 0, on_rate=None, report_interval: float = 5.0,
                 hold: float = 1.0, give_back: float = 0.1, bounded: bool = True,
                 counters: dict | None = None):
        self.req, self.clock = requester, clock
        self.idle_interval, self.report_interval, self.hold = idle_interval, report_interval, hold
        self.give_back = give_back        # give back slack above this fraction of the aggregate
        self.vbm_peer, self.capacity = vbm_peer, capacity
        # bounded=False: no VBM serves this node's LAN at all, so no aggregate bounds the
        # inputs (only each link's max); the aggregate then just records Σ inputs
        self.bounded = bounded
        self.on_rate = on_rate or (lambda direction, key, rate: None)
        self.outputs: dict[tuple, OutLink] = {}
        self.inputs: dict[tuple, InLink] = {}
        self.aggregates: dict[int, Aggregate] = {}
        self.counters = counters if counters is not None else {}

    def _count(self, name):
        self.counters[name] = self.counters.get(name, 0) + 1

    # -- tables ------------------------------------------------------------------------------

    def add_output(self, peer, vli, vnet, lo, hi, current=None) -> OutLink:
        link = OutLink(peer, vli, vnet, lo, hi, lo if current is None else current)
        link.last_active = self.clock()
        self.outputs[link.key] = link
        self.on_rate(OUT, link.key, link.current)
        return link

    def add_input(self, peer, vli, vnet, lo, hi, current=None) -> InLink:
        link = InLink(peer, vli, vnet, lo, hi, lo if current is None else current)
        self.inputs[link.key] = link
        agg = self.aggregates.setdefault(vnet, Aggregate())
        # the minimum is a reservation: the aggregate always covers Σ minima
        agg.rate = max(agg.rate, self.input_sum(vnet))
        self.on_rate(IN, link.key, link.current)
        return link

    def remove_output(self, key):
        self.outputs.pop(key, None)

    def remove_input(self, key):
        self.inputs.pop(key, None)

    def input_sum(self, vnet) -> int:
        return sum(i.current for i in self.inputs.values() if i.vnet == vnet)

    def input_min_sum(self, vnet) -> int:
        return sum(i.min for i in self.inputs.values() if i.vnet == vnet)

    # -- demand ------------------------------------------------------------------------------

    def set_demand(self, key, want: int | None, active: bool | None = None):
        """The sender's demand on an output link (``active``: it sent since the last call)."""
        link = self.outputs.get(key)
        if link is None:
            return
        link.want = want
        if active if active is not None else (want or 0) > 0:
            link.last_active = self.clock()

    def tick(self, now: float | None = None):
        now = self.clock() if now is None else now
        for link in list(self.outputs.values()):
            if link.want:
                link.last_active = now                     # demand is activity
            if link.state == RateState.REQUESTING:
                continue
            if now - link.last_active >= self.idle_interval and link.current > link.min:
                self._set_out(link, link.min)              # idle: fall to the minimum
                self._ask(link, link.min)
            elif link.state == RateState.UNSYNCED:
                self._ask(link, link.current)              # a decrease the peer did not ack
            elif link.want is not None and now >= link.hold_until:
                target = min(max(link.want, link.min), link.max)
                if target > link.current:
                    self._ask(link, target)
                elif target < link.current * 0.95:
                    self._set_out(link, target)
                    self._ask(link, target)
        for vnet, agg in self.aggregates.items():
            if agg.outstanding or self.vbm_peer is None:
                continue
            used = max(self.input_sum(vnet), self.input_min_sum(vnet))
            if agg.rate - used > self.give_back * max(agg.rate, 1) and agg.rate > used \
                    and now - agg.grown_at > 3 * self.hold and not self._unmet(vnet):
                agg.rate = used                            # lower first: always safe
                self._agg_request(vnet, used, now)
            elif now - agg.last_report >= self.report_interval:
                self._agg_request(vnet, agg.rate, now)     # report (rebuilds a new VBM)

    def _set_out(self, link: OutLink, rate: int):
        if rate != link.current:
            link.current = rate
            self.on_rate(OUT, link.key, rate)

    def _ask(self, link: OutLink, rate: int):
        link.fire("request")
        asked = rate

        def done(reply):
            if self.outputs.get(link.key) is not link:
                return
            if reply is None:
                if asked > link.current:         # an increase never answered: keep the rate
                    link.fire("abandon")
                    link.hold_until = self.clock() + self.hold
                else:                            # a decrease applied here, not acked there
                    link.fire("timeout")
                return
            link.fire("reply")
            if reply.status in (m.Status.OK, m.Status.PARTIAL, m.Status.DENIED):
                granted = min(max(reply.rate, link.min), link.max)
                if asked <= link.current:
                    granted = min(granted, link.current)    # a decrease stays a decrease
                self._set_out(link, granted)
                if granted < asked:
                    link.hold_until = self.clock() + self.hold
            else:
                self._count("rate_refused")
                link.hold_until = self.clock() + self.hold

        self.req.request(link.peer, m.RateRequest(vli=link.vli, rate=rate), done)

    # -- downstream: requests from upstream TMs ---------------------------------------------

    def handle(self, peer, msg):
        """Execute a RATE_REQUEST / RATE_NOTIFY (via ``transport.Responder``); returns reply."""
        if isinstance(msg, m.RateRequest):
            return self._rate_request(peer, msg)
        if isinstance(msg, m.RateNotify):
            link = self.outputs.get((peer, msg.vli))
            if link is None:
                self._count("unknown_vlink")
                return m.Ack(status=m.Status.UNKNOWN_VLINK)
            if not link.min <= msg.rate <= link.max:
                self._count("above_max" if msg.rate > link.max else "bad_rate")
                return m.Ack(status=m.Status.ABOVE_MAX if msg.rate > link.max
                             else m.Status.BAD_REQUEST)
            link.fire("notified")
            self._set_out(link, msg.rate)
            return m.Ack()
        return None

    def _rate_request(self, peer, msg: m.RateRequest):
        link = self.inputs.get((peer, msg.vli))
        if link is None:
            self._count("unknown_vlink")
            return m.RateReply(status=m.Status.UNKNOWN_VLINK, vli=msg.vli, rate=0)
        if msg.rate > link.max:
            self._count("above_max")
            return m.RateReply(status=m.Status.ABOVE_MAX, vli=msg.vli, rate=link.current)
        if msg.rate < link.min:
            self._count("bad_rate")
            return m.RateReply(status=m.Status.BAD_REQUEST, vli=msg.vli, rate=link.current)
        if msg.rate <= link.current:                        # decreases always succeed
            link.asked = 0
            self._set_in(link, msg.rate)
            return m.RateReply(status=m.Status.OK, vli=msg.vli, rate=msg.rate)
        agg = self.aggregates.setdefault(link.vnet, Aggregate())
        room = agg.rate - self.input_sum(link.vnet) if self.bounded else msg.rate
        grant = min(msg.rate, link.current + max(room, 0))
        self._set_in(link, grant)
        if not self.bounded:
            agg.rate = max(agg.rate, self.input_sum(link.vnet))
        shortfall = msg.rate - grant
        link.asked = msg.rate if shortfall > 0 else 0
        if shortfall > 0 and self.vbm_peer is not None and not agg.outstanding:
            self._agg_request(link.vnet, max(agg.rate, self.input_sum(link.vnet)) + shortfall,
                              self.clock())
        status = m.Status.OK if grant == msg.rate else (
            m.Status.PARTIAL if grant > link.min else m.Status.DENIED)
        return m.RateReply(status=status, vli=msg.vli, rate=grant)

    def _set_in(self, link: InLink, rate: int):
        if rate != link.current:
            link.current = rate
            self.on_rate(IN, link.key, rate)

    # -- VBM ---------------------------------------------------------------------------------

    def _agg_request(self, vnet, want, now):
        agg = self.aggregates[vnet]
        agg.outstanding = True
        agg.last_report = now
        msg = m.AggRequest(vnet=vnet, current=agg.rate, want=want,
                           minimum=self.input_min_sum(vnet), capacity=self.capacity)

        def done(reply):
            agg.outstanding = False
            if reply is None or reply.status not in (m.Status.OK, m.Status.PARTIAL,
                                                     m.Status.DENIED):
                return              # VBM unreachable or refused: keep the current aggregate
            self._assigned(vnet, reply.rate)

        self.req.request(self.vbm_peer, msg, done)

    def _unmet(self, vnet) -> bool:
        return any(i.asked > i.current for i in self.inputs.values() if i.vnet == vnet)

    def _notify(self, link: InLink, rounds: int = 3):
        """Tell the upstream TM its link's rate changed; unanswered, try again (a few rounds of
        retries: the upstream may be down, then its next RATE_REQUEST resynchronises)."""
        rate = link.current

        def done(reply):
            if reply is None and rounds > 1 and self.inputs.get(link.key) is link \
                    and link.current == rate:
                self._notify(link, rounds - 1)

        self.req.request(link.peer, m.RateNotify(vli=link.vli, rate=rate), done)

    def _assigned(self, vnet, rate):
        agg = self.aggregates[vnet]
        new = max(rate, self.input_min_sum(vnet))
        if new > agg.rate:
            agg.grown_at = self.clock()
        agg.rate = new
        excess = self.input_sum(vnet) - agg.rate
        if excess < 0:              # room: serve the increases we could only partly grant
            room = -excess
            for link in (i for i in self.inputs.values() if i.vnet == vnet):
                if link.asked > link.current and room > 0:
                    add = min(link.asked - link.current, room)
                    room -= add
                    self._set_in(link, link.current + add)
                    if link.current >= link.asked:
                        link.asked = 0
                    self._notify(link)
            return
        for link in sorted((i for i in self.inputs.values() if i.vnet == vnet),
                           key=lambda i: i.current - i.min, reverse=True):
            cut = min(excess, link.current - link.min)
            if cut <= 0:
                continue
            self._set_in(link, link.current - cut)
            excess -= cut
            self._notify(link)
            if excess <= 0:
                break

    # -- views -------------------------------------------------------------------------------

    def view(self) -> dict:
        return {
            "outputs": [{"peer": str(k[0]), "vli": k[1], "vnet": o.vnet, "min": o.min,
                         "current": o.current, "max": o.max, "demand": o.want,
                         "state": o.state.name} for k, o in sorted(self.outputs.items(), key=str)],
            "inputs": [{"peer": str(k[0]), "vli": k[1], "vnet": i.vnet, "min": i.min,
                        "current": i.current, "max": i.max}
                       for k, i in sorted(self.inputs.items(), key=str)],
            "aggregates": {str(v): {"rate": a.rate, "used": self.input_sum(v),
                                    "minimum": self.input_min_sum(v)}
                           for v, a in sorted(self.aggregates.items())},
            "counters": dict(self.counters),
        }
