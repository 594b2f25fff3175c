"""Static path MTU checks (model/paths.py): a whole topology (vnet-lab check) and one node's
narrowing switches (vnet-router --check).  No system access."""
from vnet_router.lab import cli as lab_cli
from vnet_router.lab import topology as T
from vnet_router.model.config import loads
from vnet_router.model.paths import narrowing_switches


def _end(name, peer, vlan, in_vli, out_vli, extra=""):
    return f"""
[[node]]
name = "{name}"
[node.router]
{extra}
[[node.router.substrate_link]]
id = "up"
kind = "p2p"
interface = "e0"
peer_mac = "{{mac:{peer}}}"
vlan = {vlan}
[[node.router.vnet]]
name = "blue"
id = 1
[[node.router.interface]]
vnet = "blue"
name = "blue0"
substrate_link = "up"
in_vli = {in_vli}
out_vli = {out_vli}
"""


def _mid(name, peer, vlan, local, remote, tun_in, tun_out, p2p_in, p2p_out, extra=""):
    return f"""
[[node]]
name = "{name}"
[node.router]
{extra}
[[node.router.substrate_link]]
id = "p2p"
kind = "p2p"
interface = "e0"
peer_mac = "{{mac:{peer}}}"
vlan = {vlan}
[[node.router.substrate_link]]
id = "tun"
kind = "udp"
local = "{local}:4799"
remote = "{remote}:4799"
[[node.router.switch]]
vnet = "blue"
in_link = "p2p"
in_vli = {p2p_in}
out_link = "tun"
out_vli = {tun_out}
[[node.router.switch]]
vnet = "blue"
in_link = "tun"
in_vli = {tun_in}
out_link = "p2p"
out_vli = {p2p_out}
"""


def topology(extra="", b_vli=300):
    """a - r1 = udp = r2 - b, the path of tests/integration/test_path_mtu.py."""
    links = "".join(f'\n[[link]]\na = "{a}"\nb = "{b}"\n'
                    for a, b in (("a:e0", "r1:e0"), ("r1:t0", "r2:t0"), ("r2:e0", "b:e0")))
    return (links + _end("a", "r1:e0", 10, 101, 100, extra)
            + _mid("r1", "a:e0", 10, "192.168.60.1", "192.168.60.2", 201, 200, 100, 101, extra)
            + _mid("r2", "b:e0", 30, "192.168.60.2", "192.168.60.1", 200, 201, 301, b_vli, extra)
            + _end("b", "r2:e0", 30, 300, 301, extra))


def test_path_through_a_tunnel_reports_its_mtu():
    lines, ok = T.path_net(T.loads(topology())).report()
    assert ok
    assert lines == [
        "a: blue/blue0: MTU 1482, but the path to b blue/blue0 carries 1456 (narrowest: r1 tun "
        "(udp), 1470-byte payloads): the path MTU notices lower it to 1456 at run time",
        "b: blue/blue0: MTU 1482, but the path to a blue/blue0 carries 1456 (narrowest: r2 tun "
        "(udp), 1470-byte payloads): the path MTU notices lower it to 1456 at run time"]


def test_notices_off_is_a_mismatch_and_the_fix_is_named(tmp_path, capsys):
    text = topology('[node.router.node]\npath_mtu_interval = 0')
    lines, ok = T.path_net(T.loads(text)).report()
    assert not ok and len(lines) == 2
    assert "notices are off at a, b, r1, r2" in lines[0] and "set mtu = 1456" in lines[0]
    assert "dropped as too_big at r1" in lines[0]
    # the interfaces' own mtu settles it; a receiving interface's smaller mtu is the limit
    fixed = text.replace('out_vli = 100\n', 'out_vli = 100\nmtu = 1456\n')
    lines, ok = T.path_net(T.loads(fixed.replace('out_vli = 301\n',
                                                 'out_vli = 301\nmtu = 1456\n'))).report()
    assert ok and lines == []
    lines, ok = T.path_net(T.loads(fixed.replace('out_vli = 301\n',
                                                 'out_vli = 301\nmtu = 1400\n'))).report()
    assert not ok and lines == [
        "a: blue/blue0: MTU 1456, but the path to b blue/blue0 carries 1400 (narrowest: b "
        "blue/blue0 (mtu), 1414-byte payloads): path MTU notices are off at a, b, r1, r2: larger "
        "frames exceed the mtu of b blue/blue0; set mtu = 1400 on this interface or turn the "
        "notices on"]
    path = tmp_path / "t.toml"
    path.write_text(text)
    assert lab_cli.main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.count("path MTU: ") == 2 and "too_big" in out


def test_a_virtual_link_that_leads_nowhere_is_reported():
    lines, ok = T.path_net(T.loads(topology(b_vli=333))).report()
    assert lines[0] == ("a: blue/blue0: VLI 100 on up leads nowhere at b (no input virtual link "
                        "there)"), lines


def test_one_node_reports_its_narrowing_switches():
    cfg = loads("""
[node]
path_mtu_interval = 0
[[substrate_link]]
id = "p2p"
kind = "p2p"
interface = "e0"
peer_mac = "02:00:00:00:00:01"
vlan = 10
[[substrate_link]]
id = "tun"
kind = "udp"
local = "192.168.60.1:4799"
remote = "192.168.60.2:4799"
[[switch]]
vnet = "blue"
in_link = "p2p"
in_vli = 100
out_link = "tun"
out_vli = 200
[[switch]]
vnet = "blue"
in_link = "tun"
in_vli = 201
out_link = "p2p"
out_vli = 101
""")
    lines = narrowing_switches(cfg, {"p2p": 1496, "tun": 1470})
    assert lines == ["warning: switch p2p:100 -> tun:200 (vNet blue) narrows the path from 1496 "
                     "to 1470 payload bytes: frames above 1470 are dropped here as too_big; "
                     "path MTU notices are off: give the upstream logical interface mtu = 1456 "
                     "(a TAP) or less"]
