import pytest

from vnet_router.model.config import loads
from vnet_router.model.schema import ConfigError
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
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="lan"\nin_vli=12\nlearned_max=0',
     "interface[1].learned_max", "learned MAC limit 0 out of range 1..1048576"),
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="lan"\nin_vli=12\nlearned_max=-1',
     "interface[1].learned_max", "out of range 1..1048576"),
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="lan"\nin_vli=12\n'
     'learned_max="4k"', "interface[1].learned_max", "must be int, not str '4k'"),
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="lan"\nin_vli=12\nlearned_max=1.5',
     "interface[1].learned_max", "must be int, not float 1.5"),
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="lan"\nin_vli=12\n'
     'learned_ageing=0', "interface[1].learned_ageing", "ageing time 0 out of range 1..86400"),
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="a"\nin_vli=12\nlearned_max=8',
     "interface[1].learned_max", "unknown key (for an interface on a p2p substrate link"),
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="t"\nin_vli=12\n'
     'learned_ageing=60', "interface[1].learned_ageing", "only multiaccess links learn MACs"),
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


def test_learned_mac_table_keys():
    """Defaults (4096 MACs, 300 s like the Linux bridge) and given values on a multiaccess
    interface."""
    li = loads(BASE + '[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="lan"\n'
               'in_vli=12').interfaces[1]
    assert (li.learned_max, li.learned_ageing) == (4096, 300.0)
    li = loads(BASE + '[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="lan"\n'
               'in_vli=12\nlearned_max=16\nlearned_ageing=30').interfaces[1]
    assert (li.learned_max, li.learned_ageing) == (16, 30.0)


def test_not_toml():
    with pytest.raises(ConfigError, match="not valid TOML"):
        loads("[[substrate_link]\n", "x.toml")


def test_rates_and_sizes():
    assert parse_rate("100Mbit") == 100_000_000
    assert parse_rate("1.5Gbit") == 1_500_000_000
    assert parse_rate("10MB/s") == 80_000_000
    assert parse_rate("12.5kB/s") == 100_000
    assert parse_rate("10mbit/s") == 10_000_000
    assert parse_rate(5000) == 5000
    assert parse_size("15KB") == 15000
    assert parse_size("1MiB") == 1 << 20
    for bad in ("10 furlongs", "-5Mbit", True, "Mbit"):
        with pytest.raises(ValueError):
            parse_rate(bad)


@pytest.mark.parametrize("spelling", ["10Mbps", "10MBps", "10mbps", "10MBPS", "10bps", "10Bps",
                                      "10kbps", "10KBps", "10Gbps", "10Mb/s", "10mb/s", "10b/s"])
def test_a_rate_read_both_as_bits_and_bytes_is_refused(spelling):
    with pytest.raises(ValueError, match="ambiguous rate") as e:
        parse_rate(spelling)
    msg = str(e.value)
    assert "bits per second" in msg and "bytes per second" in msg
    assert 'bit")' in msg and 'B/s"' in msg          # both unambiguous spellings offered


def test_ambiguous_rate_error_names_both_meanings_and_the_spellings_to_use():
    with pytest.raises(ValueError) as e:
        parse_rate("10Mbps")
    assert str(e.value) == ("ambiguous rate '10Mbps': 'Mbps' is read both as megabits per "
                            'second (write "10Mbit") and as megabytes per second = 80Mbit '
                            '(write "10MB/s"; tc\'s reading)')


@pytest.mark.parametrize("key", ["rate", "in_rate", "rate.max"])
def test_ambiguous_rate_in_a_file_is_a_config_error_on_one_line(key):
    text = IFACE + (f'{key} = "10Mbps"' if "." not in key else 'rate = { max = "10Mbps" }')
    with pytest.raises(ConfigError) as e:
        loads(BASE + "\n" + text, "r1.toml")
    line = str(e.value)
    assert "\n" not in line
    assert line.startswith(f"r1.toml: interface[1].{key}: ambiguous rate '10Mbps'"), line
    assert '"10Mbit"' in line and '"10MB/s"' in line


def test_ambiguous_vbm_capacity_is_refused():
    with pytest.raises(ConfigError, match=r"r1.toml: vbm.capacity: ambiguous rate '1Gbps'"):
        loads(BASE + '\n[tm]\nvbm_link="lan"\n[vbm]\nlink="lan"\ncapacity="1Gbps"\n', "r1.toml")


def test_tm_and_vbm_sections():
    cfg = loads(BASE + '\n[tm]\nidle_interval=3\nvbm_link="lan"\n[vbm]\nlink="lan"\n'
                'capacity="100Mbit"\n[[vbm.share]]\nvnet=1\nshare=0.5\n', "r1.toml")
    assert cfg.tm.idle_interval == 3.0 and cfg.tm.vbm_link == "lan"
    assert cfg.vbm.capacity == 100_000_000 and cfg.vbm.shares[0].share == 0.5
    assert loads(BASE, "r1.toml").tm is None


IFACE = '[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="a"\nin_vli=12\n'


