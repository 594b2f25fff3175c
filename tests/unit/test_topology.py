"""Lab topology files: parsing, validation errors, placeholders, rendering (no system access)."""
import textwrap
import tomllib
from pathlib import Path

import pytest

from vnet_router.model import config as rconfig
from vnet_router.model import keys
from vnet_router.model.schema import ConfigError
from vnet_router.model.toml import dump_toml
from vnet_router.lab import topology as T

DEMO = Path(__file__).resolve().parents[2] / "etc" / "lab" / "demo.toml"

BASE = """
[[switch]]
name = "sw"

[[node]]
name = "a"

[[node]]
name = "b"

[[link]]
a = "a:eth0"
b = "sw"

[[link]]
a = "b:eth0"
b = "sw"
"""


def load(text: str, path="topo.toml"):
    return T.loads(textwrap.dedent(text), path)


def test_demo_topology_parses():
    t = T.load(DEMO)
    assert [n.name for n in t.nodes] == ["r", "h1", "h2", "h3", "lg"]
    assert not t.node("lg").has_router                  # the legacy host: no daemon
    assert [s.name for s in t.switches] == ["sw"]
    assert all(link.b.switch == "sw" for link in t.links)
    assert t.mac("r", "eth0") == "02:00:00:00:00:fe"
    assert t.mac("h2", "eth0") == "02:00:00:00:00:02"
    assert t.node("r").vnets == ("blue",)
    assert t.node("h1").vnets == ("blue", "green")
    assert all(c.vnet == "blue" for c in t.node("r").commands)
    assert dict(t.node("h3").addresses) == {"eth0": ("192.168.77.3/24",)}


def test_demo_rendered_configs_are_valid_and_name_peers_by_mac():
    t = T.load(DEMO)
    for node in (n for n in t.nodes if n.has_router):
        d = T.render_router(t, node.name, "vl42-", "/tmp/w")
        cfg = rconfig.loads(dump_toml(d), f"{node.name}.toml")
        assert cfg.node.name == node.name
        assert cfg.node.control_socket == f"/tmp/w/{node.name}.sock"
        assert all(v.namespace.startswith("vl42-") for v in cfg.vnets)
    r = rconfig.parse(T.render_router(t, "r", "vl42-", "/tmp/w"))
    assert r.link("p2p-h1").peer_mac == bytes.fromhex("020000000001")
    h1 = rconfig.parse(T.render_router(t, "h1", "vl42-", "/tmp/w"))
    assert h1.link("p2p-r").peer_mac == bytes.fromhex("0200000000fe")
    assert h1.vnet("green").namespace == "vl42-h1-green"


def test_labs_are_keyed_unless_told_not_to():
    assert T.load(DEMO).lab.keys is True
    assert load(BASE).lab.keys is True
    assert load("[lab]\nkeys = false\n" + BASE).lab.keys is False
    with pytest.raises(ConfigError, match=r"lab\.keys: .*bool"):
        load('[lab]\nkeys = "no"\n' + BASE)


def test_the_lab_key_goes_on_every_substrate_link_without_a_key_of_its_own(tmp_path):
    lab_key = str(tmp_path / "lab.key")
    keys.write_key_file(lab_key)
    t = T.load(DEMO)
    for node in (n for n in t.nodes if n.has_router):
        cfg = rconfig.parse(T.render_router(t, node.name, "vl42-", "/tmp/w", lab_key))
        assert [s.key_file for s in cfg.substrate_links] == [lab_key] * len(cfg.substrate_links)
        assert all(s.keyring is not None for s in cfg.substrate_links)
        plain = rconfig.parse(T.render_router(t, node.name, "vl42-", "/tmp/w"))
        assert all(s.keyring is None for s in plain.substrate_links)    # keys = false
    own = str(tmp_path / "own.key")
    keys.write_key_file(own)
    t = load(BASE.replace('[[node]]\nname = "b"', f'''[[node]]
name = "b"
[node.router]
substrate_link = [{{ id = "p", kind = "p2p", interface = "eth0", peer_mac = "{{mac:a:eth0}}", vlan = 7, key_file = "{own}" }},
                  {{ id = "lan", kind = "multiaccess", interface = "eth0" }}]
'''))
    d = T.render_router(t, "b", "vl7-", "/w", lab_key)
    assert [s["key_file"] for s in d["substrate_link"]] == [own, lab_key]
    assert "key_file" not in t.node("b").router["substrate_link"][1]    # original untouched


