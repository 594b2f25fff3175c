"""Differential tests: the compiled engine decides exactly like the reference engine.

One corpus of frames (valid, tagged inline / out of band / untagged, every drop reason, random
bytes) and TAP frames goes through both datapaths, built from the same configuration, with no
real interfaces: substrate send sockets and TAP fds are SOCK_SEQPACKET socketpairs whose other
ends the test reads.  What came out (per socket, in order per output) and every counter
(substrate links, virtual links, global drops, logical interfaces, learned MACs) must be equal.
Hypothesis then runs random frames through both.
"""
import asyncio
import random
import socket
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from vnet_router.datapath import select as datapaths
from vnet_router.datapath.select import DatapathC, DatapathPy
from vnet_router.wire import control, substrate as wire
from vnet_router.model.config import loads
from vnet_router.model.tables import IfaceFacts, Tables

try:
    datapaths.fast_module()
    fast_mod = DatapathC
except ImportError:          # test_fast_path_is_built says so loudly
    fast_mod = None
ref_mod = DatapathPy

IMPLS = [pytest.param(DatapathPy, id="py"),
         pytest.param(DatapathC, id="c", marks=pytest.mark.skipif(fast_mod is None,
                                                                  reason="fast path not built"))]

ME0 = bytes.fromhex("0200000000aa")
ME1 = bytes.fromhex("0200000000bb")
P1, P2, P3, Q = (bytes.fromhex(x) for x in ("020000000001", "020000000002", "020000000003",
                                            "020000000004"))
STRANGER = bytes.fromhex("0200000000ee")
IF0, IF1 = 2, 3

CFG = """
[[substrate_link]]
id = "p1"
kind = "p2p"
interface = "eth0"
peer_mac = "02:00:00:00:00:01"
vlan = 10
priority = 5
[[substrate_link]]
id = "p2"
kind = "p2p"
interface = "eth0"
peer_mac = "02:00:00:00:00:02"
vlan = 10
[[substrate_link]]
id = "p3"
kind = "p2p"
interface = "eth0"
peer_mac = "02:00:00:00:00:03"
vlan = 20
mtu = 600
[[substrate_link]]
id = "lan"
kind = "multiaccess"
interface = "eth0"
[[substrate_link]]
id = "q"
kind = "p2p"
interface = "eth1"
peer_mac = "02:00:00:00:00:04"
vlan = 30
[[substrate_link]]
id = "t"
kind = "udp"
local = "127.0.0.1:{udp_local}"
remote = "127.0.0.1:{udp_remote}"
[[vnet]]
name = "blue"
id = 1
[[interface]]
vnet = "blue"
name = "b1"
substrate_link = "p1"
in_vli = 100
out_vli = 101
in_rate = { max = "1Mbit", burst = "6KB" }
[[interface]]
vnet = "blue"
name = "b2"
substrate_link = "lan"
in_vli = 100
out_vli = 101
[[interface]]
vnet = "blue"
name = "b3"
substrate_link = "q"
in_vli = 100
out_vli = 101
[[interface]]
vnet = "blue"
name = "b4"
substrate_link = "t"
in_vli = 7
[[interface]]
vnet = "blue"
name = "b5"
substrate_link = "p2"
in_vli = 100
out_vli = 101
rate = { max = "1Mbit", burst = "4KB" }
queue = 3
[[interface]]
vnet = "blue"
name = "noport"
substrate_link = "p3"
in_vli = 100
[[switch]]
vnet = "gold"
in_link = "p2"
in_vli = 5
out_link = "p1"
out_vli = 6
[[switch]]
vnet = "gold"
in_link = "p1"
in_vli = 7
out_link = "lan"
out_vli = 8
[[switch]]
vnet = "gold"
in_link = "lan"
in_vli = 9
out_link = "q"
out_vli = 10
[[switch]]
vnet = "gold"
in_link = "q"
in_vli = 11
out_link = "p3"
out_vli = 12
[[switch]]
vnet = "gold"
in_link = "p1"
in_vli = 13
out_link = "p2"
out_vli = 14
rate = { max = "1Mbit", burst = "3KB" }
queue = 2
[[switch]]
vnet = "gold"
in_link = "p2"
in_vli = 15
out_link = "t"
out_vli = 16
rate = { max = "1Mbit", burst = "3KB" }
queue = 2
[[switch]]
vnet = "gold"
in_link = "t"
in_vli = 17
out_link = "p1"
out_vli = 18
[[drop]]
substrate_link = "p1"
vli = 66
"""


