"""A VLI 0 flood at full rate does not cost the control plane its neighbours (issue 27, point 3).

x, y and the VBM v share a switched LAN whose control messages are authenticated with a LAN key
(the topology of test_control_auth); e, a station with no daemon and no key, floods the LAN
with VLI 0 frames for 5 s with trafgen: ones that are no control message (the datapath's
``control`` drop), unsealed ones, ones sealed with a key of its own (each costs a receiver an
HMAC), from its own MAC and from random ones.  The neighbours' timeout is
2 s, so a neighbour whose HELLOs the flood kept from the control plane would be lost.

During the flood no neighbour goes (``neighbours_lost``), no request times out, the Traffic
Managers' reports to the VBM (for a managed link pair set up before) keep being answered, and
a virtual link set up meanwhile comes up;
afterwards the flood's frames are counted by reason -- the control-plane policing's bounds
(``control_other`` / ``control_source``) and the guard's refusals.
"""
import shutil
import subprocess
import time

import pytest

from vnet_router.wire import auth
from vnet_router.wire import control as m
from vnet_router.wire import substrate as wire

import topo as t
from harness import eventually, vnetctl
from test_control_auth import TM, one_key

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("trafgen") is None,
                                 reason="trafgen missing (apt-get install netsniff-ng)")]

M = 1_000_000
FLOOD_SECONDS = 5
EVIL_KEY = bytes(range(100, 132))
FLOOD_TM = {**TM, "neighbour_timeout": 2}


def topology(keyfiles: dict):
    lan = {n: t.multiaccess("lan", "e0", capacity="1Gbit", key_file=keyfiles[n]) for n in "xyv"}
    vbm = {"link": "lan", "capacity": "1Gbit", "rebuild_time": 2,
           "share": [{"vnet": 1, "share": 0.5}, {"vnet": 2, "share": 0.5}]}
    nodes = [t.node(n, lan[n], t.vnet("blue", 1), t.vnet("red", 2), settings={"name": n},
                    router={"tm": FLOOD_TM}) for n in "xy"]
    return t.topology(t.switch_node("sw"), *(t.link(f"{n}:e0", "sw") for n in "xyve"),
                      *nodes, t.node("v", lan["v"], settings={"name": "v"},
                                     router={"vbm": vbm}), t.node("e"))


def _trafgen_cfg(lab, path) -> None:
    """e's flood, sent in turn: no control message (an unknown type) and a HELLO without
    the LAN's seal from e's MAC; sealed with e's own key under the LAN key's id (each an HMAC
    to check) from e's MAC and from random MACs, broadcast and to the VBM."""
    evil = auth.Keyring(1, {1: EVIL_KEY})
    e, v = (wire.mac_to_bytes(lab.mac(n, "e0")) for n in "ev")
    bcast = wire.BROADCAST_MAC
    malformed = b"\x01\x63" + bytes(30)
    agg = m.AggRequest(node=4242, incarnation=7, seq=1, vnet=1, current=0, want=10 * M,
                       minimum=0)
    hello = m.Hello(node=4243, incarnation=7, role=m.Role.NODE, capacity=0, name="evil")

    def sealed(msg, src):
        return auth.seal(msg.pack(), evil, src, time.time())
    random_src = b"\x06\x00\x00\x00\x00\x00"        # its last 5 bytes random per frame
    frames = [(wire.pack_eth(bcast, e, 0, malformed), False),
              (wire.pack_eth(bcast, e, 0, hello.pack()), False),
              (wire.pack_eth(bcast, e, 0, sealed(hello, e)), False),
              (wire.pack_eth(v, e, 0, sealed(agg, e)), False),
              (wire.pack_eth(bcast, random_src, 0, sealed(hello, random_src)), True),
              (wire.pack_eth(v, random_src, 0, sealed(agg, random_src)), True)]
    lines = []
    for f, rnd in frames:
        fields = [f"0x{b:02x}" for b in f]
        if rnd:
            fields[7:12] = ["drnd()"] * 5
        lines.append("{ " + ", ".join(fields) + " }\n")
    path.write_text("".join(lines))


def _state(lab) -> dict:
    out = {}
    for n in "xyv":
        st = lab.control(n)
        c = st["control"]
        out[n] = {"lost": c.get("neighbours_lost", 0), "timeouts": c.get("timeouts", 0),
                  "assign": c["messages"].get("agg_assign", {}).get("received", 0),
                  "agg": c["messages"].get("agg_request", {}).get("received", 0),
                  "refused": dict(c["refused"]), "malformed": c.get("malformed", 0),
                  "drops": dict(st["drops"]),
                  "neighbours": sorted(nb["name"] for nb in c["allocations"]["neighbours"])}
    return out


