"""Differential test: the classifier with the kernel tier (``bpf/substrate.bpf.c`` loaded and
filled by ``datapath/classifier.py``) decides like the reference datapath, on the same tables.

One corpus of substrate frames (named cases, 200 seeded mutations of the valid ones) goes
through the reference datapath (``DatapathPy``, its substrate sends captured on socketpairs as
in ``test_datapath_diff``), and through the ``substrate_tc`` program with BPF_PROG_TEST_RUN
(skbs "received" on the two ends of a veth pair in a private network namespace; the VLAN tag
is inline since a test run cannot set ``skb->vlan_tci``).  The tables: a second datapath built
from the same configuration and facts, whose snapshot ``Classifier`` installs and whose
counters ``Classifier.sync`` fills (it never handles a frame itself).

Per frame, the reference decides the class:

* *forward*: it switches the frame onto an Ethernet substrate link whose virtual links the tier
  holds (``tier.kernel_vlinks``): the program redirects (TC_ACT_REDIRECT) to the interface the
  reference sent on, with exactly the bytes the reference sent;
* *drop*: a frame the reference drops (or ignores) for a reason the classifier knows: what the
  tables refuse, a drop action, policing, too_big on a kernel switch: TC_ACT_SHOT;
* *engine*: any other substrate frame: TC_ACT_UNSPEC, the frame unchanged, its mark the queue
  of its vNet (VLI 0: the known neighbours' control queue or the other one);
* *legacy*: any other frame: TC_ACT_UNSPEC, unchanged, no mark.

Then the counters the classifier adds to its datapath's (``sync``) equal what the reference
counted for the frames the kernel ended (forward, drop).  Policing is compared on a burst
(pass counts may differ by one frame: the two buckets read the clock at different moments),
and after an idle period (the buckets' stamps set back instead of sleeping).
"""
import asyncio
import os
import random
import socket
import subprocess
from collections import Counter

import pytest

from test_datapath_diff import ctl
from vnet_router.datapath.classify import classify_eth
from vnet_router.datapath.select import DatapathPy
from vnet_router.model.config import Rate, loads
from vnet_router.model.tables import DROP, IfaceFacts, Tables
from vnet_router.datapath import classifier as ktier
from vnet_router.ops import ebpf
from vnet_router.wire import control, substrate as wire

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or ebpf.available() is not None,
    reason=f"needs root (a network namespace, BPF) and {ebpf.available() or 'libbpf'}")

TC_ACT_SHOT, TC_ACT_REDIRECT, TC_ACT_UNSPEC = 2, 7, 0xFFFFFFFF
ETHERTYPE = wire.ETHERTYPE_SUBSTRATE
ME0, ME1 = bytes.fromhex("0200000000aa"), bytes.fromhex("0200000000bb")
P1, P2, P3, Q, LANPEER, STRANGER = (bytes.fromhex(x) for x in (
    "020000000001", "020000000002", "020000000003", "020000000004", "020000000005",
    "0200000000ee"))
OTHER = bytes.fromhex("020000000077")        # a LAN station that is not this node
# what the classifier ends itself (counted by reason), besides policing and drop actions
KERNEL_ENDS = {"no_link", "unknown_vlan", "bad_peer", "short", "bad_len", "oversize",
               "unknown_vli", "not_member"}

