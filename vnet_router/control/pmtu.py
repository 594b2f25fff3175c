"""Path MTU of virtual links: PATH_MTU notices from downstream to upstream (issue 15).

A virtual link carries an MTU: the largest payload (for a TAP, the inner Ethernet frame) that
gets from its sender to where it is delivered.  Each node knows only its own substrate links,
so each tells its upstream neighbours, per input virtual link, what it can carry onwards:

* an input virtual link delivered to a logical interface: the substrate link's payload MTU
  (or the interface's configured ``mtu`` plus its header, if smaller);
* an input virtual link switched (pass-through): the smaller of its output substrate link's
  payload MTU and what the next node reported for that output virtual link -- so a
  pass-through node takes part and the smallest along the path travels back hop by hop, like
  the MTU in MPLS label mappings (RFC 3988);
* dropped links: nothing.

The upstream node keeps, per output virtual link, the smallest value its neighbours reported
(a multiaccess link may have several) and gives it to the logical interface sending on it
(``on_interface``: the node sets the TAP's MTU, ``tables.interface_mtu``) or, for a switched
link, passes it on in its own notice.  Notices are soft state: one PATH_MTU message per
substrate link (to the p2p peer, the tunnel's remote, or the LAN's broadcast address) every
``[node].path_mtu_interval`` seconds and at once when a value changes (looked at every
``TICK``); an entry not heard for ``HOLD`` intervals expires and the interface goes back to its
own link's MTU.  This covers static and run-time virtual links alike and follows changes (a
reload giving a tunnel another MTU); no reply, no retry, no sequence numbers.

At start (issue 26: no black hole at start) a node sends its notice on every substrate link it
sends virtual links on, even an empty one, and a node that hears a neighbour (node id,
incarnation) for the first time on a link sends its own notice there at once (at most one per
``TICK`` and link) instead of at the next interval: a notice is also the question "what do you
carry?".  The node itself waits before it says it is ready (:meth:`PathMtu.wait_known`, at
most ``start_wait``) until every output virtual link it sends on has a reported path MTU, so
its TAPs have their path's MTU before anything that waits for the node uses them.

Work split: the node registers :meth:`PathMtu.on_control` with the datapath's VLI 0 dispatcher
(``datapath.dispatch``) as the fallback: it takes PATH_MTU and refuses the rest.  With a
control plane, ``plane.ControlPlane`` is asked first and answers every frame: it makes this
service (its ``send`` is ``ControlPlane.send``) and passes PATH_MTU to
:meth:`PathMtu.on_message`, so both share the control protocol's framing and counters.  The
node applies MTUs (netlink, in a worker thread).  Without a control plane the notices are
still authenticated where the link has a key (``guard.Guard``: sealed when sent, checked when
received; refusals counted under ``refused``).
"""
from __future__ import annotations

import asyncio
import logging
import time
import zlib

from vnet_router.control.guard import Guard
from vnet_router.model.tables import DELIVER, IN, OUT, SWITCH, receive_limit
from vnet_router.wire import auth
from vnet_router.wire import control as m

log = logging.getLogger(__name__)

TICK = 0.25             # seconds between looks at what changed
START_WAIT = 3.0        # at most this long (or an interval, if shorter) a start waits for notices
MAX_HEARD = 1024        # neighbours remembered per substrate link (then forgotten, all at once)
HOLD = 3.5              # intervals an entry lives without being heard again
MIN_PATH_MTU = 82       # smaller reports are refused (an IPv4 packet of 68 bytes + Ethernet)


def node_id(cfg, facts) -> int:
    """The node id every control message of this node carries (PATH_MTU and the plane's)."""
    macs = b"".join(sorted(f.mac for f in facts.values()))
    return zlib.crc32(cfg.node.name.encode() + macs) & 0x7FFFFFFF


