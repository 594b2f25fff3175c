"""The lab's daemons live exactly as long as the lab (real processes: `vnet-lab up`).

A lab killed with SIGKILL takes its daemons with it (PR_SET_PDEATHSIG: they get SIGTERM and
remove their vNets); the node and switch namespaces it made stay until `vnet-lab clean` or the
next `vnet-lab up` with the same prefix removes them.  A lab started with SIGINT ignored still
stops on Ctrl-C; labs with different ``--prefix`` run side by side; a lab started from a thread
that ends keeps its daemons.
"""
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vnet_router.lab import topology
from vnet_router.lab.lab import OWNERS_DIR, Lab, LabError

import topo as t
from harness import eventually, repo_env
from lab_remains import namespaces, remove_lab, running

pytestmark = [pytest.mark.root, pytest.mark.one_tier]

# a router node with a vNet and a host node (vnet-hostd) on one switch: both daemon kinds;
# no path MTU notices on r (nothing on the LAN carries its v0: each start waited 2.25 s)
TOPO = t.text(t.topology(
    t.switch_node("sw"),
    t.node("r", t.multiaccess("lan", "eth0"), t.vnet("v", 1), t.iface("v", "v0", "lan", 200),
           settings={"path_mtu_interval": 0}),
    t.node("h", t.multiaccess("lan", "eth0"), daemon="host"),
    t.link("r:eth0", "sw"), t.link("h:eth0", "sw")))


class LabProcess:
    """`vnet-lab up --prefix PREFIX FILE` in the background, output in a file."""

    def __init__(self, tmp_path: Path, prefix: str, ignore_sigint: bool = False,
                 tag: str = ""):
        self.prefix = prefix
        topo_file = tmp_path / f"{prefix}topology.toml"
        topo_file.write_text(TOPO)
        self.log = tmp_path / f"{prefix}lab{tag}.out"
        # as `vnet-lab up &` in a script: a background job inherits SIGINT ignored
        pre = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vnet_router.lab.cli", "up", "--prefix", prefix,
                 str(topo_file)], stdout=f, stderr=subprocess.STDOUT, env=repo_env(),
                start_new_session=True, preexec_fn=pre)

    def output(self) -> str:
        return self.log.read_text()

    def wait_up(self, timeout: float = 60) -> dict[str, int]:
        """node -> daemon pid, once the lab says it is up (every daemon answered `show`)."""
        def up():
            assert self.proc.poll() is None, f"vnet-lab ended ({self.proc.returncode}):\n" \
                                             f"{self.output()}"
            return "up; press Ctrl-C" in self.output()
        eventually(up, timeout, f"lab {self.prefix} to be up", step=0.1)
        pids = {}
        for line in self.output().splitlines():
            line = line.strip()
            if line.startswith("daemon ") and ": started (pid " in line:
                node = line.split()[1].rstrip(":")
                pids[node] = int(line.split("(pid ")[1].split(",")[0])
        assert set(pids) == {"r", "h"}, self.output()
        assert all(running(p) for p in pids.values())
        return pids

    def end(self):
        """Kill whatever is left (test cleanup): the lab, processes in its namespaces (a
        daemon a failing test left), then the namespaces."""
        remove_lab(self.proc, self.prefix)


def _prefix(tag: str) -> str:
    return f"t{os.getpid()}{tag}-"


