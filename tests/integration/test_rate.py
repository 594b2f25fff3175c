"""Rate: a virtual link shaped to 20 Mbit/s carries iperf3 TCP at 17-21 Mbit/s, also while a
second vNet floods UDP over the same substrate link."""
import json
import time

import pytest

pytestmark = pytest.mark.root


def _node(name, peer, blue_in, blue_out, red_in, red_out, octet):
    return f"""
[[node]]
name = "{name}"
[node.router]
[[node.router.substrate_link]]
id = "p"
kind = "p2p"
interface = "e0"
peer_mac = "{{mac:{peer}:e0}}"
vlan = 10
[[node.router.vnet]]
name = "blue"
id = 1
[[node.router.vnet]]
name = "red"
id = 2
[[node.router.interface]]
vnet = "blue"
name = "blue0"
substrate_link = "p"
in_vli = {blue_in}
out_vli = {blue_out}
rate = {{ min = "20Mbit", max = "20Mbit" }}
addresses = ["10.0.0.{octet}/24"]
[[node.router.interface]]
vnet = "red"
name = "red0"
substrate_link = "p"
in_vli = {red_in}
out_vli = {red_out}
rate = "100Mbit"
addresses = ["10.0.0.{octet}/24"]
"""


TOPO = ('[[link]]\na = "x:e0"\nb = "y:e0"\n' + _node("x", "y", 11, 10, 21, 20, 1)
        + _node("y", "x", 10, 11, 20, 21, 2))


def _iperf_tcp(lab, seconds=6):
    server = lab.popen("y", ["iperf3", "-s", "-1", "-B", "10.0.0.2", "-p", "5201"], vnet="blue",
                       stdout=open("/dev/null", "w"))
    time.sleep(0.5)
    r = lab.exec("x", ["iperf3", "-c", "10.0.0.2", "-p", "5201", "-t", str(seconds), "-O", "1",
                       "-J"], vnet="blue", timeout=seconds + 30)
    server.wait(timeout=10)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6


def test_shaped_rate_holds_alone_and_against_a_flood(make_lab):
    lab = make_lab(TOPO)
    alone = _iperf_tcp(lab)
    assert 17 <= alone <= 21, f"blue alone: {alone:.2f} Mbit/s"

    flood_server = lab.popen("y", ["iperf3", "-s", "-1", "-B", "10.0.0.2", "-p", "5202"],
                             vnet="red", stdout=open("/dev/null", "w"))
    time.sleep(0.5)
    flood = lab.popen("x", ["iperf3", "-c", "10.0.0.2", "-p", "5202", "-u", "-b", "1G",
                            "-t", "12", "-J"], vnet="red", stdout=open("/dev/null", "w"))
    time.sleep(1.5)
    red_before = _red_out(lab)
    contested = _iperf_tcp(lab)
    red_after = _red_out(lab)
    flood.wait(timeout=30)
    flood_server.wait(timeout=10)
    assert 17 <= contested <= 21, f"blue against the red flood: {contested:.2f} Mbit/s"
    # the flood really ran over the same substrate link, at red's own shaped rate
    red_mbit = (red_after[1] - red_before[1]) * 8 / (red_after[0] - red_before[0]) / 1e6
    print(f"blue alone {alone:.2f} Mbit/s, blue against flood {contested:.2f} Mbit/s, "
          f"red {red_mbit:.1f} Mbit/s")
    assert 60 <= red_mbit <= 105, f"red carried {red_mbit:.1f} Mbit/s"


def _red_out(lab):
    st = lab.control("x")
    v = next(v for v in st["virtual_links"] if v["vnet"] == "red" and v["direction"] == "out")
    return time.monotonic(), v["bytes"]