def test_switch_ports_and_derived_macs():
    t = load(BASE)
    assert [link.b.ifname for link in t.links] == ["a-eth0", "b-eth0"]
    macs = [e.mac for e in t.endpoints()]
    assert len(set(macs)) == 4
    for m in macs:
        first = int(m[:2], 16)
        assert first & 1 == 0 and first & 2 == 2       # unicast, locally administered
    assert t.mac("a", "eth0") == T.derived_mac("a", "eth0") == load(BASE).mac("a", "eth0")


def test_switch_port_rates_queues_and_per_port_overrides():
    from vnet_router.lab import switching
    plain = load(BASE)
    assert (plain.switches[0].port_rate, plain.switches[0].priority_queues) == (None, False)
    assert switching.switch_ports(plain, "sw") == [("a-eth0", None, 128), ("b-eth0", None, 128)]
    t = load(BASE.replace('name = "sw"', 'name = "sw"\nport_rate = "100Mbit"\n'
                          'priority_queues = true\nport_queue = 64')
             + '[[link]]\na = "b:eth1"\nb = "sw"\nport_rate = "1Gbit"\nport_queue = 300\n')
    assert t.switches[0].priority_queues
    assert switching.switch_ports(t, "sw") == [
        ("a-eth0", 100_000_000, 64), ("b-eth0", 100_000_000, 64), ("b-eth1", 10**9, 300)]


def test_switch_port_bursts_hold_frames_not_gso_packets():
    from vnet_router.lab import switching
    assert switching.burst_bytes(100_000_000) == 25_000             # 2 ms at 100 Mbit/s
    assert switching.burst_bytes(1_000_000) == 3028                 # at least two frames
    assert switching.burst_bytes(10**10) == 60_000                  # under a 64 KB GSO packet
    assert switching.PCP_BAND == {0: 1, 1: 2, 2: 2, 3: 1, 4: 1, 5: 0, 6: 0, 7: 0}


def test_long_switch_port_names_fall_back_to_link_index():
    t = load("""
        [[switch]]
        name = "sw"
        [[node]]
        name = "longnodename"
        [[link]]
        a = "longnodename:eth0"
        b = "sw"
    """)
    assert t.links[0].b.ifname == "p0"


def test_node_to_node_link_with_mtu_and_macs():
    t = load("""
        [[node]]
        name = "a"
        [[node]]
        name = "b"
        [[link]]
        a = "a:x0"
        b = "b:y0"
        a_mac = "02:AA:00:00:00:01"
        b_mac = "02:aa:00:00:00:02"
        mtu = 9000
    """)
    link = t.links[0]
    assert (link.a.node, link.a.ifname, link.a.mac) == ("a", "x0", "02:aa:00:00:00:01")
    assert (link.b.node, link.b.ifname, link.b.mac) == ("b", "y0", "02:aa:00:00:00:02")
    assert link.mtu == 9000
    assert t.node("b").interfaces == ("y0",)


