"""Every frame accounted (issue 11), on each datapath ("reference" and "fast", the config key
``datapath`` of every router in the lab).

1. TCP through a pass-through path (test_passthrough's a - r1 - r2 - b: r1 swaps VLIs, r2 hosts
   blue's virtual router) for 20 s: neither router drops a frame, under any reason (the drop
   counters of ``vnetctl show --json`` before and after).
2. An overload flood of valid substrate frames into r's substrate interface e0 for 5 s (trafgen
   in the generator's namespace g, 68-byte frames, in turn switched from VLI 100 of link
   ``west`` to VLI 200 of link ``east`` and delivered to the TAP t0 from VLI 101; r's daemon is
   stopped for half a second in the middle, so its ring or socket buffer overflows for
   certain): every frame the kernel saw on e0 (its rx_packets; IPv6 is off in g, r and s, so
   no ND/MLD frame adds to it) is counted by the router -- the substrate link's rx_packets plus
   the drops not attached to any link (every reason present in the JSON, so ``ring_full``,
   frames the kernel could not put into the ring or socket buffer, is summed once the router
   has it) -- within 0.1%.

Counters are compared once they stopped moving (``_settled``), never after a fixed sleep.  The
numbers are printed (``pytest -s``) and are in every failure message.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

import topo as t
from harness import eventually, iperf_run, vnetctl
from test_passthrough import PASSTHROUGH
from vnet_router.wire import substrate as wire

pytestmark = [pytest.mark.root, pytest.mark.one_tier]

NO_IPV6 = {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1}


@pytest.fixture(params=["reference", "fast", "kernel"])
def datapath(request, monkeypatch):
    """The datapath every router of the lab is configured with (VNET_DATAPATH would override
    the config key: not set)."""
    monkeypatch.delenv("VNET_DATAPATH", raising=False)
    return request.param


def _on(topo: t.Topo, datapath: str) -> t.Topo:
    """``topo`` with ``datapath`` in the ``[node]`` table of every router."""
    out = copy.deepcopy(topo)
    for n in out["node"]:
        if "router" in n:
            n["router"].setdefault("node", {})["datapath"] = datapath
    return out


def _show(lab, node: str) -> dict:
    r = vnetctl(lab, node, "show", "--json", timeout=30)
    assert r.returncode == 0, f"vnetctl show on {node}: {r.stderr}"
    return json.loads(r.stdout)


def _check_datapath(lab, datapath: str):
    running = {n: lab.control(n)["datapath"] for n in lab.daemons}
    assert set(running.values()) == {datapath}, running


def _settled(read, what: str, timeout: float = 20.0):
    """``read()`` once two reads half a second apart agree (the counters stopped moving)."""
    last = [object()]

    def step():
        now = read()
        same, last[0] = now == last[0], now
        return same, now
    return eventually(step, timeout, f"{what} to stop moving", step=0.5,
                      until=lambda v: v[0])[1]


def _delta(after: dict, before: dict) -> dict:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))}


def _nonzero(d: dict) -> dict:
    return {k: n for k, n in d.items() if n}


# -- 1. TCP through a pass-through path: no drop ------------------------------------------------

ROUTERS = ("r1", "r2")


def _drops(lab, node: str) -> dict:
    """Drop counters of ``node``: globally by reason, and per substrate link."""
    st = _show(lab, node)
    return {"global": dict(st["drops"]),
            "links": {s["id"]: dict(s["drops"]) for s in st["substrate_links"]}}


def _drop_delta(after: dict, before: dict) -> dict:
    return {"global": _delta(after["global"], before["global"]),
            "links": {lid: _nonzero(_delta(d, before["links"].get(lid, {})))
                      for lid, d in after["links"].items()}}


def test_tcp_through_a_passthrough_path_drops_nothing(make_lab, datapath):
    lab = make_lab(_on(PASSTHROUGH, datapath))
    _check_datapath(lab, datapath)
    before = {n: _settled(lambda n=n: _drops(lab, n), f"{n}'s drop counters") for n in ROUTERS}
    report = iperf_run(lab, "a", "b", "10.9.2.2", 5201, 20, vnet="blue")
    assert "error" not in report, report["error"]
    after = {n: _settled(lambda n=n: _drops(lab, n), f"{n}'s drop counters") for n in ROUTERS}

    received = report["end"]["sum_received"]
    retransmits = report["end"]["sum_sent"].get("retransmits")
    deltas = {n: _drop_delta(after[n], before[n]) for n in ROUTERS}
    dropped = {n: _nonzero(deltas[n]["global"]) for n in ROUTERS}
    numbers = (f"[{datapath}] iperf3 a->b 20 s: {received['bytes']} bytes received, "
               f"{received['bits_per_second'] / 1e6:.1f} Mbit/s, {retransmits} retransmits; "
               + "; ".join(f"{n} drops by reason {dropped[n] or '{}'} (per link "
                           f"{ {k: v for k, v in deltas[n]['links'].items() if v} })"
                           for n in ROUTERS))
    print(numbers)
    assert received["bytes"] > 1_000_000, f"iperf3 moved next to nothing: {numbers}"
    assert all(n == 0 for node in ROUTERS for n in deltas[node]["global"].values()), \
        f"frames dropped on the pass-through path: {numbers}; every reason's delta: " \
        f"{ {n: deltas[n]['global'] for n in ROUTERS} }"


# -- 2. An overload flood: every frame the kernel saw is counted --------------------------------

FLOOD_SECONDS = 5
PAYLOAD = 46            # 68-byte frames (14 + tag 4 + VLI/LEN 4 + 46): as many as trafgen can
SWITCHED, DELIVERED = 100, 101      # the VLIs of west the flood alternates between
STALL = 0.5                         # s the router is stopped during the flood (_stall)

FLOOD = (
    t.link("g:e0", "r:e0") + t.link("r:e1", "s:e0")
    # g (the generator) and s (the sink) run no router: s's kernel discards what r switches;
    # no path MTU notices on r (no neighbour would answer: each start waited 2.25 s for none)
    + t.node("g", sysctl=NO_IPV6) + t.node("s", sysctl=NO_IPV6)
    + t.node("r", t.p2p("west", "e0", "g:e0"), t.p2p("east", "e1", "s:e0", vlan=20),
             t.vnet("blue", 1), t.switch("blue", "west", SWITCHED, "east", 200),
             t.iface("blue", "t0", "west", DELIVERED, 102), sysctl=NO_IPV6,
             settings={"path_mtu_interval": 0}))


def _link_stats(lab, node: str, ifname: str) -> dict:
    r = lab.exec(node, ["ip", "-s", "-j", "link", "show", "dev", ifname], timeout=20)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["stats64"]


def _accounting(lab) -> dict:
    """What r's kernel saw on e0 and what r counted for it (one reading)."""
    kernel = _link_stats(lab, "r", "e0")["rx"]["packets"]
    st = _show(lab, "r")
    links = {s["id"]: s for s in st["substrate_links"]}
    attached = {}
    for s in st["substrate_links"]:
        for reason, n in s["drops"].items():
            attached[reason] = attached.get(reason, 0) + n
    # drops not attached to a link: the global count of a reason minus what the links have
    unattached = {reason: n - attached.get(reason, 0) for reason, n in st["drops"].items()}
    tap = next(p for p in st["logical_interfaces"] if p["name"] == "t0")
    return {"kernel": kernel, "rx": links["west"]["rx_packets"],
            "unattached": unattached, "drops": dict(st["drops"]),
            "west_drops": dict(links["west"]["drops"]),
            "switched": links["east"]["tx_packets"], "east_drops": dict(links["east"]["drops"]),
            "delivered": tap["tx_packets"]}