CFG = """
[[substrate_link]]
id = "p1"
kind = "p2p"
interface = "e0"
peer_mac = "02:00:00:00:00:01"
vlan = 10
priority = 5
[[substrate_link]]
id = "p2"
kind = "p2p"
interface = "e0"
peer_mac = "02:00:00:00:00:02"
vlan = 20
[[substrate_link]]
id = "p3"
kind = "p2p"
interface = "e0"
peer_mac = "02:00:00:00:00:03"
vlan = 10
mtu = 600
[[substrate_link]]
id = "lan"
kind = "multiaccess"
interface = "e0"
[[substrate_link]]
id = "q"
kind = "p2p"
interface = "e1"
peer_mac = "02:00:00:00:00:04"
vlan = 30
priority = 3
[[substrate_link]]
id = "lan1"
kind = "multiaccess"
interface = "e1"
[[vnet]]
name = "blue"
id = 1
[[interface]]
vnet = "blue"
name = "b1"
substrate_link = "p1"
in_vli = 100
out_vli = 101
[[vnet]]
name = "red"
id = 2
[[interface]]
vnet = "red"
name = "r1"
substrate_link = "lan"
in_vli = 200
out_vli = 201
[[interface]]
vnet = "red"
name = "r2"
substrate_link = "p2"
in_vli = 210
out_vli = 211
[[switch]]
vnet = "gold"
in_link = "p1"
in_vli = 5
out_link = "p2"
out_vli = 6
[[switch]]
vnet = "gold"
in_link = "p2"
in_vli = 7
out_link = "lan"
out_vli = 8
[[switch]]
vnet = "gold"
in_link = "p2"
in_vli = 9
out_link = "lan1"
out_vli = 10
[[switch]]
vnet = "gold"
in_link = "lan"
in_vli = 11
out_link = "q"
out_vli = 12
[[switch]]
vnet = "gold"
in_link = "q"
in_vli = 13
out_link = "p3"
out_vli = 14
[[switch]]
vnet = "gold"
in_link = "p1"
in_vli = 15
out_link = "q"
out_vli = 16
[[switch]]
vnet = "gold"
in_link = "p1"
in_vli = 17
out_link = "p2"
out_vli = 18
rate = "1Mbit"
[[switch]]
vnet = "gold"
in_link = "lan1"
in_vli = 19
out_link = "lan"
out_vli = 20
[[drop]]
substrate_link = "p1"
vli = 66
"""
KERNEL_SWITCHES = {("p1", 5), ("p2", 7), ("p2", 9), ("lan", 11), ("q", 13), ("p1", 15),
                   ("lan1", 19)}     # p1:17's output is shaped in user space: the engine's


@pytest.fixture(scope="module")
def facts():
    """A private namespace with a veth pair e0/e1 (the skbs' interfaces), removed after."""
    ns = f"vl{os.getpid()}-ktier"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "e0", "address", wire.mac_to_str(ME0),
                        "type", "veth", "peer", "name", "e1", "address", wire.mac_to_str(ME1)],
                       check=True)
        got = ebpf.in_namespace(ns, lambda: {n: IfaceFacts(*ebpf.iface_facts(n))
                                             for n in ("e0", "e1")})
        assert got["e0"].mac == ME0 and got["e1"].mac == ME1
        yield ns, got
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def counters(dp) -> Counter:
    """Every counter a frame the kernel ends can move, by name."""
    c = Counter()
    for lid, ctx in dp.snap.links.items():
        st = ctx.state
        c.update({("link", lid, "rx_packets"): st.rx_packets, ("link", lid, "rx_bytes"):
                  st.rx_bytes, ("link", lid, "tx_packets"): st.tx_packets,
                  ("link", lid, "tx_bytes"): st.tx_bytes})
        c.update({("link", lid, "drop", r): n for r, n in st.drops.items()})
        c.update({("link", lid, "ignored", r): n for r, n in st.ignored.items()})
    for key, v in dp.tables.vlinks.items():
        c.update({("vlink", key, "packets"): v.packets, ("vlink", key, "bytes"): v.bytes})
        c.update({("vlink", key, "drop", r): n for r, n in v.drops.items()})
    c.update({("drop", r): n for r, n in dp.drops.items()})
    c.update({("ignored", r): n for r, n in dp.ignored.items()})
    c.update({("vnet drop", vnet, r): n for (vnet, r), n in dp.vnet_drops.items()})
    return +c


