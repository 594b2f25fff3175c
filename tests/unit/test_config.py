import pytest

from vnet_router.model.config import ConfigError, loads
from vnet_router.model.units import parse_rate, parse_size

BASE = """
[node]
name = "r1"

[[substrate_link]]
id = "a"
kind = "p2p"
interface = "eth0"
peer_mac = "02:00:00:00:00:01"
vlan = 100
priority = 5

[[substrate_link]]
id = "lan"
kind = "multiaccess"
interface = "eth0"

[[substrate_link]]
id = "t"
kind = "udp"
local = "192.0.2.1:4799"
remote = "192.0.2.2:4799"

[[vnet]]
name = "blue"
id = 1

[[interface]]
vnet = "blue"
name = "blue0"
substrate_link = "a"
in_vli = 10
out_vli = 11
rate = { min = "1Mbit", max = "20Mbit" }
"""


def test_valid_config():
    cfg = loads(BASE)
    assert [s.id for s in cfg.substrate_links] == ["a", "lan", "t"]
    li = cfg.interfaces[0]
    assert (li.rate.min, li.rate.max) == (1_000_000, 20_000_000)
    assert cfg.vnet("blue").namespace == "vnet-blue"
    assert cfg.link("t").remote == ("192.0.2.2", 4799)


@pytest.mark.parametrize("extra, key, words", [
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="nope"\nin_vli=5',
     "interface[1].substrate_link", "unknown substrate link 'nope'"),
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="a"\nin_vli=10\nout_vli=12',
     "interface[1].in_vli", "duplicate VLI 10"),
    ('[[interface]]\nvnet="red"\nname="x"\nsubstrate_link="a"\nin_vli=12',
     "interface[1].vnet", "unknown vNet 'red'"),
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="a"\nin_vli=0',
     "interface[1].in_vli", "VLI 0 out of range"),
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="a"\nin_vli=12\n'
     'rate={min="30Mbit",max="20Mbit"}', "interface[1].rate.min", "above max"),
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="a"\nin_vli=12\nrate="fast"',
     "interface[1].rate", "bad rate 'fast'"),
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="a"\nin_vli=12\ncolour="red"',
     "interface[1].colour", "unknown key"),
    ('[[substrate_link]]\nid="b"\nkind="p2p"\ninterface="eth1"\npeer_mac="02:00:00:00:00:02"\n'
     'vlan=5000', "substrate_link[3].vlan", "VLAN id 5000 out of range 1..4094"),
    ('[[substrate_link]]\nid="b"\nkind="p2p"\ninterface="eth1"\npeer_mac="02:00:00:00:00"\n'
     'vlan=5', "substrate_link[3].peer_mac", "bad MAC address"),
    ('[[substrate_link]]\nid="a"\nkind="multiaccess"\ninterface="eth1"',
     "substrate_link[3].id", "duplicate substrate link id 'a'"),
    ('[[substrate_link]]\nid="b"\nkind="ring"\ninterface="eth1"',
     "substrate_link[3].kind", "not one of"),
    ('[[substrate_link]]\nid="b"\nkind="multiaccess"\ninterface="eth0"',
     "substrate_link[3].interface", "already carries multiaccess"),
    ('[[substrate_link]]\nid="b"\nkind="udp"\nlocal="1.2.3.4"\nremote="1.2.3.5:1"',
     "substrate_link[3].local", "want IP:PORT"),
    ('[[substrate_link]]\nid="b"\nkind="p2p"\ninterface="eth1"\nvlan=5',
     "substrate_link[3].peer_mac", "missing"),
    ('[[vnet]]\nname="blue"\nid=2', "vnet[1].name", "duplicate vNet"),
    ('[[vnet]]\nname="green"\nid=1', "vnet[1].id", "already used"),
    ('[[switch]]\nvnet="blue"\nin_link="a"\nin_vli=10\nout_link="lan"\nout_vli=3',
     "switch[0].in_vli", "duplicate VLI 10"),
    ('[tm]\nvbm_link="nope"', "tm.vbm_link", "unknown substrate link 'nope'"),
    ('[tm]\nidle_interval=0', "tm.idle_interval", "out of range"),
    ('[tm]\nstart_at="middle"', "tm.start_at", "not one of"),
    ('[tm]\ndynamic_vli_base=0', "tm.dynamic_vli_base", "VLI 0 out of range"),
    ('[tm]\nfoo=1', "tm.foo", "unknown key"),
    ('[vbm]\ncapacity="1Gbit"', "vbm.link", "missing"),
    ('[vbm]\nlink="lan"\n[[vbm.share]]\nvnet=1\nshare=0.7\n[[vbm.share]]\nvnet=2\nshare=0.4',
     "vbm.share[1].share", "would sum to 1.100 (> 1): vNet 2 is refused"),
    ('[vbm]\nlink="lan"\n[[vbm.share]]\nvnet=1\nshare=0.2\n[[vbm.share]]\nvnet=1\nshare=0.2',
     "vbm.share[1].vnet", "already has a share"),
    ('[vbm]\nlink="lan"\n[[vbm.share]]\nvnet=1\nshare=1.5', "vbm.share[0].share",
     "out of range"),
])
def test_errors_name_the_key(extra, key, words):
    with pytest.raises(ConfigError) as e:
        loads(BASE + "\n" + extra, "r1.toml")
    msg = str(e.value)
    assert e.value.key == key, msg
    assert words in msg
    assert msg.startswith("r1.toml: " + key + ": ")
    assert "\n" not in msg


def test_not_toml():
    with pytest.raises(ConfigError, match="not valid TOML"):
        loads("[[substrate_link]\n", "x.toml")


def test_rates_and_sizes():
    assert parse_rate("100Mbit") == 100_000_000
    assert parse_rate("1.5Gbit") == 1_500_000_000
    assert parse_rate("10MBps") == 80_000_000
    assert parse_rate(5000) == 5000
    assert parse_size("15KB") == 15000
    assert parse_size("1MiB") == 1 << 20
    for bad in ("10 furlongs", "-5Mbit", True, "Mbit"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_tm_and_vbm_sections():
    cfg = loads(BASE + '\n[tm]\nidle_interval=3\nvbm_link="lan"\n[vbm]\nlink="lan"\n'
                'capacity="100Mbit"\n[[vbm.share]]\nvnet=1\nshare=0.5\n', "r1.toml")
    assert cfg.tm.idle_interval == 3.0 and cfg.tm.vbm_link == "lan"
    assert cfg.vbm.capacity == 100_000_000 and cfg.vbm.shares[0].share == 0.5
    assert loads(BASE, "r1.toml").tm is None
