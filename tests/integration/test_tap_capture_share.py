"""The TAP capture's rings: a vNet that floods its TAP fills at most its own capture ring (its
budget: the ring less a record per CPU), so another vNet's frames, in a ring of their own,
still find room; what the flood loses is counted as ``ring_full`` under the flooding vNet,
not anyone else's.

s --p2p-- r --p2p-- b : r hosts vNets red and blue, each with a TAP.  red's TAP leads to s,
which runs no router (its kernel discards what r sends); blue's to b.  red's namespace on r
floods red0 with trafgen at the generator's full rate while blue's pings from r's blue0 go to
b and back.  In the middle of the flood r's daemon is stopped for a moment: nothing walks the
rings then, so red fills its budget for certain, whatever the machine's speed (with one ring
for both and no budget, blue's echo requests would be dropped).

A frame the capture drops is refused to its sender (TC_ACT_SHOT at egress: ``sendmsg`` fails
with ENOBUFS), and ping sends that echo request again: blue's ping count alone would not show
its loss.  Blue's ``ring_full`` count does: it is zero.
"""
import shutil
import subprocess
import threading

import pytest

import topo as t
from harness import eventually
from test_accounting import NO_IPV6, _on, _settled, _stall

# one_tier: runs on each tier it names (parametrized, VNET_DATAPATH unset)
pytestmark = [pytest.mark.root, pytest.mark.one_tier,
              pytest.mark.skipif(shutil.which("trafgen") is None,
                                 reason="trafgen missing (apt-get install netsniff-ng)")]

PINGS = 300                 # at 10 ms: 3 s, the stall and the flood in the middle
FLOOD_SECONDS = 6
FLOOD_FRAME = bytes.fromhex("025e00000001" "025e00000002" "88b6") + bytes(46)
# no path MTU notices: s runs no router, so every start of r waited 2.25 s for red's report
# (and b as long for r's, were r's off alone)
NO_PMTU = {"path_mtu_interval": 0}

SHARE = (
    t.link("s:e0", "r:e0") + t.link("r:e1", "b:e0")
    + t.node("s", sysctl=NO_IPV6)
    + t.node("r", t.p2p("west", "e0", "s:e0"), t.p2p("east", "e1", "b:e0", vlan=20),
             t.vnet("red", 1), t.vnet("blue", 2),
             t.iface("red", "red0", "west", 100, addresses=["10.1.1.1/24"]),
             t.iface("blue", "blue0", "east", 200, addresses=["10.2.1.1/24"]),
             sysctl=NO_IPV6, settings=NO_PMTU)
    + t.node("b", t.p2p("west", "e0", "r:e1", vlan=20), t.vnet("blue", 2),
             t.iface("blue", "blue0", "west", 200, addresses=["10.2.1.2/24"]),
             sysctl=NO_IPV6, settings=NO_PMTU))


def _vlink(st, vnet, direction):
    return next(v for v in st["virtual_links"] if v["vnet"] == vnet
                and v["direction"] == direction)


def _drops(lab):
    st = lab.control("r")
    return {"all": st["drops"].get("ring_full", 0),
            "red": _vlink(st, "red", "out")["drops"].get("ring_full", 0),
            "blue": sum(v["drops"].get("ring_full", 0) for v in st["virtual_links"]
                        if v["vnet"] == "blue"),
            "over_share": st["datapath_stats"].get("capture_over_share", 0),
            "ring_full": st["datapath_stats"].get("capture_ring_full", 0),
            "taken": st["datapath_stats"].get("capture_taken", 0)}


@pytest.mark.parametrize("datapath", ["fast", "kernel"])
def test_a_flooding_vnet_cannot_take_the_capture_ring(make_lab, datapath, tmp_path,
                                                      monkeypatch):
    monkeypatch.delenv("VNET_DATAPATH", raising=False)
    monkeypatch.delenv("VNET_TAP_CAPTURE", raising=False)
    lab = make_lab(_on(SHARE, datapath))
    assert lab.control("r")["datapath"] == datapath
    for vnet, tap in (("red", "red0"), ("blue", "blue0")):
        tc = lab.run_in(lab.vnet_ns("r", vnet), ["tc", "filter", "show", "dev", tap, "egress"],
                        check=True).stdout
        assert "tap_capture" in tc, (vnet, tc)
    warm = lab.ping("r", "10.2.1.2", vnet="blue", count=3)       # ARP resolved before
    assert warm.received == 3, warm.output
    before = _drops(lab)
    assert before["blue"] == 0

    cfg = tmp_path / "flood.cfg"
    cfg.write_text("{ " + ", ".join(f"0x{b:02x}" for b in FLOOD_FRAME) + " }\n")
    out = tmp_path / "trafgen.out"
    with open(out, "w") as log:
        # -q: by the qdisc path, where TC egress (the capture) runs; SIGINT ends it cleanly
        gen = lab.popen("r", ["timeout", "-s", "INT", str(FLOOD_SECONDS), "trafgen", "-o",
                              "red0", "-i", str(cfg), "-q", "-P", "1", "--no-sock-mem", "-Q",
                              "-C"], vnet="red", stdout=log, stderr=subprocess.STDOUT)
    eventually(lambda: _drops(lab)["taken"] - before["taken"] > 10_000, 20,
               "red's flood to reach the capture")
    result = {}
    pinger = threading.Thread(target=lambda: result.update(
        ping=lab.ping("r", "10.2.1.2", vnet="blue", count=PINGS, interval=0.01, wait=2)))
    pinger.start()
    try:
        eventually(lambda: _drops(lab)["taken"] - before["taken"] > 20_000, 20,
                   "the flood to go on beside the pings")
        _stall(lab, "r")
    finally:
        pinger.join(timeout=PINGS * 0.01 + 60)
        gen.wait(timeout=FLOOD_SECONDS + 30)
    assert gen.returncode in (0, 124), f"trafgen failed ({gen.returncode}): " \
                                       f"{out.read_text()[-1000:]}"
    after = _settled(lambda: _drops(lab), "r's drop counters")
    d = {k: after[k] - before[k] for k in after}
    ping = result["ping"]
    print(f"[{datapath}] blue's pings {ping.received}/{ping.transmitted}; r: {d}")

    # blue lost nothing; red lost frames to its share, and they are counted as red's
    assert d["blue"] == 0, d
    assert d["over_share"] > 0, d
    assert d["red"] > 0 and d["red"] == d["over_share"] + d["ring_full"], d
    assert d["all"] == d["red"], d
    assert ping.transmitted == PINGS and ping.received >= PINGS * 0.99, ping.output
