"""The control plane's neighbours reach the datapath's control-plane policing, and a source
that keeps sending refused frames is throttled before any work (``control/neighbours.py``)."""
import asyncio

from vnet_router.control import neighbours
from vnet_router.control.plane import ControlPlane
from vnet_router.datapath.select import DatapathPy as Datapath
from vnet_router.model.tables import IfaceFacts, Tables
from vnet_router.wire import control as m
from vnet_router.wire import substrate as wire

from harness import load_example

OURS, PEER, FORGER = (bytes.fromhex(x) for x in ("020000000001", "020000000002", "06000000000f"))


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def frame(src, payload):
    return wire.BROADCAST_MAC + src + b"\x88\xb5\x00\x00" + len(payload).to_bytes(2, "big") + \
        payload


def plane():
    cfg = load_example("vbm.toml", keys=False)      # fed unsealed frames
    tables = Tables(cfg, {"eth0": IfaceFacts(2, OURS, 1500)})
    loop = asyncio.new_event_loop()
    dp = Datapath(tables, loop)
    dp.snap = tables.compile()
    dp.send_control = lambda ctx, payload, dst=None: True
    clock = Clock()
    return ControlPlane(cfg, tables, dp, None, loop, clock=clock), dp, loop, clock


def test_a_neighbour_heard_is_known_to_the_datapath_until_it_times_out():
    cp, dp, loop, clock = plane()
    try:
        ctx = dp.snap.links["lan"]
        assert not dp.control.known(ctx, PEER)
        hello = m.Hello(node=7, incarnation=1, role=m.Role.NODE, name="x").pack()
        assert cp.on_control(ctx, memoryview(frame(PEER, hello)), 18, len(hello))
        assert dp.control_peers["lan"] == {PEER}
        assert dp.control.known(ctx, PEER) and not dp.control.known(ctx, FORGER)
        clock.t += cp.neighbour_timeout + 1
        cp._tick()
        assert dp.control_peers.get("lan", set()) == set()
        assert cp.status()["neighbours_lost"] == 1
    finally:
        loop.close()


def test_a_source_of_refused_frames_is_throttled_others_are_not():
    cp, dp, loop, clock = plane()
    try:
        ctx = dp.snap.links["lan"]
        garbage = b"\x01\x63" + b"\x00" * 30            # unknown type: malformed
        burst = int(neighbours.REFUSED_BURST)
        for _ in range(burst + 50):
            assert not cp.on_control(ctx, memoryview(frame(FORGER, garbage)), 18, len(garbage))
        st = cp.status()
        assert st["malformed"] == burst                  # checked while its budget lasted
        assert st["refused"]["throttled"] == 50          # then refused before any work
        hello = m.Hello(node=7, incarnation=1, role=m.Role.NODE, name="x").pack()
        assert cp.on_control(ctx, memoryview(frame(PEER, hello)), 18, len(hello))
        clock.t += 1.0                                   # the budget refills
        assert not cp.on_control(ctx, memoryview(frame(FORGER, garbage)), 18, len(garbage))
        assert cp.status()["malformed"] == burst + 1
    finally:
        loop.close()


def test_budget_tracks_a_bounded_number_of_sources():
    clock = Clock()
    b = neighbours.Budget(clock, rate=1.0, burst=2.0, max_sources=3)
    for _ in range(2):
        b.refused("a")
    assert not b.allows("a")
    for s in ("b", "c", "d"):                     # "a" refused longest ago: forgotten
        b.refused(s)
    assert b.allows("a") and len(b._buckets) == 3
    clock.t += 1.0
    assert b.allows("b")