def _free_ports(n):
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# the UDP tunnel link "t" runs on loopback: its datagrams are real, the peer is the test
_L, _R = _free_ports(2)
UDP_LOCAL, UDP_REMOTE, UDP = ("127.0.0.1", _L), ("127.0.0.1", _R), "udp"
CFG = CFG.replace("{udp_local}", str(_L)).replace("{udp_remote}", str(_R))


class Rig:
    """One datapath on socketpairs; ``outputs()`` drains what it sent."""

    def __init__(self, make, broken_tx=False, clock=lambda: 100.0, **callbacks):
        cfg = loads(CFG)
        facts = {"eth0": IfaceFacts(IF0, ME0, 1500), "eth1": IfaceFacts(IF1, ME1, 1500)}
        self.tables = Tables(cfg, facts)
        self.loop = asyncio.new_event_loop()
        self.dp = make(self.tables, self.loop, clock=clock, **callbacks)
        self.peers = {}
        self.socks = []
        for li in cfg.interfaces:
            if li.name == "noport":
                continue
            a, b = self._pair()
            self.dp.add_port(li.vnet, li.name, a.fileno())
            self.peers[("tap", li.name)] = b
        for ifindex in (IF0, IF1):
            a, b = self._pair()
            self.dp.tx[ifindex] = a
            self.peers[("if", ifindex)] = b
            if broken_tx and ifindex == IF1:
                b.close()            # sends on eth1 fail: send_error
        for addr in (UDP_LOCAL, UDP_REMOTE):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            u.bind(addr)
            u.setblocking(False)
            self.socks.append(u)
        self.dp.udp[UDP_LOCAL] = self.socks[-2]
        self.peers[("udp", "t")] = self.socks[-1]
        self.dp.install(self.tables.compile())

    def _pair(self):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (a, b):
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.socks += [a, b]
        return a, b

    def eth(self, ifindex, frame, tci=None):
        if ifindex == UDP:                       # (UDP, datagram, sender)
            self.dp.process_udp(UDP_LOCAL, tci, frame)
        else:
            self.dp.process_eth(ifindex, frame, tci)

    def tap(self, name, frames):
        peer = self.peers[("tap", name)]
        for f in frames:
            peer.send(f)
        port = self.dp.ports[("blue", name)]
        while not port.paused:
            before = port.rx_packets
            self.dp.engine.on_tap(port)
            if port.rx_packets == before:
                break

    def outputs(self):
        self.dp.flush()
        out = {}
        for key, s in self.peers.items():
            if s.fileno() < 0:
                continue
            got = []
            while True:
                try:
                    got.append(s.recv(70000))
                except BlockingIOError:
                    break
            if key[0] == "if":
                got = by_virtual_link(got)
            out[f"{key[0]}:{key[1]}"] = got
        return out

    def counters(self):
        self.dp.flush()
        snap = self.dp.snap
        return {
            "links": {lid: (c.state.rx_packets, c.state.rx_bytes, c.state.tx_packets,
                            c.state.tx_bytes, {k: n for k, n in c.state.drops.items() if n},
                            dict(c.state.ignored))
                      for lid, c in snap.links.items()},
            "vlinks": {k: (v.packets, v.bytes, dict(v.drops),
                           getattr(self.dp.meter_of(k), "depth", None), v.vnet)
                       for k, v in self.tables.vlinks.items()},
            "drops": dict(self.tables.drops),
            "vnet_drops": dict(self.dp.vnet_drops),
            "ignored": dict(self.tables.ignored),
            "ports": {k: (p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes,
                          dict(p.learned.items()), p.paused, p.learned.stats())
                      for k, p in self.dp.ports.items()},
        }

    def close(self):
        self.dp.close()
        for s in self.socks:
            s.close()
        self.loop.close()


def by_virtual_link(frames):
    """Frames sent on one interface, in order per output virtual link (dst, VLAN, VLI).

    Order between different virtual links is no part of the semantics: the fast path sends a
    batch at a time, the reference frame by frame, and shaped links release on their own."""
    groups = {}
    for f in frames:
        e = wire.EthFrame.unpack(f)
        groups.setdefault((e.dst, e.vlan, e.vli), []).append(f)
    return groups


