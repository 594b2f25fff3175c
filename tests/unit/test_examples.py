"""The shipped example configurations stay valid, agree with each other and the docs, and are
keyed: every substrate link names a key file (made with `vnet-router keygen`), and a missing
one is a clear error."""
import re

import pytest

from vnet_router.datapath.classify import classify_eth
from vnet_router.datapath.entries import bind
from vnet_router.lab import topology
from vnet_router.model import config
from vnet_router.model import host as hconfig
from vnet_router.model.schema import ConfigError
from vnet_router.model.tables import IfaceFacts, Tables
from vnet_router.wire import substrate as wire

from harness import ETC, example, load_example


@pytest.mark.parametrize("name", ["router.toml", "host.toml"])
def test_example_config_is_valid(name):
    cfg = load_example(name)
    assert cfg.substrate_links and cfg.vnets


def test_example_vbm_config_is_valid():
    cfg = load_example("vbm.toml")
    assert cfg.vbm.link == "lan" and sum(s.share for s in cfg.vbm.shares) <= 1
    assert cfg.vbm.signing_seed is not None


# -- keys ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["router.toml", "host.toml", "vbm.toml", "hostd.toml"])
def test_every_substrate_link_of_an_example_is_keyed(name, tmp_path):
    path = example(name, tmp_path)
    cfg = hconfig.load(str(path)).node if name == "hostd.toml" else config.load(path)
    assert cfg.substrate_links
    assert all(s.keyring is not None for s in cfg.substrate_links), name
    # the shipped text names the operator's file, the one operations.md tells them to make
    assert set(re.findall(r'^key_file = "(.*)"', (ETC / name).read_text(), re.M)) == \
        {"/etc/vnet/lan.key"}


def test_a_missing_key_file_is_named_with_the_command_that_makes_it(tmp_path):
    text = example("router.toml", tmp_path).read_text()
    absent = tmp_path / "nowhere" / "lan.key"
    text = re.sub(r'key_file = ".*"', f'key_file = "{absent}"', text)
    with pytest.raises(ConfigError) as e:
        config.loads(text, "router.toml")
    msg = str(e.value)
    assert msg.startswith("router.toml: substrate_link[0].key_file: "), msg
    assert f"{absent}: No such file or directory (make one with `vnet-router keygen " \
           f"{absent}`" in msg, msg


def test_a_missing_signing_key_names_keygen_signing(tmp_path):
    text = example("vbm.toml", tmp_path).read_text()
    absent = tmp_path / "vbm-signing.absent"
    text = re.sub(r'signing_key_file = ".*"', f'signing_key_file = "{absent}"', text)
    with pytest.raises(ConfigError, match=re.escape(f"`vnet-router keygen --signing {absent}`")):
        config.loads(text, "vbm.toml")


# -- the examples describe one LAN, the paper's Fig. 4 as the demo builds it (docs/lab.md) ------

DEMO = topology.load(ETC / "lab" / "demo.toml")


def demo_mac(node: str) -> str:
    return DEMO.mac(node, "eth0")


def p2p_peers(cfg) -> dict[str, str]:
    return {s.id: wire.mac_to_str(s.peer_mac) for s in cfg.substrate_links if s.kind == "p2p"}


def test_the_example_macs_agree_with_each_other_and_the_demo(tmp_path):
    router = load_example("router.toml")
    assert p2p_peers(router) == {"to-h1": demo_mac("h1"), "to-h2": demo_mac("h2")}
    stated = re.search(r"^# r's eth0 is ([0-9a-f:]{17})", (ETC / "router.toml").read_text(), re.M)
    assert stated and stated.group(1) == demo_mac("r")
    assert p2p_peers(load_example("host.toml")) == {"up": demo_mac("r")}
    hostd = hconfig.load(str(example("hostd.toml", tmp_path)))
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
