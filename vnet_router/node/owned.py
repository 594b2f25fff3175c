"""What a running node owns on the system, written down so the next start finds it.

A node creates state that outlives its process when it is killed: vNet namespaces (a TAP dies
with its descriptor, a namespace does not) and root HTB qdiscs (kernel shaping).  The state
file (``[node] state_file``, by default beside the control socket) records them, with the
node's pid and last incarnation, and is rewritten (temporary file + rename) whenever they
change.  While the node runs it holds an exclusive lock on ``STATE.lock``, so a second daemon
with the same state file is refused before it touches anything, and a lock that nobody holds
means the recorded pid is gone.

At the next start (:meth:`StateFile.acquire`) the previous record is what a crashed run left:
the node adopts the namespaces its new configuration still names (they are removed when it
stops, as if it had made them) and removes the others and its old qdiscs.  A clean stop
removes the file.  Incarnations increase across restarts (wall-clock seconds, or the last one
plus one), so neighbours can tell a restart from a late message.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import time

log = logging.getLogger(__name__)


class StateError(RuntimeError):
    """The state file is locked by a running node, or cannot be written."""


class StateFile:
    def __init__(self, path: str):
        self.path = path
        self.lock_path = path + ".lock"
        self._lock_fd: int | None = None
        self.record: dict = {}

    def acquire(self) -> dict:
        """Lock the state file and return the previous run's record ({} after a clean stop).
        Raises StateError if another node holds it."""
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StateError(f"[node] state_file: cannot lock {self.lock_path}: "
                             f"{e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self._read().get("pid", "?")
            raise StateError(f"{self.path}: in use by a running node (pid {holder}); stop it "
                             f"first or give this one another [node] state_file") from None
        self._lock_fd = fd
        return self._read()

    def in_use(self) -> bool:
        """A running node holds the lock (``--check`` of its configuration while it runs)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable state (%s); ignoring it", self.path, e)
            return {}
        if not isinstance(data, dict):
            log.warning("%s: state is not a JSON object; ignoring it", self.path)
            return {}
        names = lambda k: [n for n in data.get(k) or () if isinstance(n, str)] \
            if isinstance(data.get(k), list) else []        # noqa: E731
        return {"namespaces": names("namespaces"), "qdiscs": names("qdiscs"),
                "pid": data.get("pid"),
                "incarnation": data.get("incarnation")
                if isinstance(data.get("incarnation"), int) else None}

    def save(self, **changes) -> None:
        """Update the record (``namespaces``, ``qdiscs``, ``incarnation``) and write it."""
        self.record.update(changes, pid=os.getpid())
        d = os.path.dirname(self.path) or "."
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=d)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.record, f, indent=1, sort_keys=True)
                f.write("\n")
            os.replace(tmp, self.path)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            log.error("%s: cannot record the node's state: %s", self.path, e)

    def release(self, clean: bool) -> None:
        """Stop: remove the file (``clean``: nothing of ours is left), or keep it for the next
        start; then drop the lock."""
        if clean:
            for p in (self.path, self.lock_path):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def next_incarnation(previous: int | None, now: float | None = None) -> int:
    """An incarnation above ``previous``: wall-clock seconds, unless that is not above it
    (two starts in one second, a clock set back)."""
    t = int(time.time() if now is None else now)
    return max(t, (previous or 0) + 1) & 0xFFFFFFFF