def test_sigkill_of_the_lab_ends_its_daemons_and_clean_removes_the_rest(tmp_path):
    lab = LabProcess(tmp_path, _prefix("k"))
    try:
        pids = lab.wait_up()
        assert namespaces(lab.prefix) == sorted(lab.prefix + n for n in ("sw", "r", "r-v", "h"))
        workdir = Path(lab.output().split("work dir (configs, logs): ")[1].split()[0])
        assert workdir.is_dir()
        lab.proc.send_signal(signal.SIGKILL)
        lab.proc.wait(10)
        eventually(lambda: not [p for p in pids.values() if running(p)], 15,
                   "the daemons of the killed lab to exit")
        # the daemons got SIGTERM, not SIGKILL: r removed its vNet namespace itself
        eventually(lambda: lab.prefix + "r-v" not in namespaces(lab.prefix), 5,
                   "r's vNet namespace to go")
        # what the lab itself made stays: nobody is left to remove it ...
        assert namespaces(lab.prefix) == sorted(lab.prefix + n for n in ("sw", "r", "h"))
        # ... until `vnet-lab clean` (the prefix's owner record names a dead process)
        r = subprocess.run([sys.executable, "-m", "vnet_router.lab.cli", "clean"],
                           capture_output=True, text=True, env=repo_env(), timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        for n in ("sw", "r", "h"):
            assert f"{lab.prefix}{n}: removed" in r.stdout
        assert namespaces(lab.prefix) == []
        assert not (OWNERS_DIR / lab.prefix).exists()
        assert not workdir.exists()             # its temporary work dir too
    finally:
        lab.end()


def test_next_lab_with_the_prefix_of_a_killed_lab_removes_its_namespaces(tmp_path):
    first = LabProcess(tmp_path, _prefix("r"))
    second = None
    try:
        pids = first.wait_up()
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        eventually(lambda: not [p for p in pids.values() if running(p)], 15,
                   "the daemons of the killed lab to exit")
        assert len(namespaces(first.prefix)) == 3
        second = LabProcess(tmp_path, first.prefix, tag="2")
        second.wait_up()
        assert "removing namespaces of a lab with prefix" in second.output()
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(30) == 0, second.output()
        assert namespaces(first.prefix) == []
    finally:
        first.end()
        if second is not None:
            second.end()


def test_sigint_stops_a_lab_started_with_sigint_ignored(tmp_path):
    lab = LabProcess(tmp_path, _prefix("i"), ignore_sigint=True)
    try:
        pids = lab.wait_up()
        lab.proc.send_signal(signal.SIGINT)
        assert lab.proc.wait(30) == 0, lab.output()
        assert "torn down" in lab.output()
        assert not [p for p in pids.values() if running(p)]
        assert namespaces(lab.prefix) == []
        assert not (OWNERS_DIR / lab.prefix).exists()
    finally:
        lab.end()


def test_two_labs_with_different_prefixes_side_by_side(tmp_path):
    a, b = LabProcess(tmp_path, _prefix("a")), LabProcess(tmp_path, _prefix("b"))
    try:
        pa, pb = a.wait_up(), b.wait_up()
        assert namespaces(a.prefix) == sorted(a.prefix + n for n in ("sw", "r", "r-v", "h"))
        assert namespaces(b.prefix) == sorted(b.prefix + n for n in ("sw", "r", "r-v", "h"))
        a.proc.send_signal(signal.SIGINT)
        assert a.proc.wait(30) == 0, a.output()
        assert namespaces(a.prefix) == [] and not [p for p in pa.values() if running(p)]
        # b is untouched and still serves
        assert b.proc.poll() is None and all(running(p) for p in pb.values())
        assert len(namespaces(b.prefix)) == 4
        b.proc.send_signal(signal.SIGINT)
        assert b.proc.wait(30) == 0, b.output()
        assert namespaces(b.prefix) == []
    finally:
        a.end()
        b.end()


def test_a_prefix_in_use_is_refused_and_the_running_lab_untouched(tmp_path):
    prefix = _prefix("u")
    text = t.text(t.switch_node("sw"))
    with Lab(topology.loads(text), prefix=prefix) as first:
        second = Lab(topology.loads(text), prefix=prefix)
        with pytest.raises(LabError, match="in use by a running lab"):
            second.start()
        assert namespaces(prefix) == [prefix + "sw"]
        assert first.cleanup_errors == []
    assert namespaces(prefix) == []
    with pytest.raises(LabError, match="bad lab prefix"):
        Lab(topology.loads(text), prefix="vl123-")


BLOCKER = ("import signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); "
           "print('ready', flush=True); signal.pause()")


def _pending(pid: int) -> int:
    """Signals pending for the process (thread-directed and shared), as a bit mask."""
    mask = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")):
            mask |= int(line.split()[1], 16)
    return mask


def test_daemons_outlive_the_thread_that_started_the_lab(tmp_path):
    """PR_SET_PDEATHSIG fires when the forking *thread* ends: the lab forks on a thread of
    its own, so a lab started from a short-lived thread keeps its daemons.  Observed with a
    background process that blocks SIGTERM: once the starting thread is gone (its task left
    /proc), no SIGTERM is pending for it."""
    lab = Lab(topology.loads(TOPO), prefix=_prefix("t"), workdir=tmp_path / "w")
    got = {}

    def start():
        try:
            lab.start()
            got["blocker"] = lab.popen("r", [sys.executable, "-c", BLOCKER],
                                       stdout=subprocess.PIPE, text=True)
        except BaseException as e:        # shown by the assertion below
            got["error"] = e
    th = threading.Thread(target=start)
    th.start()
    th.join(60)
    try:
        assert "error" not in got and not th.is_alive(), got
        eventually(lambda: not Path(f"/proc/self/task/{th.native_id}").exists(), 10,
                   "the starting thread's task to end")
        blocker = got["blocker"]
        assert blocker.stdout.readline().strip() == "ready"
        assert _pending(blocker.pid) & (1 << (signal.SIGTERM - 1)) == 0
        assert lab.alive() == {"r": None, "h": None}
        assert lab.control("r")                 # still answers
        pids = [p.pid for p in lab.daemons.values()]
    finally:
        lab.stop()
    assert lab.daemon_exit == {"r": 0, "h": 0}
    assert not [p for p in pids if running(p)]
    assert namespaces(lab.prefix) == []
