"""What this node answered, kept across its restarts: per sender, the newest request.

Within a run the control protocol refuses a request it already answered
(``control/transport.py``: the reply cache, the sequence window).  A restart forgets both, so a
request captured on the LAN shortly before it could be replayed after it -- and a replayed
VLINK_SETUP would make a link (and a TAP) its sender knows nothing of.  This record closes
that: per sender (substrate link, MAC, node id) the incarnation and the newest sequence number
this node accepted, kept in a file beside the state file (``STATE.answered``).  At the next
start :meth:`Answered.load` gives the control plane the ``floor`` it refuses at or below
(``replay_restart``; an older incarnation is ``old_incarnation``).

Writes: :meth:`note` appends one line (a single ``write``) *before* the request is executed,
so a ``kill -9`` at any point leaves the record holding every request acted upon; a line is a
few dozen bytes, so the cost does not grow with the number of senders.  The file is compacted
(rewritten, temporary file + rename: one line per sender) at start, when it has grown to
several lines per sender, and at a clean stop; it is kept after a clean stop (that restart is
the one an attacker most easily waits for).  At most ``MAX_SENDERS`` senders, the most
recently heard, are kept.

A missing file is a first start (nothing to refuse) -- unless the machine booted less than
``[tm] replay_window`` ago: the file lives in /run by default, which a boot empties, and one
on a disk may lack lines that were written but not yet synced (no ``fsync``: a process that
dies loses nothing written).  A line that does not parse is skipped and an unreadable file
ignored, each with a warning naming the file.  In those cases (a boot just before, a damaged
record) the node knows too little, and the safe default is :attr:`Answered.hold`: the control
plane refuses every request (``replay_restart``) until what was captured before is ``stale``
by its send time (``replay_window`` after the boot, or after this start for a damaged
record).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time

log = logging.getLogger(__name__)

MAX_SENDERS = 4096
_U32 = range(1 << 32)


class Answered:
    def __init__(self, path: str, max_senders: int = MAX_SENDERS):
        self.path, self.max_senders = path, max_senders
        self.floor: dict = {}       # what the last run answered: sender -> (incarnation, seq)
        self.newest: dict = {}      # the same, and what this run answered since
        self.hold = 0.0             # seconds to refuse every request (a lost or damaged record)
        self._fd: int | None = None
        self._lines = 0
        self._failed = False

    def load(self, window: float, uptime: float | None = None) -> dict:
        """Read the record the last run left (``floor``), rewrite it compactly and open it
        for appending.  ``window``: the replay window (``hold``); ``uptime``: seconds since
        the machine booted (default: read).  Returns ``floor``."""
        bad = 0
        missing = False
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    entry = _parse(line)
                    if entry is None:
                        bad += 1
                        continue
                    sender, value = entry
                    self.newest.pop(sender, None)       # the last line of a sender wins
                    self.newest[sender] = value
        except FileNotFoundError:
            missing = True
        except OSError as e:
            log.warning("%s: cannot read the record of answered control requests (%s); "
                        "starting without it", self.path, e.strerror)
            bad = -1
        if bad > 0:
            log.warning("%s: %d unreadable line%s ignored in the record of answered control "
                        "requests", self.path, bad, "s" if bad > 1 else "")
        up = time.clock_gettime(time.CLOCK_BOOTTIME) if uptime is None else uptime
        self.hold = window if bad else max(0.0, window - up)
        if self.hold:
            log.warning("%s: %s: control requests are refused for %.1f s (until what was "
                        "sent before is stale, [tm] replay_window)", self.path,
                        "damaged" if bad else f"{'missing' if missing else 'kept'}, and the "
                        f"machine booted {up:.0f} s ago", self.hold)
        self._trim()
        self.floor = dict(self.newest)
        self._compact()
        return self.floor

    def note(self, sender, incarnation: int, seq: int) -> None:
        """Record that ``sender`` ((link, MAC | None), node id) sent request ``seq`` of
        ``incarnation`` (its newest); written before the request is executed."""
        if self.newest.get(sender) == (incarnation, seq):
            return
        self.newest.pop(sender, None)
        self.newest[sender] = (incarnation, seq)
        self._trim()
        (link, mac), node = sender
        line = json.dumps([link, mac.hex() if mac else None, node, incarnation, seq]) + "\n"
        try:
            if self._fd is None:
                raise OSError(0, "not open")
            os.write(self._fd, line.encode())
            self._lines += 1
        except OSError as e:
            self._error(e)
        if self._lines > 4 * len(self.newest) + 1024:
            self._compact()

    def close(self) -> None:
        """Clean stop: compact the record (kept for the next start) and close it."""
        self._compact(reopen=False)

    def _trim(self):
        while len(self.newest) > self.max_senders:
            del self.newest[next(iter(self.newest))]

    def _compact(self, reopen: bool = True):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        d = os.path.dirname(self.path) or "."
        try:
            fd, tmp = tempfile.mkstemp(prefix=".answered-", dir=d)
            try:
                with os.fdopen(fd, "w") as f:
                    for ((link, mac), node), (inc, seq) in self.newest.items():
                        f.write(json.dumps([link, mac.hex() if mac else None, node, inc, seq])
                                + "\n")
                os.replace(tmp, self.path)
            except OSError:
                os.unlink(tmp)
                raise
            self._lines = len(self.newest)
            if reopen:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as e:
            self._error(e)

    def _error(self, e: OSError):
        if not self._failed:          # once: the node goes on, the record is a defence
            self._failed = True
            log.error("%s: cannot write the record of answered control requests (%s): "
                      "a request answered now could be replayed after a restart",
                      self.path, e.strerror)


def _parse(line: str):
    """(sender, (incarnation, seq)) of one line, or None if it is not one."""
    try:
        entry = json.loads(line)
        if not isinstance(entry, list):
            return None
        link, mac, node, inc, seq = entry
        mac = bytes.fromhex(mac) if mac is not None else None
    except (ValueError, TypeError):
        return None
    if not isinstance(link, str) or (mac is not None and len(mac) != 6) \
            or not all(isinstance(v, int) and v in _U32 for v in (node, inc, seq)):
        return None
    return ((link, mac), node), (inc, seq)
