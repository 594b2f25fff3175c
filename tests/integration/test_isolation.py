"""Isolation under overload (issue 27): a flood in one vNet costs the other vNets nothing.

g and r are routers on one p2p substrate link (VLAN 10), each hosting vNets ``a`` (VLI 100) and
``b`` (VLI 200).  While a ping stream runs in ``b`` from g to r, trafgen in g's root namespace
floods r's substrate interface with valid frames of ``a`` (to r's TAP a0, whose stack
discards them: their inner EtherType is 0x88B6) for FLOOD_SECONDS; r's daemon is stopped for
STALL seconds in the middle, so a ring overflows for certain, whatever the machine's speed
(as in test_accounting).  Then, on the datapaths that classify in the kernel ("fast" and
"kernel"):

* every echo request of ``b`` sent before the stream is stopped is answered (no gap): ``b``'s
  frames have a ring of their own, which the flood never fills;
* r lost frames of ``a`` to the overload, and counted every one of them under ``a``
  (``ring_full`` of vNet ``a``): none under ``b``;
* frames of ``a`` garbled in flight are the classifier's (a second trafgen sends frames with
  an unknown VLI, from a stranger's MAC on the VLAN, and VLI 0 frames from the peer that are
  no control message): counted by reason, at r's kernel, and ``b`` still loses nothing.

Without the classifier (tried: the engine reading one ring per interface) b lost 20 echo
requests in a row during the stall and a's losses were counted globally only.  The counters
are read once they stop moving; waits are on observed state (the ping's output,
counters), never a fixed sleep but the stall (our own input).  Numbers are printed
(``pytest -s``) and are in every failure message.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess

import pytest

import topo as t
from harness import eventually
from test_accounting import (FLOOD_SECONDS, NO_IPV6, _check_datapath, _delta, _link_stats,
                             _nonzero, _on, _settled, _show, _stall)
from vnet_router.wire import substrate as wire

pytestmark = [pytest.mark.root, pytest.mark.one_tier,
              pytest.mark.skipif(shutil.which("trafgen") is None,
                                 reason="trafgen missing (apt-get install netsniff-ng)")]

A_VLI, B_VLI = 100, 200
PING_INTERVAL = 0.02
STRANGER = "02:ee:00:00:00:01"

ISOLATION = (
    t.link("g:e0", "r:e0")
    + t.node("g", t.p2p("p", "e0", "r:e0"), t.vnet("a", 1), t.vnet("b", 2),
             t.iface("a", "a0", "p", A_VLI, addresses=["10.1.0.1/24"]),
             t.iface("b", "b0", "p", B_VLI, addresses=["10.2.0.1/24"]), sysctl=NO_IPV6)
    + t.node("r", t.p2p("p", "e0", "g:e0"), t.vnet("a", 1), t.vnet("b", 2),
             t.iface("a", "a0", "p", A_VLI, addresses=["10.1.0.2/24"]),
             t.iface("b", "b0", "p", B_VLI, addresses=["10.2.0.2/24"]), sysctl=NO_IPV6))


@pytest.fixture(params=["fast", "kernel"])
def datapath(request, monkeypatch):
    monkeypatch.delenv("VNET_DATAPATH", raising=False)
    return request.param


def _frames(lab, path, garbage: bool) -> None:
    """trafgen's frames from g to r on VLAN 10: a's (valid), or garbage (an unknown VLI, a's
    VLI from a MAC that is not g's, and a VLI 0 frame from g whose payload is no control
    message)."""
    inner = (wire.mac_to_bytes("02:a0:00:00:00:aa") + wire.mac_to_bytes("02:a0:00:00:00:bb")
             + b"\x88\xb6")
    payload = inner + bytes(46 - len(inner))
    dst, src = wire.mac_to_bytes(lab.mac("r", "e0")), wire.mac_to_bytes(lab.mac("g", "e0"))
    if garbage:
        frames = [wire.pack_eth(dst, src, 999, payload, wire.VlanTag(10)),
                  wire.pack_eth(dst, wire.mac_to_bytes(STRANGER), A_VLI, payload,
                                wire.VlanTag(10)),
                  wire.pack_eth(dst, src, 0, b"\xa5" * 46, wire.VlanTag(10))]
    else:
        frames = [wire.pack_eth(dst, src, A_VLI, payload, wire.VlanTag(10))]
    path.write_text("".join("{ " + ", ".join(f"0x{b:02x}" for b in f) + " }\n"
                            for f in frames))


def _seqs(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"icmp_seq=(\d+)", text)]


def _counts(lab) -> dict:
    st = _show(lab, "r")
    return {"drops": dict(st["drops"]), "vnet": {v: dict(d) for v, d in
                                                 st.get("vnet_drops", {}).items()},
            "kernel_frames": st["datapath_stats"]["kernel_frames"]}   # not the ping's: stable


def _flood(lab, tmp_path, name: str, garbage: bool, stall: bool):
    cfg = tmp_path / f"{name}.cfg"
    _frames(lab, cfg, garbage)
    out = tmp_path / f"{name}.out"
    before = _link_stats(lab, "r", "e0")["rx"]["packets"]
    with open(out, "w") as log:
        gen = lab.popen("g", ["timeout", "-s", "INT", str(FLOOD_SECONDS), "trafgen", "-o", "e0",
                              "-i", str(cfg), "-P", "1", "--no-sock-mem", "-Q", "-C"],
                        stdout=log, stderr=subprocess.STDOUT)
    eventually(lambda: _link_stats(lab, "r", "e0")["rx"]["packets"] - before > 10_000, 10,
               f"the {name} flood to reach r")
    if stall:
        _stall(lab, "r")
    gen.wait(timeout=FLOOD_SECONDS + 30)
    assert gen.returncode in (0, 124), f"trafgen failed ({gen.returncode}): " \
                                       f"{out.read_text()[-1000:]}"
    return _link_stats(lab, "r", "e0")["rx"]["packets"] - before


def test_a_flood_in_one_vnet_costs_the_other_nothing(make_lab, datapath, tmp_path):
    lab = make_lab(_on(ISOLATION, datapath))
    _check_datapath(lab, datapath)
    assert _show(lab, "r")["datapath_stats"].get("classified") == 1, "no classifier on r"
    eventually(lambda: lab.ping("g", "10.2.0.2", vnet="b", count=1).received == 1, 20,
               "b to answer")

    ping_out = tmp_path / "ping-b.txt"
    ping = lab.popen("g", ["ping", "-n", "-i", str(PING_INTERVAL), "10.2.0.2"], vnet="b",
                     stdout=open(ping_out, "w"), stderr=open(tmp_path / "ping-b.err", "w"))
    try:
        eventually(lambda: len(_seqs(ping_out.read_text())) >= 10, 20,
                   "the ping stream in b to get 10 replies")
        before = _settled(lambda: _counts(lab), "r's counters before the flood")
        seen = {"flood": _flood(lab, tmp_path, "flood", garbage=False, stall=True)}
        seen["garbage"] = _flood(lab, tmp_path, "garbage", garbage=True, stall=False)
        last = max(_seqs(ping_out.read_text()))
        eventually(lambda: max(_seqs(ping_out.read_text())) >= last + 10, 20,
                   "the ping stream in b to go on after the floods")
    finally:
        ping.send_signal(signal.SIGINT)
        ping.wait(timeout=10)
    after = _settled(lambda: _counts(lab), "r's counters after the flood")

    seqs = _seqs(ping_out.read_text())
    missing = sorted(set(range(seqs[0], max(seqs) + 1)) - set(seqs))
    drops = _nonzero(_delta(after["drops"], before["drops"]))
    a = _nonzero(_delta(after["vnet"].get("a", {}), before["vnet"].get("a", {})))
    b = _nonzero(_delta(after["vnet"].get("b", {}), before["vnet"].get("b", {})))
    numbers = (f"[{datapath}] r's kernel saw {seen}; b's pings {len(seqs)} answered, "
               f"missing {missing[:20]}{'...' if len(missing) > 20 else ''}; r's drops "
               f"{drops}; of vNet a {a}; of vNet b {b}")
    print(numbers)
    assert not missing, f"b lost pings to a's flood: {numbers}"
    assert not b, f"b's frames dropped: {numbers}"
    assert a.get("ring_full", 0) > 0, f"a's overload not counted under a: {numbers}"
    # the garbage: ended at r's kernel by the classifier, counted by reason; the VLI 0
    # frames too, though they come from the peer, and before its control budget
    assert drops.get("unknown_vli", 0) > 1000 and drops.get("bad_peer", 0) > 1000, numbers
    assert drops.get("control", 0) > 1000 and "control_policed" not in drops, numbers
    assert after["kernel_frames"] - before["kernel_frames"] >= \
        drops["unknown_vli"] + drops["bad_peer"] + drops["control"], numbers