def sub(dst, src, vli, payload, vlan=None, ethertype=wire.ETHERTYPE_SUBSTRATE):
    return wire.pack_eth(dst, src, vli, payload, vlan, ethertype)


def ctl(body=b"", mtype=1, flags=0):
    """A VLI 0 payload: a version-1 control header, then ``body``.  With a known type and no
    flag but AUTH and SIGNED the datapath hands it to the control plane (``control.plausible``):
    the tests' control plane reads the body, as the real one would refuse it."""
    return control.HEADER.pack(control.VERSION, mtype, flags, 0, 0, 0) + body


def inner(dst=b"\x02\x11\x11\x11\x11\x11", src=b"\x02\x22\x22\x22\x22\x22", n=50):
    return dst + src + b"\x08\x00" + bytes(range(n % 256)) * (n // 256) + bytes(range(n % 256))


def corpus():
    """(ifindex, frame, tci) for every case the receive rule knows, plus random bytes."""
    t10, t20, t30 = wire.VlanTag(10, 5), wire.VlanTag(20), wire.VlanTag(30)
    frames = []

    def both(ifindex, dst, src, vli, payload, tag):
        """The same frame with its tag inline and stripped into the out-of-band TCI."""
        frames.append((ifindex, sub(dst, src, vli, payload, tag), None))
        frames.append((ifindex, sub(dst, src, vli, payload), tag.tci))

    # valid: deliver (p2p, tagged both ways; multiaccess with learning; eth1)
    both(IF0, ME0, P1, 100, inner(n=60), t10)
    frames.append((IF0, sub(ME0, P3, 100, inner(), None), None))          # untagged -> lan
    frames.append((IF0, sub(wire.BROADCAST_MAC, STRANGER, 100, inner(src=b"\x02\x33" * 3)), None))
    frames.append((IF0, sub(ME0, P2, 100, inner(), wire.VlanTag(0, 3)), None))  # prio tag -> lan
    frames.append((IF0, sub(ME0, P2, 100, inner(n=10)), 0x6000))           # prio TCI -> lan
    both(IF1, ME1, Q, 100, inner(n=1400), t30)
    frames.append((IF0, sub(ME0, P2, 100, b"tiny"), None))                 # < 12: no learning
    # valid: switch (VLI swap) p2p->p2p, p2p->lan, lan->p2p on another interface, p2p->p2p
    for n in (0, 1, 46, 200, 1400):
        both(IF0, ME0, P2, 5, (bytes(range(256)) * 6)[:n], t10)
    both(IF0, ME0, P1, 7, inner(n=80), t10)
    frames.append((IF0, sub(ME0, P1, 9, inner(n=70)), None))
    both(IF1, ME1, Q, 11, inner(n=560), t30)                               # fits p3 (mtu 600)
    both(IF1, ME1, Q, 11, inner(n=590), t30)
    both(IF1, ME1, Q, 11, b"\x02" * 596, t30)                             # fits p3 exactly
    both(IF1, ME1, Q, 11, b"\x02" * 597, t30)                             # too_big on p3 out
    # shaped switch: bucket of 3KB, queue of 2 -> sends, queued, queue_full
    for _ in range(8):
        frames.append((IF0, sub(ME0, P1, 13, b"\x55" * 1000, t10), None))
    # policed: b1's input bucket holds 6KB and the clock stands still
    for _ in range(8):
        frames.append((IF0, sub(ME0, P1, 100, b"\x66" * 1200), t10.tci))
    # UDP tunnel link t: deliver, switch to p1, every reason; switched onto t (shaped)
    u = UDP_REMOTE
    frames += [
        (UDP, wire.pack_udp(7, inner(n=60)), u),                     # deliver to b4
        (UDP, wire.pack_udp(17, inner(n=90)), u),                    # switch t -> p1
        (UDP, wire.pack_udp(555, b"x" * 20), u),                     # unknown_vli
        (UDP, wire.pack_udp(0, b"\xff" * 30), u),                    # control
        (UDP, b"\x07", u),                                           # short
        (UDP, wire.pack_udp(7, b"x" * 2000), u),                     # oversize
        (UDP, wire.pack_udp(7, inner(n=60)), ("127.0.0.1", 9)),      # no_link: unknown sender
        (UDP, wire.pack_udp(7, inner(n=60)), ("127.0.0.2", u[1])),   # no_link
    ]
    for _ in range(6):                                               # sent, queued, queue_full
        frames.append((IF0, sub(ME0, P2, 15, b"\x44" * 1000, t10), None))
    # drop reasons
    frames += [
        (IF0, b"", None), (IF0, b"\x01" * 13, None),                                   # short
        (IF0, ME0 + P1 + b"\x81\x00\x00", None),                                       # short
        (IF0, wire.pack_eth_header(ME0, P1, t10) + b"\x00\x64\x00", None),             # short
        (IF0, wire.pack_eth_header(ME0, P1) + b"\x00", 10),                            # short
        (IF0, sub(ME0, P1, 100, b"x" * 100, t10)[:-30], None),                         # bad_len
        (IF0, sub(ME0, P1, 100, b"x" * 100)[:-1], 10),                                 # bad_len
        (IF0, sub(ME0, P1, 100, b"x" * 60, wire.VlanTag(11)), None),                   # unknown_vlan
        (IF0, sub(ME0, P1, 100, b"x" * 60), 4094),                                     # unknown_vlan
        (IF0, sub(ME0, STRANGER, 100, b"x" * 60, t10), None),                          # bad_peer
        (IF0, sub(ME0, P3, 100, b"x" * 60), 10),                                       # bad_peer
        (IF1, sub(ME1, Q, 100, b"x" * 60), None),                                      # no_link
        (99, sub(ME0, P1, 100, b"x" * 60, t10), None),                                 # no_link
        (IF0, sub(ME0, P1, 100, b"x" * 60, t10, ethertype=0x0800), None),              # no_link
        (IF0, sub(ME0, P1, 100, b"x" * 60, ethertype=0x86DD), 10),                     # no_link
        (IF0, sub(ME0, P1, 555, b"x" * 60, t10), None),                                # unknown_vli
        (IF0, sub(ME0, P2, 555, b"x" * 60), None),                 # lan, to us: unknown_vli
        (IF0, sub(wire.BROADCAST_MAC, P2, 555, b"x" * 60), None),  # lan, flooded: not_member
        (IF0, sub(P1, P2, 556, b"x" * 60), 0),                     # lan, to another: not_member
        (IF0, sub(ME0, P1, 0, b"\xff" * 30, t10), None),                               # control
        (IF0, sub(ME0, P1, 100, b"x" * 1497, t10), None),                              # oversize
        (IF0, sub(ME0, P3, 100, b"x" * 597, t20), None),                               # oversize
        (IF0, sub(ME0, P1, 66, b"x" * 60, t10), None),                                 # vli_drop
        (IF0, sub(ME0, P3, 100, b"x" * 60, t20), None),                                # tap_error
        (IF0, sub(ME0, P3, 100, b"x" * 60), 20 | 0x2000),                              # tap_error
    ]
    rnd = random.Random(5)
    for i in range(300):
        n = rnd.choice((0, 5, 14, 17, 18, 21, 22, 40, 64, 200, 1600))
        f = bytearray(rnd.randbytes(n))
        if n >= 18 and i % 3:
            f[12:14] = b"\x88\xb5" if i % 2 else b"\x81\x00"
            f[16:18] = b"\x88\xb5"
            f[6:12] = rnd.choice((P1, P2, P3, Q, STRANGER))
        if n >= 22 and i % 5 == 0:
            f[14:16] = rnd.choice((b"\x00\x05", b"\x00\x07", b"\x00\x64", b"\x00\x0d"))
        frames.append((rnd.choice((IF0, IF1)), bytes(f), rnd.choice((None, 10, 20, 30, 0, 4095))))
    for i in range(60):
        vli = rnd.choice((7, 17, 0, 555, rnd.randrange(65536))).to_bytes(2, "big")
        frames.append((UDP, (vli + rnd.randbytes(rnd.choice((0, 1, 14, 60, 1400))))[
            :rnd.choice((0, 1, 2, 3, 2000))], rnd.choice((UDP_REMOTE, ("127.0.0.1", 9)))))
    return frames


TAP_FRAMES = {
    "b1": [inner(n=60), inner(n=1400), inner(n=1483), inner(n=1500), b"\x02" * 1496,
           b"\x02" * 1497],                                                  # last: too_big
    "b2": [inner(n=60), inner(dst=b"\x02\x33" * 3, n=60), inner(dst=wire.BROADCAST_MAC)],
    "b3": [inner(n=100)] * 3,
    "b5": [b"\x77" * 1000] * 9,                                               # shaped, pauses
}


def run(mod, broken_tx=False, frames=None, taps=True):
    rig = Rig(mod, broken_tx)
    try:
        for ifindex, frame, tci in (corpus() if frames is None else frames):
            rig.eth(ifindex, frame, tci)
        if taps:
            for name, fs in TAP_FRAMES.items():
                rig.tap(name, fs)
        return rig.outputs(), rig.counters()
    finally:
        rig.close()


@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
@pytest.mark.parametrize("broken_tx", [False, True], ids=["ok", "send_error"])
def test_corpus_same_outputs_and_counters(broken_tx):
    ref_out, ref_cnt = run(ref_mod, broken_tx)
    fast_out, fast_cnt = run(fast_mod, broken_tx)
    assert fast_out == ref_out
    assert fast_cnt == ref_cnt


@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
def test_corpus_frame_by_frame():
    """Each frame of the corpus alone (fresh datapaths): a mismatch names the frame."""
    for i, item in enumerate(corpus()[:80]):
        assert run(fast_mod, frames=[item], taps=False) == \
            run(ref_mod, frames=[item], taps=False), f"frame {i}: {item!r}"


@pytest.mark.parametrize("mod", IMPLS)
def test_corpus_exercises_every_reason(mod):
    """The corpus is worth its name: every drop reason and both actions happen."""
    out, cnt = run(mod, broken_tx=True)
    # ring_full is the kernel's count (no ring here): tests/integration/test_accounting.py;
    # the bounds of the queues to the control plane (control_queue, control_peer, ...): the
    # corpus runs without a control plane, they are test_copp's
    assert all(n > 0 for r, n in cnt["drops"].items()
               if r != "ring_full" and not r.startswith("control_")), cnt["drops"]
    assert all(n > 0 for n in cnt["ignored"].values()), cnt["ignored"]
    assert cnt["links"]["lan"][5]["not_member"] == 2        # flooded, or to another MAC
    assert out["if:2"] and out["tap:b1"] and out["tap:b2"] and out["tap:b3"]
    assert cnt["ports"][("blue", "b2")][4]      # learned a MAC on the multiaccess link
    assert out["udp:t"] and out["tap:b4"]        # the UDP tunnel link both ways
    assert cnt["vlinks"][("t", 16, "out")][2].get("queue_full")          # shaped onto UDP
    assert cnt["vlinks"][("p1", 18, "out")][0] > 0                        # UDP -> p2p switch
    by_vnet = Counter()                 # every drop of a virtual link, under its vNet
    for _p, _b, drops, _d, vnet in cnt["vlinks"].values():
        by_vnet.update({(vnet, r): n for r, n in drops.items()})
    assert cnt["vnet_drops"] == dict(by_vnet) and len({v for v, _ in by_vnet}) > 1
    out, cnt = run(mod)
    assert out["if:3"] and cnt["drops"]["send_error"] == 0


@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(
    st.sampled_from([IF0, IF1, 7]),
    st.one_of(
        st.binary(max_size=80),
        st.builds(lambda dst, src, vli, tag, payload, cut: sub(dst, src, vli, payload, tag)[:cut],
                  st.sampled_from([ME0, ME0, wire.BROADCAST_MAC, P1]),
                  st.sampled_from([P1, P2, P3, Q, STRANGER]),
                  st.sampled_from([0, 5, 7, 9, 11, 13, 66, 100, 101, 555]),
                  st.one_of(st.none(), st.builds(wire.VlanTag, st.sampled_from([0, 10, 20, 30, 11]),
                                                 st.integers(0, 7))),
                  st.binary(max_size=700),
                  st.integers(0, 800))),
    st.one_of(st.none(), st.sampled_from([0, 10, 20, 30, 0xA00A, 4095]))), max_size=25))
def test_random_frames_same_decisions(frames):
    assert run(fast_mod, frames=frames, taps=False) == run(ref_mod, frames=frames, taps=False)
