"""Pass-through (VLI swap) and UDP tunnel substrate links, end to end with real daemons.

a --p2p-- r1 --p2p-- r2 --p2p-- b : r1 hosts no instance of vNet blue and only swaps VLIs;
r2 hosts blue's virtual router (the Linux IP stack in blue's namespace on r2).
"""
import json
import time

import pytest

pytestmark = pytest.mark.root


def _p2p(link_id, ifname, peer, vlan=10, prio=3):
    return f"""
[[node.router.substrate_link]]
id = "{link_id}"
kind = "p2p"
interface = "{ifname}"
peer_mac = "{{mac:{peer}}}"
vlan = {vlan}
priority = {prio}
"""


def _iface(name, link, in_vli, out_vli, address, rate=None):
    rate = f'rate = "{rate}"\n' if rate else ""
    return f"""
[[node.router.interface]]
vnet = "blue"
name = "{name}"
substrate_link = "{link}"
in_vli = {in_vli}
out_vli = {out_vli}
addresses = ["{address}"]
{rate}"""


BLUE = '\n[[node.router.vnet]]\nname = "blue"\nid = 1\n'

PASSTHROUGH = f"""
[[link]]
a = "a:e0"
b = "r1:e0"
[[link]]
a = "r1:e1"
b = "r2:e0"
[[link]]
a = "r2:e1"
b = "b:e0"

[[node]]
name = "a"
[node.router]
{_p2p("up", "e0", "r1:e0")}{BLUE}{_iface("blue0", "up", 101, 100, "10.9.1.2/24")}
[[node.commands]]
vnet = "blue"
run = "ip route add default via 10.9.1.1"

[[node]]
name = "r1"
[node.router]
{_p2p("west", "e0", "a:e0")}{_p2p("east", "e1", "r2:e0", vlan=20)}
[[node.router.switch]]
vnet = "blue"
in_link = "west"
in_vli = 100
out_link = "east"
out_vli = 200
[[node.router.switch]]
vnet = "blue"
in_link = "east"
in_vli = 201
out_link = "west"
out_vli = 101

[[node]]
name = "r2"
[node.router]
{_p2p("west", "e0", "r1:e1", vlan=20)}{_p2p("east", "e1", "b:e0", vlan=30)}{BLUE}
{_iface("t1", "west", 200, 201, "10.9.1.1/24")}{_iface("t2", "east", 300, 301, "10.9.2.1/24")}
[[node.commands]]
vnet = "blue"
run = "sysctl -qw net.ipv4.ip_forward=1"

[[node]]
name = "b"
[node.router]
{_p2p("up", "e0", "r2:e1", vlan=30)}{BLUE}{_iface("blue0", "up", 301, 300, "10.9.2.2/24")}
[[node.commands]]
vnet = "blue"
run = "ip route add default via 10.9.2.1"
"""


def _vlinks(lab, node):
    return {(v["substrate_link"], v["vli"], v["direction"]): v
            for v in lab.control(node)["virtual_links"]}


def test_passthrough_ping_and_iperf3(make_lab):
    lab = make_lab(PASSTHROUGH)
    ping = lab.ping("a", "10.9.2.2", vnet="blue", count=5)
    assert ping.received == 5, ping.output

    server = lab.popen("b", ["iperf3", "-s", "-1", "-B", "10.9.2.2"], vnet="blue",
                       stdout=open("/dev/null", "w"))
    time.sleep(0.5)
    r = lab.exec("a", ["iperf3", "-c", "10.9.2.2", "-t", "3", "-J"], vnet="blue", timeout=30)
    server.wait(timeout=10)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    result = json.loads(r.stdout)
    received = result["end"]["sum_received"]["bytes"]
    assert received > 1_000_000, result["end"]["sum_received"]

    # r1 only swapped VLIs: no vNet there, and its switched virtual links carried the traffic
    st = lab.control("r1")
    assert st["vnets"] == [] and st["logical_interfaces"] == []
    v = _vlinks(lab, "r1")
    assert v[("east", 200, "out")]["packets"] >= 5
    assert v[("west", 100, "in")]["bytes"] >= received
    assert v[("west", 101, "out")]["packets"] >= 5
    assert not [n for n in lab.namespaces() if n.startswith(lab.ns("r1-"))]


UDP = """
[[link]]
a = "x:e0"
b = "y:e0"

[[node]]
name = "x"
addresses = { e0 = ["192.168.50.1/24"] }
[node.router]
[[node.router.substrate_link]]
id = "tun"
kind = "udp"
local = "192.168.50.1:4799"
remote = "192.168.50.2:4799"
[[node.router.vnet]]
name = "blue"
id = 1
[[node.router.interface]]
vnet = "blue"
name = "blue0"
substrate_link = "tun"
in_vli = 7
addresses = ["10.0.0.1/24"]

[[node]]
name = "y"
addresses = { e0 = ["192.168.50.2/24"] }
[node.router]
[[node.router.substrate_link]]
id = "tun"
kind = "udp"
local = "192.168.50.2:4799"
remote = "192.168.50.1:4799"
[[node.router.vnet]]
name = "blue"
id = 1
[[node.router.interface]]
vnet = "blue"
name = "blue0"
substrate_link = "tun"
in_vli = 7
addresses = ["10.0.0.2/24"]
"""


def test_udp_substrate_link_carries_a_vnet(make_lab):
    lab = make_lab(UDP)
    ping = lab.ping("x", "10.0.0.2", vnet="blue", count=5)
    assert ping.received == 5, ping.output
    link = lab.control("y")["substrate_links"][0]
    assert link["kind"] == "udp" and link["rx_packets"] >= 5 and link["tx_packets"] >= 5
    mtu = lab.exec("x", ["cat", "/sys/class/net/blue0/mtu"], vnet="blue").stdout.strip()
    assert mtu == str(1500 - 20 - 8 - 2 - 14)
    # a full-size frame fits the tunnel: ping with DF at the TAP MTU
    big = lab.exec("x", ["ping", "-c", "2", "-M", "do", "-s", str(int(mtu) - 28), "10.0.0.2"],
                   vnet="blue")
    assert big.returncode == 0, big.stdout + big.stderr


def test_vnetctl_top_shows_live_rates(make_lab):
    import subprocess
    import sys
    lab = make_lab(UDP)
    pinger = lab.popen("x", ["ping", "-q", "-c", "300", "-i", "0.01", "10.0.0.2"], vnet="blue",
                       stdout=subprocess.DEVNULL)
    r = subprocess.run([sys.executable, "-m", "vnet_router.ctl", "-s", lab.socket("y"), "top",
                        "-n", "2", "-i", "0.5"], capture_output=True, text=True, timeout=30)
    pinger.wait(timeout=30)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().split("\n\n")[-1].splitlines()
    assert last[0].startswith("node y")
    rows = {tuple(line.split()[:3]): line.split() for line in last[2:]}
    pps = float(rows[("tun", "7", "in")][5].replace(",", ""))
    assert 50 <= pps <= 150, last                 # ~100 pings/s arriving at y
