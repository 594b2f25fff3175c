"""Control groups of protocol instances: limits, usage and the kill switch, from the kernel.

``sandbox.py`` puts every instance in a cgroup of its own; everything the instance runs --
children, ``setsid`` grandchildren, double-forked daemons -- is born into it and cannot leave
(moving a process needs write access to ``cgroup.procs``, which only root has).  So:

* limits are the kernel's: CPU rate (CFS quota), memory (OOM kill inside the group, no swap
  escape), number of processes (``pids.max``: ``fork`` fails beyond it);
* usage is the kernel's: CPU time of every process that ever ran in the group (reaped
  children included), memory charged to it (resident + page cache + tmpfs), its peak;
* stop kills the group: freeze it (no process can fork while we read the list), SIGKILL every
  process in it, thaw, and again until ``cgroup.procs`` is empty.  With cgroup v2,
  ``cgroup.kill`` does the same in one write.

Where: the daemon's own cgroup of each hierarchy (``/proc/self/cgroup``) gets a child
``vnet-hostd-PID``; an instance is ``vnet-hostd-PID/NAME`` below it.  cgroup v2 is used when
the daemon's cgroup offers the ``cpu``, ``memory`` and ``pids`` controllers (a systemd unit
with ``Delegate=yes``) or else the root cgroup does; otherwise the v1 hierarchies (``cpu``,
``cpuacct``, ``memory``, ``pids``, and ``freezer`` if mounted).  The base directories are recorded by the caller, so a
daemon that was killed has its leftovers removed by the next one (:func:`sweep`).
"""
from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass

V1_NEEDED = ("cpu", "cpuacct", "memory", "pids")
V2_NEEDED = ("cpu", "memory", "pids")
PERIOD_US = 100_000


class CgroupError(RuntimeError):
    pass


@dataclass(frozen=True)
class Limits:
    cpu_rate: float          # CPUs (CFS quota / period), e.g. 0.5
    memory: int              # bytes
    pids: int                # processes + threads


@dataclass
class Usage:
    cpu_seconds: float
    memory: int
    memory_peak: int
    oom_kills: int
    processes: int


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str):
    with open(path, "w") as f:
        f.write(value)