def classic_keeps(frame: bytes) -> bool:
    """What the engine's classic ring filter (``packet_io.substrate_filter``) keeps."""
    if len(frame) < 14:
        return False
    et = int.from_bytes(frame[12:14], "big")
    if et == ETHERTYPE:
        return True
    return et in (0x8100, 0x88A8) and len(frame) >= 18 and \
        int.from_bytes(frame[16:18], "big") == ETHERTYPE


def tc_runnable(frame: bytes) -> bool:
    """BPF_PROG_TEST_RUN refuses a TC skb shorter than Ethernet, or an IP one shorter than IP."""
    if len(frame) < 14:
        return False
    et = int.from_bytes(frame[12:14], "big")
    return not (et == 0x0800 and len(frame) < 34 or et == 0x86DD and len(frame) < 54)


class Pair:
    """The reference datapath and the kernel tier, built from one configuration."""

    def __init__(self, facts):
        self.loop = asyncio.new_event_loop()
        self.socks = []
        self.peers = {}                      # reference's send socket's peer -> ifindex
        self.ref = DatapathPy(Tables(loads(CFG), facts), self.loop)
        self.kdp = DatapathPy(Tables(loads(CFG), facts), self.loop)
        for f in facts.values():
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            for s in (a, b):
                s.setblocking(False)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.socks += [a, b]
            self.ref.tx[f.ifindex] = a
            self.peers[b] = f.ifindex
        for dp in (self.ref, self.kdp):
            dp.tables.output_vlink("lan1", 10).dst = LANPEER        # a fixed destination
            dp.install(dp.tables.compile())
        self.tier = ktier.Classifier(self.kdp, forward=True)
        self.tier.install(self.kdp.snap)
        assert {(k[0], k[1]) for k in self.tier.kernel_vlinks} == KERNEL_SWITCHES
        self.expected = Counter()            # the reference's counts of the kernel's frames
        self.kernel_frames = 0
        self.queues = Counter()              # frames steered, by queue

    def police(self, link: str, vli: int, rate: Rate):
        """Give input ``link:vli`` a token bucket in both (the core's set_rate, then what
        KernelEngine does: install when it became metered, else retune)."""
        for dp in (self.ref, self.kdp):
            v = dp.tables.input_vlink(link, vli)
            metered = dp.meter_of(v.key) is not None
            v.rate = rate
            dp.set_rate(v)
        if metered:
            self.tier.retune(self.kdp.snap.entry(v.key))
        else:
            self.tier.install(self.kdp.snap)

    def reference(self, ifindex: int, frame: bytes):
        """The reference's class of ``frame``, the frames it sent: [(ifindex, bytes)], and the
        mark the program must write (the queue), or None."""
        reason, ctx, v, start, length = classify_eth(self.ref.snap, ifindex, frame, None)
        kernel = reason is None and v.key in self.tier.kernel_vlinks
        before = counters(self.ref)
        ignored = self.ref.ignored["not_member"]
        self.ref.process_eth(ifindex, frame, None)
        sent = []
        for peer, out_ifindex in self.peers.items():
            while True:
                try:
                    sent.append((out_ifindex, peer.recv(70000)))
                except BlockingIOError:
                    break
        moved = counters(self.ref) - before
        if kernel:
            self.kernel_frames += 1
            self.expected.update(moved)
            return ("forward" if sent else "drop"), sent, None
        if not classic_keeps(frame):
            return "legacy", sent, None
        ends = reason in KERNEL_ENDS or (reason is None and (
            v.action == DROP or moved[("drop", "policed")])) or (
            reason == "control" and not control.plausible(frame[start:start + length]))
        if ends:
            self.kernel_frames += 1
            self.expected.update(moved)
            assert reason != "not_member" or self.ref.ignored["not_member"] == ignored + 1
            return "drop", sent, None
        if reason == "control":         # known: a p2p link's peer (the link says who it is)
            return "engine", sent, (ktier.Q_KNOWN if ctx.kind == "p2p" else ktier.Q_OTHER)
        assert reason is None, (reason, frame.hex())
        return "engine", sent, self.tier.queues[v.vlink.vnet]

    def out_ifindex(self, ifindex: int, frame: bytes) -> int:
        """Where the program redirects ``frame`` (its table entry)."""
        _r, ctx, v, _s, _n = classify_eth(self.kdp.snap, ifindex, frame, None)
        slot = self.tier.link_slots.of[ctx.id]
        val = self.tier.prog.lookup("vlis", ktier._VLI_KEY.pack(slot, v.vlink.vli, self.tier.gen,
                                                                   0))
        return ktier._VLI_VAL.unpack(val[0])[6]

    def run(self, ifindex: int, frame: bytes, what: str, policing=False):
        """One frame through both; asserts the kernel did what the reference's class says
        (``policing``: forward or drop, the caller compares how many of each).  Returns
        (the reference's class, the kernel forwarded it)."""
        cls, sent, queue = self.reference(ifindex, frame)
        prog = self.tier.prog
        if not tc_runnable(frame):
            assert cls == "legacy", (what, frame.hex())
            return cls, False
        ctx = bytearray(ebpf.SKB_CTX_SIZE)
        verdict, out, _ = prog.test_run(frame, ifindex, program="substrate_tc", ctx_out=ctx)
        mark = int.from_bytes(ctx[ebpf.SKB_MARK:ebpf.SKB_MARK + 4], "little")
        msg = (what, cls, frame.hex(), verdict, out.hex(), sent, mark, queue)
        if cls == "forward" or (cls == "drop" and policing):
            assert len(sent) == (cls == "forward"), msg
            if policing:
                assert verdict in (TC_ACT_REDIRECT, TC_ACT_SHOT), msg
            else:
                assert verdict == TC_ACT_REDIRECT, msg
            if verdict == TC_ACT_REDIRECT and sent:
                assert out == sent[0][1], msg
                assert self.out_ifindex(ifindex, frame) == sent[0][0], msg
            return cls, verdict == TC_ACT_REDIRECT
        if cls == "drop":
            assert verdict == TC_ACT_SHOT and not sent, msg
            return cls, False
        assert verdict == TC_ACT_UNSPEC and out == frame, msg
        assert mark == (queue or 0), msg
        self.queues[mark] += 1
        return cls, False

    def kernel_counters(self) -> Counter:
        self.tier.sync()
        return counters(self.kdp)

    def close(self):
        self.tier.close()
        for dp in (self.ref, self.kdp):
            dp.close()
        for s in self.socks:
            s.close()
        self.loop.close()