def _delta(after: dict, before: dict) -> dict:
    return {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0)}


def test_a_vli0_flood_costs_no_neighbour_and_no_exchange(make_lab, tmp_path):
    lab = make_lab(topology(one_key(tmp_path)))
    everyone = {"x": ["v", "y"], "y": ["v", "x"], "v": ["x", "y"]}
    eventually(lambda: lab.control("x", "alloc")["vbm_peer"] and
               lab.control("y", "alloc")["vbm_peer"] and
               lab.control("v", "alloc")["vbm"]["state"] == "ACTIVE", 30,
               "x and y to hear the VBM and the VBM to finish rebuilding")
    eventually(lambda: {n: s["neighbours"] for n, s in _state(lab).items()}, 15,
               "every node to hear the others", until=lambda got: got == everyone)
    # a managed virtual link pair x -> y: the Traffic Managers report to the VBM every second
    r = vnetctl(lab, "x", "vlink", "add", "lan", "blue", "f0", "--peer", "y",
                "--min", "1Mbit", "--max", "5Mbit", timeout=30)
    assert r.returncode == 0, r.stderr + lab.log_tail("x") + lab.log_tail("y")
    eventually(lambda: _state(lab), 15, "x and y to hear from the VBM",
               until=lambda st: st["x"]["assign"] and st["y"]["assign"])
    # e's random source MACs must not fill the switch's table (nor move x's, y's, v's)
    port = next(ln.b.ifname for ln in lab.topo.links if ln.a.node == "e")
    lab.exec("sw", ["bridge", "link", "set", "dev", port, "learning", "off"], check=True)
    cfg = tmp_path / "flood.cfg"
    _trafgen_cfg(lab, cfg)
    before = _state(lab)

    out = tmp_path / "trafgen.out"
    with open(out, "w") as log:
        gen = lab.popen("e", ["timeout", "-s", "INT", str(FLOOD_SECONDS), "trafgen", "-o", "e0",
                              "-i", str(cfg), "-P", "1", "--no-sock-mem", "-Q", "-C"],
                        stdout=log, stderr=subprocess.STDOUT)
    try:
        eventually(lambda: sum(_delta(_state(lab)["v"]["refused"],
                                      before["v"]["refused"]).values()) > 1000, 10,
                   "the flood to reach v's control plane")
        started = _state(lab)
        # requests during the flood: a virtual link pair x -> y set up, and the Traffic
        # Managers' reports (every second) answered by the VBM
        r = vnetctl(lab, "x", "vlink", "add", "lan", "red", "f1", "--peer", "y",
                    "--min", "1Mbit", "--max", "5Mbit", timeout=30)
        assert r.returncode == 0, r.stderr + lab.log_tail("x") + lab.log_tail("y")
        during = eventually(lambda: _state(lab), FLOOD_SECONDS, "reports answered",
                            until=lambda st: all(st[n]["assign"] > started[n]["assign"]
                                                 for n in "xy")
                            and st["v"]["agg"] > started["v"]["agg"])
        flooding = gen.poll() is None
    finally:
        gen.wait(timeout=FLOOD_SECONDS + 30)
    assert gen.returncode in (0, 124), f"trafgen failed ({gen.returncode}): " \
                                       f"{out.read_text()[-1000:]}"
    assert flooding, "the flood ended before the exchanges it should disturb were read"
    after = _state(lab)
    report = {n: {"refused": _delta(after[n]["refused"], before[n]["refused"]),
                  "drops": _delta(after[n]["drops"], before[n]["drops"]),
                  "malformed": after[n]["malformed"] - before[n]["malformed"]} for n in "xyv"}
    print(report)
    for n in "xyv":
        assert after[n]["lost"] == before[n]["lost"], (n, report, lab.log_tail(n))
        assert after[n]["timeouts"] == before[n]["timeouts"], (n, report, lab.log_tail(n))
        assert after[n]["neighbours"] == everyone[n], (n, after[n]["neighbours"])
    assert during["x"]["timeouts"] == before["x"]["timeouts"]
    assert {"f0", "f1"} <= {d["name"] for d in lab.control("y", "alloc")["dynamic"]}
    # the flood's frames, counted by reason on every receiver
    for n in "xyv":
        got = report[n]
        assert got["refused"].get("unauthenticated", 0) > 0, (n, got)       # unsealed
        assert got["refused"].get("bad_mac", 0) > 0, (n, got)               # forged
        assert got["drops"].get("control", 0) > 0, (n, got)     # no message, or refused
    assert any(report[n]["drops"].get("control_other", 0) +
               report[n]["drops"].get("control_source", 0) > 0 for n in "xyv"), report