def _trafgen_cfg(lab, path) -> None:
    """Two valid frames from g to r on west (VLAN 10), sent in turn: one switched (VLI 100),
    one delivered to t0 (VLI 101; its payload an Ethernet frame of EtherType 0x88B6 to a MAC
    that is not t0's, which blue's stack discards)."""
    inner = (wire.mac_to_bytes("02:b0:00:00:00:aa") + wire.mac_to_bytes("02:b0:00:00:00:bb")
             + b"\x88\xb6")
    payload = inner + bytes(PAYLOAD - len(inner))
    dst, src = wire.mac_to_bytes(lab.mac("r", "e0")), wire.mac_to_bytes(lab.mac("g", "e0"))
    frames = [wire.pack_eth(dst, src, vli, payload, wire.VlanTag(10))
              for vli in (SWITCHED, DELIVERED)]
    path.write_text("".join("{ " + ", ".join(f"0x{b:02x}" for b in f) + " }\n"
                            for f in frames))


def _stall(lab, node: str):
    """Stop ``node``'s daemon for STALL seconds in the middle of the flood.

    The fast datapath nearly keeps pace with trafgen over veth (on a 2-core machine about
    1 Mpps each way: in some runs the flood alone did not overflow its ring, with one or
    with two generator processes), so without this the overload would be left to chance.
    A stopped router reads nothing while the flood goes on: its ring (or, on the reference,
    its socket buffer) overflows for certain, whatever its speed."""
    pid = lab.daemons[node].pid             # nsenter execs the daemon: this is the daemon
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"vnet_router.node.daemon" in f.read()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(STALL)                   # times our own input: how long the router stalls
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.mark.skipif(shutil.which("trafgen") is None,
                    reason="trafgen missing (apt-get install netsniff-ng)")