def eth(dst, src, vli, payload, vid=None, pcp=0, tpid=0x8100, ethertype=ETHERTYPE, pad=0,
        pad_byte=b"\xa5", length=None):
    """A substrate frame, the tag inline (``tpid``); ``pad``: padded to that size; ``length``:
    LEN if not the payload's."""
    tag = b"" if vid is None else tpid.to_bytes(2, "big") + ((pcp << 13) | vid).to_bytes(2, "big")
    n = len(payload) if length is None else length
    f = dst + src + tag + ethertype.to_bytes(2, "big") + vli.to_bytes(2, "big") + \
        n.to_bytes(2, "big") + payload
    return f + pad_byte * (pad - len(f)) if pad > len(f) else f


def data(n: int, seed: int = 0) -> bytes:
    return random.Random(n * 7 + seed).randbytes(n)


def corpus(e0: int, e1: int):
    """(ifindex, frame, what): every case, named."""
    c = []
    # forward: p2p -> p2p (VLAN 10 -> 20, PCP 5 -> 0), sizes up to a full 1500-byte MTU
    for n in (0, 1, 46, 200, 1400, 1496):
        c.append((e0, eth(ME0, P1, 5, data(n), 10, 5), f"p1->p2 {n}"))
    c.append((e0, eth(ME0, P1, 5, data(10), 10, pad=64), "p1->p2 padded to 64"))
    c.append((e0, eth(ME0, P1, 5, data(1), 10, pad=60, pad_byte=b"\x00"), "p1->p2 padded 60"))
    c.append((e0, eth(ME0, P1, 5, data(0), 10, tpid=0x88A8), "p1->p2 802.1ad tag"))
    c.append((e0, eth(ME0, P1, 5, data(30), 10, 7) + b"\xee" * 4, "p1->p2 4 bytes more"))
    c.append((e0, eth(OTHER, P1, 5, data(30), 10), "p1->p2 not to our MAC"))
    c.append((e0, eth(ME0, P1, 15, data(300), 10), "p1->q"))
    # forward: p2p -> multiaccess (broadcast; a fixed destination on the other interface)
    for n in (0, 60, 1496):
        c.append((e0, eth(ME0, P2, 7, data(n, 1), 20, pad=60), f"p2->lan {n}"))
        c.append((e0, eth(ME0, P2, 9, data(n, 2), 20, pad=64), f"p2->lan1 {n}"))
    # forward: multiaccess -> p2p (untagged in, tagged out on e1), multiaccess -> multiaccess
    for n in (0, 100, 1496):
        c.append((e0, eth(ME0, LANPEER, 11, data(n, 3), pad=60), f"lan->q {n}"))
        c.append((e1, eth(ME1, LANPEER, 19, data(n, 4), pad=60), f"lan1->lan {n}"))
    c.append((e0, eth(wire.BROADCAST_MAC, OTHER, 11, data(70)), "lan->q broadcast"))
    c.append((e0, eth(OTHER, LANPEER, 11, data(70)), "lan->q to another station"))
    c.append((e0, eth(ME0, LANPEER, 11, data(70), 0, 6), "lan->q priority tag"))
    c.append((e0, eth(ME0, LANPEER, 11, data(70), 0, tpid=0x88A8), "lan->q 802.1ad prio tag"))
    # forward / too_big: q -> p3, whose payload MTU is 596
    for n in (595, 596, 597, 1496):
        c.append((e1, eth(ME1, Q, 13, data(n), 30), f"q->p3 {n}"))
    # the engine's: control, unknown VLI, delivery, drop action, a user-space-shaped output
    c += [
        (e0, eth(ME0, P1, 0, ctl(data(30)), 10), "p1 control"),
        (e0, eth(ME0, P2, 0, ctl(data(3), 13, control.KNOWN_FLAGS), 20), "p2 control, flags"),
        (e0, eth(ME0, LANPEER, 0, ctl(data(30), 5)), "lan control"),
        (e0, eth(wire.BROADCAST_MAC, OTHER, 0, ctl(data(30))), "lan control, broadcast"),
        (e1, eth(ME1, Q, 0, ctl(), 30), "q control, header only"),
        (e1, eth(ME1, LANPEER, 0, ctl(data(30))), "lan1 control"),
        # VLI 0 but no control message: the control drop, in the kernel (control.plausible)
        (e0, eth(ME0, P1, 0, data(30), 10), "p1 VLI 0, no header"),
        (e0, eth(ME0, P1, 0, ctl()[:15], 10), "p1 VLI 0, shorter than a header"),
        (e0, eth(ME0, P1, 0, ctl(data(30), 0), 10, pad=64), "p1 VLI 0, type 0"),
        (e0, eth(ME0, P2, 0, ctl(data(30), 14), 20), "p2 VLI 0, unknown type"),
        (e0, eth(ME0, LANPEER, 0, b"\x02" + ctl(data(30))[1:]), "lan VLI 0, version 2"),
        (e1, eth(ME1, Q, 0, ctl(data(30), 1, 4), 30), "q VLI 0, unknown flag"),
        (e1, eth(ME1, OTHER, 0, data(30)), "lan1 VLI 0, no header, from a stranger"),
        (e0, eth(ME0, P1, 555, data(30), 10), "p1 unknown VLI"),
        (e0, eth(ME0, LANPEER, 555, data(30)), "lan unknown VLI to us"),
        (e0, eth(wire.BROADCAST_MAC, LANPEER, 555, data(30)), "lan flooded: not member"),
        (e0, eth(ME0, P1, 100, data(30), 10), "p1 delivery"),
        (e0, eth(ME0, P1, 100, data(1496), 10), "p1 delivery, full size"),
        (e0, eth(ME0, LANPEER, 200, data(60)), "lan delivery (red)"),
        (e0, eth(wire.BROADCAST_MAC, LANPEER, 200, data(60)), "lan broadcast delivery (red)"),
        (e0, eth(ME0, P2, 210, data(100), 20), "p2 delivery (red)"),
        (e0, eth(ME0, P2, 210, data(100), 20, pad=200), "p2 delivery (red), padded"),
        (e0, eth(ME0, P1, 66, data(30), 10), "p1 drop action"),
        (e0, eth(ME0, P1, 17, data(30), 10), "p1 -> shaped p2"),
        (e0, eth(ME0, P1, 7, data(30), 10), "p2's switch VLI on p1"),
        (e1, eth(ME1, LANPEER, 11, data(30)), "lan's switch VLI on lan1"),
        (e0, eth(ME0, STRANGER, 5, data(30), 10), "bad peer"),
        (e0, eth(ME0, P1, 5, data(30), 11), "unknown VLAN"),
        (e0, eth(ME0, P2, 5, data(30), 10), "p2's MAC on p1's VLAN"),
        (e1, eth(ME1, P1, 5, data(30), 10), "p1's VLAN on e1"),
        (e0, eth(ME0, P1, 5, data(30), 10, length=31), "LEN beyond the frame"),
        (e0, eth(ME0, LANPEER, 11, data(30), length=65535), "LEN 65535"),
        (e0, eth(ME0, P1, 5, data(1497), 10), "oversize"),
        (e0, eth(ME0, P3, 5, data(597), 10), "oversize on p3"),
        (1, eth(ME0, P1, 5, data(30), 10), "lo: no substrate link"),
    ]
    full = eth(ME0, P1, 5, data(8), 10)
    for n in (14, 15, 17, 18, 21):
        c.append((e0, full[:n], f"tagged, short {n}"))
    full = eth(ME0, LANPEER, 11, data(8))
    for n in (5, 13, 14, 15, 17):
        c.append((e0, full[:n], f"untagged, short {n}"))
    # legacy
    c += [
        (e0, ME0 + P1 + b"\x08\x00" + data(40), "IPv4"),
        (e0, ME0 + P1 + b"\x08\x06" + data(28), "ARP"),
        (e0, ME0 + P1 + b"\x86\xdd" + data(60), "IPv6"),
        (e0, ME0 + P1 + b"\x81\x00\x00\x0a\x08\x00" + data(40), "tagged IPv4"),
        (e0, ME0 + P1 + b"\x00\x2e" + data(46), "802.3 length"),
        (e0, eth(ME0, P1, 5, data(30), 10, ethertype=0x88B6), "another EtherType, tagged"),
    ]
    return c


