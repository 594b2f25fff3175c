"""Who owns what: the processes a lab starts, and the prefixes of running labs.

``_Spawner`` forks every long-running lab process on a thread that lives as long as the lab,
with ``PR_SET_PDEATHSIG`` set (``_child_setup``), so the processes end with their lab even when
it is killed with SIGKILL.  ``OWNERS_DIR/PREFIX`` records the pid (and start time) of the lab
that owns a prefix, so ``vnet-lab clean`` and the next lab of that prefix tell a dead lab's
namespaces from a running one's, whatever the prefix.  The same record tells whose cgroup of
background commands (``cgroup.py``, ``vnet-lab/PREFIX``) is a dead lab's, to be emptied.
"""
from __future__ import annotations

import ctypes
import os
import queue
import re
import shutil
import tempfile
import threading
from pathlib import Path

from vnet_router.ops import netlink

_STALE = re.compile(r"^vl(\d+)(?:x\d+)?-")
#: a prefix given explicitly: letters, digits, '_', ending in '-' (no other '-', so no lab's
#: namespaces start with another lab's prefix); 'vl<digits>-' is the default prefixes' own
PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,15}-$")
#: one file per running lab, PREFIX -> "pid starttime [temporary workdir]": how `vnet-lab clean` tells the
#: namespaces of a lab that died (SIGKILL) from those of a running one, whatever the prefix
OWNERS_DIR = Path(os.environ.get("VNET_LAB_RUN_DIR", "/run/vnet-lab"))
PR_SET_PDEATHSIG = 1


class LabError(RuntimeError):
    """A lab cannot be built or run (``lab.py``, ``procs.py``); the message says why."""


_libc = None


def _child_setup(parent: int, sig: int) -> None:
    """preexec_fn of every long-running lab process: ``sig`` when the spawning thread (the
    lab's spawner, which lives as long as the lab) or the whole lab process dies, SIGKILL
    included.  The setting survives exec (nsenter, ``ip netns exec`` exec without forking)."""
    _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:            # the lab died before prctl: nobody will signal us
        os._exit(1)


class _Spawner:
    """One thread that starts the lab's long-running processes and lives until ``close()``.

    PR_SET_PDEATHSIG fires when the *thread* that forked a child exits, not the process; a lab
    started from a short-lived thread (a test fixture, a worker) would lose its daemons when
    that thread ended.  So every daemon and background process is forked here."""

    def __init__(self, name: str):
        global _libc
        if _libc is None:                 # loaded here, never in a forked child
            _libc = ctypes.CDLL(None, use_errno=True)
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        # daemon thread: it must not hold the interpreter's exit (the atexit stop() ends it)
        self._thread = threading.Thread(target=self._run, name=f"vnet-lab-spawner-{name}",
                                        daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, box, done = item
            try:
                box.append((True, fn()))
            except BaseException as e:    # handed to the caller
                box.append((False, e))
            done.set()

    def call(self, fn):
        """``fn()`` run on the spawner thread; its value, or its exception raised here."""
        if not self._thread.is_alive():
            raise RuntimeError("the lab is stopped")
        box, done = [], threading.Event()
        self._q.put((fn, box, done))
        done.wait()
        ok, value = box[0]
        if ok:
            return value
        raise value

    def close(self):
        """End the thread: any process it started that still runs gets its death signal."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join(10)


# -- stale labs -------------------------------------------------------------------------------

def stale_owners() -> list[str]:
    """Prefixes in OWNERS_DIR whose lab process no longer exists."""
    try:
        names = sorted(os.listdir(OWNERS_DIR))
    except FileNotFoundError:
        return []
    out = []
    for prefix in names:
        owner = _read_owner(OWNERS_DIR / prefix)
        if owner is None or not _owner_alive(*owner):
            out.append(prefix)
    return out


def stale_namespaces() -> list[str]:
    """Lab namespaces whose creating process no longer exists: 'vl<pid>-...' with that pid
    gone, and those of any prefix recorded in OWNERS_DIR (``--prefix``) whose owner is gone."""
    dead = stale_owners()
    live = set()
    try:
        live = set(os.listdir(OWNERS_DIR)) - set(dead)
    except FileNotFoundError:
        pass
    out = []
    for ns in netlink.netns_list():
        if any(ns.startswith(p) for p in live):
            continue
        m = _STALE.match(ns)
        if (m and not _pid_alive(int(m.group(1)))) or any(ns.startswith(p) for p in dead):
            out.append(ns)
    return out


def forget_stale_owners() -> list[str]:
    """Remove the records of dead labs whose namespaces are all gone; returns their prefixes."""
    names = netlink.netns_list()
    gone = []
    for prefix in stale_owners():
        if not any(n.startswith(prefix) for n in names):
            _remove_workdir(OWNERS_DIR / prefix)
            try:
                (OWNERS_DIR / prefix).unlink()
            except FileNotFoundError:
                pass
            gone.append(prefix)
    return gone


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or ''."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rindex(")") + 2:].split()[19]


def _read_owner(path: Path) -> tuple[int, str] | None:
    try:
        pid, start = path.read_text().split()[:2]
        return int(pid), start
    except (OSError, ValueError):
        return None


def _remove_workdir(owner_file: Path) -> None:
    """The temporary work dir a dead lab recorded in its owner file (only a
    ``vnet-lab-PREFIX*`` directory in the temporary directory), if still there."""
    try:
        fields = owner_file.read_text().split()
    except OSError:
        return
    if len(fields) < 3:
        return
    wd = Path(fields[2])
    if wd.parent == Path(tempfile.gettempdir()) and \
            wd.name.startswith(f"vnet-lab-{owner_file.name}"):
        shutil.rmtree(wd, ignore_errors=True)


def _owner_alive(pid: int, start: str) -> bool:
    """The process ``pid`` exists and is the one that started at ``start`` (not a reuse)."""
    return _pid_alive(pid) and _start_time(pid) == start


def processes_in(ns: str) -> list[int]:
    """Pids of processes whose network namespace is ``ns``."""
    try:
        target = os.stat(os.path.join(netlink.NETNS_DIR, ns))
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev):
                pids.append(int(entry))
    return pids


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
