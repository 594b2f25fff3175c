"""The compiled engine's ring walk over synthetic TPACKET_V3 blocks (no socket, no kernel).

Blocks are laid out as the kernel writes them (``linux/if_packet.h``: block descriptor, frames
chained by ``tp_next_offset``, per-frame ``tp_status``, VLAN TCI in the frame header).  The
walk must read every finished frame once and in order, stop at a frame the kernel has not
finished and resume there, hand retired blocks back zeroed, wrap around the ring, and decide
exactly like the reference engine fed the same frames.
"""
import socket
import struct

import pytest

from test_datapath_diff import IF0, IF1, Rig, corpus, fast_mod, ref_mod, run
from vnet_router.datapath import select

pytestmark = pytest.mark.skipif(fast_mod is None, reason="fast path not built")

BLOCK, NBLK = 8192, 4
BLK_HDR = 48                    # ALIGN(sizeof(struct tpacket_block_desc), 8)
MAC_OFF = 80                    # frame data offset from its tpacket3_hdr (as tp_mac says)
TP_STATUS_USER, TP_STATUS_VLAN_VALID = 1, 16


class SynthRing:
    """What ``_Ring`` reads of a ``packet_io.RxRing``, over a bytearray."""

    def __init__(self):
        self.map = bytearray(BLOCK * NBLK)
        self.block_size, self.block_nr = BLOCK, NBLK
        self.doorbell, self._other = socket.socketpair()
        self.bell_on, self.bell_switches = True, 0
        self.kernel_block = 0   # the block the "kernel" fills next

    def set_doorbell(self, on):
        self.bell_on = on

    def close(self):
        self.doorbell.close()
        self._other.close()

    # -- the kernel's side ------------------------------------------------------------------

    def fill(self, frames, retire=True, finished=None):
        """Write ``frames`` ((bytes, tci or None), ...) into the next block; ``finished``: how
        many of them have TP_STATUS_USER (default all); ``retire``: close the block.  Returns
        (block index, offsets of the frame headers)."""
        b = self.kernel_block
        base = b * BLOCK
        assert struct.unpack_from("<I", self.map, base + 8)[0] == 0, "block still user's"
        finished = len(frames) if finished is None else finished
        offs, off = [], BLK_HDR
        for frame, _tci in frames:
            offs.append(off)
            off += -(-(MAC_OFF + len(frame)) // 16) * 16
        assert off <= BLOCK, "frames do not fit one block"
        for i, ((frame, tci), h) in enumerate(zip(frames, offs)):
            nxt = 0 if retire and i == len(frames) - 1 else (offs + [off])[i + 1] - h
            status = (TP_STATUS_USER if i < finished else 0) | \
                (TP_STATUS_VLAN_VALID if tci is not None else 0)
            struct.pack_into("<IIIIIIHH", self.map, base + h, nxt, 0, 0, len(frame), len(frame),
                             status, MAC_OFF, MAC_OFF)
            struct.pack_into("<II", self.map, base + h + 28, 0, tci or 0)
            self.map[base + h + MAC_OFF:base + h + MAC_OFF + len(frame)] = frame
        if retire:
            self.retire(b, len(frames), off)
        else:
            struct.pack_into("<I", self.map, base + 16, BLK_HDR)
        return b, offs

    def finish(self, b, offs, frames):
        """Mark every frame of block ``b`` finished (the kernel's copy is done)."""
        for (frame, tci), h in zip(frames, offs):
            struct.pack_into("<I", self.map, b * BLOCK + h + 20,
                             TP_STATUS_USER | (TP_STATUS_VLAN_VALID if tci is not None else 0))

    def retire(self, b, npkts, end):
        base = b * BLOCK
        struct.pack_into("<III", self.map, base + 12, npkts, BLK_HDR, end)
        struct.pack_into("<I", self.map, base + 8, TP_STATUS_USER)
        self.kernel_block = (b + 1) % NBLK

    def block_status(self, b):
        return struct.unpack_from("<I", self.map, b * BLOCK + 8)[0]


def _ring(rig, ifindex):
    synth = SynthRing()
    return synth, select.fast_module()._Ring(synth, ifindex)


def at_start(ring, b):
    """The walk waits at the first frame of block ``b`` (offset 0: not looked at yet)."""
    return ring.position in ((b, 0), (b, BLK_HDR))


def chunks(frames):
    """Runs of (ifindex, [(frame, tci), ...]) that fit one block, in the corpus' order."""
    out = []
    for ifindex, frame, tci in frames:
        size = -(-(MAC_OFF + len(frame)) // 16) * 16
        if not out or out[-1][0] != ifindex or out[-1][2] + size > BLOCK - BLK_HDR:
            out.append([ifindex, [], 0])
        out[-1][1].append((frame, tci))
        out[-1][2] += size
    return [(i, fs) for i, fs, _ in out]


def test_walk_decides_like_the_reference():
    """The whole differential corpus through synthetic rings (blocks wrap around the ring many
    times): outputs and every counter equal the reference engine's, fed frame by frame."""
    frames = corpus()
    rig = Rig(fast_mod)
    rings = {}
    try:
        engine = rig.dp.engine._engine
        walked, blocks = 0, {}
        for ifindex, fs in chunks(frames):
            if ifindex not in rings:
                rings[ifindex] = _ring(rig, ifindex)
            synth, ring = rings[ifindex]
            synth.fill(fs)
            blocks[ifindex] = blocks.get(ifindex, 0) + 1
            walked += engine.walk(ring)
            assert at_start(ring, synth.kernel_block)   # every retired block handed back
        assert walked == len(frames)
        assert max(blocks.values()) > 2 * NBLK, blocks       # the ring wrapped around
        got = rig.outputs(), rig.counters()
    finally:
        for synth, ring in rings.values():
            ring.release()
            synth.close()
        rig.close()
    assert got == run(ref_mod, frames=frames, taps=False)


def test_walk_stops_at_an_unfinished_frame_and_resumes_there():
    """A block the kernel is still filling: only frames with TP_STATUS_USER are read; the walk
    waits at the first unfinished one, reads it once it is finished, and hands the block back
    (zeroed, TP_STATUS_KERNEL) only after it was retired."""
    t10 = 10 | (5 << 13)
    frames = [f for i, f, t in corpus()[:6] if i == IF0]
    fs = [(frames[k], None if k % 2 else t10) for k in range(len(frames))]
    rig = Rig(fast_mod)
    synth, ring = _ring(rig, IF0)
    try:
        engine = rig.dp.engine._engine
        b, offs = synth.fill(fs, retire=False, finished=2)
        assert engine.walk(ring) == 2
        assert ring.position == (0, offs[2])          # waits at the third frame
        assert engine.walk(ring) == 0                 # nothing new: reads nothing twice
        synth.finish(b, offs, fs)
        assert engine.walk(ring) == len(fs) - 2
        assert ring.position[0] == 0 and synth.block_status(0) == 0   # still the kernel's
        end = offs[-1] + -(-(MAC_OFF + len(fs[-1][0])) // 16) * 16
        synth.retire(b, len(fs), end)
        assert engine.walk(ring) == 0                 # retired: no frame read twice ...
        assert at_start(ring, 1)                      # ... and the block is handed back
        assert synth.block_status(0) == 0
        assert not any(synth.map[BLK_HDR:BLOCK]), "block handed back with stale frames"
        partial = rig.counters()
    finally:
        ring.release()
        synth.close()
        rig.close()
    assert partial == run(ref_mod, frames=[(IF0, f, t) for f, t in fs], taps=False)[1]


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
        for s, r in ((synth, ring), (other, oring)):
            r.release()
            s.close()
        rig.close()
    assert got == run(ref_mod, frames=[(IF1, frame, tci), (99, frame, tci)], taps=False)
    assert got[1]["drops"]["no_link"] == 1
