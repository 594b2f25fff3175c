"""Drops: the compiled engine counts them in C (no Python call per frame) and hands them to the
core at a sync, as the reference counts them frame by frame; a table swap loses none; ``show``
and the metrics break them down by vNet and reason."""
import io

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from test_datapath_diff import (IF0, IF1, IMPLS, ME0, ME1, P1, P3, Q, UDP, UDP_LOCAL, UDP_REMOTE,
                                Rig, fast_mod, inner, ref_mod, run, sub)
from vnet_router.cli import vnetctl
from vnet_router.node.status import status
from vnet_router.ops import render
from vnet_router.ops.metrics import Collector
from vnet_router.wire import substrate as wire

T10, T20, T30 = wire.VlanTag(10, 5), wire.VlanTag(20), wire.VlanTag(30)
SHORT = (IF0, b"\x01" * 13, None)                                   # of no link
UNKNOWN_VLI = (IF0, sub(ME0, P1, 555, b"x" * 60, T10), None)        # on p1, of no virtual link
VLI_DROP = (IF0, sub(ME0, P1, 66, b"x" * 60, T10), None)            # p1 VLI 66: vNet "-"
FRAMES = [
    SHORT, UNKNOWN_VLI, VLI_DROP,
    (IF0, sub(ME0, P3, 100, b"x" * 60, T20), None),                 # tap_error: blue, no TAP
    (IF1, sub(ME1, Q, 11, b"\x02" * 597, T30), None),               # too_big: gold q -> p3
    (UDP, b"\x07", UDP_REMOTE),                                     # short (UDP)
    (UDP, wire.pack_udp(555, b"x" * 20), UDP_REMOTE),               # unknown_vli on t
] + [(IF0, sub(ME0, P1, 100, b"\x66" * 1200), T10.tci)] * 8        # 6KB bucket: policed
WANT = {("-", "vli_drop"): 1, ("blue", "tap_error"): 1, ("gold", "too_big"): 1,
        ("blue", "policed"): 3}


def _shown(st) -> list[str]:
    """``vnetctl show``'s lines (plain: into a pipe)."""
    buf = io.StringIO()
    render.write(buf, *vnetctl.show_view(st))
    return buf.getvalue().splitlines()


def _python_drops(rig) -> int:
    return (sum(rig.tables.drops.values()) + sum(rig.dp.vnet_drops.values()) +
            sum(sum(c.state.drops.values()) for c in rig.dp.snap.links.values()) +
            sum(sum(v.drops.values()) for v in rig.tables.vlinks.values()))


@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
def test_compiled_drops_wait_in_c_for_the_sync_then_equal_the_references():
    rig = Rig(fast_mod)
    try:
        for x in FRAMES:
            rig.eth(*x)
        assert _python_drops(rig) == 0          # counted in C: no Python call per drop
        got = rig.counters()                    # flush: the sync
        assert rig.counters() == got            # a second sync adds nothing
    finally:
        rig.close()
    want = run(ref_mod, frames=FRAMES, taps=False)[1]
    assert got == want
    assert got["vnet_drops"] == WANT
    assert got["drops"]["short"] == 2 and got["links"]["p1"][4] == {
        "unknown_vli": 1, "vli_drop": 1, "policed": 3}


class _FeedOnGet(dict):
    """``dp.tx`` whose first ``get`` (the compile of the next table reads it) runs ``feed``:
    frames the engine takes while the next table compiles, as the ring thread may."""

    def __init__(self, d, feed):
        super().__init__(d)
        self.feed = [feed]

    def get(self, *args):
        if self.feed:
            self.feed.pop()()
        return super().get(*args)


