"""Long-lived processes, routes and commands before the daemons in labs (issue 25, item 3).

Background commands run after the daemons, log to the work dir, and end with the lab -- with
everything they forked, daemonised children included (the lab's cgroup) -- at teardown, on
Ctrl-C at any moment of `vnet-lab up`, and (through `vnet-lab clean`) after the lab was killed
with SIGKILL.  A node's routes are set before its daemon starts, so a UDP tunnel behind a
legacy router (a node without a daemon) is up from the start.
"""
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vnet_router.ops import netlink
from vnet_router.lab import cgroup
from vnet_router.lab.lab import OWNERS_DIR

import topo as t
from harness import eventually, repo_env
from lab_remains import remove_lab, running

pytestmark = [pytest.mark.root, pytest.mark.one_tier]

# r runs without path MTU notices: nothing on its LAN carries its v0 (leg runs no router), so
# every start of r waited 2.25 s for a report that could not come
NO_PMTU = {"path_mtu_interval": 0}

# a daemon in the classic sense: fork, setsid, fork again -- out of its process group and
# session, re-parented to init; the token in its command line finds it
DAEMONISE = ("import os, sys, time\n"
             "if os.fork(): sys.exit(0)\n"
             "os.setsid()\n"
             "if os.fork(): sys.exit(0)\n"
             "print('daemonised', os.getpid(), flush=True)\n"
             "time.sleep(600)\n")


class Tokens:
    """Unique strings in the command lines of a test's background processes."""

    def __init__(self):
        n = random.randrange(10**5, 10**6)
        self.sleep = f"600.{n}"                          # `sleep 600.123456`
        self.py = f"vnet-procs-test-{n}"

    def commands(self) -> list[dict]:
        return [
            # a shell that leaves a setsid'd child behind, and one still in its group
            {"run": ["sh", "-c", f"setsid sleep {self.sleep} & echo started; "
                                 f"exec sleep {self.sleep}"], "background": True,
             "name": "sleeper"},
            {"run": [sys.executable, "-c", DAEMONISE, self.py], "background": True,
             "name": "daemon"},
        ]

    def pids(self) -> list[int]:
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if self.sleep in cmd or self.py in cmd:
                    out.append(int(d))
        return out


def group_dirs(prefix: str) -> list[str]:
    return [d for d in cgroup._dirs(prefix).values() if os.path.isdir(d)]


def test_background_commands_run_after_the_daemons_log_and_end_with_the_lab(make_lab):
    tok = Tokens()
    topo = t.topology(
        t.switch_node("sw"),
        t.node("r", t.multiaccess("lan", "eth0"), t.vnet("v", 1),
               t.iface("v", "v0", "lan", 200), settings=NO_PMTU),
        t.node("leg"),
        t.link("r:eth0", "sw"), t.link("leg:eth0", "sw"))
    topo["node"][1]["commands"] = tok.commands() + [
        {"run": "sh -c 'echo bye; exit 7'", "background": True},
    ]
    # in r's vNet namespace, which only exists once r's daemon runs
    topo["node"][0]["commands"] = [
        {"run": ["sh", "-c", f"ip -o link show; exec sleep {tok.sleep}"], "vnet": "v",
         "background": True, "name": "invnet"}]
    lab = make_lab(topo)
    logs = {n: lab.workdir / f"{n}.log" for n in ("leg.sleeper", "leg.daemon", "leg.cmd2",
                                                     "r.invnet")}
    eventually(lambda: "daemonised" in logs["leg.daemon"].read_text(), 10,
               "the daemonised command's output in its log")
    eventually(lambda: "v0" in logs["r.invnet"].read_text(), 10,
               "the vNet's TAP listed by the command run in r's vNet namespace")
    assert "started" in logs["leg.sleeper"].read_text()
    # 2 sleeps + the double-forked python + the one in the vNet namespace, all in the group
    pids = eventually(tok.pids, 10, "the background processes", until=lambda p: len(p) == 4)
    assert set(pids) <= set(lab.commands.cgroup.pids()), (pids, lab.commands.cgroup.pids())
    # the one that exits early is reported with its status; the lab stays up
    gone = []
    eventually(lambda: gone.extend(lab.commands.exited()) or "leg.cmd2" in map(str, gone), 10,
               "the early exit to be reported")
    assert ("leg.cmd2", 7) in [(str(b), b.status) for b in gone]
    assert "bye" in logs["leg.cmd2"].read_text()
    assert "exited with status 7" in logs["leg.cmd2"].read_text()
    assert lab.alive() == {"r": None}
    dirs = group_dirs(lab.prefix)
    assert dirs

    lab.stop()
    assert tok.pids() == [], "background processes outlived their lab"
    assert group_dirs(lab.prefix) == [] and not any(os.path.isdir(d) for d in dirs)
    assert lab.cleanup_errors == []
    # the logs stay in the work dir, each with how its command ended (leg.daemon's own process
    # exits once it has forked away, unless the teardown came first)
    for name in ("leg.sleeper", "leg.daemon", "r.invnet"):
        assert re.search(r"\[vnet-lab\] \S+ (stopped \(status -?\d+\)|exited with status 0)\n$",
                         logs[name].read_text()), name


