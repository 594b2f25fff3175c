"""Host profile of the config and the VNP router's forwarding decisions (no system access)."""
import pytest

from vnet_host.config import allowed
from vnet_host.vnp.router import Router
from vnet_host.vnp.wire import DATA, HELLO, Packet, addr
from vnet_router.model import host as hconfig
from vnet_router.model.schema import ConfigError

BASE = """
[node]
control_socket = "/tmp/x.sock"
[host]
state_dir = "/tmp/st"
limits = { cpu_seconds = 5, memory = "64MB" }
allow = { blue = ["nobody", "@staff"] }
[[substrate_link]]
id = "up"
kind = "p2p"
interface = "e0"
peer_mac = "02:00:00:00:00:01"
vlan = 10
"""


def test_host_section_and_state_merge():
    import tomllib
    h = hconfig.parse(tomllib.loads(BASE), "h.toml", {
        "vnets": [{"name": "blue", "id": 1, "namespace": "vnet-blue", "allow": ["nobody"]}],
        "interfaces": [{"vnet": "blue", "name": "b0", "substrate_link": "up", "in_vli": 5,
                        "kind": "socket"}]})
    assert h.host.limits == hconfig.Limits(5, 64_000_000)
    assert dict(h.host.allow)["blue"] == ("nobody", "@staff")
    assert [v.name for v in h.node.vnets] == ["blue"]
    assert h.node.interfaces[0].kind == "socket"


def test_no_switch_on_a_host():
    import tomllib
    data = tomllib.loads(BASE)
    data["switch"] = [{"vnet": "x", "in_link": "up", "in_vli": 1, "out_link": "up",
                       "out_vli": 2}]
    with pytest.raises(ConfigError, match="switch\\[0\\].*does not pass virtual links"):
        hconfig.parse(data, "h.toml")


def test_socket_interface_has_no_addresses():
    import tomllib
    with pytest.raises(ConfigError, match="interface\\[0\\].addresses"):
        hconfig.parse(tomllib.loads(BASE), "h.toml", {
            "vnets": [{"name": "v", "id": 1}],
            "interfaces": [{"vnet": "v", "name": "b0", "substrate_link": "up", "in_vli": 5,
                            "kind": "socket", "addresses": ["10.0.0.1/24"]}]})


def test_allowed_principals():
    assert allowed(["nobody"], 65534, set())
    assert not allowed(["nobody"], 1000, {1000})
    assert allowed(["@0"], 1000, {0})


def test_vnp_router_learns_forwards_and_counts():
    now = [0.0]
    r = Router({})
    r.fib.clock = lambda: now[0]
    assert r.handle("p1", Packet(HELLO, 0xFFFFFFFF, addr("1.1")).pack()) is None
    assert r.handle("p2", Packet(DATA, addr("1.1"), addr("2.1"), b"hi").pack())[0] == "p1"
    out = Packet.unpack(r.handle("p2", Packet(DATA, addr("1.1"), addr("2.1"), b"x", 5).pack())[1])
    assert out.ttl == 4
    assert r.handle("p2", Packet(DATA, addr("3.1"), addr("2.1"), b"x").pack()) is None
    assert r.handle("p2", Packet(DATA, addr("1.1"), addr("2.1"), b"x", 1).pack()) is None
    assert r.handle("p1", Packet(DATA, addr("1.1"), addr("2.1"), b"x").pack()) is None
    assert r.handle("p1", b"\x00garbage") is None
    r.fib.nets[3] = "p2"
    assert r.handle("p1", Packet(DATA, addr("3.9"), addr("1.1"), b"x").pack())[0] == "p2"
    now[0] = 100.0                # learned host route expired
    assert r.handle("p2", Packet(DATA, addr("1.1"), addr("2.1"), b"x").pack()) is None
    assert r.counters == {"forwarded": 3, "hello": 1, "no_route": 2, "ttl_expired": 1,
                          "malformed": 1, "same_port": 1, "send_error": 0}


def test_example_hostd_config_is_valid(tmp_path):
    from harness import example
    h = hconfig.load(str(example("hostd.toml", tmp_path)))
    assert h.node.substrate_links and h.host.namespace_prefix == "vnet-"
