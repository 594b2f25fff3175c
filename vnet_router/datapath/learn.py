"""The learned-MAC table of a logical interface on a multiaccess substrate link.

A TAP on the LAN sends to the outer MAC learned from received frames (inner source MAC ->
outer source MAC, DESIGN section 3) and broadcasts to MACs it does not know.  The table is
bounded and ages like the Linux bridge's forwarding database:

* at most ``limit`` entries ([[interface]].learned_max): when full, a new MAC is not learned
  (frames to it go broadcast, as to any unknown MAC) and ``overflow`` counts the refusal --
  a tenant writing frames with random source MACs cannot grow the daemon without bound;
* an entry not refreshed for ``ageing`` seconds ([[interface]].learned_ageing) has expired:
  ``lookup`` no longer returns it from that moment on, and it is removed (``expired``) by
  the next sweep, at most ``min(1 s, ageing / 10)`` later when a sweep runs.

Cost per frame: ``learn`` of a MAC already known with the same outer MAC (every delivered
frame) is a dict lookup, a clock read and a list store; ``lookup`` is a dict lookup and a
clock read.  Entries are kept in an ``OrderedDict`` in the order they were (re)queued; a known
entry goes to the end again at most once per ``min(1 s, ageing / 10)``, so the front is always
among the oldest and a sweep pops expired entries from the front: O(1) per entry removed.
Sweeps run in the slow path of ``learn`` (a new MAC, a moved one, a requeue; at most
``SWEEP_STEP`` entries each time, so no frame pays for a large sweep) and in ``stats`` /
``entries`` (what ``vnetctl show`` and the metrics read: all that has expired).

Threads: with the compiled engine ``learn`` runs in the ring thread and ``lookup`` in the
event loop, both holding the GIL.  The fast paths take no lock (single dict and list
operations are atomic under the GIL, and their only write is the list store of the last-seen
time); everything that changes the dict or a counter holds ``_lock``.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict

DEFAULT_LIMIT = 4096         # entries per logical interface
DEFAULT_AGEING = 300.0       # seconds (the Linux bridge's default ageing_time)
SWEEP_STEP = 16              # entries a sweep in the frame path removes at most
_SEEN, _QUEUED = 1, 2        # entry: [outer MAC, last seen, when it was (re)queued]


class LearnTable:
    """Inner MAC -> outer MAC, bounded, with ageing (see the module docstring)."""

    __slots__ = ("_map", "_lock", "_clock", "_requeue", "limit", "ageing", "learned",
                 "expired", "overflow")

    def __init__(self, limit: int = DEFAULT_LIMIT, ageing: float = DEFAULT_AGEING,
                 clock=time.monotonic):
        self._map: OrderedDict[bytes, list] = OrderedDict()
        self._lock = threading.Lock()
        self._clock = clock
        self.learned = 0        # entries added (a new MAC, or one seen again after it expired)
        self.expired = 0        # entries removed: aged out (or beyond a lowered limit)
        self.overflow = 0       # new MACs not learned because the table was full
        self.limit, self.ageing, self._requeue = limit, ageing, _requeue_after(ageing)

    def configure(self, limit: int, ageing: float, clock=None) -> None:
        """New limit and ageing time (a reload); a lower limit removes the oldest entries
        beyond it, counted as expired."""
        with self._lock:
            self.limit, self.ageing, self._requeue = limit, ageing, _requeue_after(ageing)
            if clock is not None:
                self._clock = clock
            m = self._map
            while len(m) > limit:
                m.popitem(last=False)
                self.expired += 1

    # -- the frame path ------------------------------------------------------------------------

    def learn(self, mac: bytes, outer: bytes) -> None:
        """A frame from inner ``mac`` arrived from outer ``outer``."""
        e = self._map.get(mac)
        now = self._clock()
        if e is not None and e[0] == outer and now - e[_QUEUED] < self._requeue:
            e[_SEEN] = now
            return
        self._learn(mac, outer, now)

    def lookup(self, mac: bytes, default: bytes) -> bytes:
        """The outer MAC of inner ``mac``, or ``default`` if unknown or expired."""
        e = self._map.get(mac)
        if e is None or self._clock() - e[_SEEN] >= self.ageing:
            return default
        return e[0]

    def _learn(self, mac: bytes, outer: bytes, now: float) -> None:
        with self._lock:
            self._sweep(now, SWEEP_STEP)
            m = self._map
            e = m.get(mac)
            if e is not None:                   # moved, due to be requeued, or aged out
                if now - e[_SEEN] >= self.ageing:
                    self.expired += 1           # not removed yet, but it had expired
                    self.learned += 1
                e[0], e[_SEEN], e[_QUEUED] = outer, now, now
                m.move_to_end(mac)
                return
            if len(m) >= self.limit:
                self.overflow += 1
                return
            m[mac] = [outer, now, now]
            self.learned += 1

    def _sweep(self, now: float, most: int) -> None:
        """Remove up to ``most`` expired entries from the front (the lock is held)."""
        m, ageing, n = self._map, self.ageing, 0
        while m and n < most:
            mac = next(iter(m))
            if now - m[mac][_SEEN] < ageing:
                break
            del m[mac]
            n += 1
        self.expired += n

    # -- what show and the metrics read --------------------------------------------------------

    def __len__(self) -> int:
        return len(self._map)

    def stats(self) -> dict:
        """Counters after a full sweep: entries, limit, ageing, learned, expired, overflow."""
        with self._lock:
            self._sweep(self._clock(), len(self._map))
            return {"entries": len(self._map), "max": self.limit,
                    "ageing_seconds": self.ageing, "learned": self.learned,
                    "expired": self.expired, "overflow": self.overflow}

    def entries(self) -> list[tuple[bytes, bytes, float]]:
        """(inner MAC, outer MAC, seconds since last seen) of every entry that has not
        expired, by inner MAC."""
        with self._lock:
            now = self._clock()
            self._sweep(now, len(self._map))
            return sorted((mac, e[0], max(now - e[_SEEN], 0.0)) for mac, e in self._map.items()
                          if now - e[_SEEN] < self.ageing)

    def items(self) -> list[tuple[bytes, bytes]]:
        """(inner MAC, outer MAC) of every entry that has not expired, by inner MAC."""
        return [(mac, outer) for mac, outer, _ in self.entries()]


def _requeue_after(ageing: float) -> float:
    """How long a known entry stays where it is in the queue; also the most an expired entry
    can wait behind one that has not (yet) expired."""
    return min(1.0, ageing / 10)
