"""The compiled engine's ring walk over a synthetic TPACKET_V2 ring (no socket, no kernel).

Slots are laid out as the kernel writes them (``linux/if_packet.h``: ``tpacket2_hdr`` with
``tp_status``, lengths, ``tp_mac`` and the stripped VLAN TCI, the frame at ``tp_mac``).  The
kernel publishes a slot by setting TP_STATUS_USER after its copy, and it may publish a later
slot before an earlier one (two CPUs copying at once).  The walk must read every published frame
once and in slot order, stop at a slot not published yet and resume there, hand every slot it
read back (TP_STATUS_KERNEL), wrap around the ring, and decide exactly like the reference
engine fed the same frames.
"""
import struct

import pytest

from test_datapath_diff import IF0, IF1, ME0, P1, UDP, Rig, corpus, ctl, fast_mod, ref_mod, run
from vnet_router.datapath import select
from vnet_router.wire import substrate as wire

pytestmark = pytest.mark.skipif(fast_mod is None, reason="fast path not built")

FRAME, NR = 2048, 8
MAC_OFF = 66                    # tp_mac of a V2 slot: ALIGN16(52 + 16) - 14
TP_STATUS_USER, TP_STATUS_VLAN_VALID = 1, 16


class SynthRing:
    """What ``_Ring`` reads of a ``packet_io.RxRing``, over a bytearray."""

    def __init__(self):
        self.map = bytearray(FRAME * NR)
        self.frame_size, self.frame_nr = FRAME, NR
        self.next = 0           # the slot the "kernel" fills next

    def dropped(self):
        return 0

    def fill(self, frames, publish=True, snaplen=None):
        """Copy ``frames`` ((bytes, tci or None), ...) into the next free slots; ``publish``:
        set TP_STATUS_USER (else the copy is still under way).  Returns the slots."""
        slots = []
        for frame, tci in frames:
            k = self.next
            assert self.status(k) == 0, "slot still the reader's: the kernel would drop"
            base = k * FRAME
            snap = len(frame) if snaplen is None else snaplen
            struct.pack_into("<IIIHHIIHH", self.map, base, 0, len(frame), snap, MAC_OFF,
                             MAC_OFF + 14, 0, 0, tci or 0, 0x8100 if tci is not None else 0)
            self.map[base + MAC_OFF:base + MAC_OFF + snap] = frame[:snap]
            slots.append((k, tci))
            self.next = (k + 1) % NR
        if publish:
            self.publish(slots)
        return slots

    def publish(self, slots):
        for k, tci in slots:
            struct.pack_into("<I", self.map, k * FRAME, TP_STATUS_USER |
                             (TP_STATUS_VLAN_VALID if tci is not None else 0))

    def status(self, k):
        return struct.unpack_from("<I", self.map, k * FRAME)[0]


def _ring(rig, ifindex):
    synth = SynthRing()
    return synth, select.fast_module()._Ring(synth, ifindex)


def test_walk_decides_like_the_reference():
    """The whole differential corpus through synthetic rings (wrapping around the ring many
    times): outputs and every counter equal the reference engine's, fed frame by frame."""
    frames = [x for x in corpus() if x[0] != UDP]          # UDP has no ring
    rig = Rig(fast_mod)
    rings = {}
    try:
        engine = rig.dp.engine._engine
        walked, laps = 0, 0
        run_ = []
        for n, (ifindex, frame, tci) in enumerate(frames):
            run_.append((ifindex, frame, tci))
            if n + 1 < len(frames) and frames[n + 1][0] == ifindex and len(run_) < NR - 1:
                continue
            if ifindex not in rings:
                rings[ifindex] = _ring(rig, ifindex)
            synth, ring = rings[ifindex]
            before = synth.next
            synth.fill([(f, t) for _, f, t in run_])
            laps += synth.next < before
            walked += engine.walk(ring)
            assert ring.position == synth.next             # waits where the kernel writes next
            assert not any(synth.status(k) for k in range(NR)), "slot not handed back"
            run_ = []
        assert walked == len(frames)
        assert laps > 10                                    # the ring wrapped around
        got = rig.outputs(), rig.counters()
    finally:
        for synth, ring in rings.values():
            ring.release()
        rig.close()
    assert got == run(ref_mod, frames=frames, taps=False)


def test_walk_stops_at_a_slot_not_published_and_resumes_there():
    """The kernel published slots 0, 2 and 3 but is still copying into slot 1: the walk reads
    slot 0 only and waits at 1; once 1 is published it reads 1, 2, 3 -- each once, in order."""
    t10 = 10 | (5 << 13)
    frames = [f for i, f, t in corpus()[:8] if i == IF0][:4]
    fs = [(frames[k], None if k % 2 else t10) for k in range(len(frames))]
    rig = Rig(fast_mod)
    synth, ring = _ring(rig, IF0)
    try:
        engine = rig.dp.engine._engine
        slots = synth.fill(fs, publish=False)
        synth.publish([slots[0]] + slots[2:])
        assert engine.walk(ring) == 1
        assert ring.position == 1                      # waits at the unpublished slot
        assert synth.status(0) == 0 and synth.status(2) & TP_STATUS_USER
        assert engine.walk(ring) == 0                  # nothing new: reads nothing twice
        synth.publish([slots[1]])
        assert engine.walk(ring) == len(fs) - 1
        assert ring.position == len(fs) and not any(synth.status(k) for k in range(NR))
        partial = rig.counters()
    finally:
        ring.release()
        rig.close()
    assert partial == run(ref_mod, frames=[(IF0, f, t) for f, t in fs], taps=False)[1]