@pytest.mark.parametrize("rate", ['{ min = "1Mbit" }', '{ min = "1Mbit", burst = "30KB" }', "{}"])
def test_rate_table_without_max_is_refused(rate):
    """A rate table with only min used to mean "unlimited" without a word."""
    with pytest.raises(ConfigError) as e:
        loads(BASE + "\n" + IFACE + f"rate = {rate}\n", "r1.toml")
    assert e.value.key == "interface[1].rate.max"
    assert "would be unlimited" in e.value.problem and "give max" in e.value.problem
    assert 'one rate like "20Mbit"' in e.value.problem


def test_rate_forms_that_stay_valid():
    cfg = loads(BASE + "\n" + IFACE + 'rate = { max = "2Mbit" }\nin_rate = "3Mbit"\n')
    li = cfg.interfaces[1]
    assert (li.rate.min, li.rate.max, li.rate.managed) == (0, 2_000_000, True)
    assert (li.in_rate.min, li.in_rate.max, li.in_rate.managed) == (3_000_000, 3_000_000, False)
    assert cfg.interfaces[0].in_rate.max is None                      # absent = unlimited


def test_udp_port_is_refused_and_says_where_ports_are_set():
    """[node].udp_port had no effect: udp substrate links give their ports in local/remote."""
    with pytest.raises(ConfigError) as e:
        loads(BASE.replace('name = "r1"', 'name = "r1"\nudp_port = 4799'), "r1.toml")
    assert e.value.key == "node.udp_port"
    assert "local and remote" in e.value.problem
    assert not hasattr(loads(BASE).node, "udp_port")


@pytest.mark.parametrize("old, new, key", [
    ('name = "r1"', 'name = "r1\\n"', "node.name"),
    ('name = "blue0"', 'name = "blue0\\n"', "interface[0].name"),
    ('interface = "eth0"\npeer', 'interface = "eth0\\n"\npeer', "substrate_link[0].interface"),
    ('peer_mac = "02:00:00:00:00:01"', 'peer_mac = "02:00:00:00:00:01\\n"',
     "substrate_link[0].peer_mac"),
    ('name = "blue"\nid = 1', 'name = "blue\\n"\nid = 1', "vnet[0].name"),
    ('name = "blue"\nid = 1', 'name = "blue"\nid = 1\nnamespace = "ns\\n"', "vnet[0].namespace"),
])
def test_names_do_not_take_a_trailing_newline(old, new, key):
    assert old in BASE
    with pytest.raises(ConfigError) as e:
        loads(BASE.replace(old, new, 1), "r1.toml")
    assert e.value.key == key
    assert "\n" not in str(e.value).replace("\\n", "")


def test_valid_ifname():
    from vnet_router.model.config import valid_ifname
    assert valid_ifname("eth0") and valid_ifname("a.b-c_d")
    assert not valid_ifname("eth0\n") and not valid_ifname("") and not valid_ifname("x" * 16)


def test_python_construction_is_validated_with_the_same_words():
    from vnet_router.model.config import LogicalInterface, Rate
    li = LogicalInterface("b", "dyn", "p", 1024, 1025, Rate(1, 2))
    assert (li.out_vli, li.rate.max, li.in_rate.max) == (1025, 2, None)
    with pytest.raises(ValueError, match=r"^LogicalInterface: name: bad interface name"):
        LogicalInterface(vnet="b", name="x\n", substrate_link="p", in_vli=1)


@pytest.mark.parametrize("extra, key, hint", [
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="a"\nin_vli=12\nrat="1Mbit"',
     "interface[1].rat", " (did you mean 'rate'?)"),
    ('[tm]\nidle_intervall=3', "tm.idle_intervall", " (did you mean 'idle_interval'?)"),
    ('[tmm]\ntick=1', "tmm", " (did you mean 'tm'?)"),
    ('[vbm]\nlink="lan"\ncapacty="1Gbit"', "vbm.capacty", " (did you mean 'capacity'?)"),
    ('[[interface]]\nvnet="blue"\nname="x"\nsubstrate_link="a"\nin_vli=12\ncolour="red"',
     "interface[1].colour", ""),                          # nothing close: no guess
])
def test_an_unknown_key_gets_the_closest_known_one(extra, key, hint):
    with pytest.raises(ConfigError) as e:
        loads(BASE + "\n" + extra, "r1.toml")
    assert str(e.value) == f"r1.toml: {key}: unknown key{hint}"


def test_unknown_keys_of_host_profiles_and_lab_topologies_get_suggestions(tmp_path):
    from vnet_router.lab import topology
    from vnet_router.model import host
    f = tmp_path / "h.toml"
    f.write_text('[host]\nstate_dri = "/tmp/x"\n')
    with pytest.raises(ConfigError, match=r"host\.state_dri: unknown key \(did you mean "
                       r"'state_dir'\?\)"):
        host.load(str(f))
    f = tmp_path / "lab.toml"
    f.write_text('[[node]]\nname = "a"\ndamon = "router"\n')
    with pytest.raises(ConfigError, match=r"node\[0\]\.damon: unknown key \(did you mean "
                       r"'daemon'\?\)"):
        topology.load(str(f))
