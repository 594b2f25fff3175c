"""Reliable requests over a lossy control channel: sequence numbers, retry, time-out, dedup.

No I/O here.  The owner injects ``send(peer, message)`` and a ``clock``; it calls ``tick()``
from a timer (the daemon) or a simulation step, and routes every received reply to
``Requester.on_reply`` and every received request to ``Responder.handle``.

* ``Requester``: numbers requests (starting from an injected value), resends a request with
  exponential backoff and jitter (injected ``random``), and after ``tries`` attempts calls its
  callback with ``None`` (time-out: the caller falls back to a safe state).  A reply to a
  request that was answered or timed out a little earlier (the responder answers every retry
  from its cache, so a retried request may be answered twice) is counted (``late_replies``)
  and ignored: no refusal.  A reply whose (peer, seq) matches nothing outstanding nor recently
  done is refused and counted (``bad_seq``).
* ``Responder``: remembers the reply to each (peer, incarnation, seq) for ``window`` seconds,
  so a retried request gets the same reply without being executed twice (idempotent).  A
  request more than ``REPLAY_WINDOW`` behind the newest seen from that peer incarnation (and
  not in the cache) is refused and counted (``bad_seq``); one it already answered whose reply
  left the cache is a replay (``replay``).  A newer incarnation of a peer resets its state;
  an older one is refused (``old_incarnation``: incarnations increase across restarts).  At
  most ``max_peers`` senders are tracked (the oldest is forgotten, ``peers_evicted``).
  Across restarts of this node: ``floor`` is what the run before answered (sender ->
  (incarnation, newest seq), from the node's record, ``node/answered.py``); a request of
  that incarnation at or below it is refused (``replay_restart``), one of an older
  incarnation too (``old_incarnation``); for ``hold`` seconds (a record lost or damaged)
  every request is refused (``replay_restart``).  ``journal(sender, incarnation, newest seq)`` is
  called before each new request is executed (the record must hold it before anything is
  done or answered, so a ``kill -9`` cannot lose it).

Peers are opaque hashable ids (the daemon uses (substrate link, MAC); the simulation ints).
"""
from __future__ import annotations

import random as _random
from collections import OrderedDict
from dataclasses import replace

from vnet_router.control.fsm import PendingFSM, PendingState
from vnet_router.wire.control import Message

SEQ_MOD = 1 << 32
REPLAY_WINDOW = 1024       # requests may overtake each other by this many
RECENT_DONE = 256          # (peer, seq) of requests answered or timed out, for late replies


def seq_newer(a: int, b: int) -> bool:
    """Serial-number arithmetic: is ``a`` after ``b`` (mod 2**32)?"""
    return a != b and ((a - b) % SEQ_MOD) < (SEQ_MOD // 2)


class Pending(PendingFSM):
    __slots__ = ("peer", "msg", "callback", "tries", "due", "backoff")

    def __init__(self, peer, msg, callback, due, backoff):
        super().__init__(PendingState.WAITING)
        self.peer, self.msg, self.callback = peer, msg, callback
        self.tries, self.due, self.backoff = 1, due, backoff


class Requester:
    def __init__(self, send, clock, *, node: int, incarnation: int, seq_start: int = 1,
                 rng: _random.Random | None = None, initial: float = 0.2, factor: float = 2.0,
                 max_backoff: float = 2.0, tries: int = 5, counters: dict | None = None):
        self.send, self.clock = send, clock
        self.node, self.incarnation = node, incarnation
        self.seq = seq_start % SEQ_MOD
        self.rng = rng or _random.Random()
        self.initial, self.factor, self.max_backoff, self.tries = initial, factor, max_backoff, tries
        self.pending: dict[tuple, Pending] = {}
        self.done: OrderedDict[tuple, Message] = OrderedDict()   # bounded: RECENT_DONE
        self.counters = counters if counters is not None else {}

    def _count(self, name):
        self.counters[name] = self.counters.get(name, 0) + 1

    def _done(self, key, p: Pending):
        self.done[key] = p.msg
        if len(self.done) > RECENT_DONE:
            self.done.popitem(last=False)

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) % SEQ_MOD or 1
        return self.seq

    def request(self, peer, msg: Message, callback) -> int:
        """Send ``msg`` (a request) to ``peer``; ``callback(reply | None)`` exactly once."""
        seq = self.next_seq()
        msg = replace(msg, node=self.node, incarnation=self.incarnation, seq=seq)
        p = Pending(peer, msg, callback, self.clock() + self._jitter(self.initial), self.initial)
        self.pending[(peer, seq)] = p
        self.send(peer, msg)
        self._count("requests")
        return seq

    def _jitter(self, t: float) -> float:
        return t * (0.75 + 0.5 * self.rng.random())

    def on_reply(self, peer, msg: Message) -> bool:
        key = (peer, msg.seq)
        p = self.pending.pop(key, None)
        if p is None or not _matches(p.msg, msg):
            if p is not None:
                self.pending[key] = p
            elif key in self.done and _matches(self.done[key], msg):
                self._count("late_replies")     # a retry answered too: not a refusal
                return False
            self._count("bad_seq")
            return False
        self._done(key, p)
        p.fire("reply")
        p.callback(msg)
        return True

    def cancel(self, peer, seq):
        p = self.pending.pop((peer, seq), None)
        if p is not None:
            p.fire("cancel")

    def tick(self, now: float | None = None):
        now = self.clock() if now is None else now
        for key, p in list(self.pending.items()):
            if p.due > now or key not in self.pending:
                continue
            if p.tries >= self.tries:
                del self.pending[key]
                self._done(key, p)
                p.fire("expire")
                self._count("timeouts")
                p.callback(None)
                continue
            p.fire("retry")
            p.tries += 1
            p.backoff = min(p.backoff * self.factor, self.max_backoff)
            p.due = now + self._jitter(p.backoff)
            self._count("retries")
            self.send(p.peer, p.msg)

    def outstanding(self, peer=None) -> int:
        return sum(1 for (pr, _), _p in self.pending.items() if peer is None or pr == peer)