def test_inline_router_placeholders_and_defaults():
    t = load(BASE.replace('[[node]]\nname = "b"', '''[[node]]
name = "b"
sysctl = { "net.ipv4.ip_forward" = 1 }
[node.router]
node = { log_level = "debug" }
substrate_link = [{ id = "p", kind = "p2p", interface = "eth0", peer_mac = "{mac:a:eth0}", vlan = 7 }]
vnet = [{ name = "v", id = 3 }, { name = "w", id = 4, namespace = "{prefix}{node}-other" }]
interface = [{ vnet = "v", name = "t0", substrate_link = "p", in_vli = 5, rate = { min = "1Mbit", max = "2Mbit" } }]
[[node.commands]]
vnet = "v"
run = ["ip", "link", "set", "dev", "t0", "up"]
[[node.commands]]
run = "sysctl -w net.ipv4.conf.all.forwarding=1"
'''))
    b = t.node("b")
    assert b.sysctl == (("net.ipv4.ip_forward", "1"),)
    assert b.commands[0].vnet == "v" and b.commands[0].argv[:2] == ("ip", "link")
    assert b.commands[1].vnet is None and b.commands[1].argv[0] == "sysctl"
    d = T.render_router(t, "b", "vl7-", "/w")
    assert d["substrate_link"][0]["peer_mac"] == t.mac("a", "eth0")
    assert d["vnet"][0]["namespace"] == "vl7-b-v"
    assert d["vnet"][1]["namespace"] == "vl7-b-other"
    assert d["node"] == {"log_level": "debug", "name": "b", "control_socket": "/w/b.sock"}
    cfg = rconfig.loads(dump_toml(d))
    assert cfg.interfaces[0].rate.max == 2_000_000
    assert t.node("b").router["vnet"][0] == {"name": "v", "id": 3}    # original untouched


def test_router_config_file_relative_to_topology(tmp_path):
    (tmp_path / "r.toml").write_text(textwrap.dedent("""
        [[vnet]]
        name = "v"
        id = 1
        namespace = "{prefix}x"
    """))
    topo = tmp_path / "t.toml"
    topo.write_text('[[node]]\nname = "r"\nrouter_config = "r.toml"\n')
    t = T.load(topo)
    assert T.render_router(t, "r", "vl1-", "/w")["vnet"][0]["namespace"] == "vl1-x"


def test_router_config_file_errors_name_that_file(tmp_path):
    (tmp_path / "r.toml").write_text('[[vnet]]\nname = "v"\nid = 0\n')
    topo = tmp_path / "t.toml"
    topo.write_text('[[node]]\nname = "r"\nrouter_config = "r.toml"\n')
    with pytest.raises(ConfigError) as e:
        T.load(topo)
    assert e.value.file == str(tmp_path / "r.toml")
    assert e.value.key == "vnet[0].id"
    topo.write_text('[[node]]\nname = "r"\nrouter_config = "missing.toml"\n')
    with pytest.raises(ConfigError, match=r"node\[0\]\.router_config: cannot read"):
        T.load(topo)


def test_dump_toml_round_trips_config_shaped_data():
    data = {"node": {"name": "x", "control_socket": "/a b/\"q\".sock"},
            "substrate_link": [{"id": "p", "vlan": 10, "capacity": "1Gbit"}],
            "interface": [{"name": "t", "addresses": ["10.0.0.1/24", "fd00::1/64"],
                           "rate": {"min": "1Mbit", "max": "2Mbit"}, "flag": True}],
            "weird key": {"n": 1}, "top": 5}
    assert tomllib.loads(dump_toml(data)) == data


def test_dumped_config_can_be_extended_by_appending_tables():
    """Arrays of tables are written as [[name]] sections, never inline, so appending one more
    [[vnet]] to a written config (as a reload test or an operator does) stays valid TOML."""
    data = {"node": {"name": "x"}, "vnet": [{"name": "v", "id": 1}],
            "interface": [{"vnet": "v", "name": "t", "rate": {"max": 5}}]}
    text = dump_toml(data) + '\n[[vnet]]\nname = "w"\nid = 2\n'
    assert "[[vnet]]" in dump_toml(data) and "vnet = [" not in dump_toml(data)
    assert [v["name"] for v in tomllib.loads(text)["vnet"]] == ["v", "w"]


