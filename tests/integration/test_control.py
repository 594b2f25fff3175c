"""Substrate control protocol with real daemons: dynamic virtual links, the Traffic Manager
following demand, idle fall-back, the VBM going away and coming back, bad control messages.

x and y share a p2p substrate link (VLAN 10, the data) and, with the standalone VBM node v,
a switched LAN (multiaccess) on which the VBM divides LAN_CAPACITY between blue and red.
"""
import json
import subprocess
import sys
import time

import pytest

from vnet_router import wire
from vnet_router.ctlproto import messages as m

pytestmark = pytest.mark.root

M = 1_000_000


def _node(name, peer, vnets=True, tm="", vbm=""):
    text = f"""
[[node]]
name = "{name}"
[node.router]
[node.router.node]
name = "{name}"
[[node.router.substrate_link]]
id = "lan"
kind = "multiaccess"
interface = "e0"
capacity = "1Gbit"
"""
    if vnets:
        text += f"""
[[node.router.substrate_link]]
id = "p"
kind = "p2p"
interface = "e1"
peer_mac = "{{mac:{peer}:e1}}"
vlan = 10
[[node.router.vnet]]
name = "blue"
id = 1
[[node.router.vnet]]
name = "red"
id = 2
"""
    return text + tm + vbm


TM = """
[node.router.tm]
idle_interval = 3
tick = 0.2
hello_interval = 0.5
report_interval = 1
vbm_link = "lan"
"""


def topology(lan="60Mbit", blue=0.5, red=0.5):
    vbm = f"""
[node.router.vbm]
link = "lan"
capacity = "{lan}"
rebuild_time = 3
[[node.router.vbm.share]]
vnet = 1
share = {blue}
[[node.router.vbm.share]]
vnet = 2
share = {red}
"""
    return ('[[switch]]\nname = "sw"\n'
            + "".join(f'[[link]]\na = "{n}:e0"\nb = "sw"\n' for n in "xyv")
            + '[[link]]\na = "x:e1"\nb = "y:e1"\n'
            + _node("x", "y", tm=TM) + _node("y", "x", tm=TM) + _node("v", None, False, vbm=vbm))


def vnetctl(lab, node, *args):
    r = subprocess.run([sys.executable, "-m", "vnet_router.ctl", "-s", lab.socket(node), *args],
                       capture_output=True, text=True, timeout=60)
    return r


def vlink_add(lab, vnet, name, lo, hi, xaddr, yaddr):
    r = vnetctl(lab, "x", "vlink", "add", "p", vnet, name, "--min", lo, "--max", hi,
                "--address", xaddr, "--json")
    assert r.returncode == 0, r.stderr + lab.log_tail("x") + lab.log_tail("y")
    info = json.loads(r.stdout)
    lab.exec("y", ["ip", "addr", "add", yaddr, "dev", name], vnet=vnet, check=True)
    return info


def wait_for(fn, timeout, what, step=0.2):
    t0 = time.monotonic()
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def wait_vbm(lab):
    wait_for(lambda: lab.control("x", "alloc")["vbm_peer"] and
             lab.control("y", "alloc")["vbm_peer"], 10, "the nodes to hear the VBM")


def out_link(lab, node, vnet):
    a = lab.control(node, "alloc")
    return next(o for o in a["outputs"] if o["vnet"] == vnet)


def shown_rate(lab, node, vnet, vli):
    st = lab.control(node)
    v = next(v for v in st["virtual_links"] if v["vnet"] == vnet and v["vli"] == vli
             and v["direction"] == "out")
    return v["rate"]["current"]


def iperf(lab, vnet, dst, port, seconds, out=None):
    server = lab.popen("y", ["iperf3", "-s", "-1", "-B", dst, "-p", str(port)], vnet=vnet,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    client = lab.popen("x", ["iperf3", "-c", dst, "-p", str(port), "-t", str(seconds), "-J",
                             "-i", "1"], vnet=vnet, stdout=subprocess.PIPE, text=True)
    return server, client


def iperf_result(server, client, seconds):
    out, _ = client.communicate(timeout=seconds + 40)
    server.wait(timeout=10)
    data = json.loads(out)
    return [iv["sum"]["bits_per_second"] for iv in data["intervals"]]


def test_vlink_add_and_teardown_with_downstream_chosen_vli(make_lab):
    lab = make_lab(topology())
    wait_vbm(lab)
    info = vlink_add(lab, "blue", "dyn0", "2Mbit", "20Mbit", "10.7.0.1/24", "10.7.0.2/24")
    ya = lab.control("y", "alloc")
    ydyn = next(d for d in ya["dynamic"] if d["name"] == "dyn0")
    # y (downstream of x's output) chose the VLI x sends on; x chose its own input VLI
    assert info["out_vli"] == ydyn["in_vli"] and info["in_vli"] == ydyn["out_vli"]
    assert ydyn["upstream"] is False and info["upstream"] is True
    assert lab.ping("x", "10.7.0.2", vnet="blue", count=3).received == 3
    names = lab.exec("y", ["ip", "-o", "link", "show", "dev", "dyn0"], vnet="blue")
    assert names.returncode == 0
    # teardown frees it on both ends
    r = vnetctl(lab, "x", "vlink", "del", "blue", "dyn0", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["peer_acked"], r.stdout + r.stderr
    for node in ("x", "y"):
        a = lab.control(node, "alloc")
        assert not a["dynamic"] and not a["outputs"] and not a["inputs"], a
        st = lab.control(node)
        assert not any(v["vli"] in (info["in_vli"], info["out_vli"])
                       for v in st["virtual_links"]), st["virtual_links"]
        assert lab.exec(node, ["ip", "link", "show", "dev", "dyn0"], vnet="blue").returncode != 0
    # the same name and VLIs can be set up again
    again = vlink_add(lab, "blue", "dyn0", "2Mbit", "20Mbit", "10.7.0.1/24", "10.7.0.2/24")
    assert again["out_vli"] == info["out_vli"]
    assert lab.ping("x", "10.7.0.2", vnet="blue", count=2).received == 2