class PathMtu:
    def __init__(self, tables, dp, loop, *, node: int, incarnation: int, on_interface,
                 clock=time.monotonic, send=None):
        self.tables, self.dp, self.loop, self.clock = tables, dp, loop, clock
        self.node, self.incarnation = node, incarnation
        self.on_interface = on_interface     # (logical interface, reported payload MTU | None)
        # send((link id, dst MAC | None), message): the control plane's, else our own
        self.send = send if send is not None else self._send
        # (link, output VLI) -> {reporter MAC | None: (payload MTU, expires)}
        self.reports: dict[tuple[str, int], dict] = {}
        self._sent: dict[str, tuple] = {}    # link -> entries last sent
        self._when: dict[str, float] = {}    # link -> when they were sent
        self._heard: dict[str, set] = {}     # link -> {(node, incarnation)} notices came from
        self._due: set[str] = set()          # links to send on at the next chance (new peers)
        self._known = None                   # future: every output's path MTU is known
        self.counters = dict.fromkeys(("sent", "received", "refused", "unknown_vlink",
                                       "changes", "expired", "ignored"), 0)
        self._timer = None
        self._guard, self._guarded = None, None

    @property
    def guard(self) -> Guard:
        """Keys of the configuration in use (a reload may change them)."""
        cfg = self.tables.config
        if self._guarded is not cfg:
            self._guard = Guard(cfg.substrate_links, max_age=cfg.tm_settings.replay_window)
            self._guarded = cfg
        return self._guard

    @property
    def interval(self) -> float:
        return self.tables.config.node.path_mtu_interval

    @property
    def start_wait(self) -> float:
        """How long a start waits for the notices of its downstream neighbours: a running
        neighbour answers the start's own notice at once, one starting beside it sends its
        first at its start; one that is not running does not make the start wait longer."""
        return min(self.interval, START_WAIT) + TICK if self.interval else 0.0

    def start(self):
        self._due.update(self.sending_links())       # a first notice on each: the question
        self._timer = self.loop.call_soon(self._tick)

    def close(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- receiving ---------------------------------------------------------------------------

    def on_control(self, ctx, view, start, length) -> bool:
        """VLI 0 handler (the dispatcher's fallback; reached only when no control plane
        runs): PATH_MTU is taken, anything else is refused (the datapath counts it as the
        ``control`` drop, as without this)."""
        src = bytes(view[6:12]) if ctx.kind != "udp" else None
        if src is not None and src == ctx.local_mac:
            return True
        try:
            msg = self.guard.open(ctx.id, view[start:start + length], src)
        except auth.AuthError as e:
            self.counters["refused"] += 1
            self.guard.note(e.auth_reason, f"on {ctx.id}: {e.message}")
            return False
        except m.ControlDecodeError:
            return False
        if not isinstance(msg, m.PathMtu):
            return False
        self.on_message(ctx.id, src, msg)
        return True

    def on_message(self, link_id: str, src: bytes | None, msg: m.PathMtu):
        """A neighbour on ``link_id`` (MAC ``src``) reported its input virtual links."""
        self.counters["received"] += 1
        if not self.interval:
            self.counters["ignored"] += 1
            return
        now = self.clock()
        heard = self._heard.setdefault(link_id, set())
        if (msg.node, msg.incarnation) not in heard:
            if len(heard) >= MAX_HEARD:
                heard.clear()
            heard.add((msg.node, msg.incarnation))
            self._due.add(link_id)                   # a new neighbour (or it restarted): answer
        for vli, mtu in msg.entries:
            v = self.tables.vlinks.get((link_id, vli, OUT))
            if v is None or (v.dst is not None and src != v.dst):
                # not a link we send on, or (a run-time link on a LAN, sent to one neighbour,
                # whose VLI that neighbour chose) not the neighbour it goes to: not ours
                self.counters["unknown_vlink"] += 1
                continue
            if mtu < MIN_PATH_MTU:
                self.counters["refused"] += 1
                continue
            self.reports.setdefault((link_id, vli), {})[src] = (mtu, now + HOLD * self.interval)
        self._settle(now)
        self._report(now)

    # -- what we know ------------------------------------------------------------------------

    def _settle(self, now: float):
        """Expire old entries; the smallest report per output virtual link becomes its path
        MTU; interfaces whose value changed get it, switched links pass it on (next report)."""
        path = self.tables.path_mtu
        for key in list(self.reports):
            by = self.reports[key]
            for src in [s for s, (_mtu, exp) in by.items() if exp <= now]:
                del by[src]
                self.counters["expired"] += 1
            if not by or (key[0], key[1], OUT) not in self.tables.vlinks:
                del self.reports[key]
        changed = []
        for key in set(path) | set(self.reports):
            new = min((mtu for mtu, _exp in self.reports[key].values()), default=None) \
                if key in self.reports else None
            if path.get(key) != new:
                if new is None:
                    del path[key]
                else:
                    path[key] = new
                changed.append(key)
        for key in changed:
            self.counters["changes"] += 1
            log.info("path MTU of virtual link %s:%d -> %s", key[0], key[1],
                     path.get(key, "the link's own"))
            for li in self.tables.interfaces:
                if (li.substrate_link, li.out_vli) == key:
                    self.on_interface(li, path.get(key))
        if changed:
            self._report(now)
        if self._known is not None and not self._known.done() and not self.unknown():
            self._known.set_result(None)

    def sending_links(self) -> set:
        """Substrate links this node sends virtual links on (where it wants notices)."""
        return {lid for (lid, _vli, direction) in self.tables.vlinks if direction == OUT}

    def unknown(self) -> set:
        """(link, output VLI) of the output virtual links this node sends on (those of its
        logical interfaces and its switches) that have no reported path MTU."""
        cfg = self.tables.config
        outs = {(li.substrate_link, li.out_vli) for li in self.tables.interfaces}
        outs |= {(sw.out_link, sw.out_vli) for sw in cfg.switches}
        return {k for k in outs if (k[0], k[1], OUT) in self.tables.vlinks
                and k not in self.tables.path_mtu}

    async def wait_known(self, timeout: float) -> set:
        """Wait until every output virtual link's path MTU is known (:meth:`unknown` is empty)
        or ``timeout`` seconds passed; returns what is still unknown."""
        if not self.interval or not self.unknown():
            return self.unknown() if self.interval else set()
        self._known = self.loop.create_future()
        try:
            await asyncio.wait_for(self._known, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._known = None
        return self.unknown()

    def entries(self, link_id: str) -> tuple:
        """((input VLI, path MTU), ...) this node reports upstream on ``link_id``."""
        snap = self.dp.snap
        ctx = snap.links.get(link_id)
        if ctx is None:
            return ()
        cfg = self.tables.config
        ifaces = {(li.substrate_link, li.in_vli): li for li in self.tables.interfaces}
        switches = {(sw.in_link, sw.in_vli): (sw.out_link, sw.out_vli) for sw in cfg.switches}
        out = []
        for (lid, vli, direction), v in self.tables.vlinks.items():
            if lid != link_id or direction != IN:
                continue
            if v.action == DELIVER and (lid, vli) in ifaces:
                out.append((vli, receive_limit(ctx, ifaces[(lid, vli)])))
            elif v.action == SWITCH and (lid, vli) in switches:
                nxt = switches[(lid, vli)]
                octx = snap.links.get(nxt[0])
                if octx is not None:
                    out.append((vli, min(octx.payload_mtu,
                                         self.tables.path_mtu.get(nxt, octx.payload_mtu))))
        return tuple(sorted(out))

    # -- sending -----------------------------------------------------------------------------

    def _tick(self):
        try:
            self._settle(self.clock())
            self._report(self.clock())
        except Exception:
            log.exception("path MTU tick failed")
        self._timer = self.loop.call_later(TICK, self._tick)

    def _report(self, now: float):
        if not self.interval or self.dp.snap is None:
            return
        for link_id, ctx in self.dp.snap.links.items():
            entries = self.entries(link_id)
            last = self._when.get(link_id, -1e9)
            due = link_id in self._due and now - last >= TICK
            if not entries and not self._sent.get(link_id) and not due:
                continue
            if entries == self._sent.get(link_id) and now - last < self.interval and not due:
                continue
            self._due.discard(link_id)
            self._sent[link_id], self._when[link_id] = entries, now
            dst = ctx.peer_mac if ctx.kind == "p2p" else None
            for k in range(0, max(len(entries), 1), m.MAX_MTU_ENTRIES):
                self.send((link_id, dst), m.PathMtu(
                    node=self.node, incarnation=self.incarnation,
                    entries=entries[k:k + m.MAX_MTU_ENTRIES]))
                self.counters["sent"] += 1

    def _send(self, peer: tuple, msg: m.Message):
        link_id, dst = peer
        ctx = self.dp.snap.links.get(link_id)
        if ctx is not None:
            self.dp.send_control(ctx, self.guard.seal(
                link_id, msg, ctx.local_mac if ctx.kind != "udp" else None), dst)

    # -- view --------------------------------------------------------------------------------

    def status(self) -> dict:
        return {"interval": self.interval, **self.counters,
                "virtual_links": [
                    {"substrate_link": lid, "vli": vli, "path_mtu": mtu,
                     "reported_by": len(self.reports.get((lid, vli), {}))}
                    for (lid, vli), mtu in sorted(self.tables.path_mtu.items())]}