def mutations(base, e0: int, e1: int, count: int, seed: int = 11):
    """``count`` random mutations of the valid frames ``base`` (seeded)."""
    rnd = random.Random(seed)
    macs = (ME0, ME1, P1, P2, P3, Q, LANPEER, STRANGER, OTHER, wire.BROADCAST_MAC)
    out = []
    while len(out) < count:
        ifindex, frame, what = rnd.choice(base)
        f = bytearray(frame)
        tagged = f[12:14] in (b"\x81\x00", b"\x88\xa8")
        off = 18 if tagged else 14
        steps = []
        for _ in range(rnd.randint(1, 3)):
            m = rnd.randrange(10)
            steps.append(m)
            if m == 0 and len(f) > 1:                                   # one byte anywhere
                f[rnd.randrange(min(len(f), 40))] = rnd.randrange(256)
            elif m == 1 and len(f) >= off + 2:                          # VLI
                v = rnd.choice((0, 5, 7, 9, 11, 13, 15, 17, 19, 66, 100, 555,
                                rnd.randrange(65536)))
                f[off:off + 2] = v.to_bytes(2, "big")
            elif m == 2 and len(f) >= off + 4:                          # LEN
                n = len(f) - off - 4
                v = rnd.choice((0, 1, n - 1, n, n + 1, 596, 597, 1496, 1497, 65535,
                                rnd.randrange(65536)))
                f[off + 2:off + 4] = (v % 65536).to_bytes(2, "big")
            elif m == 3:                                                # cut
                del f[rnd.randrange(len(f) + 1):]
            elif m == 4:                                                # pad
                f += rnd.randbytes(rnd.choice((1, 4, 30, 200)))
            elif m == 5 and len(f) >= 12:                               # sender
                f[6:12] = rnd.choice(macs)
            elif m == 6 and len(f) >= 6:                                # destination
                f[0:6] = rnd.choice(macs)
            elif m == 7 and tagged and len(f) >= 16:                    # VLAN id, PCP
                tci = (rnd.randrange(8) << 13) | rnd.choice((0, 10, 11, 20, 30, 4095))
                f[14:16] = tci.to_bytes(2, "big")
            elif m == 8 and len(f) >= 14:                               # EtherType / TPID
                f[12:14] = rnd.choice((b"\x81\x00", b"\x88\xa8", b"\x88\xb5", b"\x88\xb6",
                                       b"\x08\x00", b"\x86\xdd", b"\x00\x40"))
            elif m == 9 and len(f) >= 14:                               # add / remove the tag
                if tagged:
                    del f[12:16]
                else:
                    f[12:12] = b"\x81\x00" + rnd.choice((0, 10, 20, 30)).to_bytes(2, "big")
            tagged = f[12:14] in (b"\x81\x00", b"\x88\xa8")
            off = 18 if tagged else 14
        if rnd.random() < 0.1:
            ifindex = e1 if ifindex == e0 else e0
        if f:
            out.append((ifindex, bytes(f), f"mutation {len(out)} of {what}: {steps}"))
    return out