ERRORS = [
    # (topology text, key in the error, words in the problem)
    (BASE + '[[link]]\na = "c:eth0"\nb = "sw"\n', "link[2].a", "unknown node 'c'"),
    (BASE + '[[link]]\na = "a:eth1"\nb = "sw2"\n', "link[2].b", "unknown switch 'sw2'"),
    (BASE + '[[link]]\na = "sw"\nb = "a:eth1"\n', "link[2].a", "is a switch"),
    (BASE + '[[link]]\na = "a:eth0"\nb = "b:eth1"\n', "link[2].a", "already in use"),
    (BASE + '[[link]]\na = "a:averyveryverylongname"\nb = "b:e1"\n', "link[2].a",
     "bad interface name"),
    (BASE + '[[link]]\na = "a:e1"\nb = "b:e1"\nmtu = 20\n', "link[2].mtu", "out of range"),
    (BASE + '[[link]]\na = "a:e1"\nb = "b:e1"\ncolour = "red"\n', "link[2].colour",
     "unknown key"),
    (BASE + '[[link]]\na = "a:e1"\nb = "b:e1"\na_mac = "03:00:00:00:00:01"\n', "link[2].a_mac",
     "multicast"),
    (BASE + '[[link]]\na = "a:e1"\nb = "b:e1"\na_mac = "02:00:00:00:00:01"\n'
            'b_mac = "02:00:00:00:00:01"\n', "link[2].b_mac", "already used"),
    (BASE + '[[link]]\na = "a:e1"\nb = "b:e1"\nb_mac = "zz"\n', "link[2].b_mac", "bad MAC"),
    (BASE.replace('name = "a"', 'name = "a-1"').replace('"a:eth0"', '"a-1:eth0"'),
     "node[0].name", "bad node name"),
    (BASE.replace('name = "b"', 'name = "a"'), "node[1].name", "duplicate node"),
    (BASE.replace('name = "b"', 'name = "sw"'), "node[1].name", "already a switch"),
    (BASE.replace('name = "a"', 'name = "a"\naddresses = { eth9 = ["10.0.0.1/24"] }'),
     "node[0].addresses.eth9", "has no interface 'eth9'"),
    (BASE.replace('name = "a"', 'name = "a"\naddresses = { eth0 = ["10.0.0.1"] }'),
     "node[0].addresses.eth0[0]", "needs a prefix length"),
    (BASE.replace('name = "a"', 'name = "a"\nsysctl = { "kernel.panic" = 1 }'),
     "node[0].sysctl.kernel.panic", "net.*"),
    (BASE.replace('name = "a"', 'name = "a"\nrouter = { vnet = [{ name = "v", id = 1 }] }\n'
                  'router_config = "x.toml"'), "node[0].router_config", "not both"),
    (BASE.replace('name = "a"', 'name = "a"\n[[node.commands]]\nvnet = "v"\nrun = "true"'),
     "node[0].commands[0].vnet", "has no vNet 'v'"),
    (BASE.replace('name = "a"', 'name = "a"\n[[node.commands]]\nrun = ""'),
     "node[0].commands[0].run", "empty command"),
    (BASE.replace('name = "a"', 'name = "a"\nrouter = { substrate_link = [{ id = "p", '
                  'kind = "p2p", interface = "eth0", peer_mac = "{mac:b:eth7}", vlan = 1 }] }'),
     "node[0].router.substrate_link[0].peer_mac", "no link end 'b:eth7'"),
    (BASE.replace('name = "a"', 'name = "a"\nrouter = { node = { control_socket = "{sock}" } }'),
     "node[0].router.node.control_socket", "unknown placeholder '{sock}'"),
    (BASE.replace('name = "a"', 'name = "a"\nrouter = { substrate_link = [{ id = "p", '
                  'kind = "p2p", interface = "eth0", peer_mac = "{mac:b:eth0}", vlan = 5000 }] }'),
     "node[0].router.substrate_link[0].vlan", "out of range"),
    (BASE.replace('name = "a"', 'name = "a"\nrouter = { substrate_link = [{ id = "m", '
                  'kind = "multiaccess", interface = "eth3" }] }'),
     "node[0].router.substrate_link[0].interface", "has no interface 'eth3'"),
    (BASE.replace('name = "a"', 'name = "a"\nrouter = { vnet = [{ name = "v", id = 1, '
                  'namespace = "fixed" }] }'), "node[0].router.vnet[0].namespace", "{prefix}"),
    (BASE.replace('name = "sw"', 'name = "sw"\nport_rate = "100Mbps"'), "switch[0].port_rate",
     "ambiguous rate"),
    (BASE.replace('name = "sw"', 'name = "sw"\nport_queue = 1'), "switch[0].port_queue",
     "out of range"),
    (BASE.replace('name = "sw"', 'name = "sw"\npriority_queues = "yes"'),
     "switch[0].priority_queues", "bool"),
    (BASE + '[[link]]\na = "a:e1"\nb = "b:e1"\nport_rate = "1Gbit"\n', "link[2].port_rate",
     "is for a switch port"),
    (BASE + '[[link]]\na = "a:e1"\nb = "b:e1"\nport_queue = 10\n', "link[2].port_queue",
     "is for a switch port"),
    (BASE + '[[hub]]\nname = "x"\n', "hub", "unknown key"),
    ('[lab]\nname = 3\n', "lab.name", "must be str"),
    ('link = 3\n', "link", "array of tables"),
]


