"""Suite-wide guard: nothing the tests create (namespace, veth, TAP, a lab's cgroup of
background commands) may outlive the run."""
import os
import re
import subprocess

import pytest

from harness import poll
from vnet_router.lab import cgroup as lab_cgroup


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def _ours(ns: str) -> bool:
    """Every namespace the suite makes is named vl<pid>... (labs, fixtures; daemons' vNet
    namespaces inherit the lab's prefix).  Ours: our pid, or a process that has ended (a demo
    run).  Namespaces of other live processes (a second suite running at the same time on
    this machine) are not ours."""
    m = re.match(r"vl(\d+)", ns)
    if not m:
        return False
    pid = int(m.group(1))
    return pid == os.getpid() or not os.path.exists(f"/proc/{pid}")


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


_DAEMONS = ("vnet_router.node.daemon", "vnet_host.daemon", "vnet-router", "vnet-hostd", "trafgen",
            "vnet_router.lab.forward", "prometheus --config.file")


def _cmdline(pid) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _netns_of(pid) -> str | None:
    """The named namespace ``pid`` runs in (None: the root namespace, or it is gone)."""
    r = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True)
    return r.stdout.strip() or None


def _daemon_pids() -> set[int]:
    """Daemons (and generators) the suite may start, running now -- except those running in
    a namespace of another live process (a second suite on this machine at the same time)."""
    pids = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            cmd = _cmdline(d)
            if any(name in cmd for name in _DAEMONS):
                ns = _netns_of(d)
                if ns is None or _ours(ns):
                    pids.add(int(d))
    return pids


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    if os.geteuid() != 0:
        yield
        return
    ns_before, links_before, daemons_before = _netns(), _links(), _daemon_pids()
    groups_before = set(lab_cgroup.group_prefixes())
    yield
    # daemons told to stop may take a moment to exit: up to 5 s until none of ours runs
    _, daemons_left = poll(lambda: _daemon_pids() - daemons_before, 5.0,
                           until=lambda left: not left, step=0.1)
    assert not daemons_left, "daemons left running after the suite: " + ", ".join(
        f"{p}: {_cmdline(p)[:120]}" for p in sorted(daemons_left))
    ns_left = sorted(n for n in _netns() - ns_before if _ours(n))
    links_left = sorted(_links() - links_before)
    assert not ns_left and not links_left, \
        f"left behind after the suite: namespaces {ns_left}, links {links_left}"
    # a lab's background commands live in vnet-lab/PREFIX (vnet_router/lab/cgroup.py)
    groups_left = sorted(p for p in set(lab_cgroup.group_prefixes()) - groups_before
                         if _ours(p))
    assert not groups_left, f"lab cgroups left behind after the suite: {groups_left}"


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, veth, TAP)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
