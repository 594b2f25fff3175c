"""A switched LAN carrying three vNets where each node hosts one (issue 15, item 3).

Six nodes on one Linux bridge, two per vNet (red, green, blue), each with one logical
interface on its multiaccess substrate link; every vNet uses its own VLI and 10.0.0.0/24.
Flooded frames (ARP broadcasts, unknown unicast) of a vNet reach every node of the LAN: the
nodes that do not host it ignore them and count them as ``not_member`` -- not a drop, so
``vnet_drops_total`` and the ``VnetDropsRising`` alert stay quiet.
"""
import pytest

import topo as t
from harness import eventually

pytestmark = [pytest.mark.root, pytest.mark.one_tier]

VNETS = (("red", 1, 301), ("green", 2, 302), ("blue", 3, 303))
NODES = [(f"{v[0][0]}{i}", v, i) for v in VNETS for i in (1, 2)]   # r1 r2 g1 g2 b1 b2


def lan_topology() -> t.Topo:
    parts = [t.switch_node("sw")] + [t.link(f"{n}:e0", "sw") for n, _v, _i in NODES]
    for name, (vnet, vid, vli), i in NODES:
        parts.append(t.node(name, t.multiaccess("lan", "e0"), t.vnet(vnet, vid),
                            t.iface(vnet, f"{vnet}0", "lan", vli,
                                    addresses=[f"10.0.0.{i}/24"])))
    return t.topology(*parts)


@pytest.mark.parametrize("datapath", ["fast", "reference", "kernel"])
def test_three_vnets_on_a_lan_no_node_counts_a_drop(make_lab, monkeypatch, datapath):
    monkeypatch.setenv("VNET_DATAPATH", datapath)
    lab = make_lab(lan_topology())
    assert {lab.control(n)["datapath"] for n in lab.daemons} == {datapath}
    for name, (vnet, _vid, _vli), i in NODES:
        if i == 1:
            ping = lab.ping(name, "10.0.0.2", vnet=vnet, count=3)
            assert ping.received == 3, ping.output

    def ignored_everywhere():
        # each node has seen the other vNets' flooded frames (ARP requests at least)
        return {n: lab.control(n)["ignored"]["not_member"] for n, _v, _i in NODES}
    seen = eventually(ignored_everywhere, 20, "every node to see (and ignore) frames of vNets "
                      "it does not host", until=lambda d: all(d.values()))
    for name, _v, _i in NODES:
        st = lab.control(name)
        assert sum(st["drops"].values()) == 0, (name, st["drops"])
        link = st["substrate_links"][0]
        assert link["drops"] == {} and link["ignored"]["not_member"] >= seen[name], (name, link)
        # nothing of another vNet reached the node's own virtual links
        for v in st["virtual_links"]:
            assert v["drops"] == {}, (name, v)
