"""The TAP capture: ``bpf/tap_capture.bpf.c`` run by the kernel on each TAP frame
(BPF_PROG_TEST_RUN, as if sent out of the loopback interface: no TAP needed) and its ring
walked by the compiled engine (``_CapRing``) give the outputs and counters the reference
engine gives reading the same frames from the TAP -- including a shaped port that pauses: the
program then leaves its frames to the TAP, as the kernel would, where they wait unread.

Then the program's own rules: frames it must leave to the TAP, the ring's overflow counted,
and each vNet held to its share of the ring while the others keep theirs.
"""
import os
import socket
import struct

import pytest

from test_datapath_diff import TAP_FRAMES, Rig, fast_mod, ref_mod
from vnet_router.datapath.select import fast_module
from vnet_router.datapath.tapcap import (COUNTERS, RECORD_MAX, RING_BYTES, RINGS, SHARE_MAX,
                                         SO_NETNS_COOKIE, SOURCE, shares)
from vnet_router.ops import ebpf

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_STOLEN = 0, 2, 4
LO = 1
SMALL_RECORD = 8 + 8 + 128      # the ring bytes of a record of a frame up to 128 bytes
pytestmark = pytest.mark.skipif(fast_mod is None, reason="fast path not built")


@pytest.fixture
def prog():
    """A program of its own per test: its ring starts empty."""
    why = ebpf.available()
    assert why is None, why
    p = ebpf.Program(ebpf.compile_c(SOURCE), "tap_capture.bpf.c")
    yield p
    p.close()


