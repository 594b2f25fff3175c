"""Calibration of lab switch ports (``[[switch]] port_rate``, ``priority_queues``;
``vnet_router/lab/switching.py``): a port at 100 Mbit/s carries 95-105 Mbit/s of one flow, and
under a flood above the port rate PCP 5 frames leave before PCP 0 frames -- with priority
queues; without them (the control) the PCP 5 flow suffers as much as the rest.

Three plain nodes on one switch, no vnet daemon (one tier).  The flood is untagged UDP
(iperf3, legacy traffic: PCP 0) from h2 at twice the port rate into h3's port; the probes are
tagged frames (``pcp_probe.py``: raw sockets, one-way delay from CLOCK_MONOTONIC) from h1 at a
modest rate, one flow at PCP 5 and one at PCP 0, both to h3.
"""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import topo as t
from harness import eventually, iperf_server

from vnet_router.lab import switching

pytestmark = [pytest.mark.root, pytest.mark.one_tier]
PROBE = str(Path(__file__).with_name("pcp_probe.py"))
RATE = "100Mbit"


def _topo(priority_queues: bool) -> t.Topo:
    return t.topology(
        t.lab(keys=False),
        t.Topo(switch=[{"name": "sw", "port_rate": RATE, "priority_queues": priority_queues}]),
        *(t.node(h, addresses={"eth0": [f"10.77.0.{i}/24"]})
          for i, h in enumerate(("h1", "h2", "h3"), 1)),
        *(t.link(f"{h}:eth0", "sw") for h in ("h1", "h2", "h3")))


def test_port_rate_holds_for_one_flow(make_lab):
    lab = make_lab(_topo(priority_queues=True))
    stats = lab.switch_stats("sw")
    assert stats["h3-eth0"]["rate"] == 100_000_000
    assert stats["h3-eth0"]["queue"] == "pfifo_fast"
    # UDP at 1.5x the port rate, 1472-byte datagrams (1514-byte frames); measured at the
    # receiver's interface (its frame bytes; the port counts the same header) over 2 s while
    # the port drops, so a receiving program that falls behind does not count
    server = iperf_server(lab, "h3", "10.77.0.3", 5201)
    client = lab.popen("h1", ["iperf3", "-c", "10.77.0.3", "-u", "-b", "150M", "-l", "1472",
                              "-t", "5"], stdout=subprocess.DEVNULL)
    eventually(lambda: lab.switch_stats("sw")["h3-eth0"]["drops"] > 0, 10,
               "h1's flow to overflow h3's port")
    t0, b0 = _rx_bytes(lab, "h3")
    eventually(lambda: time.monotonic() - t0 >= 2, 10, "2 s of the flow")
    t1, b1 = _rx_bytes(lab, "h3")
    running = client.poll() is None
    client.send_signal(signal.SIGINT)   # -t 5 only bounds the flow: measured (iperf3 tells
    client.wait(timeout=30)             # its server)
    server.wait(timeout=10)
    assert running, "the flow ended before the measurement did"
    frames = (b1 - b0) * 8 / (t1 - t0) / 1e6
    print(f"one UDP flow through a {RATE} port: {frames:.2f} Mbit/s of frames received, "
          f"{frames * 1472 / 1514:.2f} Mbit/s of UDP payload")
    assert 95 <= frames <= 105, f"{frames:.2f} Mbit/s through a {RATE} port"


def _rx_bytes(lab, node: str) -> tuple[float, int]:
    """(when, bytes received by ``node``'s eth0): the counter read half way through the call."""
    before = time.monotonic()
    r = lab.exec(node, ["cat", "/sys/class/net/eth0/statistics/rx_bytes"], check=True)
    return (before + time.monotonic()) / 2, int(r.stdout)