def test_every_frame_of_an_overload_flood_is_counted(make_lab, datapath, tmp_path):
    lab = make_lab(_on(FLOOD, datapath))
    _check_datapath(lab, datapath)
    cfg = tmp_path / "flood.cfg"
    _trafgen_cfg(lab, cfg)
    before = _settled(lambda: _accounting(lab), "r's counters before the flood")
    g_before = _link_stats(lab, "g", "e0")["tx"]

    # one generator process; leave socket memory and IRQ affinity alone; `timeout` times the
    # flood (our own input), SIGINT ends trafgen cleanly
    out = tmp_path / "trafgen.out"
    with open(out, "w") as log:
        gen = lab.popen("g", ["timeout", "-s", "INT", str(FLOOD_SECONDS), "trafgen", "-o", "e0",
                              "-i", str(cfg), "-P", "1", "--no-sock-mem", "-Q", "-C"],
                        stdout=log, stderr=subprocess.STDOUT)
    eventually(lambda: _link_stats(lab, "r", "e0")["rx"]["packets"] - before["kernel"] > 10_000,
               10, "the flood to reach r")
    _stall(lab, "r")
    gen.wait(timeout=FLOOD_SECONDS + 30)
    assert gen.returncode in (0, 124), f"trafgen failed ({gen.returncode}): " \
                                       f"{out.read_text()[-1000:]}"
    after = _settled(lambda: _accounting(lab), "r's counters after the flood")
    g_after = _link_stats(lab, "g", "e0")["tx"]

    offered = (g_after["packets"] - g_before["packets"]
               + g_after.get("dropped", 0) - g_before.get("dropped", 0))
    kernel = after["kernel"] - before["kernel"]
    rx = after["rx"] - before["rx"]
    unattached = _delta(after["unattached"], before["unattached"])
    counted = rx + sum(unattached.values())
    missing = kernel - counted
    d = {k: after[k] - before[k] for k in ("switched", "delivered")}
    numbers = (f"[{datapath}] flood {FLOOD_SECONDS} s: offered {offered} "
               f"({offered / FLOOD_SECONDS / 1e3:.0f} kpps), kernel-seen {kernel}, "
               f"counted {counted} = west rx {rx} + unattached drops "
               f"{sum(unattached.values())}, missing {missing} "
               f"({100 * missing / max(kernel, 1):.3f}%); unattached drops by reason "
               f"{unattached}; all drops by reason "
               f"{_nonzero(_delta(after['drops'], before['drops']))}; west drops "
               f"{_nonzero(_delta(after['west_drops'], before['west_drops']))}; switched to "
               f"east {d['switched']} (east drops "
               f"{_nonzero(_delta(after['east_drops'], before['east_drops']))}), delivered "
               f"to t0 {d['delivered']}")
    print(numbers)
    assert kernel > 10_000, f"the flood did not get going: {numbers}"
    assert d["switched"] > 0 and d["delivered"] > 0, \
        f"the flood's frames were not switched and delivered (not valid?): {numbers}"
    assert abs(missing) <= kernel * 0.001, f"frames not accounted: {numbers}"