def _key(ifindex=LO):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        cookie = struct.unpack("<Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
    return struct.pack("<QII", cookie, ifindex, 0)


def _counters(prog):
    return prog.counters(COUNTERS)


def _u32(n):
    return struct.pack("<I", n)


def _group(prog, slot, group, budget):
    """Capture slot ``slot`` in ``group``, which may hold ``budget`` ring bytes."""
    prog.update("groups", _u32(slot), _u32(group))
    prog.update("budget", _u32(group), struct.pack("<Q", budget))


def _per_group(prog, map_name, group):
    return sum(struct.unpack("<Q", v)[0] for v in prog.lookup(map_name, _u32(group)))


def _ring(prog, index=0):
    """Ring ``index`` of the program's ``rings`` (groups ``index``, ``index + RINGS`` ...
    write it), created as ``TapCapture`` does, and the engine's side of it."""
    fd = ebpf.create_map(27, f"test_cap{index}", 0, 0, RING_BYTES)
    try:
        prog.update("rings", _u32(index), _u32(fd))
        consumed = prog.maps["consumed"]
        return fast_module()._CapRing(fd, RING_BYTES, consumed.fd, consumed.max_entries)
    finally:
        os.close(fd)        # the program's map and the engine's mapping keep the ring


def _drain(ring, engine):
    while ring.pending():
        ring.walk_py(engine, as_ring_thread=False)


def run_captured(prog):
    """The diff rig on the compiled engine, its TAP frames through the program and ring."""
    rig = Rig(fast_mod)
    ports_fd = prog.maps["ports"].fd
    ring = _ring(prog)
    _group(prog, 0, 0, RING_BYTES)                          # one vNet: the whole ring
    engine = rig.dp.engine._engine
    engine.cap_fd = ports_fd
    key = _key()
    verdicts = []
    try:
        ids = {}
        for cid, (k, port) in enumerate(rig.dp.ports.items()):
            port.capture = (cid, key)
            ids[k[1]] = cid
        rig.dp.install(rig.tables.compile())
        for name, fs in TAP_FRAMES.items():
            port = rig.dp.ports[("blue", name)]
            prog.update("ports", key, struct.pack("<II", ids[name], 1 if port.paused else 0))
            for f in fs:
                verdict, _, _ = prog.test_run(f, ifindex=LO)
                verdicts.append(verdict)
                if verdict == TC_ACT_OK:
                    rig.peers[("tap", name)].send(f)     # left to the TAP: it waits there
                _drain(ring, engine)
        return rig.outputs(), rig.counters(), verdicts
    finally:
        prog.delete("ports", key)
        ring.close()
        rig.close()


def run_read():
    rig = Rig(ref_mod)
    try:
        for name, fs in TAP_FRAMES.items():
            rig.tap(name, fs)
        return rig.outputs(), rig.counters()
    finally:
        rig.close()


def test_captured_frames_decide_like_read_frames(prog):
    before = _counters(prog)
    out, cnt, verdicts = run_captured(prog)
    ref_out, ref_cnt = run_read()
    assert out == ref_out
    assert cnt == ref_cnt
    after = _counters(prog)
    n = sum(len(fs) for fs in TAP_FRAMES.values())
    # the shaped port b5 (queue 3) pauses: what follows is left to its TAP
    assert ref_cnt["ports"][("blue", "b5")][5] is True           # paused in both
    left = verdicts.count(TC_ACT_OK)
    assert 0 < left < len(TAP_FRAMES["b5"])
    assert verdicts.count(TC_ACT_STOLEN) == n - left
    assert after["taken"] - before["taken"] == n - left
    assert after["passed"] - before["passed"] == left
    assert after["ring_full"] == before["ring_full"]


def test_what_the_program_leaves_to_the_tap(prog):
    key = _key()
    ring = _ring(prog)
    _group(prog, 0, 0, RING_BYTES)
    try:
        pending = ring.pending()
        # no entry for this interface: not ours, nothing counted
        before = _counters(prog)
        assert prog.test_run(b"\x02" * 60, ifindex=LO)[0] == TC_ACT_OK
        assert _counters(prog) == before
        # a paused port: left to its TAP, counted as passed (a test run takes 14 bytes to a
        # page, so the short and the over-9216-byte frames the program also leaves are not
        # tried here)
        prog.update("ports", key, struct.pack("<II", 0, 1))
        assert prog.test_run(b"\x02" * 60, ifindex=LO)[0] == TC_ACT_OK
        assert _counters(prog)["passed"] == before["passed"] + 1
        assert ring.pending() == pending
        prog.update("ports", key, struct.pack("<II", 0, 0))
        # each record size class takes its frame whole
        for size in (14, 128, 129, 1536, 1537, 3000):
            assert prog.test_run(bytes([size & 0xFF]) * size, ifindex=LO)[0] == TC_ACT_STOLEN
        assert ring.pending() > pending
    finally:
        prog.delete("ports", key)
        ring.close()


def test_a_full_ring_drops_and_counts(prog):
    """Nobody walks the ring: the kernel runs the program until the ring is full; every frame
    after that is dropped (TC_ACT_SHOT) and counted, none is lost uncounted."""
    key = _key()
    ring = _ring(prog)
    _group(prog, 0, 0, RING_BYTES * 2)                    # the ring fills before the share
    prog.update("ports", key, struct.pack("<II", 0, 0))
    try:
        before = _counters(prog)
        runs = RING_BYTES // (8 + 8 + 128) + 1000
        verdict, _, _ = prog.test_run(b"\x02" * 60, ifindex=LO, repeat=runs)
        assert verdict == TC_ACT_SHOT                   # the last run found no room
        after = _counters(prog)
        taken = after["taken"] - before["taken"]
        full = after["ring_full"] - before["ring_full"]
        assert full > 0
        assert taken + full == runs
        assert _per_group(prog, "refused", 0) == full          # by the port's slot too
    finally:
        prog.delete("ports", key)
        ring.close()


def _two_ports(key):
    """The diff rig on the compiled engine with ports b1 and b3 captured (ids 1 and 2, both
    on interface ``key``): (rig, engine, port of id 1, port of id 2)."""
    rig = Rig(fast_mod)
    a, b = rig.dp.ports[("blue", "b1")], rig.dp.ports[("blue", "b3")]
    a.capture, b.capture = (1, key), (2, key)
    rig.dp.install(rig.tables.compile())
    return rig, rig.dp.engine._engine, a, b


def test_vnets_sharing_a_ring_hold_at_most_their_share_of_it(prog):
    """More vNets than rings: groups 0 and RINGS write ring 0.  Ports of two such vNets
    (capture ids 1 and 2; one interface, the port's entry swapped between them).  Nobody walks
    the ring: A's frames beyond its share are dropped and counted by A's slot, B's are still
    taken; once the ring is walked, A's share is free again."""
    key = _key()
    ring = _ring(prog)
    share = 10 * SMALL_RECORD
    ga, gb = 0, RINGS
    _group(prog, 1, ga, share)
    _group(prog, 2, gb, share)
    rig, engine, a, b = _two_ports(key)
    try:
        before = _counters(prog)
        prog.update("ports", key, struct.pack("<II", 1, 0))
        assert prog.test_run(b"\x02" * 60, ifindex=LO, repeat=25)[0] == TC_ACT_SHOT
        prog.update("ports", key, struct.pack("<II", 2, 0))
        assert prog.test_run(b"\x02" * 60, ifindex=LO, repeat=5)[0] == TC_ACT_STOLEN
        after = _counters(prog)
        assert after["taken"] - before["taken"] == 10 + 5
        assert after["over_share"] - before["over_share"] == 15
        assert after["ring_full"] == before["ring_full"]
        assert _per_group(prog, "refused", 1) == 15 and _per_group(prog, "refused", 2) == 0
        assert _per_group(prog, "produced", ga) == share
        assert _per_group(prog, "produced", gb) == 5 * SMALL_RECORD

        # the walk gives the records back and credits their groups: A may send again
        assert ring.walk_py(engine, as_ring_thread=False) == 15
        assert _per_group(prog, "consumed", ga) == share
        assert _per_group(prog, "consumed", gb) == 5 * SMALL_RECORD
        assert a.rx_packets == 10 and b.rx_packets == 5
        prog.update("ports", key, struct.pack("<II", 1, 0))
        assert prog.test_run(b"\x02" * 60, ifindex=LO, repeat=10)[0] == TC_ACT_STOLEN

        # the engine counts a port's drops as ring_full, globally and under its vNet
        full = rig.dp.drops["ring_full"]
        engine.count_cap_drops([(a, 15)])
        assert rig.dp.drops["ring_full"] == full + 15
        assert a.out.vlink.drops["ring_full"] == 15
        assert "ring_full" not in b.out.vlink.drops
    finally:
        prog.delete("ports", key)
        ring.close()
        rig.close()


def test_each_vnet_has_a_ring_of_its_own(prog):
    """Two vNets (groups 0 and 1): each writes its own ring.  A fills its ring while nobody
    walks it (the rest of its frames dropped, counted by A's slot); B's frames are still all
    taken, into B's ring, and the walk of B's ring returns them at once, whatever A holds:
    B's frame never waits behind A's in a FIFO."""
    key = _key()
    ring_a, ring_b = _ring(prog, 0), _ring(prog, 1)
    _group(prog, 1, 0, RING_BYTES)              # alone on their rings: the whole of each
    _group(prog, 2, 1, RING_BYTES)
    rig, engine, a, b = _two_ports(key)
    try:
        before = _counters(prog)
        runs = RING_BYTES // SMALL_RECORD + 100
        prog.update("ports", key, struct.pack("<II", 1, 0))
        assert prog.test_run(b"\x02" * 60, ifindex=LO, repeat=runs)[0] == TC_ACT_SHOT
        held = ring_a.pending()
        assert held > RING_BYTES - 2 * SMALL_RECORD
        prog.update("ports", key, struct.pack("<II", 2, 0))
        assert prog.test_run(b"\x02" * 60, ifindex=LO, repeat=7)[0] == TC_ACT_STOLEN
        after = _counters(prog)
        refused = _per_group(prog, "refused", 1)
        assert refused >= 100 and _per_group(prog, "refused", 2) == 0
        assert after["taken"] - before["taken"] == runs - refused + 7
        assert ring_b.pending() == 7 * SMALL_RECORD and ring_a.pending() == held

        assert ring_b.walk_py(engine, as_ring_thread=False) == 7
        assert b.rx_packets == 7 and a.rx_packets == 0
        assert ring_a.pending() == held
    finally:
        prog.delete("ports", key)
        ring_a.close()
        ring_b.close()
        rig.close()


def test_shares_split_the_ring_less_one_record_per_cpu():
    ring = 1 << 23
    small = 1 << 18
    s = shares(small, [0, 1, 2], cpus=4)
    assert set(s) == {0, 1, 2} and len(set(s.values())) == 1
    assert sum(s.values()) + 4 * RECORD_MAX <= small
    assert s[0] % 8 == 0 and small - 4 * RECORD_MAX - sum(s.values()) < 3 * 8
    # a large ring: each of several vNets sharing it holds at most SHARE_MAX (a FIFO)
    assert set(shares(ring, [0, 1, 2], cpus=4).values()) == {SHARE_MAX}
    assert shares(ring, [5], cpus=2) == {5: (ring - 2 * RECORD_MAX) // 8 * 8}
    assert shares(ring, [], cpus=2) == {}
    # so many vNets that a part would not hold one record: each still holds one
    assert set(shares(1 << 16, range(100), cpus=2).values()) == {RECORD_MAX}
