"""Pass-through (VLI swap) and UDP tunnel substrate links, end to end with real daemons.

a --p2p-- r1 --p2p-- r2 --p2p-- b : r1 hosts no instance of vNet blue and only swaps VLIs;
r2 hosts blue's virtual router (the Linux IP stack in blue's namespace on r2).
"""
import pytest

import topo as t
from harness import iperf_run, vnetctl

pytestmark = pytest.mark.root


def _blue(name, lid, in_vli, out_vli, address):
    return t.iface("blue", name, lid, in_vli, out_vli, addresses=[address])


PASSTHROUGH = (
    t.link("a:e0", "r1:e0") + t.link("r1:e1", "r2:e0") + t.link("r2:e1", "b:e0")
    + t.node("a", t.p2p("up", "e0", "r1:e0", priority=3), t.vnet("blue", 1),
             _blue("blue0", "up", 101, 100, "10.9.1.2/24"),
             commands=[("ip route add default via 10.9.1.1", "blue")])
    # r1 hosts no instance of blue: it only swaps VLIs
    + t.node("r1", t.p2p("west", "e0", "a:e0", priority=3),
             t.p2p("east", "e1", "r2:e0", vlan=20, priority=3),
             t.switch("blue", "west", 100, "east", 200),
             t.switch("blue", "east", 201, "west", 101))
    + t.node("r2", t.p2p("west", "e0", "r1:e1", vlan=20, priority=3),
             t.p2p("east", "e1", "b:e0", vlan=30, priority=3), t.vnet("blue", 1),
             _blue("t1", "west", 200, 201, "10.9.1.1/24"),
             _blue("t2", "east", 300, 301, "10.9.2.1/24"),
             commands=[("sysctl -qw net.ipv4.ip_forward=1", "blue")])
    + t.node("b", t.p2p("up", "e0", "r2:e1", vlan=30, priority=3), t.vnet("blue", 1),
             _blue("blue0", "up", 301, 300, "10.9.2.2/24"),
             commands=[("ip route add default via 10.9.2.1", "blue")]))


def _vlinks(lab, node):
    return {(v["substrate_link"], v["vli"], v["direction"]): v
            for v in lab.control(node)["virtual_links"]}


def test_passthrough_ping_and_iperf3(make_lab):
    lab = make_lab(PASSTHROUGH)
    ping = lab.ping("a", "10.9.2.2", vnet="blue", count=5)
    assert ping.received == 5, ping.output

    result = iperf_run(lab, "a", "b", "10.9.2.2", 5201, 3, vnet="blue")
    assert "error" not in result, result["error"]
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


def _udp_node(name, local, remote, address):
    return t.node(name, t.udp("tun", f"{local}:4799", f"{remote}:4799"), t.vnet("blue", 1),
                  t.iface("blue", "blue0", "tun", 7, addresses=[address]),
                  addresses={"e0": [f"{local}/24"]})


UDP = (t.link("x:e0", "y:e0")
       + _udp_node("x", "192.168.50.1", "192.168.50.2", "10.0.0.1/24")
       + _udp_node("y", "192.168.50.2", "192.168.50.1", "10.0.0.2/24"))


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
    lab = make_lab(UDP)
    pinger = lab.popen("x", ["ping", "-q", "-c", "300", "-i", "0.01", "10.0.0.2"], vnet="blue",
                       stdout=subprocess.DEVNULL)
    r = vnetctl(lab, "y", "top", "-n", "2", "-i", "0.5", timeout=30)
    pinger.terminate()              # -c 300 (3 s) only bounds it: top has read its rates
    pinger.wait(timeout=30)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().split("\n\n")[-1].splitlines()
    assert last[0].startswith("node y")
    rows = {tuple(line.split()[:3]): line.split() for line in last[2:]}
    pps = float(rows[("tun", "7", "in")][5].replace(",", ""))
    assert 50 <= pps <= 150, last                 # ~100 pings/s arriving at y
