"""Differential tests with a control plane and managed state: VLI 0 frames, meters at the
Traffic Manager's current rate, a fixed neighbour, a kernel-shaped link on its own socket, and
the learned-MAC table under a flood of source MACs -- both engines, same outputs and counters.
(The corpus and the rig are in test_datapath_diff.)"""
import pytest

from test_datapath_diff import (IF0, IF1, IMPLS, ME0, ME1, P1, P2, P3, Q, STRANGER, Rig, ctl,
                                fast_mod, inner, ref_mod, sub)
from vnet_router.wire import control, substrate as wire


# -- with a control plane: VLI 0, meters at the current rate, fixed neighbour, own socket -----

def control_frames():
    """VLI 0 frames: accepted ones (body byte 1) and ones the control plane refuses, on p2p
    links (tag inline and out of band), the multiaccess link and eth1; ones no control plane
    sees (empty, no control header); plus one oversize."""
    t10, t30 = wire.VlanTag(10, 5), wire.VlanTag(30)
    ok, bad = ctl(b"\x01hello" * 5), ctl(b"\xffgarbage" * 4)
    return [
        (IF0, sub(ME0, P1, 0, ok, t10), None), (IF0, sub(ME0, P1, 0, ok), t10.tci),
        (IF0, sub(ME0, P2, 0, bad, t10), None), (IF0, sub(ME0, P2, 0, b"\x01" * 20, t10), None),
        (IF0, sub(wire.BROADCAST_MAC, P3, 0, ok), None), (IF0, sub(ME0, STRANGER, 0, bad), None),
        (IF1, sub(ME1, Q, 0, ok, t30), None), (IF1, sub(ME1, Q, 0, b""), 30),
        (IF0, sub(ME0, P1, 0, b"\x01" * 1497, t10), None),                    # oversize
        (IF0, sub(ME0, P1, 100, inner(n=60), t10), None),                     # data still flows
    ]


def run_control(mod):
    seen = []

    def on_control(ctx, view, start, length):
        seen.append((ctx.id, bytes(view[6:12]), bytes(view[start:start + length])))
        return view[start + control.HEADER_LEN] == 1
    rig = Rig(mod, on_control=on_control)
    rig.dp.set_control_peers({"lan": {P3}})         # a neighbour heard on the LAN
    try:
        for ifindex, frame, tci in control_frames():
            rig.eth(ifindex, frame, tci)
        return seen, rig.outputs(), rig.counters()
    finally:
        rig.close()


@pytest.mark.parametrize("mod", IMPLS)
def test_vli0_frames_go_to_the_control_plane(mod):
    """Known neighbours' frames (p2p and UDP links, and the LAN's known MACs) in arrival
    order, then the rest's (a stranger on the LAN)."""
    seen, out, cnt = run_control(mod)
    assert [(lid, src) for lid, src, _ in seen] == [("p1", P1), ("p1", P1), ("p2", P2),
                                                    ("lan", P3), ("q", Q), ("lan", STRANGER)]
    assert seen[0][2] == ctl(b"\x01hello" * 5)
    assert cnt["drops"]["control"] == 4          # refused twice; empty and headerless unseen
    assert cnt["links"]["p2"][4] == {"control": 2} and cnt["links"]["q"][4] == {"control": 1}
    assert cnt["drops"]["oversize"] == 1
    assert len(out["tap:b1"]) == 1


@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
def test_vli0_same_in_both():
    assert run_control(fast_mod) == run_control(ref_mod)


