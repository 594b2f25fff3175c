"""The lab builds topologies and always removes them (root: namespaces, veth, bridges).

Most tests use a stand-in daemon (``FAKE_DAEMON`` below: serves ``show`` on the control socket,
creates the vNet namespaces) so the lab's own behaviour is tested whatever the state of the
real daemon; ``test_demo_end_to_end`` runs the real vnet-router on the demo topology.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vnet_router.ops import netlink
from vnet_router.lab import demo
from vnet_router.lab import topology
from vnet_router.lab.lab import Lab, LabError, parse_ping

import topo as t
from harness import eventually, repo_env

pytestmark = pytest.mark.root
ROOT = Path(__file__).resolve().parents[2]


def _topo(c_gateway="10.99.0.1") -> t.Topo:
    """a -- sw -- b (routes, forwards) -- c; c's route back goes via ``c_gateway``."""
    return t.topology(
        t.switch_node("sw"),
        t.node("a", addresses={"eth0": ["192.168.99.1/24"]},
               commands=["ip route add 10.99.0.0/30 via 192.168.99.2"]),
        t.node("b", addresses={"eth0": ["192.168.99.2/24"], "eth1": ["10.99.0.1/30"]},
               sysctl={"net.ipv4.ip_forward": 1}),
        t.node("c", addresses={"eth0": ["10.99.0.2/30"]},
               commands=[f"ip route add 192.168.99.0/24 via {c_gateway}"]),
        t.link("a:eth0", "sw", a_mac="02:99:00:00:00:01"),
        t.link("b:eth0", "sw", mtu=9000),
        t.link("b:eth1", "c:eth0"))


TOPO = t.text(_topo())

FAKE_DAEMON = """
import asyncio, signal, sys, time
sys.path.insert(0, {root!r})
from vnet_router.model import config
from vnet_router.node import api as control
from vnet_router.ops import netlink
mode, cfg = sys.argv[1], config.load(sys.argv[-1])
if mode == "bad":
    print("vnet-router: bad.toml: vnet[0].id: this config is bad", file=sys.stderr)
    sys.exit(2)
for v in cfg.vnets:
    netlink.netns_create(v.namespace)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

async def main():
    srv = control.ControlServer(cfg.node.control_socket, {{"show": lambda: {{"node": cfg.node.name}}}})
    await srv.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    if mode != "stubborn":
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await srv.close()

asyncio.run(main())
if mode == "ok":
    for v in cfg.vnets:
        netlink.netns_remove(v.namespace)
# mode "litter": exits 0 but leaves its vNet namespaces behind
"""

# a router node whose daemon (the fake one) makes vNet v's namespace, where a command runs
ROUTER_NODE = t.node("r", t.vnet("v", 1), commands=[("ip link add name br0 type bridge", "v")])


def lab_namespaces(prefix: str) -> list[str]:
    return [n for n in netlink.netns_list() if n.startswith(prefix)]


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_daemon.py"
    script.write_text(FAKE_DAEMON.format(root=str(ROOT)))
    return lambda mode: [sys.executable, str(script), mode]