def test_a_frame_cut_by_its_slot_is_counted_not_forwarded():
    """A frame larger than the slot (tp_snaplen < tp_len) is never forwarded truncated."""
    frame = next(f for i, f, t in corpus() if i == IF0 and len(f) > 200 and t is not None)
    rig = Rig(fast_mod)
    synth, ring = _ring(rig, IF0)
    try:
        synth.fill([(frame, 10)], snaplen=100)
        assert rig.dp.engine._engine.walk(ring) == 1
        out, cnt = rig.outputs(), rig.counters()
    finally:
        ring.release()
        rig.close()
    assert cnt["drops"]["oversize"] == 1
    assert not any(out.values())


def test_vlan_from_the_ring_header_and_unknown_interface():
    """The TCI the kernel stripped comes from the frame header (TP_STATUS_VLAN_VALID); a ring
    of an interface the tables do not know counts no_link."""
    _, frame, tci = next(x for x in corpus() if x[2] is not None and x[0] == IF1)
    rig = Rig(fast_mod)
    synth, ring = _ring(rig, IF1)
    other, oring = _ring(rig, 99)
    try:
        engine = rig.dp.engine._engine
        synth.fill([(frame, tci)])
        other.fill([(frame, tci)])
        assert engine.walk(ring) == 1 and engine.walk(oring) == 1
        got = rig.outputs(), rig.counters()
    finally:
        for r in (ring, oring):
            r.release()
        rig.close()
    assert got == run(ref_mod, frames=[(IF1, frame, tci), (99, frame, tci)], taps=False)
    assert got[1]["drops"]["no_link"] == 1


def test_control_frames_handed_to_the_loop_are_bounded_and_counted():
    """From the ring thread, VLI 0 frames go to the control plane through the event loop: a
    known neighbour (the p2p link's peer) has at most 256 waiting at once, the rest of its
    frames are counted as control_peer, none vanishes."""
    taken = []
    rig = Rig(fast_mod, on_control=lambda ctx, view, start, length: taken.append(ctx.id) or True)
    synth, ring = _ring(rig, IF0)
    frame = wire.pack_eth(ME0, P1, 0, ctl(b"\x01" * 24), wire.VlanTag(10))
    try:
        engine = rig.dp.engine._engine
        for _ in range(1100 // (NR - 1) + 1):
            synth.fill([(frame, None)] * (NR - 1))
            engine.walk(ring, as_ring_thread=True)
        sent = (1100 // (NR - 1) + 1) * (NR - 1)
        assert taken == []                              # nothing taken in the ring thread
        assert rig.dp.control.waiting() == (256, 0)
        rig.loop.call_soon(rig.loop.stop)
        rig.loop.run_forever()                          # one turn of the loop: 64 frames
        assert taken == ["p1"] * 64 and rig.dp.control.waiting() == (192, 0)
        cnt = rig.counters()                            # (serves what still waits)
        assert taken == ["p1"] * 256 and rig.dp.control.waiting() == (0, 0)
        assert cnt["drops"]["control_peer"] == sent - 256
        assert rig.counters()["links"]["p1"][0] == sent
    finally:
        ring.release()
        rig.close()


def test_the_ring_thread_serves_a_quiet_ring_first_and_backlogged_ones_by_quantum():
    """One round of the ring thread's turns (``serve``): a ring that was empty at its last look
    (a quiet vNet's) is served first; rings that still held frames after their turn are
    backlogged and, while another ring has frames too, each walks its quantum only; a ring
    alone with frames walks them all.  What each walked is read from the slots it gave back."""
    frames = [f for i, f, t in corpus() if i == IF0 and t is not None][:6]
    assert len(frames) == 6
    rig = Rig(fast_mod)
    (sa, a), (sc, c), (sb, b) = (_ring(rig, IF0) for _ in range(3))
    try:
        engine = rig.dp.engine._engine
        sa.fill([(f, 10) for f in frames])
        sc.fill([(f, 10) for f in frames])
        a.quantum = c.quantum = 2
        a.quiet = c.quiet = False                    # both were left holding frames
        sb.fill([(frames[0], 10)])                   # the quiet ring's one frame
        assert engine.serve_round([a, c, b]) == 5    # b's 1, then a's 2 and c's 2
        assert (b.position, a.position, c.position) == (1, 2, 2)
        assert b.quiet and not a.quiet and not c.quiet
        assert engine.serve_round([a, c, b]) == 4    # a and c contend: 2 each
        assert (a.position, c.position) == (4, 4)
        c_left = engine.serve_round([c])             # c alone: all it has, in one turn
        assert c_left == 2 and c.position == 6 and c.quiet
        assert engine.serve_round([a, c, b]) == 2 and a.position == 6
        assert engine.serve_round([a, c, b]) == 0    # nothing left: nothing read twice
        assert not any(s.status(k) for s in (sa, sb, sc) for k in range(NR))
    finally:
        for r in (a, b, c):
            r.release()
        rig.close()
