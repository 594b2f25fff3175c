"""Control-plane policing (``datapath/copp.py``): VLI 0 frames of known neighbours go to the
control plane ahead of the rest, each class and source within its bound, every refusal counted
by its reason -- the same in both engines.  (The rig is test_datapath_diff's; the ring
thread's hand-over is test_ring_walk's.)"""
import pytest

from test_datapath_diff import IF0, IMPLS, P1, P3, STRANGER, Rig, ctl, fast_mod, ref_mod, sub
from vnet_router.datapath import copp
from vnet_router.wire import substrate as wire

T10 = wire.VlanTag(10, 5)
FLOOD = copp.PER_SOURCE + 24            # frames of the stranger's flood


def lan(src, n=1):
    return [(IF0, sub(wire.BROADCAST_MAC, src, 0, ctl(b"lan" * 8)), None)] * n


def stranger(i):
    return bytes.fromhex("06") + i.to_bytes(5, "big")


def run(mod, frames, peers=None):
    """Feed ``frames`` without letting the loop serve; then serve all.  Returns the order
    the control plane saw (link, source), what waited before serving, the counters."""
    seen = []

    def on_control(ctx, view, start, length):
        seen.append((ctx.id, bytes(view[6:12])))
        return True
    rig = Rig(mod, on_control=on_control)
    if peers is not None:
        rig.dp.set_control_peers(peers)
    try:
        for ifindex, frame, tci in frames:
            rig.eth(ifindex, frame, tci)
        waiting = rig.dp.control.waiting()
        cnt = rig.counters()
        return seen, waiting, cnt
    finally:
        rig.close()


def flood_then_neighbours():
    """A stranger floods the LAN, then the known neighbour P3 and the p2p peer speak."""
    return (lan(STRANGER, FLOOD) + lan(P3, 2) + [(IF0, sub(b"\x02" * 6, P1, 0, ctl(b"p" * 9), T10),
                                               None)])


@pytest.mark.parametrize("mod", IMPLS)
def test_known_neighbours_are_served_first(mod):
    seen, waiting, cnt = run(mod, flood_then_neighbours(), peers={"lan": {P3}})
    assert waiting == (3, copp.PER_SOURCE)
    assert seen[:3] == [("lan", P3), ("lan", P3), ("p1", P1)]
    assert seen[3:] == [("lan", STRANGER)] * copp.PER_SOURCE
    assert cnt["drops"]["control_source"] == FLOOD - copp.PER_SOURCE
    assert cnt["links"]["lan"][4] == {"control_source": FLOOD - copp.PER_SOURCE}
    assert cnt["drops"]["control"] == 0


@pytest.mark.parametrize("mod", IMPLS)
def test_an_unknown_neighbour_queues_with_the_rest(mod):
    """Without the control plane naming P3, its frames are the rest's (after P1's), and its
    own share is not taken by the stranger's flood."""
    seen, waiting, _cnt = run(mod, flood_then_neighbours())
    assert waiting == (1, copp.PER_SOURCE + 2)
    assert seen[0] == ("p1", P1) and seen[-2:] == [("lan", P3)] * 2


@pytest.mark.parametrize("mod", IMPLS)
def test_many_sources_fill_only_the_rest_s_queue(mod):
    """A flood from changing source MACs: at most OTHER frames of the rest wait; a known
    neighbour's frames still get in."""
    frames = [f for i in range(copp.OTHER + 50) for f in lan(stranger(i))] + lan(P3, 3)
    seen, waiting, cnt = run(mod, frames, peers={"lan": {P3}})
    assert waiting == (3, copp.OTHER)
    assert seen[:3] == [("lan", P3)] * 3
    assert cnt["drops"]["control_other"] == 50
    assert cnt["drops"]["control_source"] == 0


@pytest.mark.parametrize("mod", IMPLS)
def test_a_known_neighbour_has_its_own_share(mod):
    """A known neighbour (or a forger using its MAC) fills only its own share of the known
    neighbours' queue; another known neighbour still gets in."""
    frames = lan(P3, copp.PER_PEER + 10) + [(IF0, sub(b"\x02" * 6, P1, 0, ctl(b"p" * 9), T10),
                                             None)]
    seen, waiting, cnt = run(mod, frames, peers={"lan": {P3}})
    assert waiting == (copp.PER_PEER + 1, 0)
    assert cnt["drops"]["control_peer"] == 10
    assert seen[-1] == ("p1", P1)


@pytest.mark.parametrize("mod", IMPLS)
def test_refused_frames_are_the_control_drop(mod):
    rig = Rig(mod, on_control=lambda ctx, view, start, length: False)
    try:
        for item in lan(STRANGER, 3):
            rig.eth(*item)
        assert rig.counters()["drops"]["control"] == 3
    finally:
        rig.close()


@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
def test_same_in_both_engines():
    frames = ([f for i in range(copp.OTHER + 5) for f in lan(stranger(i % 150), 2)]
              + flood_then_neighbours())
    assert run(fast_mod, frames, {"lan": {P3}}) == run(ref_mod, frames, {"lan": {P3}})


def test_served_in_turns_of_the_loop():
    """The loop takes at most TURN frames per turn, so timers and readers get it between."""
    seen = []
    rig = Rig(ref_mod, on_control=lambda ctx, view, start, length: seen.append(1) or True)
    rig.dp.set_control_peers({"lan": {P3}})
    try:
        for item in lan(P3, copp.TURN + 5):
            rig.eth(*item)
        rig.loop.call_soon(rig.loop.stop)
        rig.loop.run_forever()
        assert len(seen) == copp.TURN
        rig.loop.call_soon(rig.loop.stop)
        rig.loop.run_forever()
        assert len(seen) == copp.TURN + 5
    finally:
        rig.close()