@pytest.mark.one_tier      # no vnet router in this lab: nothing runs a datapath
def test_build_addresses_macs_mtu_forwarding_and_cleanup(tmp_path):
    lab = Lab(topology.loads(TOPO), workdir=tmp_path / "w")
    try:
        with lab:
            assert sorted(lab.namespaces()) == sorted(lab.ns(n) for n in ("sw", "a", "b", "c"))
            assert netlink.link_info("eth0", lab.ns("a"))["mac"] == bytes.fromhex("029900000001")
            assert netlink.link_info("eth0", lab.ns("b"))["mtu"] == 9000
            assert netlink.link_info("b-eth0", lab.ns("sw"))["mtu"] == 9000
            assert netlink.bridge_ports("sw", lab.ns("sw")) == ["a-eth0", "b-eth0"]
            assert "10.99.0.1/30" in netlink.addr_list("eth1", lab.ns("b"))
            assert lab.exec("b", "sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"
            # c reaches a only through b: the bridge, the direct link, the route command
            # and the ip_forward sysctl all had to work
            r = lab.ping("c", "192.168.99.1", count=2, interval=0.2)
            assert r.received == 2 and r.loss == 0.0 and r.rtt_avg is not None
            r = lab.ping("a", "192.168.99.77", count=1, wait=0.5)
            assert r.transmitted == 1 and r.received == 0 and not r.ok
            # nothing of the lab is visible in the caller's namespace
            assert "a-eth0" not in netlink.link_names() and "eth1" not in netlink.link_names()
    finally:
        lab.stop()
    assert lab_namespaces(lab.prefix) == []
    assert lab.cleanup_errors == []


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_exception_inside_the_lab_still_cleans_up():
    lab = Lab(topology.loads(TOPO))
    with pytest.raises(ZeroDivisionError):
        with lab:
            assert len(lab.namespaces()) == 4
            1 / 0
    assert lab_namespaces(lab.prefix) == []
    assert not lab.workdir.exists()            # temporary work dir removed


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_failing_command_fails_the_build_and_cleans_up():
    text = t.text(_topo(c_gateway="10.200.0.1"))            # not a reachable gateway
    lab = Lab(topology.loads(text, "t.toml"))
    with pytest.raises(LabError, match=r"t\.toml: node\[2\]\.commands\[0\]: `ip route add"):
        lab.start()
    assert lab_namespaces(lab.prefix) == []


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_daemons_vnet_namespaces_and_commands(fake, tmp_path):
    lab = Lab(topology.loads(t.text(_topo() + ROUTER_NODE)), daemon_cmd=fake("ok"),
              workdir=tmp_path / "w")
    with lab:
        assert lab.control("r") == {"node": "r"}
        assert lab.vnet_ns("r", "v") == lab.prefix + "r-v"
        assert "br0" in netlink.link_names(lab.vnet_ns("r", "v"))
        assert lab.exec("r", ["ip", "-br", "link", "show", "dev", "br0"], vnet="v").returncode == 0
        assert (tmp_path / "w" / "r.toml").exists()
        assert "ready" in lab.log_tail("r")
    assert lab.daemon_exit == {"r": 0}
    assert lab.leftovers == []
    assert lab_namespaces(lab.prefix) == []


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_namespaces_left_behind_by_a_daemon_are_removed(fake):
    lab = Lab(topology.loads(t.text(ROUTER_NODE)), daemon_cmd=fake("litter"))
    with lab:
        pass
    assert lab.leftovers == [lab.prefix + "r-v"]
    assert lab_namespaces(lab.prefix) == []


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_daemon_ignoring_sigterm_is_killed(fake):
    lab = Lab(topology.loads(t.text(ROUTER_NODE)), daemon_cmd=fake("stubborn"), stop_timeout=1.0)
    with lab:
        pid = lab.daemons["r"].pid
    assert lab.daemon_exit["r"] == -signal.SIGKILL
    assert any("ignored SIGTERM" in e for e in lab.cleanup_errors)
    assert not Path(f"/proc/{pid}").exists()
    assert lab_namespaces(lab.prefix) == []


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_daemon_failing_at_start_reports_its_log(fake):
    lab = Lab(topology.loads(t.text(ROUTER_NODE)), daemon_cmd=fake("bad"))
    with pytest.raises(LabError, match=r"(?s)node r exited with status 2.*this config is bad"):
        lab.start()
    assert lab_namespaces(lab.prefix) == []


# two routers with a control plane ([tm]: HELLOs) and a host daemon (vnet-hostd) without one
# (it takes only PATH_MTU notices on VLI 0) on one LAN; vNet v between x and y
KEYED = t.topology(
    t.switch_node("sw"), *(t.link(f"{n}:eth0", "sw") for n in "xyh"),
    *(t.node(n, t.multiaccess("lan", "eth0"), t.vnet("v", 1),
             t.iface("v", "v0", "lan", 200, addresses=[f"10.77.0.{i}/24"]),
             router={"tm": {"hello_interval": 0.5}}) for i, n in enumerate("xy", 1)),
    t.node("h", t.multiaccess("lan", "eth0"), daemon="host"))
UNKEYED_LINE = "are NOT authenticated"           # control.guard's warning at start


def _hear_each_other(lab):
    def heard():
        return {n: [x["name"] for x in lab.control(n, "alloc")["neighbours"]] for n in "xy"}
    eventually(heard, 20, "x and y to hear each other's HELLOs",
               until=lambda h: h == {"x": ["y"], "y": ["x"]})


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_a_lab_is_keyed_by_default_and_no_daemon_warns(make_lab):
    lab = make_lab(KEYED)
    key = lab.workdir / "lab.key"
    assert lab.key_file == key and key.stat().st_mode & 0o777 == 0o600
    for n in "xyh":
        assert [s.key_file for s in lab.configs[n].substrate_links] == [str(key)]
        assert f'key_file = "{key}"' in (lab.workdir / f"{n}.toml").read_text()
    assert lab.ping("x", "10.77.0.2", vnet="v", count=2).received == 2
    _hear_each_other(lab)                    # authenticated messages are taken
    for n in "xy":
        c = lab.control(n)["control"]
        assert c["unauthenticated_links"] == [] and not any(c["refused"].values()), (n, c)
    for n in "xyh":
        assert UNKEYED_LINE not in lab.log_path(n).read_text(), lab.log_tail(n)


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_a_lab_with_keys_off_still_works_and_every_daemon_warns(make_lab):
    lab = make_lab(KEYED + t.lab(keys=False))
    assert lab.key_file is None and not (lab.workdir / "lab.key").exists()
    assert all(s.key_file is None for n in "xyh" for s in lab.configs[n].substrate_links)
    assert lab.ping("x", "10.77.0.2", vnet="v", count=2).received == 2
    _hear_each_other(lab)
    for n in "xy":
        assert lab.control(n)["control"]["unauthenticated_links"] == ["lan"]
    for n in "xyh":                        # h too: it takes PATH_MTU notices unchecked
        log = lab.log_path(n).read_text()
        assert "control messages on substrate link lan " + UNKEYED_LINE in log, log


SCRIPT = """
import signal, sys
sys.path.insert(0, {root!r})
from vnet_router.lab import topology
from vnet_router.lab.lab import Lab
with Lab(topology.loads({topo!r}), prefix={prefix!r}) as lab:
    print("up", flush=True)
    signal.pause()                  # until the test's signal arrives
"""


@pytest.mark.one_tier      # does not depend on the datapath tier
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_the_lab_process_cleans_up(sig):
    prefix = f"vl{os.getpid()}s{int(sig)}-"
    code = SCRIPT.format(root=str(ROOT), topo=TOPO, prefix=prefix)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "up"
        assert len(lab_namespaces(prefix)) == 4
        p.send_signal(sig)
        p.wait(20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for ns in lab_namespaces(prefix):       # the test itself must not leave any
            netlink.netns_remove(ns)
    assert p.returncode != 0
    assert lab_namespaces(prefix) == []


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_parse_ping_output():
    out = ("--- 10.0.0.2 ping statistics ---\n"
           "3 packets transmitted, 2 received, 33.3333% packet loss, time 402ms\n"
           "rtt min/avg/max/mdev = 0.061/0.085/0.110/0.024 ms\n")
    r = parse_ping(out)
    assert (r.transmitted, r.received, r.loss) == (3, 2, 33.3333)
    assert (r.rtt_min, r.rtt_avg, r.rtt_max) == (0.061, 0.085, 0.110)
    r = parse_ping("1 packets transmitted, 0 received, +1 errors, 100% packet loss, time 0ms\n")
    assert (r.received, r.loss, r.rtt_avg, r.ok) == (0, 100.0, None, False)


def test_demo_end_to_end(tmp_path, capsys):
    plot = tmp_path / "rates.png"
    rc = demo.run(demo.DEMO_TOPOLOGY, plot=str(plot), workdir=tmp_path / "w")
    out = capsys.readouterr().out
    assert rc == 0, out
    # keyed: the lab's key on every link, and no daemon warns about unauthenticated links
    assert "lab key " in out and (tmp_path / "w" / "lab.key").exists()
    for node in ("r", "h1", "h2", "h3"):
        log = (tmp_path / "w" / f"{node}.log").read_text()
        assert f"node {node} ready" in log and UNKEYED_LINE not in log, log
    assert f"PASS: {len(demo.CHECKS)}/{len(demo.CHECKS)} checks as expected" in out
    assert "while green floods" in out and f"plot {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert not any(n.startswith("vl") and n.split("-")[0] == f"vl{os.getpid()}"
                   for n in netlink.netns_list())


@pytest.mark.one_tier      # does not depend on the datapath tier
@pytest.mark.parametrize("during, line", [("build", "  daemon "), ("checks", "  check ")],
                         ids=["build", "checks"])
def test_demo_interrupted_leaves_nothing(tmp_path, during, line):
    """Ctrl-C during the build (once a daemon has started) or during the checks (once the
    first check has reported): everything is removed."""
    log = tmp_path / "demo.out"
    with open(log, "w") as f:
        p = subprocess.Popen([sys.executable, "-m", "vnet_router.lab.cli", "demo", "--plot",
                              str(tmp_path / "rates.png")], stdout=f, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True, env=repo_env())

    def reached():
        assert p.poll() is None, f"the demo ended before its {during}: {log.read_text()}"
        return any(l.startswith(line) for l in log.read_text().splitlines())
    try:
        eventually(reached, 120, f"the demo to be in its {during}", step=0.05)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
        p.wait(timeout=60)
    out = log.read_text()
    assert p.returncode != 0, out
    left = [n for n in netlink.netns_list() if n.startswith(f"vl{p.pid}")]
    assert not left, out
    names = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "vl" + str(p.pid) not in names
