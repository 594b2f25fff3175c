"""A campus of two access switches joined by a 50 Mbit/s uplink (a trunk with a rate): the
VBM's LAN capacity follows the slowest link (the lab derives it from the trunk), and the
aggregates it grants across the uplink never sum above a vNet's share of it; a request beyond
is refused, counted and shown by `vnetctl alloc` (docs/lab.md, "A campus").

    x   v            y          x, y: routers with vNet blue (p2p link over the LAN, VLAN 10)
    |   |            |          v: the VBM (no capacity configured), blue's share 0.5
    sw1 ==50Mbit== sw2
"""
import json
import subprocess

import pytest

import topo as t
from harness import eventually, iperf_client, iperf_result, iperf_server, vnetctl

pytestmark = [pytest.mark.root, pytest.mark.one_tier]

M = 1_000_000
TM = {"idle_interval": 3, "tick": 0.2, "hello_interval": 0.5, "report_interval": 1,
      "vbm_link": "lan"}


def _router(name, peer):
    return t.node(name, t.multiaccess("lan", "e0"), t.p2p("p", "e0", f"{peer}:e0", vlan=10),
                  t.vnet("blue", 1), settings={"name": name}, router={"tm": TM})


def campus():
    vbm = {"link": "lan", "rebuild_time": 3, "share": [{"vnet": 1, "share": 0.5}]}
    return t.topology(
        t.switch_node("sw1"), t.switch_node("sw2"), t.link("sw1", "sw2", port_rate="50Mbit"),
        t.link("x:e0", "sw1"), t.link("v:e0", "sw1"), t.link("y:e0", "sw2"),
        _router("x", "y"), _router("y", "x"),
        t.node("v", t.multiaccess("lan", "e0"), settings={"name": "v"}, router={"vbm": vbm}))


def test_vbm_grants_across_a_50mbit_uplink_never_sum_above_its_share(make_lab):
    lab = make_lab(campus())
    # the uplink: tbf at 50 Mbit/s on both ends
    for sw, port in (("sw1", "sw2"), ("sw2", "sw1")):
        q = lab.exec(sw, ["tc", "qdisc", "show", "dev", port], check=True).stdout
        assert "tbf" in q and "rate 50Mbit" in q, (sw, q)
    eventually(lambda: lab.control("x", "alloc")["vbm_peer"] and
               lab.control("y", "alloc")["vbm_peer"] and
               lab.control("v", "alloc")["vbm"]["state"] == "ACTIVE", 20,
               "x and y to hear the VBM across the uplink and the VBM to be active")
    vbm = lab.control("v", "alloc")["vbm"]
    assert vbm["lan_capacity"] == 50 * M                 # derived from the slowest link
    pool = vbm["vnets"]["1"]["pool"]
    assert pool == 25 * M

    r = vnetctl(lab, "x", "vlink", "add", "p", "blue", "dyn0", "--min", "2Mbit", "--max",
                "40Mbit", "--address", "10.7.0.1/24", "--json")
    assert r.returncode == 0, r.stderr + lab.log_tail("x")
    lab.exec("y", ["ip", "addr", "add", "10.7.0.2/24", "dev", "dyn0"], vnet="blue", check=True)
    refused0 = lab.control("v", "alloc")["counters"].get("partial", 0)

    # x sends to y across the uplink; its link asks y for up to 40 Mbit/s, y asks the VBM
    server = iperf_server(lab, "y", "10.7.0.2", 5501, "blue")
    client = iperf_client(lab, "x", "10.7.0.2", 5501, 12, "blue")
    samples = []
    while True:
        v = lab.control("v", "alloc")["vbm"]["vnets"]["1"]
        aggs = [lab.control(n, "alloc")["aggregates"]["blue"]["aggregate"] for n in "xy"]
        samples.append((v["allocated"], v["pool"], sum(aggs)))
        try:
            client.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
    iperf_result(client, server, timeout=60)
    print("VBM allocated / pool / x+y aggregates (Mbit/s):",
          [(a / M, p / M, s / M) for a, p, s in samples])
    assert all(a <= p and s <= p for a, p, s in samples), samples
    assert max(s for _a, _p, s in samples) >= pool - 3 * M, "the VBM never granted the pool"
    # the request for more than the share was refused (partly or wholly) and counted
    counters = lab.control("v", "alloc")["counters"]
    assert counters.get("partial", 0) > refused0, counters
    x_out = next(o for o in lab.control("x", "alloc")["outputs"] if o["vnet"] == "blue")
    assert x_out["current"] <= pool, x_out
    text = vnetctl(lab, "v", "alloc")
    assert text.returncode == 0, text.stderr
    print(text.stdout)
    assert "LAN bandwidth 50Mbit" in text.stdout and "partial=" in text.stdout, text.stdout
    shown = json.loads(vnetctl(lab, "v", "alloc", "--json").stdout)["vbm"]["vnets"]["1"]
    assert shown["allocated"] <= shown["pool"] == pool