_REPLY_OF = {
    "VlinkSetup": "VlinkSetupReply", "VlinkTeardown": "Ack", "Join": "Ack", "Leave": "Ack",
    "RateRequest": "RateReply", "RateNotify": "Ack", "AggRequest": "AggAssign",
}


def _matches(req: Message, reply: Message) -> bool:
    return _REPLY_OF.get(type(req).__name__) == type(reply).__name__


class Responder:
    """Executes each request once; answers retries from a cache."""

    def __init__(self, send, clock, *, node: int, incarnation: int, window: float = 30.0,
                 counters: dict | None = None, max_peers: int = 4096,
                 floor: dict | None = None, journal=None, hold: float = 0.0):
        self.send, self.clock, self.window = send, clock, window
        self.hold_until = clock() + hold if hold > 0 else None    # the record was lost
        self.floor = dict(floor or {})  # (peer, node) -> (incarnation, seq) before a restart
        self.journal = journal
        self.node, self.incarnation = node, incarnation
        self.cache: dict[tuple, tuple[float, Message]] = {}
        self.newest: dict = {}          # (peer, node) -> (incarnation, newest seq)
        self.answered: dict = {}        # (peer, node) -> seqs answered within REPLAY_WINDOW
        self.max_peers = max_peers
        self.counters = counters if counters is not None else {}
        self._last_gc = clock()

    def _count(self, name):
        self.counters[name] = self.counters.get(name, 0) + 1

    def handle(self, peer, msg: Message, execute) -> Message | None:
        """``execute(peer, msg) -> reply`` runs once per (peer, incarnation, seq).  It may
        return None to defer (then it sees the retries too) and answer with ``complete``."""
        now = self.clock()
        if now - self._last_gc > self.window:
            self._gc(now)
        key = (peer, msg.node, msg.incarnation, msg.seq)
        hit = self.cache.get(key)
        if hit is not None:
            self._count("duplicates")
            self.send(peer, hit[1])
            return hit[1]
        sender = (peer, msg.node)
        if self.hold_until is not None and now < self.hold_until:
            self._count("replay_restart")
            return None
        fenced = self._fenced(sender, msg)
        if fenced is not None:
            self._count(fenced)
            return None
        inc, newest = self.newest.get(sender, (None, None))
        if inc == msg.incarnation and newest is not None:
            if msg.seq in self.answered.get(sender, ()):
                self._count("replay")           # answered before, reply no longer cached
                return None
            if seq_newer(msg.seq, newest):
                self.newest[sender] = (inc, msg.seq)
                self._prune(sender, msg.seq)
            elif (newest - msg.seq) % SEQ_MOD >= REPLAY_WINDOW:
                self._count("bad_seq")          # far behind: stale or spoofed
                return None
        elif inc is not None and seq_newer(inc, msg.incarnation):
            self._count("old_incarnation")      # a restart never goes back
            return None
        else:
            if sender not in self.newest and len(self.newest) >= self.max_peers:
                oldest = next(iter(self.newest))
                del self.newest[oldest]
                self.answered.pop(oldest, None)
                self._count("peers_evicted")
            self.newest[sender] = (msg.incarnation, msg.seq)
            self.answered[sender] = set()
        if self.journal is not None:
            self.journal(sender, *self.newest[sender])
        reply = execute(peer, msg)
        if reply is None:
            return None
        return self._answer(peer, msg, reply, now)

    def _fenced(self, sender, msg: Message) -> str | None:
        """Why a request is refused by what this node answered before it restarted."""
        f = self.floor.get(sender)
        if f is None:
            return None
        inc, seq = f
        if msg.incarnation == inc:
            return None if seq_newer(msg.seq, seq) else "replay_restart"
        if seq_newer(inc, msg.incarnation):
            return "old_incarnation"
        del self.floor[sender]          # the sender restarted too: its new run starts afresh
        return None

    def complete(self, peer, msg: Message, reply: Message) -> Message:
        """Answer a request whose ``execute`` returned None (deferred work now done)."""
        return self._answer(peer, msg, reply, self.clock())

    def _answer(self, peer, msg: Message, reply: Message, now: float) -> Message:
        reply = replace(reply, node=self.node, incarnation=self.incarnation, seq=msg.seq)
        self.cache[(peer, msg.node, msg.incarnation, msg.seq)] = (now, reply)
        sender = (peer, msg.node)
        if self.newest.get(sender, (None,))[0] == msg.incarnation:
            self.answered.setdefault(sender, set()).add(msg.seq)
        self.send(peer, reply)
        return reply

    def _prune(self, sender, newest: int):
        seen = self.answered.get(sender)
        if seen and len(seen) > REPLAY_WINDOW:
            for seq in [q for q in seen if (newest - q) % SEQ_MOD >= REPLAY_WINDOW]:
                seen.discard(seq)

    def _gc(self, now):
        self._last_gc = now
        for k, (t, _) in list(self.cache.items()):
            if now - t > self.window:
                del self.cache[k]
