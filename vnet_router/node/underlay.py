"""UDP tunnel links that wait for their underlay (issue 26, item 1).

A UDP substrate link needs its ``local`` address on the node and a route to its ``remote``
before its sockets can open.  At boot either may come late (addresses and routes that other
services add), so a link that lacks one does not stop the node: ``UnderlayWatch`` keeps it
*down* -- one warning line naming the link and what is missing; the tables compile it without
sockets (``Tables.underlay_down``), so its frames are ``send_error`` drops -- and probes it
again (``ops.underlay.probe``) with backoff, from ``FIRST_RETRY`` doubling to ``MAX_RETRY``.
Once the probe passes, ``bring_up(link id)`` (the node's: open the sockets, install) makes it
*up*; from then on a route that goes is what it always was, a ``send_error`` per frame.

``plan`` says which links of a configuration are down (the links up and unchanged are not
probed again), ``hold`` adopts that (a start, a reload), ``status`` is each link's part of
``show`` and the metrics.  Times: ``clock`` (monotonic) for backoff and how long a link has
been down, ``wall`` for when it went down.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from vnet_router.ops import underlay as probes

log = logging.getLogger("vnet_router")

FIRST_RETRY = 0.25          # s: the first probe after a failed one
MAX_RETRY = 1.5             # s: the backoff's cap (a link is up < 2 s after its route)


@dataclass
class _Down:
    local: tuple
    remote: tuple
    missing: probes.Missing
    since: float                # wall clock
    since_mono: float
    delay: float = FIRST_RETRY
    retries: int = 0
    timer: object = field(default=None, repr=False)


class UnderlayWatch:
    """The UDP links of a node that are down, and their retries (module docstring)."""

    def __init__(self, loop=None, bring_up=None, *, probe=probes.probe,
                 clock=time.monotonic, wall=time.time):
        self.loop = loop
        self.bring_up = bring_up       # link id -> True once its sockets are open
        self.probe = probe
        self.clock, self.wall = clock, wall
        self.down: dict[str, _Down] = {}
        self._ends: dict[str, tuple] = {}      # link id -> (local, remote) as held
        self.up_since: dict[str, float] = {}   # link id -> when it came up (wall), if late

    # -- which links are down ----------------------------------------------------------------

    def plan(self, cfg) -> dict[str, probes.Missing]:
        """The UDP links of ``cfg`` that lack their underlay: links down now and links new or
        changed are probed; links up and unchanged stay up."""
        out = {}
        for s in cfg.substrate_links:
            if s.kind != "udp":
                continue
            ends = (s.local, s.remote)
            if s.id not in self.down and self._ends.get(s.id) == ends:
                continue
            missing = self._probe(s.local, s.remote)
            if missing is not None:
                out[s.id] = missing
        return out

    def hold(self, cfg, down: dict[str, probes.Missing]) -> frozenset[str]:
        """Adopt ``down`` (from ``plan(cfg)``) for ``cfg``: each link newly down is logged once
        and retried; links no longer in it (up, or gone) stop being retried.  Returns the ids
        down (``Tables.underlay_down``)."""
        self._ends = {s.id: (s.local, s.remote) for s in cfg.substrate_links
                      if s.kind == "udp"}
        self.up_since = {i: t for i, t in self.up_since.items() if i in self._ends}
        for link_id in [i for i in self.down if i not in down]:
            self._forget(link_id)
            if link_id in self._ends:           # found up by the plan (a reload)
                self.up_since[link_id] = self.wall()
                log.info("substrate link %s is up", link_id)
        for link_id, missing in down.items():
            local, remote = self._ends[link_id]
            d = self.down.get(link_id)
            if d is not None and (d.local, d.remote) == (local, remote):
                d.missing = missing
                continue
            if d is not None:
                self._forget(link_id)
            self.up_since.pop(link_id, None)
            self.down[link_id] = d = _Down(local, remote, missing, self.wall(), self.clock())
            log.warning("substrate link %s (udp %s -> %s) is down: %s; retrying every %g-%g s, "
                        "the node runs on", link_id, _hp(local), _hp(remote), missing,
                        FIRST_RETRY, MAX_RETRY)
            self._schedule(link_id, d)
        return frozenset(self.down)

    def _probe(self, local: tuple, remote: tuple) -> probes.Missing | None:
        try:
            return self.probe(local, remote)
        except OSError as e:          # something else (no file descriptor left ...): down too
            return probes.Missing("route", remote[0], f"cannot probe: {e}")

    def _forget(self, link_id: str):
        d = self.down.pop(link_id)
        if d.timer is not None:
            d.timer.cancel()

    def start(self, loop):
        """Retry the links down from now on, in ``loop``."""
        self.loop = loop
        for link_id, d in self.down.items():
            if d.timer is None:
                self._schedule(link_id, d)

    def close(self):
        for d in self.down.values():
            if d.timer is not None:
                d.timer.cancel()
                d.timer = None

    # -- retries -----------------------------------------------------------------------------

    def _schedule(self, link_id: str, d: _Down):
        if self.loop is not None:
            d.timer = self.loop.call_later(d.delay, self._retry, link_id, d)

    def _retry(self, link_id: str, d: _Down):
        if self.down.get(link_id) is not d:         # a reload replaced or removed it
            return
        d.timer = None
        d.retries += 1
        missing = self._probe(d.local, d.remote)
        if missing is None:
            took = self.clock() - d.since_mono
            del self.down[link_id]
            if self.bring_up is None or self.bring_up(link_id):
                self.up_since[link_id] = self.wall()
                log.info("substrate link %s (udp %s -> %s) is up, after %.1f s down",
                         link_id, _hp(d.local), _hp(d.remote), took)
                return
            self.down[link_id] = d                   # not now (a reload runs, or it went)
        else:
            if missing != d.missing:
                log.debug("substrate link %s: still down: %s", link_id, missing)
            d.missing = missing
        d.delay = min(d.delay * 2, MAX_RETRY)
        self._schedule(link_id, d)

    # -- show and metrics --------------------------------------------------------------------

    def status(self, link_id: str) -> dict:
        """``state`` (``up``/``down``); when down, since when (``down_since``, Unix time), for
        how long (``down_seconds``), what is missing (``down_reason``, and ``missing``:
        ``address``/``route``) and how many probes failed since (``retries``); when up after
        being down, since when (``up_since``)."""
        d = self.down.get(link_id)
        if d is None:
            since = self.up_since.get(link_id)
            return {"state": "up"} if since is None else {"state": "up",
                                                          "up_since": round(since, 3)}
        return {"state": "down", "down_since": round(d.since, 3),
                "down_seconds": round(self.clock() - d.since_mono, 3),
                "down_reason": str(d.missing), "missing": d.missing.what,
                "retries": d.retries}


def _hp(addr: tuple) -> str:
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    return f"{host}:{addr[1]}"