def run_managed(mod):
    """A dynamic virtual link's fixed neighbour MAC (``VLink.dst``) on the multiaccess link,
    an output shaped by the kernel on its own socket (``kernel_shaped``) and a meter the
    Traffic Manager retunes (``set_rate`` to ``Rate.cur``)."""
    rig = Rig(mod)
    try:
        t = rig.tables
        t.output_vlink("lan", 101).dst = P3          # b2's output: unicast to P3
        t.output_vlink("lan", 8).dst = P2            # switched p1:7 -> lan:8: unicast to P2
        rig.dp.install(t.compile())
        own, own_peer = rig._pair()
        rig.peers[("own", "p2:101")] = own_peer
        rig.dp.kernel_shaped(t.output_vlink("p2", 101), own)     # b5's output, was shaped
        b1in = t.input_vlink("p1", 100)
        b1in.rate = b1in.rate.model_copy(update={"cur": 8000 * 8})            # 8 KB/s, bucket stays 6KB
        rig.dp.set_rate(b1in)
        t10 = wire.VlanTag(10)
        for _ in range(3):
            rig.eth(IF0, sub(ME0, P1, 7, inner(n=80), t10), None)
        rig.tap("b2", [inner(n=60), inner(dst=wire.BROADCAST_MAC)])
        rig.tap("b5", [b"\x77" * 1000] * 9)
        for _ in range(8):
            rig.eth(IF0, sub(ME0, P1, 100, b"\x66" * 1200, t10), None)
        rate = rig.dp.meter_of(b1in.key).rate
        return rate, rig.outputs(), rig.counters()
    finally:
        rig.close()


@pytest.mark.parametrize("mod", IMPLS)
def test_fixed_neighbour_own_socket_and_current_rate(mod):
    rate, out, cnt = run_managed(mod)
    assert rate == 8000.0                                   # bytes/s: follows Rate.cur
    lan = out["if:2"]
    assert [k for k in lan if k[0] == P2] and [k for k in lan if k[0] == P3]
    assert not [k for k in lan if k[0] == wire.BROADCAST_MAC and k[2] in (8, 101)]
    assert len(out["own:p2:101"]) == 9                      # all of b5, on its own socket
    assert not [k for k in lan if k[2] == 101 and k[1] == 10 and k[0] == P2]
    assert cnt["vlinks"][("p2", 101, "out")][:3] == (9, 9000, {})


@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
def test_fixed_neighbour_own_socket_and_current_rate_same_in_both():
    assert run_managed(fast_mod) == run_managed(ref_mod)


# -- the learned-MAC table under a flood of source MACs ----------------------------------------

FLOOD = 10_000


def flood_mac(i):
    return b"\x02\x5e" + i.to_bytes(4, "big")


def flood_outer(i):
    return bytes.fromhex("0200000001") + bytes([i % 7])


def run_flood(mod):
    """10,000 distinct inner source MACs from the LAN to b2 (default cap: 4096); then b2 sends
    to a learned MAC and to a refused one; then, 300 s later, 20 new MACs are learned while
    the flood ages out."""
    now = [100.0]
    rig = Rig(mod, clock=lambda: now[0])
    tap = rig.peers[("tap", "b2")]
    delivered = 0

    def drain():
        nonlocal delivered
        rig.dp.flush()
        while True:
            try:
                tap.recv(70000)
            except BlockingIOError:
                return
            delivered += 1
    try:
        def frame(i):
            rig.eth(IF0, sub(ME0, flood_outer(i), 100, inner(src=flood_mac(i), n=46)), None)
        for i in range(FLOOD):
            frame(i)
            if i % 200 == 199:
                drain()
        drain()
        port = rig.dp.ports[("blue", "b2")]
        after_flood = port.learned.stats()
        rig.tap("b2", [inner(dst=flood_mac(7), n=46), inner(dst=flood_mac(FLOOD - 1), n=46)])
        now[0] += 300.0
        for i in range(FLOOD, FLOOD + 20):
            frame(i)
        drain()
        return delivered, after_flood, rig.outputs(), rig.counters()
    finally:
        rig.close()


@pytest.mark.parametrize("mod", IMPLS)
def test_a_flood_of_source_macs_leaves_at_most_the_cap(mod):
    delivered, st, out, cnt = run_flood(mod)
    assert delivered == FLOOD + 20                 # learning or not, every frame is delivered
    assert st == {"entries": 4096, "max": 4096, "ageing_seconds": 300.0, "learned": 4096,
                  "expired": 0, "overflow": FLOOD - 4096}
    lan = out["if:2"]
    assert len(lan[(flood_outer(7), None, 101)]) == 1                  # learned: unicast
    assert len(lan[(wire.BROADCAST_MAC, None, 101)]) == 1              # refused: broadcast
    learned = cnt["ports"][("blue", "b2")][4]
    assert len(learned) == 20 and learned[flood_mac(FLOOD)] == flood_outer(FLOOD)
    assert cnt["ports"][("blue", "b2")][6] == {
        "entries": 20, "max": 4096, "ageing_seconds": 300.0, "learned": 4096 + 20,
        "expired": 4096, "overflow": FLOOD - 4096}