def _keyed(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if v.strip().isdigit():
            out[k] = int(v)
    return out


class Group:
    """One instance's cgroup: a directory per hierarchy (one with v2)."""

    def __init__(self, v2: bool, dirs: dict):
        self.v2, self.dirs = v2, dirs          # controller (or "unified") -> directory
        self.paths = sorted(set(dirs.values()))

    def _f(self, ctl: str, name: str) -> str:
        return os.path.join(self.dirs["unified" if self.v2 else ctl], name)

    def attach_fds(self) -> list[int]:
        """Descriptors of ``cgroup.procs``, one per directory: the child writes "0" to each
        before it execs (``sandbox.py``), so it is in the group before it can fork."""
        return [os.open(os.path.join(p, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
                for p in self.paths]

    def set_limits(self, lim: Limits):
        quota = max(1000, int(lim.cpu_rate * PERIOD_US))
        if self.v2:
            _write(self._f("", "cpu.max"), f"{quota} {PERIOD_US}")
            _write(self._f("", "memory.max"), str(lim.memory))
            if os.path.exists(self._f("", "memory.swap.max")):
                _write(self._f("", "memory.swap.max"), "0")
        else:
            _write(self._f("cpu", "cpu.cfs_period_us"), str(PERIOD_US))
            _write(self._f("cpu", "cpu.cfs_quota_us"), str(quota))
            _write(self._f("memory", "memory.limit_in_bytes"), str(lim.memory))
            if os.path.exists(self._f("memory", "memory.memsw.limit_in_bytes")):
                _write(self._f("memory", "memory.memsw.limit_in_bytes"), str(lim.memory))
        _write(self._f("pids", "pids.max"), str(lim.pids))

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in _read(self._f("pids", "cgroup.procs")).split()]
        except FileNotFoundError:
            return []

    def usage(self) -> Usage:
        procs = len(self.pids())
        if self.v2:
            cpu = _keyed(_read(self._f("", "cpu.stat"))).get("usage_usec", 0) / 1e6
            mem = int(_read(self._f("", "memory.current")))
            peak_f = self._f("", "memory.peak")
            peak = int(_read(peak_f)) if os.path.exists(peak_f) else mem
            ooms = _keyed(_read(self._f("", "memory.events"))).get("oom_kill", 0)
        else:
            cpu = int(_read(self._f("cpuacct", "cpuacct.usage"))) / 1e9
            mem = int(_read(self._f("memory", "memory.usage_in_bytes")))
            peak = int(_read(self._f("memory", "memory.max_usage_in_bytes")))
            ctl = _keyed(_read(self._f("memory", "memory.oom_control")))
            ooms = ctl.get("oom_kill", 0) or int(ctl.get("under_oom", 0) > 0)
        return Usage(cpu, mem, peak, ooms, procs)

    def signal(self, sig: int, skip=()):
        for pid in self.pids():
            if pid in skip:
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill(self, timeout: float = 1.0) -> bool:
        """SIGKILL every process of the group until none is left; True once it is empty."""
        end = time.monotonic() + timeout
        if self.v2 and os.path.exists(self._f("", "cgroup.kill")):
            _write(self._f("", "cgroup.kill"), "1")
        freezer = None if self.v2 else self.dirs.get("freezer")
        while True:
            if freezer:
                self._freeze(freezer, end)
            self.signal(signal.SIGKILL)
            if freezer:
                _write(os.path.join(freezer, "freezer.state"), "THAWED")
            if not self.pids():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.005)

    @staticmethod
    def _freeze(freezer: str, end: float):
        state = os.path.join(freezer, "freezer.state")
        _write(state, "FROZEN")
        while _read(state).strip() != "FROZEN" and time.monotonic() < end:
            time.sleep(0.001)

    def remove(self) -> bool:
        """rmdir every directory; True once all are gone (EBUSY while a process is left)."""
        ok = True
        for p in self.paths:
            try:
                os.rmdir(p)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
                ok = False
        return ok


class Tree:
    """The daemon's cgroup directories (``vnet-hostd-PID`` in each hierarchy)."""

    def __init__(self, v2: bool, bases: dict):
        self.v2, self.bases = v2, bases        # controller -> base directory
        self.kind = "v2" if v2 else "v1"

    @classmethod
    def discover(cls, tag: str | None = None) -> "Tree":
        tag = tag or f"vnet-hostd-{os.getpid()}"
        own = _own_cgroups()
        v2 = _v2_tree(own, tag)
        if v2 is not None:
            return v2
        mounts = _v1_mounts()
        missing = [c for c in V1_NEEDED if c not in mounts or c not in own]
        if missing:
            raise CgroupError("no cgroup controller for " + ", ".join(missing) + " (neither a "
                              "delegated cgroup v2 nor v1 hierarchies): protocol instances "
                              "cannot be contained")
        bases = {}
        for ctl in V1_NEEDED + ("freezer",):
            if ctl in mounts and ctl in own:
                bases[ctl] = os.path.join(mounts[ctl], own[ctl].lstrip("/"), tag)
        for d in set(bases.values()):
            os.makedirs(d, exist_ok=True)
        return cls(False, bases)

    def paths(self) -> list[str]:
        return sorted(set(self.bases.values()))

    def create(self, name: str, lim: Limits) -> Group:
        dirs = {c: os.path.join(b, name) for c, b in self.bases.items()}
        for d in sorted(set(dirs.values())):
            os.mkdir(d)
        g = Group(self.v2, dirs)
        try:
            g.set_limits(lim)
        except OSError:
            g.remove()
            raise
        return g

    def remove(self) -> bool:
        """rmdir the base directories; True once they are all gone."""
        ok = True
        for p in self.paths():
            try:
                os.rmdir(p)
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        return ok


def sweep(paths) -> int:
    """Kill what is left in base directories ``paths`` of an earlier daemon and remove them;
    returns how many processes were killed."""
    killed = 0
    for base in paths:
        if not os.path.isdir(base) or not os.path.basename(base).startswith("vnet-hostd-"):
            continue
        for sub in os.listdir(base):
            d = os.path.join(base, sub)
            if not os.path.isdir(d):
                continue
            g = Group(os.path.exists(os.path.join(d, "cgroup.kill")) or
                      os.path.exists(os.path.join(d, "cgroup.events")),
                      {"pids": d, "unified": d})
            killed += len(g.pids())
            g.kill()
            g.remove()
        try:
            os.rmdir(base)
        except OSError:
            pass
    return killed


def _own_cgroups() -> dict:
    """Controller -> this process's cgroup path; ``""`` -> the v2 path."""
    out = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, ctls, path = line.split(":", 2)
        for c in ctls.split(",") if ctls else [""]:
            out[c] = path
    return out


def _mounts(kind: str) -> list[tuple[str, list[str]]]:
    out = []
    for line in _read("/proc/self/mounts").splitlines():
        f = line.split()
        if f[2] == kind:
            out.append((f[1], f[3].split(",")))
    return out


def _v1_mounts() -> dict:
    out = {}
    for mnt, opts in _mounts("cgroup"):
        for c in opts:
            out.setdefault(c, mnt)
    return out


def _v2_tree(own: dict, tag: str) -> Tree | None:
    """A v2 base offering cpu, memory and pids, else None: below our own cgroup if it is
    delegated to us (we move into a leaf ``vnet-hostd.daemon`` when it must hand the
    controllers down: no process may stay in a cgroup that does), else below the root
    cgroup (exempt from that rule; a daemon started by hand)."""
    mounts = _mounts("cgroup2")
    if not mounts or "" not in own:
        return None
    for rel in dict.fromkeys((own[""], "/")):
        top = os.path.join(mounts[0][0], rel.lstrip("/"))
        try:
            if _v2_delegate(top, rel == "/"):
                base = os.path.join(top, tag)
                os.makedirs(base, exist_ok=True)
                _write(os.path.join(base, "cgroup.subtree_control"), _ENABLE)
                return Tree(True, {"unified": base})
        except OSError:
            continue
    return None


_ENABLE = " ".join(f"+{c}" for c in V2_NEEDED)


def _v2_delegate(top: str, root: bool) -> bool:
    """Make ``top`` hand cpu, memory and pids to its children; False if it cannot."""
    if not all(c in _read(os.path.join(top, "cgroup.controllers")).split() for c in V2_NEEDED):
        return False
    try:
        _write(os.path.join(top, "cgroup.subtree_control"), _ENABLE)
        return True
    except OSError as e:
        if e.errno != errno.EBUSY or root:
            raise
    if _read(os.path.join(top, "cgroup.procs")).split() != [str(os.getpid())]:
        return False                    # not delegated to us alone: leave it as it is
    leaf = os.path.join(top, "vnet-hostd.daemon")
    os.makedirs(leaf, exist_ok=True)
    _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    _write(os.path.join(top, "cgroup.subtree_control"), _ENABLE)
    return True