def _udp_node(name, local, remote, inner, addresses, routes=(), commands=()):
    n = t.node(name, t.udp("tun", f"{local}:4799", f"{remote}:4799"), t.vnet("blue", 1),
               t.iface("blue", "blue0", "tun", 7, addresses=[inner]),
               addresses={"e0": addresses})
    if routes:
        n["node"][0]["routes"] = list(routes)
    if commands:
        n["node"][0]["commands"] = list(commands)
    return n


def test_routes_put_a_udp_tunnel_behind_a_legacy_router_up_from_the_start(make_lab):
    """x and y reach each other's tunnel end only through lr, a legacy router (no daemon):
    x by its ``routes``, y by a command run before the daemons."""
    topo = t.topology(
        t.node("lr", addresses={"e0": ["192.168.60.254/24"], "e1": ["192.168.61.254/24"]},
               sysctl={"net.ipv4.ip_forward": 1}),
        _udp_node("x", "192.168.60.1", "192.168.61.2", "10.0.0.1/24", ["192.168.60.1/24"],
                  routes=["192.168.61.0/24 via 192.168.60.254"]),
        _udp_node("y", "192.168.61.2", "192.168.60.1", "10.0.0.2/24", ["192.168.61.2/24"],
                  commands=[{"run": "ip route add 192.168.60.0/24 via 192.168.61.254",
                             "when": "before"}]),
        t.link("x:e0", "lr:e0"), t.link("y:e0", "lr:e1"))
    lab = make_lab(topo)
    for node in ("x", "y"):
        tun = next(s for s in lab.control(node)["substrate_links"] if s["id"] == "tun")
        assert tun["state"] == "up", (node, tun)
        log = lab.log_path(node).read_text(errors="replace")
        assert "is down" not in log and "substrate link tun (udp " not in log, log
    assert "192.168.61.0/24 via 192.168.60.254" in lab.exec("x", "ip route").stdout
    r = lab.ping("x", "10.0.0.2", vnet="blue")
    assert r.received == 3, r.output


# -- Ctrl-C at any moment of `vnet-lab up` ---------------------------------------------------

def _lab_topology(tok: Tokens) -> str:
    topo = t.topology(
        t.switch_node("sw"),
        t.node("r", t.multiaccess("lan", "eth0"), t.vnet("v", 1),
               t.iface("v", "v0", "lan", 200), settings=NO_PMTU),
        t.node("leg", addresses={"eth0": ["192.168.70.1/24"]}),
        t.link("r:eth0", "sw"), t.link("leg:eth0", "sw"))
    topo["node"][1]["routes"] = ["10.70.0.0/16 via 192.168.70.2"]
    topo["node"][1]["commands"] = [
        {"run": f"sh -c 'sleep {tok.sleep} & exit 0'", "when": "before", "background": True,
         "name": "early"}] + tok.commands() + [{"run": "sleep 0.3"}]
    return t.text(topo)


