"""The lab's control group: every background command, and all it starts, ends with the lab.

A background command (``[[node.commands]] background = true``, ``procs.py``) joins the lab's
cgroup before it execs, so every process it forks -- ``sh -c "x &"``, ``setsid``, a daemon that
double-forks out of its process group and session -- is born in the group and cannot leave it
(only root may move a process).  Teardown signals every process listed in the group, and
kills what is left: freeze (with the v1 ``freezer``; no fork while we read the list), SIGKILL
each, thaw, again until the group is empty (with v2, ``cgroup.kill`` in one write); then it
removes the group.

Where: ``vnet-lab/PREFIX`` at the top of the v1 ``pids`` hierarchy (and of ``freezer`` when
mounted), else of the cgroup v2 mount.  The path depends on the prefix only, so a lab killed
with SIGKILL has its group found by ``vnet-lab clean`` and by the next lab of the prefix
(:func:`sweep`: groups whose owner, ``owners.OWNERS_DIR/PREFIX``, is gone).  The project's
other user of cgroups, ``vnet_host/cgroup.py``, limits protocol instances; the lab only
needs membership and the kill, so this module stays small and apart (the router does not
import the host daemon).
"""
from __future__ import annotations

import errno
import os
import signal
import time

from vnet_router.lab.owners import OWNERS_DIR, _owner_alive, _read_owner

BASE = "vnet-lab"


def _mounts() -> dict[str, str]:
    """``"pids"``, ``"freezer"`` (v1) and ``"unified"`` (v2) -> their mount points."""
    out: dict[str, str] = {}
    try:
        with open("/proc/self/mounts") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        f = line.split()
        if len(f) < 4:
            continue
        if f[2] == "cgroup":
            for c in ("pids", "freezer"):
                if c in f[3].split(","):
                    out.setdefault(c, f[1])
        elif f[2] == "cgroup2":
            out.setdefault("unified", f[1])
    return out


def _dirs(prefix: str) -> dict[str, str]:
    """Where the group of ``prefix`` lives: ``{"pids": .., "freezer": ..}`` or
    ``{"unified": ..}``; empty when no usable hierarchy is mounted."""
    m = _mounts()
    if "pids" in m:
        return {c: os.path.join(m[c], BASE, prefix) for c in ("pids", "freezer") if c in m}
    if "unified" in m:
        return {"unified": os.path.join(m["unified"], BASE, prefix)}
    return {}


class LabCgroup:
    """The group of one lab prefix (a directory per hierarchy)."""

    def __init__(self, prefix: str, dirs: dict[str, str]):
        self.prefix, self.dirs = prefix, dirs

    @property
    def members(self) -> str:
        return self.dirs.get("pids") or self.dirs["unified"]

    @classmethod
    def of(cls, prefix: str) -> "LabCgroup | None":
        """The group ``prefix`` gets (None: no cgroup hierarchy is mounted); ``make()``
        creates it."""
        dirs = _dirs(prefix)
        return cls(prefix, dirs) if dirs else None

    def make(self):
        for d in self.dirs.values():
            os.makedirs(d, exist_ok=True)

    @classmethod
    def existing(cls, prefix: str) -> "LabCgroup | None":
        dirs = {c: d for c, d in _dirs(prefix).items() if os.path.isdir(d)}
        return cls(prefix, dirs) if dirs and ("pids" in dirs or "unified" in dirs) else None

    def attach_fds(self) -> list[int]:
        """``cgroup.procs`` of each directory, opened for writing: a child writes "0" to each
        before it execs, so it is in the group before it can fork."""
        return [os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
                for d in self.dirs.values()]

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.members, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    def signal(self, sig: int) -> int:
        """``sig`` to every process of the group; how many there were."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return len(pids)

    def wait_empty(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while self.pids():
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)
        return True

    def kill(self, timeout: float = 2.0) -> bool:
        """SIGKILL every process of the group until none is left; True once it is empty."""
        end = time.monotonic() + timeout
        kill_file = os.path.join(self.dirs.get("unified", ""), "cgroup.kill")
        if "unified" in self.dirs and os.path.exists(kill_file):
            _write(kill_file, "1")
        freezer = self.dirs.get("freezer")
        if freezer and not os.path.isdir(freezer):
            freezer = None
        while True:
            if freezer:
                _freeze(freezer, "FROZEN", end)
            self.signal(signal.SIGKILL)
            if freezer:
                _freeze(freezer, "THAWED", end)
            if self.wait_empty(0.05):
                return True
            if time.monotonic() >= end:
                return False

    def remove(self) -> bool:
        """rmdir the group's directories (and ``vnet-lab/`` when it is empty); True once the
        group's are gone."""
        ok = True
        for d in self.dirs.values():
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
                ok = False
            try:
                os.rmdir(os.path.dirname(d))        # other labs' groups keep it
            except OSError:
                pass
        return ok


def _write(path: str, value: str):
    with open(path, "w") as f:
        f.write(value)


def _freeze(freezer: str, state: str, end: float):
    path = os.path.join(freezer, "freezer.state")
    _write(path, state)
    while state == "FROZEN" and time.monotonic() < end:
        with open(path) as f:
            if f.read().strip() == "FROZEN":
                return
        time.sleep(0.001)


def group_prefixes() -> list[str]:
    """Prefixes that have a lab group now."""
    m = _mounts()
    top = m.get("pids") or m.get("unified")
    if not top:
        return []
    try:
        return sorted(os.listdir(os.path.join(top, BASE)))
    except (FileNotFoundError, NotADirectoryError):
        return []


def sweep(only: str | None = None) -> dict[str, int]:
    """Kill and remove the groups of labs that are gone (no live owner in OWNERS_DIR); with
    ``only``, just that prefix's.  Returns prefix -> processes killed."""
    out = {}
    for prefix in group_prefixes():
        if only is not None and prefix != only:
            continue
        owner = _read_owner(OWNERS_DIR / prefix)
        if only is None and owner is not None and _owner_alive(*owner):
            continue                        # a running lab's (``only``: the caller owns it)
        g = LabCgroup.existing(prefix)
        if g is None:
            continue
        out[prefix] = len(g.pids())
        g.kill()
        g.remove()
    return out
