"""Where a node's run-time input VLIs come from (docs/configuration.md, `[tm]
dynamic_vli_base`): the first free one from base + (node id mod 8192), wrapping around to the
base -- not the lowest free one, so nodes of one LAN rarely offer an upstream the same VLI."""
import asyncio

import pytest

from vnet_router.control.plane import ControlPlane
from vnet_router.datapath.select import DatapathPy as Datapath
from vnet_router.model import config
from vnet_router.model.tables import IfaceFacts, Tables

NODE = """
[node]
name = "{name}"

[[substrate_link]]
id = "lan"
kind = "multiaccess"
interface = "eth0"

[[vnet]]
name = "blue"
id = 1

[[interface]]
vnet = "blue"
name = "b0"
substrate_link = "lan"
in_vli = {used}

[tm]
{tm}
"""


@pytest.fixture
def plane():
    loops = []

    def make(name="n1", used=4000, tm=""):
        cfg = config.loads(NODE.format(name=name, used=used, tm=tm))
        tables = Tables(cfg, {"eth0": IfaceFacts(2, b"\x02\x00\x00\x00\x00\x01", 1500)})
        loops.append(asyncio.new_event_loop())
        dp = Datapath(tables, loops[-1])
        dp.snap = tables.compile()
        return ControlPlane(cfg, tables, dp, None, loops[-1])
    yield make
    for loop in loops:
        loop.close()


def test_the_search_starts_at_the_nodes_own_offset(plane):
    cp = plane()
    first = 1024 + cp.node_id % 8192
    assert cp._free_vli("lan") == first
    cp.reserved.add(("lan", first))                # being set up: taken
    assert cp._free_vli("lan") == first + 1


def test_two_nodes_of_a_lan_offer_different_vlis(plane):
    a, b = plane("h1"), plane("h2")
    assert a.node_id != b.node_id
    assert a._free_vli("lan") != b._free_vli("lan")


def test_a_used_vli_is_skipped_and_the_search_wraps_to_the_base(plane):
    probe = plane(tm="dynamic_vli_base = 65530")
    span = 65535 - 65530
    start = 65530 + probe.node_id % span
    cp = plane(used=start, tm="dynamic_vli_base = 65530")   # the start is configured
    expect = [65530 + (start - 65530 + i) % span for i in range(1, span)]
    got = []
    for _ in expect:
        vli = cp._free_vli("lan")
        got.append(vli)
        cp.reserved.add(("lan", vli))
    assert got == expect and min(got) >= 65530
    with pytest.raises(ValueError, match="no free VLI on substrate link 'lan'"):
        cp._free_vli("lan")
