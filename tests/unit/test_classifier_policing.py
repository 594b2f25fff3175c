"""Policing in the classifier (``bpf/substrate.bpf.c``) against the reference's token buckets,
through BPF_PROG_TEST_RUN on the rig of ``test_kernel_tier_diff`` (its ``Pair``: the reference
datapath and the classifier built from one configuration)."""
import time

from vnet_router.model.config import Rate
from vnet_router.ops import ebpf
from test_kernel_tier_diff import (  # noqa: F401 (facts: the rig's fixture)
    LANPEER, ME0, P1, TC_ACT_SHOT, TC_ACT_UNSPEC, Pair, data, eth, facts, ktier, pytestmark)

SIZE = 1000


def test_policing_agrees(facts):
    """A burst on a policed switch (1000-byte frames, 3000 bytes of burst at 8 kbit/s)
    interleaved with an unpoliced switch's frames; then after 1.5 s idle, a retune after 1.5 s
    idle, and a stamp ahead of the program's clock (another CPU's) -- the buckets' states
    written instead of sleeping."""
    ns, f = facts
    e0 = f["e0"].ifindex
    pair = Pair(f)
    try:
        pair.police("p1", 15, Rate(max=8000, burst=3000))
        ref_tb = pair.ref.meter_of(("p1", 15, "in"))
        key = pair.tier.vlink_slots.of[("p1", 15, "in")].to_bytes(4, "little")
        policed = eth(ME0, P1, 15, data(SIZE), 10)
        other = eth(ME0, P1, 5, data(SIZE), 10)
        diffs = []

        def burst(n, want):
            """``n`` frames on each switch: ``want`` of the policed ones pass the reference,
            the kernel passes as many, give or take one."""
            ref = kern = 0
            for i in range(n):
                cls, passed = pair.run(e0, policed, f"policed {i}", policing=True)
                ref += cls == "forward"
                kern += passed
                assert pair.run(e0, other, f"unpoliced {i}")[0] == "forward"
            assert ref == want and abs(kern - ref) <= 1, (ref, kern)
            diffs.append(kern - ref)

        def empty(ago: float, ahead: float = 0.0):
            """Both buckets empty, last refilled ``ago`` seconds ago (the program's: or
            stamped ``ahead`` of now)."""
            ref_tb.tokens, ref_tb.stamp = 0.0, time.monotonic() - ago
            _l, _p, rate, depth, _c, _s = ktier._BUCKET.unpack(
                pair.tier.prog.lookup("buckets", key)[0])
            assert (rate, depth) == (ref_tb.rate, ref_tb.burst)
            stamp = time.monotonic_ns() + int((ahead - ago) * 1e9)
            pair.tier.prog.update("buckets", key, ktier._BUCKET.pack(0, 0, rate, depth, 0, stamp),
                                  ktier.BPF_F_LOCK)

        ebpf.in_namespace(ns, lambda: burst(8, 3))
        # 1.5 s idle: 1500 bytes of credit back (one frame), not a full burst
        empty(1.5)
        ebpf.in_namespace(ns, lambda: burst(3, 1))
        # a retune brings the bucket up to now at the old rate (1500 bytes), then the new one
        empty(1.5)
        pair.police("p1", 15, Rate(max=16000, burst=5000))
        ebpf.in_namespace(ns, lambda: burst(3, 1))
        # another CPU stamped a later time than the one this frame read: no credit from that
        empty(0.0, ahead=1.0)
        ebpf.in_namespace(ns, lambda: burst(2, 0))

        # counters: the reference's, but the frames the two clocks disagreed on as the kernel
        # decided them
        want = pair.expected
        d = sum(diffs)
        for k, n in ((("vlink", ("p1", 15, "in"), "packets"), d),
                     (("vlink", ("p1", 15, "in"), "bytes"), d * SIZE),
                     (("vlink", ("q", 16, "out"), "packets"), d),
                     (("vlink", ("q", 16, "out"), "bytes"), d * SIZE),
                     (("link", "q", "tx_packets"), d), (("link", "q", "tx_bytes"), d * SIZE),
                     (("vlink", ("p1", 15, "in"), "drop", "policed"), -d),
                     (("link", "p1", "drop", "policed"), -d), (("drop", "policed"), -d)):
            want[k] += n
        got = pair.kernel_counters()
        assert got == +want
        assert got[("drop", "policed")] >= 10 and got[("link", "p1", "rx_packets")] == 32
    finally:
        pair.close()


def test_policing_before_the_ring(facts):
    """A delivery's input virtual link policed by the classifier: what passes goes to its
    vNet's ring (the mark), the excess is dropped in the kernel and counted as the reference
    counts it (give or take the one frame the two clocks may disagree on)."""
    ns, f = facts
    e0 = f["e0"].ifindex
    pair = Pair(f)
    try:
        pair.police("lan", 200, Rate(max=8000, burst=3000))
        assert ("lan", 200, "in") in pair.tier.policed
        frame = eth(ME0, LANPEER, 200, data(SIZE))
        red = pair.tier.queues["red"]

        def burst():
            ref = kern = 0
            for i in range(8):
                cls, _sent, queue = pair.reference(e0, frame)
                ref += cls == "engine"
                ctx = bytearray(ebpf.SKB_CTX_SIZE)
                verdict, out, _ = pair.tier.prog.test_run(frame, e0, program="substrate_tc",
                                                          ctx_out=ctx)
                mark = int.from_bytes(ctx[ebpf.SKB_MARK:ebpf.SKB_MARK + 4], "little")
                assert verdict in (TC_ACT_UNSPEC, TC_ACT_SHOT), verdict
                if verdict == TC_ACT_UNSPEC:
                    assert mark == red == queue and out == frame, (mark, red, queue)
                    kern += 1
            return ref, kern

        ref, kern = ebpf.in_namespace(ns, burst)
        assert ref == 3 and abs(kern - ref) <= 1, (ref, kern)
        want = pair.expected
        d = kern - ref              # frames the kernel passed that the reference policed
        for k in (("vlink", ("lan", 200, "in"), "drop", "policed"), ("drop", "policed"),
                  ("vnet drop", "red", "policed"), ("link", "lan", "drop", "policed")):
            want[k] -= d
        want[("link", "lan", "rx_packets")] -= d
        want[("link", "lan", "rx_bytes")] -= d * len(frame)
        got = pair.kernel_counters()
        assert got == +want
        assert got[("vnet drop", "red", "policed")] >= 4
    finally:
        pair.close()
