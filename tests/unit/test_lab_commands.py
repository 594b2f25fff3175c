"""A lab node's routes and commands in the topology file: keys, defaults and refusals (issue 25,
item 3; the running side is tests/integration/test_lab_procs.py)."""
import pytest

from vnet_router.model.schema import ConfigError
from vnet_router.lab import topology as T

NODE = """
[[node]]
name = "a"
addresses = {{ eth0 = ["192.168.9.1/24"] }}
{extra}
[[node]]
name = "b"
[[link]]
a = "a:eth0"
b = "b:eth0"
"""


def load(extra: str):
    return T.loads(NODE.format(extra=extra), "t.toml")


def test_routes_and_command_keys_with_their_defaults():
    topo = load('routes = ["10.1.0.0/16 via 192.168.9.2", "default  via 192.168.9.254"]\n'
                '[[node.commands]]\nrun = "ip link"\n'
                '[[node.commands]]\nrun = ["sleep", "600"]\nbackground = true\nname = "slp"\n'
                '[[node.commands]]\nrun = "ip route"\nwhen = "before"\n')
    a = topo.node("a")
    assert a.routes == ("10.1.0.0/16 via 192.168.9.2", "default via 192.168.9.254")
    first, bg, before = a.commands
    assert (first.when, first.background, first.name) == ("after", False, None)
    assert (bg.argv, bg.background, bg.name) == (("sleep", "600"), True, "slp")
    assert before.when == "before" and not a.has_router    # a node without a daemon is fine


@pytest.mark.parametrize("extra, where, why", [
    ('routes = ["10.1.0.0/16"]', r"node\[0\]\.routes\[0\]", "want 'DEST via GATEWAY'"),
    ('routes = ["10.1.0.300/16 via 192.168.9.2"]', r"node\[0\]\.routes\[0\]", "is not a prefix"),
    ('routes = "10.1.0.0/16 via 192.168.9.2"', r"node\[0\]\.routes", ""),
    ('[[node.commands]]\nrun = "x"\nwhen = "later"', r"node\[0\]\.commands\[0\]\.when", ""),
    ('[[node.commands]]\nrun = "x"\nbackground = "yes"',
     r"node\[0\]\.commands\[0\]\.background", ""),
    ('[[node.commands]]\nrun = "x"\nname = "a.b"', r"node\[0\]\.commands\[0\]\.name",
     "bad command name"),
    ('[[node.commands]]\nrun = "x"\nname = "cmd1"\n[[node.commands]]\nrun = "y"',
     r"node\[0\]\.commands\[1\]\.name", "two commands named 'cmd1'"),
])
def test_bad_routes_and_commands_are_refused_naming_the_key(extra, where, why):
    with pytest.raises(ConfigError, match=rf"t\.toml: {where}: .*{why}"):
        load(extra)


def test_a_command_before_the_daemons_cannot_use_a_vnet():
    extra = """
[node.router]
substrate_link = [{ id = "lan", kind = "multiaccess", interface = "eth0" }]
vnet = [{ name = "v", id = 1 }]
[[node.commands]]
run = "ip link"
vnet = "v"
when = "before"
"""
    with pytest.raises(ConfigError, match=r"node\[0\]\.commands\[0\]\.when: .*vNet namespace"):
        load(extra)


def test_lab_check_counts_a_nodes_routes_as_reaching_the_remote():
    tun = """
[node.router]
[[node.router.substrate_link]]
id = "tun"
kind = "udp"
local = "192.168.9.1:4799"
remote = "10.1.1.1:4799"
"""
    warned = T.underlay_report(load(tun))
    assert len(warned) == 1 and "no route to remote 10.1.1.1" in warned[0], warned
    assert T.underlay_report(load('routes = ["10.1.0.0/16 via 192.168.9.2"]' + tun)) == []
    assert T.underlay_report(load('routes = ["default via 192.168.9.2"]' + tun)) == []
    assert len(T.underlay_report(load('routes = ["10.2.0.0/16 via 192.168.9.2"]' + tun))) == 1
