"""The control plane's neighbours, and what it spends on VLI 0 frames per source.

* :class:`Neighbours`: the nodes heard on each substrate link (their HELLOs: name, role, node
  id, incarnation, when last heard), which go when not heard for ``[tm] neighbour_timeout``.
  A HELLO is only heard once the guard let it through, so on a link with a key a neighbour is
  one that authenticated.  Whenever the set changes, it tells the datapath which MACs are
  known neighbours (``Datapath.set_control_peers``: per substrate link id, their MACs; a p2p
  link's configured peer always), whose VLI 0 frames then go to the control plane ahead of
  the rest's (``datapath/copp.py``).
* :class:`Budget`: how many refused VLI 0 frames (malformed, failing authentication) the
  control plane still checks from one source (substrate link, MAC): a token bucket per
  source, ``REFUSED_RATE`` a second with a burst of ``REFUSED_BURST``.  Beyond it, the
  source's frames are refused before any work (``throttled``), until its bucket refills; a
  source whose frames are taken never runs out.  So a forging source costs the control plane
  at most ``REFUSED_RATE`` verifications a second, whoever else is flooding.

The plane (``plane.py``) owns one of each; the guard (``guard.py``) counts the refusals.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

REFUSED_RATE = 1000.0       # refused frames a second checked from one source
REFUSED_BURST = 2000.0
MAX_SOURCES = 4096          # sources the budget tracks (the idlest forgotten first)


class Neighbours:
    def __init__(self, dp, links, clock):
        self.dp, self.clock = dp, clock
        self.table: dict[tuple, dict] = {}          # (link id, MAC | None) -> what it said
        self.set_links(links)

    def set_links(self, links):
        """The substrate links (at start and on every reload): p2p peers are known."""
        self._fixed = {s.id: {s.peer_mac} for s in links if s.kind == "p2p" and s.peer_mac}
        self.export()

    def heard(self, peer, msg) -> dict | None:
        """``peer`` sent HELLO ``msg``: remember it; returns what it said before (or None)."""
        old = self.table.get(peer)
        self.table[peer] = {"name": msg.name, "role": msg.role.name, "node": msg.node,
                            "incarnation": msg.incarnation, "seen": self.clock()}
        if old is None:
            self.export()
        return old

    def expire(self, now: float, timeout: float) -> list[tuple[tuple, dict]]:
        """Neighbours not heard for ``timeout``, removed: [(peer, what it said)]."""
        gone = [(p, n) for p, n in self.table.items() if now - n["seen"] > timeout]
        for peer, _n in gone:
            del self.table[peer]
        if gone:
            self.export()
        return gone

    def peers(self) -> dict[str, set[bytes]]:
        """Known neighbours' MACs per substrate link id (what the datapath is told)."""
        out = {link: set(macs) for link, macs in self._fixed.items()}
        for link, mac in self.table:
            if mac is not None:
                out.setdefault(link, set()).add(mac)
        return out

    def export(self):
        self.dp.set_control_peers(self.peers())

    def get(self, peer, default=None):
        return self.table.get(peer, default)

    def items(self):
        return self.table.items()


class Budget:
    """Per source, the refused frames the control plane still checks (module docstring)."""

    def __init__(self, clock, rate: float = REFUSED_RATE, burst: float = REFUSED_BURST,
                 max_sources: int = MAX_SOURCES):
        self.clock, self.rate, self.burst, self.max_sources = clock, rate, burst, max_sources
        self._buckets: dict[tuple, list] = {}      # source -> [tokens, stamp]

    def _bucket(self, source, now):
        b = self._buckets.get(source)
        if b is None:
            return None
        b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
        b[1] = now
        return b

    def allows(self, source) -> bool:
        """May a frame of ``source`` be checked (decoded, verified)?"""
        b = self._bucket(source, self.clock())
        return b is None or b[0] >= 1.0

    def refused(self, source):
        """A frame of ``source`` was refused after it was checked: one token less.  The
        bucket goes to the end of the table; a full table forgets its first (the source
        refused longest ago)."""
        now = self.clock()
        b = self._bucket(source, now)
        if b is None:
            if len(self._buckets) >= self.max_sources:
                del self._buckets[next(iter(self._buckets))]
            b = [self.burst, now]
        else:
            del self._buckets[source]
        self._buckets[source] = b
        b[0] -= 1.0