@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
def test_a_table_swap_loses_no_drop():
    """Drops counted in a table before it is replaced, and while the next one compiles, are
    all in the counters after the swap (three tables, the same three drops in each)."""
    three = (SHORT, UNKNOWN_VLI, VLI_DROP)
    rig = Rig(fast_mod)
    try:
        dp = rig.dp
        for x in three:                         # table 1, synced by the reload's flush
            rig.eth(*x)
        dp.install(rig.tables.compile())
        dp.tx = _FeedOnGet(dp.tx, lambda: [rig.eth(*x) for x in three])
        dp.install(rig.tables.compile())        # table 2 counts while table 3 compiles
        assert not dp.tx.feed
        dp.tx = dict(dp.tx)
        assert sum(dp.drops.values()) == 6      # the swap synced table 2 after the compile
        for x in three:                         # table 3
            rig.eth(*x)
        cnt = rig.counters()
    finally:
        rig.close()
    assert cnt["drops"]["short"] == cnt["drops"]["unknown_vli"] == cnt["drops"]["vli_drop"] == 3
    assert cnt["links"]["p1"][4] == {"unknown_vli": 3, "vli_drop": 3}
    assert cnt["vlinks"][("p1", 66, "in")][2] == {"vli_drop": 3}
    assert cnt["vnet_drops"] == {("-", "vli_drop"): 3}


@pytest.mark.parametrize("make", IMPLS)
def test_show_and_metrics_break_drops_down_by_vnet_and_reason(make):
    rig = Rig(make)
    try:
        for x in FRAMES:
            rig.eth(*x)
        rig.dp.flush()
        st = status(rig.tables.config, rig.tables, rig.dp, 0.0)
        reg = CollectorRegistry()
        reg.register(Collector(lambda: st))
        text = generate_latest(reg).decode()
    finally:
        rig.close()
    assert st["vnet_drops"] == {"-": {"vli_drop": 1}, "blue": {"policed": 3, "tap_error": 1},
                                "gold": {"too_big": 1}}
    out = _shown(st)
    at = out.index('drops by vNet ("-": a VLI configured to drop)')
    assert [line.split() for line in out[at + 1:at + 6]] == [
        ["vnet", "reason", "frames"], ["-", "vli_drop", "1"], ["blue", "policed", "3"],
        ["blue", "tap_error", "1"], ["gold", "too_big", "1"]]
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    got = {(s.labels["vnet"], s.labels["reason"]): s.value
           for s in fams["vnet_vnet_drops"].samples if s.name == "vnet_vnet_drops_total"}
    assert got == WANT


def test_show_prints_no_vnet_table_without_vnet_drops():
    st = {"node": "n", "config": "c", "generation": 1, "datapath": "fast",
          "uptime_seconds": 1.0, "substrate_links": [], "virtual_links": [],
          "logical_interfaces": [], "drops": {"short": 2}, "vnet_drops": {}}
    out = _shown(st)
    assert "drops: short=2" in out and not [line for line in out if "by vNet" in line]


@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
def test_an_icmp_error_an_earlier_datagram_drew_costs_the_next_frame_nothing():
    """A connected UDP socket reports the ICMP port-unreachable an earlier datagram drew (the
    remote restarting, or not bound yet at start) on its *next* send, which the kernel then
    does not send. The engine retries that frame once: it arrives, and no ``send_error`` is
    counted for a frame the remote was ready for (seen in CI as one on a lab's tunnel)."""
    import socket
    from vnet_router.datapath import _fastpath
    rig = Rig(fast_mod)
    try:       # the link's connected socket, as the engine opens it when it starts its rings
        conn = _fastpath._connected_udp(UDP_LOCAL, UDP_REMOTE)
        rig.socks.append(conn)
        rig.dp.engine.udp_conn[(UDP_LOCAL, UDP_REMOTE)] = conn
        rig.dp.install(rig.tables.compile())
        peer = rig.peers[("udp", "t")]
        peer.close()                                # the remote's port closes ...
        rig.tap("b4", [inner(n=60)])                # ... this datagram draws a port-unreachable
        rig.dp.flush()
        again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(UDP_REMOTE)                      # ... and the remote is back
        again.settimeout(5)
        rig.socks.append(again)
        rig.tap("b4", [inner(n=61)])
        rig.dp.flush()
        got = again.recv(70000)
        assert wire.parse_udp(memoryview(got)) == 7 and got[2:] == inner(n=61), got[:8]
        vl = rig.counters()["vlinks"][("t", 7, "out")]
        assert vl[2] == {}, vl                      # no send_error
        assert vl[0] == 2, vl                       # both frames counted as sent
    finally:
        rig.close()