def test_corpus_same_decisions_and_counters(facts):
    ns, f = facts
    e0, e1 = f["e0"].ifindex, f["e1"].ifindex
    pair = Pair(f)
    try:
        base = corpus(e0, e1)
        valid = [x for x in base if x[2].startswith(("p1->", "p2->", "lan->", "lan1->", "q->"))
                 or "delivery" in x[2] or "control" in x[2]]
        frames = base + mutations(valid, e0, e1, 200)
        classes = ebpf.in_namespace(ns, lambda: Counter(pair.run(*x)[0] for x in frames))
        # the corpus is worth its name: every class, many of each
        assert classes["forward"] >= 40 and classes["drop"] >= 2, classes
        assert classes["engine"] >= 25 and classes["legacy"] >= 10, classes
        assert set(pair.queues) >= {ktier.Q_KNOWN, ktier.Q_OTHER, pair.tier.queues["blue"],
                                    pair.tier.queues["red"], pair.tier.queues["gold"]}
        assert len(frames) == len(base) + 200 >= 260, len(frames)
        # the program's counters, added to the datapath's, are the reference's for those frames
        got = pair.kernel_counters()
        assert got == pair.expected
        assert got[("drop", "too_big")] >= 2
        assert sum(n for k, n in got.items() if k[0] == "vnet drop" and k[2] == "too_big") >= 2
        assert got[("vlink", ("p2", 6, "out"), "packets")] >= 5
        assert pair.tier.stats()["kernel_frames"] == pair.kernel_frames
        assert pair.kernel_frames == classes["forward"] + classes["drop"]
        # a second sync adds nothing
        assert pair.kernel_counters() == got
    finally:
        pair.close()
