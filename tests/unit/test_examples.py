"""The shipped example configurations stay valid, and agree with each other and the docs."""
import re
from pathlib import Path

import pytest

from vnet_router.datapath.classify import classify_eth
from vnet_router.datapath.entries import bind
from vnet_router.lab import topology
from vnet_router.model import config
from vnet_router.model import host as hconfig
from vnet_router.model.tables import IfaceFacts, Tables
from vnet_router.wire import substrate as wire

ETC = Path(__file__).resolve().parents[2] / "etc"


@pytest.mark.parametrize("name", ["router.toml", "host.toml"])
def test_example_config_is_valid(name):
    cfg = config.load(ETC / name)
    assert cfg.substrate_links and cfg.vnets


def test_example_vbm_config_is_valid():
    cfg = config.load(ETC / "vbm.toml")
    assert cfg.vbm.link == "lan" and sum(s.share for s in cfg.vbm.shares) <= 1


# -- the examples describe one LAN, the paper's Fig. 4 as the demo builds it (docs/lab.md) ------

DEMO = topology.load(ETC / "lab" / "demo.toml")


def demo_mac(node: str) -> str:
    return DEMO.mac(node, "eth0")


def p2p_peers(cfg) -> dict[str, str]:
    return {s.id: wire.mac_to_str(s.peer_mac) for s in cfg.substrate_links if s.kind == "p2p"}


def test_the_example_macs_agree_with_each_other_and_the_demo():
    router = config.load(ETC / "router.toml")
    assert p2p_peers(router) == {"to-h1": demo_mac("h1"), "to-h2": demo_mac("h2")}
    stated = re.search(r"^# r's eth0 is ([0-9a-f:]{17})", (ETC / "router.toml").read_text(), re.M)
    assert stated and stated.group(1) == demo_mac("r")
    assert p2p_peers(config.load(ETC / "host.toml")) == {"up": demo_mac("r")}
    hostd = hconfig.load(str(ETC / "hostd.toml"))
    assert p2p_peers(hostd.node) == {"up": demo_mac("r")}
    readme = (ETC.parent / "README.md").read_text()
    assert re.findall(r'^peer_mac = "([0-9a-f:]{17})"', readme, re.M) == [demo_mac("r")]


def test_green_frames_at_the_demos_router_are_ignored_as_not_member():
    """etc/lab/demo.toml and docs/lab.md: r spans the LAN but hosts no green virtual link."""
    rendered = topology.render_router(DEMO, "r", "x-", "/tmp/x")
    cfg = topology.parse_node_config(rendered, "demo.toml", "router")
    r_mac = wire.mac_to_bytes(demo_mac("r"))
    snap = bind(Tables(cfg, {"eth0": IfaceFacts(7, r_mac, 1500)}).compile(), {},
                lambda v, ctx, queue: None, {})     # entries as a datapath binds them
    h1 = wire.mac_to_bytes(demo_mac("h1"))
    flooded = wire.pack_eth(wire.BROADCAST_MAC, h1, 200, b"\x00" * 60)
    assert classify_eth(snap, 7, flooded, None)[0] == "not_member"
    to_r = wire.pack_eth(r_mac, h1, 200, b"\x00" * 60)      # addressed to r: a fault
    assert classify_eth(snap, 7, to_r, None)[0] == "unknown_vli"
    text = (ETC / "lab" / "demo.toml").read_text()
    assert "not_member" in text and "unknown VLI" not in text