@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
def test_a_flood_of_source_macs_same_in_both():
    assert run_flood(fast_mod) == run_flood(ref_mod)


# -- the compiled engine's learned-MAC cache -----------------------------------------------------

@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
def test_the_compiled_engine_asks_the_learned_table_once_per_mac_and_interval(monkeypatch):
    """Frames from (and TAP frames to) a MAC the table knows cost no Python call: the engine
    remembers the table's answer for min(1 s, ageing / 10); after that it asks again (so the
    entry is refreshed and stays), and what the table decides is still what goes out."""
    from vnet_router.datapath.learn import LearnTable
    calls = {"learn": 0, "lookup": 0}
    for name in calls:
        real = getattr(LearnTable, name)

        def counted(self, *a, _real=real, _name=name):
            calls[_name] += 1
            return _real(self, *a)
        monkeypatch.setattr(LearnTable, name, counted)
    now = [100.0]
    rig = Rig(fast_mod, clock=lambda: now[0])
    try:
        src = b"\x02\x77\x77\x77\x77\x01"
        for _ in range(50):
            rig.eth(IF0, sub(ME0, P3, 100, inner(src=src)))            # lan -> b2
        learn_calls = calls["learn"]
        rig.tap("b2", [inner(dst=src)] * 20)                           # b2 -> the learned MAC
        lookups = calls["lookup"]
        now[0] += 1.5                                                  # past the cache's second
        rig.eth(IF0, sub(ME0, P3, 100, inner(src=src)))
        rig.tap("b2", [inner(dst=src)])
        out = rig.outputs()
        port = rig.dp.ports[("blue", "b2")]
        entries = dict(port.learned.items())
    finally:
        rig.close()
    assert learn_calls == 1                          # 50 frames, one call (it learned the MAC)
    assert lookups <= 2                              # 20 TAP frames: the table asked once
    assert calls["learn"] == 2                       # the entry is refreshed after the second
    assert entries == {src: P3}
    lan = out["if:2"]
    assert len(lan[(P3, None, 101)]) == 21           # every TAP frame unicast to its outer MAC


# -- a shaper's queue across a recompile, and when its rate is lifted ---------------------------

def run_requeue(mod):
    """p1:13 -> p2:14 is shaped (3 KB burst, queue of 2) and the clock stands still: 3 frames
    go, 2 wait, 1 is queue_full.  A recompile (a reload that keeps the link) keeps the 2
    waiting; lifting the rate sends them at once, in order."""
    from vnet_router.model.config import UNLIMITED
    rig = Rig(mod)
    try:
        t10 = wire.VlanTag(10)
        for k in range(6):
            rig.eth(IF0, sub(ME0, P1, 13, bytes([k]) * 1000, t10))
        v = rig.tables.output_vlink("p2", 14)
        before = rig.counters()["vlinks"][("p2", 14, "out")]
        rig.dp.install(rig.tables.compile())                  # a reload that keeps the link
        kept = rig.counters()["vlinks"][("p2", 14, "out")]
        first = rig.outputs()
        v.rate = UNLIMITED
        rig.dp.set_rate(v)                                    # shaping lifted
        return before, kept, first, rig.outputs(), rig.counters()
    finally:
        rig.close()


@pytest.mark.parametrize("mod", IMPLS)
def test_a_shaper_queue_survives_a_recompile_and_drains_when_lifted(mod):
    before, kept, first, out, cnt = run_requeue(mod)
    assert before[:3] == (3, 3000, {"queue_full": 1}) and before[3] == 2      # 3 sent, 2 wait
    assert kept == before                                                     # recompiled
    sent_first = [f[-1] for k, fs in first["if:2"].items() if k[2] == 14 for f in fs]
    assert sent_first == [0, 1, 2]
    later = [f[-1] for k, fs in out["if:2"].items() if k[2] == 14 for f in fs]
    assert later == [3, 4]                                                    # in order
    assert cnt["vlinks"][("p2", 14, "out")][:2] == (5, 5000)


@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
def test_a_shaper_queue_across_recompile_and_lift_same_in_both():
    assert run_requeue(fast_mod) == run_requeue(ref_mod)