@pytest.mark.parametrize("text,key,words", ERRORS, ids=[e[1] + ":" + e[2] for e in ERRORS])
def test_errors_name_file_key_and_problem(text, key, words):
    with pytest.raises(ConfigError) as e:
        T.loads(text, "lab/topo.toml")
    assert e.value.file == "lab/topo.toml"
    assert e.value.key == key
    assert words in e.value.problem
    assert str(e.value).startswith("lab/topo.toml: ")


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        T.loads("[[node]\n", "x.toml")
    with pytest.raises(ConfigError, match="file not found"):
        T.load(tmp_path / "nope.toml")


@pytest.mark.parametrize("text, key", [
    (BASE.replace('name = "a"', 'name = "a\\n"'), "node[0].name"),
    (BASE.replace('name = "sw"', 'name = "sw\\n"', 1), "switch[0].name"),
    (BASE + '[[link]]\na = "a:e1"\nb = "b:e1"\na_mac = "02:00:00:00:00:01\\n"\n', "link[2].a_mac"),
    (BASE + '[[link]]\na = "a:e1\\n"\nb = "b:e1"\n', "link[2].a"),
    (BASE.replace('name = "a"', 'name = "a"\nsysctl = { "net.ipv4.ip_forward\\n" = 1 }'),
     'node[0].sysctl."net.ipv4.ip_forward\\n"'),
])
def test_names_macs_and_sysctl_keys_do_not_take_a_trailing_newline(text, key):
    with pytest.raises(ConfigError) as e:
        T.loads(text, "topo.toml")
    assert e.value.key == key
    assert "\n" not in str(e.value)                # one line: the key is quoted


def test_derived_fields_are_not_keys():
    with pytest.raises(ConfigError) as e:
        T.loads(BASE.replace('name = "a"', 'name = "a"\ninterfaces = ["eth5"]'), "topo.toml")
    assert (e.value.key, e.value.problem) == ("node[0].interfaces", "unknown key")


def test_check_counts_nodes_by_role_with_plurals(capsys):
    """``vnet-lab check``: the demo's end-systems are not counted as routers, one switch is
    "1 switch"."""
    from vnet_router.lab import cli
    assert cli.main(["check", str(DEMO)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"{DEMO}: OK: 5 nodes (1 substrate router, 3 end-systems, 1 without a daemon), "
        "1 switch, 5 links")
    t = load(BASE + '\n[[node]]\nname = "c"\n[[link]]\na = "c:eth0"\nb = "sw"\n')
    assert cli.summary(t) == "3 nodes (3 without a daemon), 1 switch, 3 links"
