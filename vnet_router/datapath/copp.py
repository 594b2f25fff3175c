"""Control-plane policing: the bounded hand-off of VLI 0 frames to the control plane.

Every engine hands VLI 0 frames here (``Datapath.receive`` for the reference, ``_rx_control``
for the compiled engine, from its ring thread or the loop thread), never straight to the
control plane; the control plane takes them in the event loop's thread, in turns of at most
``TURN`` frames (so timers and other readers get the loop between turns).  Two queues, as
Cisco's control-plane policing puts its classes:

* **known neighbours**, served first: frames of a p2p link (they passed the link lookup, so
  they come from the configured peer MAC) or a UDP tunnel link (from its configured remote),
  and on a multiaccess link from a MAC the control plane names a neighbour
  (``Datapath.set_control_peers``: one whose HELLO it heard, authenticated where the link has
  a key).  At most ``KNOWN`` frames wait, and at most ``PER_PEER`` of one neighbour, so a
  neighbour (or a forger using its MAC) fills its own share only: ``control_queue`` /
  ``control_peer`` beyond;
* **the rest** (other sources on a multiaccess link), served only when no known neighbour's
  frame waits: at most ``OTHER`` frames, ``PER_SOURCE`` of one source MAC (``control_other``
  / ``control_source`` beyond).  A flood of garbage or forgeries costs the control plane at
  most what the known neighbours leave over, and a new neighbour's first HELLO still finds
  room beside a flooding source.

Frames are served in arrival order within a queue; a frame the control plane refuses is the
``control`` drop, as without a control plane.  The queues are shared by the ring thread and
the loop thread (a lock guards them; the control plane runs outside it).
"""
from __future__ import annotations

import logging
import threading
from collections import deque

log = logging.getLogger(__name__)

KNOWN = 1024            # frames of known neighbours waiting at once
PER_PEER = 256          # ... of one known neighbour
OTHER = 256             # frames of the rest waiting at once
PER_SOURCE = 64         # ... of one source of the rest
TURN = 64               # frames the control plane takes in one turn of the loop


class ControlQueues:
    """The two queues between the engines and ``on_control`` (see the module docstring)."""

    def __init__(self, loop, on_control, drop):
        self.loop = loop
        self.on_control = on_control                # the core's: (ctx, view, start, length)
        self.drop = drop                            # the core's: (reason, ctx, vlink)
        self.peers: dict[str, frozenset] = {}       # link id -> known neighbours' MACs
        self._lock = threading.Lock()
        self._known: deque = deque()
        self._other: deque = deque()
        self._pending: dict[tuple, int] = {}        # (link id, source MAC | None) -> waiting
        self._scheduled = False

    def set_peers(self, peers: dict) -> None:
        """Known neighbours, per multiaccess substrate link id: their MACs (bytes)."""
        self.peers = {link: frozenset(macs) for link, macs in peers.items()}

    def known(self, ctx, src: bytes | None) -> bool:
        """Is a frame from ``src`` on link ``ctx`` from a known neighbour?"""
        return ctx.kind != "multiaccess" or src in self.peers.get(ctx.id, ())

    def waiting(self) -> tuple[int, int]:
        """(frames of known neighbours, frames of the rest) waiting."""
        return len(self._known), len(self._other)

    def offer(self, ctx, src: bytes | None, frame: bytes, start: int, length: int):
        """Queue a VLI 0 frame (a copy) of link ``ctx`` from ``src`` (the outer source MAC,
        None on a UDP link): None, or the drop reason that refused it (the caller counts it:
        the compiled engine by number)."""
        key = (ctx.id, src if ctx.kind == "multiaccess" else None)
        known = self.known(ctx, src)
        with self._lock:
            n = self._pending.get(key, 0)
            if known:
                if len(self._known) >= KNOWN:
                    return "control_queue"
                if n >= PER_PEER:
                    return "control_peer"
                self._known.append((key, ctx, frame, start, length))
            else:
                if len(self._other) >= OTHER:
                    return "control_other"
                if n >= PER_SOURCE:
                    return "control_source"
                self._other.append((key, ctx, frame, start, length))
            self._pending[key] = n + 1
            if self._scheduled:
                return None
            self._scheduled = True
        self.loop.call_soon_threadsafe(self._turn)
        return None

    def _take(self, budget: int) -> list:
        """Up to ``budget`` waiting frames, known neighbours' first (under the lock)."""
        out = []
        with self._lock:
            for q in (self._known, self._other):
                while q and len(out) < budget:
                    item = q.popleft()
                    key = item[0]
                    n = self._pending[key] - 1
                    if n:
                        self._pending[key] = n
                    else:
                        del self._pending[key]
                    out.append(item)
            if not out:
                self._scheduled = False
        return out

    def _turn(self) -> None:
        """One turn of the loop: at most TURN frames to the control plane, then the next
        turn is scheduled behind what else is ready (timers, other readers)."""
        if self.serve(TURN):
            self.loop.call_soon(self._turn)

    def serve(self, budget: int | None = None) -> int:
        """Hand waiting frames to the control plane (all of them, or ``budget``); returns
        how many it handed.  Loop thread only."""
        served = 0
        while budget is None or served < budget:
            items = self._take(TURN if budget is None else min(TURN, budget - served))
            if not items:
                break
            for _key, ctx, frame, start, length in items:
                try:
                    taken = self.on_control(ctx, memoryview(frame), start, length)
                except Exception:           # a bug must not stop the queue
                    log.exception("control plane failed on a VLI 0 frame of %s", ctx.id)
                    taken = False
                if not taken:
                    self.drop("control", ctx, None)
            served += len(items)
        return served

    def clear(self) -> None:
        """Forget what waits (the datapath closes)."""
        with self._lock:
            self._known.clear()
            self._other.clear()
            self._pending.clear()