def _mixed_load(lab) -> dict:
    """Flood h3's port from h2 (untagged UDP, 200 Mbit/s) and, once the port drops frames,
    send PCP 5 and PCP 0 probes from h1 (4 Mbit/s each); what h3 received of each."""
    h3_mac = lab.mac("h3", "eth0")
    server = iperf_server(lab, "h3", "10.77.0.3", 5202)
    flood = lab.popen("h2", ["iperf3", "-c", "10.77.0.3", "-p", "5202", "-u", "-b", "200M",
                             "-l", "1472", "-t", "6", "--pacing-timer", "100"], stdout=subprocess.DEVNULL)
    eventually(lambda: lab.switch_stats("sw")["h3-eth0"]["drops"] > 0, 10,
               "the flood to overflow h3's port")
    recv = lab.popen("h3", [sys.executable, PROBE, "recv", "eth0", "3.5"],
                     stdout=subprocess.PIPE, text=True)
    assert recv.stdout.readline().strip() == "ready"
    senders = {pcp: lab.popen("h1", [sys.executable, PROBE, "send", "eth0", h3_mac, str(pcp),
                                     "500", "2", "1000"], stdout=subprocess.PIPE, text=True)
               for pcp in (5, 0)}
    before = lab.switch_stats("sw")["h3-eth0"]
    sent = {pcp: json.loads(p.communicate(timeout=30)[0])["sent"]
            for pcp, p in senders.items()}
    after = lab.switch_stats("sw")["h3-eth0"]
    print("port h3-eth0 while probing:", {k: after[k] - before[k] for k in
                                          ("sent_packets", "drops", "sent_bytes")})
    got = json.loads(recv.communicate(timeout=30)[0])
    flood.send_signal(signal.SIGINT)    # -t 6 only bounds the flood: the probes are done
    flood.wait(timeout=30)
    server.wait(timeout=10)
    out = {}
    for pcp in (5, 0):
        g = got.get(str(pcp), {"received": 0, "median_ms": None, "p90_ms": None})
        out[pcp] = dict(g, sent=sent[pcp], loss=1 - g["received"] / sent[pcp])
        print(f"PCP {pcp}: {g['received']}/{sent[pcp]} received, "
              f"delay median {g['median_ms']} ms, p90 {g['p90_ms']} ms")
    return out


def test_pcp5_leaves_before_pcp0_under_a_flood(make_lab):
    lab = make_lab(_topo(priority_queues=True))
    r = _mixed_load(lab)
    assert r[5]["loss"] < 0.01, r                       # PCP 5 loses ~nothing
    assert r[0]["loss"] > 0.2, r                        # PCP 0 shares the flood's drops
    assert r[5]["median_ms"] * 3 < r[0]["median_ms"], r  # and waits behind it


def test_without_priority_queues_pcp5_suffers(make_lab):
    lab = make_lab(_topo(priority_queues=False))
    assert lab.switch_stats("sw")["h3-eth0"]["queue"] == "pfifo"
    r = _mixed_load(lab)
    assert r[5]["loss"] > 0.2, r                        # one FIFO: PCP 5 is dropped too
    assert r[5]["median_ms"] > r[0]["median_ms"] / 3, r  # and waits as long as PCP 0


def test_classifier_reads_inline_tags():
    """The program at each port's ingress, run on frames whose tag is still inline (the
    offloaded tag is what the lab's veth ports see: the tests above)."""
    from vnet_router.ops import ebpf
    prog = switching.load_classifier()
    try:
        dst_src = bytes.fromhex("020000000001020000000002")
        for pcp in range(8):
            frame = dst_src + (0x8100).to_bytes(2, "big") + ((pcp << 13) | 100).to_bytes(
                2, "big") + (0x88B5).to_bytes(2, "big") + bytes(50)
            ctx = bytearray(ebpf.SKB_CTX_SIZE)
            verdict, _out, _ns = prog.test_run(frame, ctx_out=ctx)
            assert verdict == 0                                  # TC_ACT_OK
            assert _band(int.from_bytes(ctx[32:36], "little")) == switching.PCP_BAND[pcp], pcp
        ctx = bytearray(ebpf.SKB_CTX_SIZE)
        prog.test_run(dst_src + (0x0800).to_bytes(2, "big") + bytes(50), ctx_out=ctx)
        assert _band(int.from_bytes(ctx[32:36], "little")) == 1        # untagged: best effort
    finally:
        prog.close()


def _band(priority: int) -> int:
    """pfifo_fast's band for ``priority`` (its fixed priomap)."""
    return [1, 2, 2, 2, 1, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1][priority & 15]