class Up:
    """`vnet-lab up --prefix P FILE`, its output in a file."""

    def __init__(self, tmp_path: Path, prefix: str, text: str):
        self.prefix = prefix
        path = tmp_path / f"{prefix}topology.toml"
        path.write_text(text)
        self.out = tmp_path / f"{prefix}out"
        with open(self.out, "w") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vnet_router.lab.cli", "--workdir",
                 str(tmp_path / f"{prefix}work"), "up", "--prefix", prefix, str(path)],
                stdout=f, stderr=subprocess.STDOUT, env=repo_env(), start_new_session=True)

    def output(self) -> str:
        return self.out.read_text()

    def wait_for(self, pattern: str, timeout: float = 60):
        def seen():
            assert self.proc.poll() is None, f"vnet-lab ended early:\n{self.output()}"
            return re.search(pattern, self.output(), re.M)
        eventually(seen, timeout, f"{pattern!r} in vnet-lab's output", step=0.02)

    def daemon_pids(self) -> list[int]:
        return [int(m) for m in re.findall(r"daemon \w+: started \(pid (\d+)", self.output())]

    def end(self):
        """Test cleanup if something failed: kill what is left."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        cgroup.sweep(only=self.prefix)
        remove_lab(self.proc, self.prefix)


def _nothing_left(up: Up, tok: Tokens, daemons: list[int]):
    assert [n for n in netlink.netns_list() if n.startswith(up.prefix)] == [], up.output()
    assert tok.pids() == [], up.output()
    assert group_dirs(up.prefix) == [], up.output()
    assert not (OWNERS_DIR / up.prefix).exists()
    eventually(lambda: not [p for p in daemons if running(p)], 10,
               "the lab's daemons to be gone")


#: moments of `vnet-lab up`, each picked by the line that shows the lab got there
MOMENTS = {
    "building": r"^  namespaces: ",                      # namespaces made, links not yet
    "routes": r"^  routes leg: ",                        # before the daemons
    "daemon-start": r"^  daemon r: started",             # started, not ready yet
    "background": r"^  background leg\.sleeper: started",  # between background commands
    "running": r"^up; press Ctrl-C",
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_ctrl_c_at_any_moment_leaves_nothing(tmp_path, moment):
    tok = Tokens()
    up = Up(tmp_path, f"vl{os.getpid()}c{list(MOMENTS).index(moment)}-", _lab_topology(tok))
    try:
        up.wait_for(MOMENTS[moment])
        work = tmp_path / f"{up.prefix}work"
        if moment == "running":         # and every background process has started
            eventually(lambda: len(tok.pids()) == 4, 10, "the background processes")
        up.proc.send_signal(signal.SIGINT)
        rc = up.proc.wait(60)
        assert rc in (0, 130), up.output()
        assert "torn down" in up.output() or "interrupted" in up.output(), up.output()
        _nothing_left(up, tok, up.daemon_pids())
        if moment == "running":
            assert "\nstarted\n" in (work / "leg.sleeper.log").read_text()
            assert "daemonised" in (work / "leg.daemon.log").read_text()
            assert "exited with status 0" in (work / "leg.early.log").read_text()
    finally:
        up.end()


def test_clean_ends_the_background_commands_of_a_lab_killed_with_sigkill(tmp_path):
    tok = Tokens()
    up = Up(tmp_path, f"vl{os.getpid()}k-", _lab_topology(tok))
    try:
        up.wait_for(MOMENTS["running"])
        eventually(lambda: len(tok.pids()) == 4, 10, "the background processes")
        up.proc.send_signal(signal.SIGKILL)
        up.proc.wait(10)
        # the death signal reached the commands the lab started, not what they forked away
        survivors = eventually(tok.pids, 10, "the commands' own processes to end",
                               until=lambda p: len(p) == 3)
        assert group_dirs(up.prefix)
        r = subprocess.run([sys.executable, "-m", "vnet_router.lab.cli", "clean"],
                           capture_output=True, text=True, env=repo_env(), timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"cgroup vnet-lab/{up.prefix}: killed " in r.stdout, r.stdout
        assert not [p for p in survivors if running(p)]
        _nothing_left(up, tok, up.daemon_pids())
    finally:
        up.end()


def test_the_next_lab_of_a_killed_labs_prefix_ends_what_its_commands_left(tmp_path):
    tok, tok2 = Tokens(), Tokens()
    first = Up(tmp_path, f"vl{os.getpid()}n-", _lab_topology(tok))
    second = None
    try:
        first.wait_for(MOMENTS["running"])
        eventually(lambda: len(tok.pids()) == 4, 10, "the background processes")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        survivors = eventually(tok.pids, 10, "the commands' own processes to end",
                               until=lambda p: len(p) == 3)
        (tmp_path / "2").mkdir()
        second = Up(tmp_path / "2", first.prefix, _lab_topology(tok2))
        second.wait_for(MOMENTS["running"])
        assert "killed 3 processes left by a lab with prefix" in second.output()
        assert not [p for p in survivors if running(p)]
        eventually(lambda: len(tok2.pids()) == 4, 10, "the second lab's background processes")
        second.proc.send_signal(signal.SIGINT)
        assert second.proc.wait(60) == 0, second.output()
        _nothing_left(second, tok2, first.daemon_pids() + second.daemon_pids())
        assert tok.pids() == []
    finally:
        first.end()
        if second is not None:
            second.end()
