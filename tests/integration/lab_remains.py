"""What the lab lifetime tests share (test_lab_lifetime, test_lab_procs, test_lab_mgmt): a
lab's namespaces, whether a process still runs, and the cleanup a failed test needs -- the
``vnet-lab`` process killed, whatever runs in the lab's namespaces killed, the namespaces and
the owner record removed."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from vnet_router.lab.owners import OWNERS_DIR, processes_in
from vnet_router.ops import netlink


def namespaces(prefix: str) -> list[str]:
    return sorted(n for n in netlink.netns_list() if n.startswith(prefix))


def running(pid: int) -> bool:
    """The process exists and is not a zombie (one killed but not yet reaped by init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def remove_lab(proc, prefix: str) -> None:
    """Test cleanup: ``proc`` (the ``vnet-lab`` process) killed if it runs, every process in a
    namespace of ``prefix`` killed, those namespaces and the prefix's owner record removed."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for ns in namespaces(prefix):
        for pid in processes_in(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        netlink.netns_remove(ns)
    (OWNERS_DIR / prefix).unlink(missing_ok=True)
