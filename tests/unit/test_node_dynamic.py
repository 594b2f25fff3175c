"""A reload keeps the control plane's run-time virtual links and refuses a file that would take
their vNet, substrate link, name or VLIs, or change [tm]/[vbm] (checked before any work)."""
import asyncio

import pytest

from vnet_router.model.config import LogicalInterface, Rate, loads
from vnet_router.node.api import CommandError
from vnet_router.node.lifecycle import Node
from vnet_router.model.tables import IN, OUT, IfaceFacts, Tables

BASE = """
[[substrate_link]]
id = "p1"
kind = "p2p"
interface = "eth0"
peer_mac = "02:00:00:00:00:01"
vlan = 10
[[vnet]]
name = "blue"
id = 1
namespace = "vnet-test-blue"
[[interface]]
vnet = "blue"
name = "b1"
substrate_link = "p1"
in_vli = 100
[tm]
"""
FACTS = {"eth0": IfaceFacts(2, b"\x02" * 6, 1500)}
DYN = LogicalInterface(vnet="blue", name="dyn0", substrate_link="p1", in_vli=1024, out_vli=1025,
                       rate=Rate(0, 10**7, cur=0), in_rate=Rate(0, 10**7, cur=0))


def node():
    n = Node(loads(BASE), FACTS)
    n.tables.add_interface(DYN)
    return n


def test_tables_update_keeps_dynamic_interfaces():
    t = Tables(loads(BASE), FACTS)
    t.add_interface(DYN)
    t.update(loads(BASE.replace("in_vli = 100", "in_vli = 200")), FACTS)
    assert ("p1", 1024, IN) in t.vlinks and ("p1", 1025, OUT) in t.vlinks
    assert ("p1", 200, IN) in t.vlinks and ("p1", 100, IN) not in t.vlinks


@pytest.mark.parametrize("change, words", [
    (lambda s: s.replace('name = "b1"', 'name = "dyn0"'), "name is taken"),
    (lambda s: s.replace("in_vli = 100", "in_vli = 1024"), "VLI in use"),
    (lambda s: s.replace('namespace = "vnet-test-blue"', 'namespace = "vnet-test-other"'),
     "needs vNet blue"),
    (lambda s: s.replace("[tm]", "[tm]\ntick = 0.5"), "[tm]: cannot change"),
])
def test_reload_that_would_break_a_runtime_link_is_refused(change, words):
    n = node()
    with pytest.raises(CommandError, match=words.replace("[", r"\[").replace("]", r"\]")):
        asyncio.run(n.apply(loads(change(BASE)), "new.toml"))
    assert n.tables.dynamic == [DYN] and n.reloads["ok"] == 0
