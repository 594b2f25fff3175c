"""Rate: a virtual link shaped to 20 Mbit/s carries iperf3 TCP at 17-21 Mbit/s, also while a
second vNet floods UDP over the same substrate link."""
import signal
import time

import pytest

import topo as t
from harness import eventually, iperf_run, iperf_server, received_rate

pytestmark = pytest.mark.root


def _node(name, peer, blue_in, blue_out, red_in, red_out, octet):
    return t.node(
        name, t.p2p("p", "e0", f"{peer}:e0"), t.vnet("blue", 1), t.vnet("red", 2),
        t.iface("blue", "blue0", "p", blue_in, blue_out, rate={"min": "20Mbit", "max": "20Mbit"},
                addresses=[f"10.0.0.{octet}/24"]),
        t.iface("red", "red0", "p", red_in, red_out, rate="100Mbit",
                addresses=[f"10.0.0.{octet}/24"]))


TOPO = (t.link("x:e0", "y:e0") + _node("x", "y", 11, 10, 21, 20, 1)
        + _node("y", "x", 10, 11, 20, 21, 2))


def _iperf_tcp(lab, seconds=6):
    report = iperf_run(lab, "x", "y", "10.0.0.2", 5201, seconds, vnet="blue", args=("-O", "1"))
    return received_rate(report) / 1e6


def test_shaped_rate_holds_alone_and_against_a_flood(make_lab):
    lab = make_lab(TOPO)
    alone = _iperf_tcp(lab)
    assert 17 <= alone <= 21, f"blue alone: {alone:.2f} Mbit/s"

    flood_server = iperf_server(lab, "y", "10.0.0.2", 5202, vnet="red")
    start = _red_out(lab)
    flood = lab.popen("x", ["iperf3", "-c", "10.0.0.2", "-p", "5202", "-u", "-b", "1G",
                            "-t", "12", "-J"], vnet="red", stdout=open("/dev/null", "w"))
    # the flood runs over the substrate link: red's output has carried a few MB
    red_before = eventually(lambda: _red_out(lab), 15, "the red flood to get going",
                            until=lambda now: now[1] - start[1] > 3_000_000)
    contested = _iperf_tcp(lab)
    red_after = _red_out(lab)
    # -t 12 only bounds the flood: it is no longer needed, end it (iperf3 tells its server)
    flood.send_signal(signal.SIGINT)
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
