"""A node says whether it expects a VBM (``vnet_vbm_configured``) and whether it hears it
(``vnet_vbm_reachable``), so the VBM alert fires only where a VBM is expected
(etc/prometheus/vnet-alerts.yml, VnetVBMUnreachable)."""
import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from vnet_router.control.plane import ControlPlane
from vnet_router.datapath.select import DatapathPy as Datapath
from vnet_router.model import config
from vnet_router.model.tables import IfaceFacts, Tables
from vnet_router.node.status import status
from vnet_router.ops.metrics import Collector
from vnet_router.wire import control as m
from vnet_router.wire import substrate as wire

from harness import load_example

OURS, VBM_MAC, OTHER = (b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x0a",
                        b"\x02\x00\x00\x00\x00\x0b")

NODE = """
[node]
name = "n1"

[[substrate_link]]
id = "lan"
kind = "multiaccess"
interface = "eth0"

[[substrate_link]]
id = "lan2"
kind = "multiaccess"
interface = "eth1"

[tm]
neighbour_timeout = 5
"""


def exported(st) -> dict[str, float]:
    reg = CollectorRegistry()
    reg.register(Collector(lambda: st))
    out = {}
    for line in generate_latest(reg).decode().splitlines():
        if line.startswith("vnet_vbm_configured ") or line.startswith("vnet_vbm_reachable "):
            name, value = line.split()
            out[name] = float(value)
    return out


class Node:
    """A control plane on real tables and the reference datapath, a settable clock, and
    HELLOs delivered as frames through ``on_control`` (as the datapath hands them over)."""

    def __init__(self, text):
        self.now = 100.0
        self.cfg = config.loads(text)
        self.tables = Tables(self.cfg, {"eth0": IfaceFacts(2, OURS, 1500),
                                        "eth1": IfaceFacts(3, OURS, 1500)})
        self.loop = asyncio.new_event_loop()
        self.dp = Datapath(self.tables, self.loop)
        self.dp.snap = self.tables.compile()
        self.dp.send_control = lambda ctx, payload, dst=None: True
        self.cp = ControlPlane(self.cfg, self.tables, self.dp, None, self.loop,
                               clock=lambda: self.now)

    def hello(self, link, src, role):
        body = m.Hello(node=int.from_bytes(src[2:], "big"), incarnation=1, role=role,
                       name="v").pack()
        frame = wire.BROADCAST_MAC + src + b"\x88\xb5" + b"\x00\x00" + \
            len(body).to_bytes(2, "big") + body
        assert self.cp.on_control(self.dp.snap.links[link], memoryview(frame), 18, len(body))

    def metrics(self):
        return exported(status(self.cfg, self.tables, self.dp, 0.0, self.cp))

    def close(self):
        self.loop.close()


@pytest.fixture
def node():
    made = []

    def make(text):
        made.append(Node(text))
        return made[-1]
    yield make
    for n in made:
        n.close()


def test_a_node_without_control_plane_expects_no_vbm():
    cfg = load_example("router.toml")
    tables = Tables(cfg, {"eth0": IfaceFacts(2, OURS, 1500)})
    loop = asyncio.new_event_loop()
    try:
        dp = Datapath(tables, loop)
        dp.install(tables.compile())
        st = status(cfg, tables, dp, 0.0)
    finally:
        loop.close()
    assert exported(st) == {"vnet_vbm_configured": 0.0, "vnet_vbm_reachable": 0.0}


def test_a_node_with_tm_but_no_vbm_link_expects_none_even_if_one_is_heard(node):
    n = node(NODE)
    n.hello("lan", VBM_MAC, m.Role.VBM)
    assert n.metrics() == {"vnet_vbm_configured": 0.0, "vnet_vbm_reachable": 0.0}


def test_the_expected_vbm_is_reachable_while_its_hellos_are_heard(node):
    n = node(NODE.replace("[tm]\n", '[tm]\nvbm_link = "lan"\n'))
    assert n.metrics() == {"vnet_vbm_configured": 1.0, "vnet_vbm_reachable": 0.0}
    n.hello("lan", OTHER, m.Role.NODE)            # a node is no VBM
    n.hello("lan2", VBM_MAC, m.Role.VBM)          # a VBM on another link is not ours
    assert n.metrics()["vnet_vbm_reachable"] == 0.0
    n.hello("lan", VBM_MAC, m.Role.VBM)
    assert n.metrics() == {"vnet_vbm_configured": 1.0, "vnet_vbm_reachable": 1.0}
    alloc = n.cp.status()["allocations"]
    assert (alloc["vbm_link"], alloc["vbm_reachable"]) == ("lan", True)
    n.now += 3                                     # within neighbour_timeout: still heard
    n.cp.neighbours.expire(n.now, n.cp.neighbour_timeout)
    assert n.metrics()["vnet_vbm_reachable"] == 1.0
    n.now += 3                                     # 6 s without a HELLO: gone
    gone = n.cp.neighbours.expire(n.now, n.cp.neighbour_timeout)
    assert ("lan", VBM_MAC) in [peer for peer, _n in gone]
    assert n.metrics() == {"vnet_vbm_configured": 1.0, "vnet_vbm_reachable": 0.0}
    n.hello("lan", VBM_MAC, m.Role.VBM)            # back
    assert n.metrics()["vnet_vbm_reachable"] == 1.0
