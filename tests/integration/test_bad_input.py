"""Malformed substrate frames injected with a raw socket are dropped and counted under their
own reason, while forwarding goes on; VLAN tags arrive stripped (auxdata) on veth and are
classified like inline ones."""
import subprocess

import pytest

import topo as t
from harness import eventually, inject, repo_env

from vnet_router.wire import substrate as wire
from vnet_router.model.config import loads
from vnet_router.model.toml import dump_toml
from vnet_router.lab.lab import Lab
from vnet_router.lab import topology
from vnet_router.datapath.classify import classify_eth
from vnet_router.datapath.entries import bind
from vnet_router.model.tables import IfaceFacts, Tables

pytestmark = pytest.mark.root

# x and y on one veth (MTU 9000 so oversize frames can reach y; y's substrate MTU is 1500)
TOPO = (
    t.link("x:e0", "y:e0", mtu=9000)
    + t.node("x", t.p2p("p", "e0", "y:e0", mtu=1500), t.vnet("blue", 1),
             t.iface("blue", "blue0", "p", 100, 101, addresses=["10.0.0.1/24"]))
    + t.node("y", t.p2p("p", "e0", "x:e0", mtu=1500), t.multiaccess("lan", "e0", mtu=1500),
             t.vnet("blue", 1),
             t.iface("blue", "blue0", "p", 101, 100, addresses=["10.0.0.2/24"])))


def test_bad_frames_are_counted_and_forwarding_continues(make_lab):
    lab = make_lab(TOPO)
    x, y = (bytes.fromhex(lab.mac(n, "e0").replace(":", "")) for n in ("x", "y"))
    tag = wire.VlanTag(10, 0)
    good = wire.pack_eth(y, x, 101, b"\x00" * 60, tag)
    n = 5
    cases = {
        # VLI and half of LEN (the kernel itself drops a tagged frame with < 2 bytes after the tag)
        "short": wire.pack_eth_header(y, x, tag) + b"\x00\x65\x00",
        "bad_len": good[:-20],                                          # LEN beyond the frame
        "unknown_vli": wire.pack_eth(y, x, 999, b"\x00" * 60, tag),
        "bad_peer": wire.pack_eth(y, b"\x02\xee\xee\xee\xee\xee", 101, b"\x00" * 60, tag),
        "unknown_vlan": wire.pack_eth(y, x, 101, b"\x00" * 60, wire.VlanTag(11)),
        "oversize": wire.pack_eth(y, x, 101, b"\x00" * 3000, tag),
        "control": wire.pack_eth(y, x, 0, b"\xff" * 30, tag),              # no control message
    }
    # LEN 2 bytes beyond the frame, whose tag the kernel strips: as bad for the classifier
    cases_more = [("bad_len", good[:-2])]
    assert lab.ping("x", "10.0.0.2", vnet="blue", count=2).received == 2
    before = lab.control("y")
    want = {r: n for r in cases}
    want["bad_len"] += n
    pinger = lab.popen("x", ["ping", "-n", "-c", "40", "-i", "0.05", "10.0.0.2"], vnet="blue",
                       stdout=subprocess.PIPE, text=True)
    for _ in range(n):
        inject(lab, "x", list(cases.values()) + [f for _r, f in cases_more])
    out, _ = pinger.communicate(timeout=30)
    assert " 0% packet loss" in out, out      # forwarding went on throughout

    def counted(st):        # y has counted (at least) every injected frame
        return all(st["drops"].get(r, 0) - before["drops"].get(r, 0) >= k
                   for r, k in want.items())
    after = eventually(lambda: lab.control("y"), 15, "y to count the injected frames",
                       until=counted)
    for reason, k in want.items():
        got = after["drops"].get(reason, 0) - before["drops"].get(reason, 0)
        assert got == k, f"{reason}: counted {got}, injected {k}: {before['drops']} -> {after['drops']}"
    if after["datapath_stats"].get("classified"):
        # every one of them ended by the classifier in y's kernel, before any ring
        ended = after["datapath_stats"]["kernel_frames"] - before["datapath_stats"]["kernel_frames"]
        assert ended >= sum(want.values()), (ended, want)
    link = {s["id"]: s for s in after["substrate_links"]}["p"]
    for reason in ("short", "bad_len", "unknown_vli", "oversize", "control"):
        assert link["drops"].get(reason, 0) >= n, (reason, link["drops"])
    assert lab.alive()["y"] is None


def test_vlan_tag_is_stripped_on_veth_and_classified(tmp_path):
    """Our receive socket on veth: the kernel strips the tag and reports it in auxdata; the
    same frame with the tag inline classifies identically."""
    lab = Lab(topology.loads(t.text(t.link("p:e0", "q:e0") + t.node("p") + t.node("q")),
                             str(tmp_path / "t.toml")),
              workdir=tmp_path / "lab")
    with lab:
        q_mac = lab.mac("q", "e0")
        p_mac = lab.mac("p", "e0")
        frame = wire.pack_eth(bytes.fromhex(q_mac.replace(":", "")),
                              bytes.fromhex(p_mac.replace(":", "")), 42, b"hello" * 12,
                              wire.VlanTag(10, 5))
        recv = lab.popen("q", ["python3", "-c", RECEIVER], stdout=subprocess.PIPE, text=True,
                         env=repo_env())
        assert recv.stdout.readline() == "listening\n"      # its socket is open
        inject(lab, "p", [frame])
        # legacy frame too: the BPF filter must keep it out
        inject(lab, "p", [frame[:12] + b"\x08\x00" + b"\x45" + b"\x00" * 45])
        out, _ = recv.communicate(timeout=10)
    got_len, got_tci, got_hex = out.split()
    got = bytes.fromhex(got_hex)
    assert int(got_tci) == (5 << 13) | 10            # reported out of band
    assert got[12:14] == b"\x88\xb5"                  # and gone from the bytes
    cfg = loads(dump_toml(t.router_config(t.p2p("p", "e0", peer_mac=p_mac, vlan=10),
                                          ("drop", {"substrate_link": "p", "vli": 42}))))
    snap = bind(Tables(cfg, {"e0": IfaceFacts(7, bytes.fromhex(q_mac.replace(":", "")),
                                               1500)}).compile(), {}, lambda *a: None, {})
    stripped = classify_eth(snap, 7, got, int(got_tci))
    inline = classify_eth(snap, 7, frame, None)
    assert stripped[0] is None and inline[0] is None
    assert stripped[1].id == inline[1].id == "p" and stripped[2] is inline[2]
    assert stripped[3:] != (0, 0) and stripped[4] == inline[4] == 60


RECEIVER = r"""
import sys, time
from vnet_router.datapath import packet_io
s = packet_io.open_rx("e0", 0x88B5)
print("listening", flush=True)
s.setblocking(True)
s.settimeout(8)
buf = bytearray(65536)
n, anc, _f, _a = s.recvmsg_into([buf], packet_io.AUX_SPACE)
print(n, packet_io.aux_vlan_tci(anc), bytes(buf[:n]).hex())
s.settimeout(1.5)
try:
    n, anc, _f, _a = s.recvmsg_into([buf], packet_io.AUX_SPACE)
    print("UNEXPECTED", bytes(buf[:n]).hex())
except OSError:
    pass
"""
