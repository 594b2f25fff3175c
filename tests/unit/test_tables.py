"""The demultiplexing rule on a compiled snapshot (no I/O)."""
import pytest

from vnet_router.wire import substrate as wire
from vnet_router.model.config import loads
from vnet_router.datapath.classify import classify_eth, classify_udp
from vnet_router.datapath.entries import bind
from vnet_router.model.tables import DELIVER, SWITCH, Facts, IfaceFacts, Tables

CFG = """
[[substrate_link]]
id = "p1"
kind = "p2p"
interface = "eth0"
peer_mac = "02:00:00:00:00:01"
vlan = 10
[[substrate_link]]
id = "p2"
kind = "p2p"
interface = "eth0"
peer_mac = "02:00:00:00:00:02"
vlan = 10
[[substrate_link]]
id = "lan"
kind = "multiaccess"
interface = "eth0"
[[substrate_link]]
id = "t"
kind = "udp"
local = "192.0.2.1:4799"
remote = "192.0.2.2:4799"
[[vnet]]
name = "blue"
id = 1
[[interface]]
vnet = "blue"
name = "b1"
substrate_link = "p1"
in_vli = 100
[[interface]]
vnet = "blue"
name = "b2"
substrate_link = "lan"
in_vli = 100
[[interface]]
vnet = "blue"
name = "b3"
substrate_link = "t"
in_vli = 7
[[switch]]
vnet = "blue"
in_link = "p2"
in_vli = 5
out_link = "p1"
out_vli = 6
"""
ME = b"\x02\x00\x00\x00\x00\xaa"
P1, P2, STRANGER = (bytes.fromhex(x) for x in ("020000000001", "020000000002", "0200000000ee"))


@pytest.fixture
def snap():
    return bound(Tables(loads(CFG), {"eth0": IfaceFacts(3, ME, 1500)}).compile())


def bound(snap):
    """``snap``'s entries as a datapath with no ports, meters or sockets binds them."""
    return bind(snap, {}, lambda v, ctx, queue: None, {})


def frame(src, vli, payload=b"x" * 60, vid=None):
    return wire.pack_eth(ME, src, vli, payload, wire.VlanTag(vid, 5) if vid else None)


def test_tag_inline_or_stripped_gives_the_same_verdict(snap):
    inline = classify_eth(snap, 3, frame(P1, 100, vid=10), None)
    stripped = classify_eth(snap, 3, frame(P1, 100), (5 << 13) | 10)
    for v in (inline, stripped):
        reason, ctx, vl, start, length = v
        assert reason is None and ctx.id == "p1" and vl.action == DELIVER and length == 60
    assert inline[1] is stripped[1] and inline[2] is stripped[2]


def test_sender_mac_selects_the_p2p_link(snap):
    reason, ctx, vl, *_ = classify_eth(snap, 3, frame(P2, 5), 10)
    assert reason is None and ctx.id == "p2" and vl.action == SWITCH


def test_untagged_goes_to_multiaccess(snap):
    reason, ctx, vl, *_ = classify_eth(snap, 3, frame(STRANGER, 100), None)
    assert reason is None and ctx.id == "lan" and vl.vlink.owner == "blue/b2"


@pytest.mark.parametrize("data, tci, want", [
    (frame(STRANGER, 100), 10, "bad_peer"),
    (frame(P1, 100), 11, "unknown_vlan"),
    (frame(P1, 100, vid=11), None, "unknown_vlan"),
    (frame(P1, 999), 10, "unknown_vli"),
    (frame(P1, 0), 10, "control"),
    (frame(P1, 100)[:16], 10, "short"),
    (frame(P1, 100)[:8], 10, "short"),
    (frame(P1, 100)[:40], 10, "bad_len"),
    (frame(P1, 100, b"x" * 1497), 10, "oversize"),
])
def test_drop_reasons(snap, data, tci, want):
    assert classify_eth(snap, 3, data, tci)[0] == want


def test_unknown_interface(snap):
    assert classify_eth(snap, 99, frame(P1, 100), 10)[0] == "no_link"


def test_udp(snap):
    local, remote = ("192.0.2.1", 4799), ("192.0.2.2", 4799)
    reason, ctx, vl, start, length = classify_udp(snap, local, remote, wire.pack_udp(7, b"abc"))
    assert reason is None and vl.vlink.owner == "blue/b3" and (start, length) == (2, 3)
    assert classify_udp(snap, local, ("192.0.2.9", 4799), wire.pack_udp(7, b""))[0] == "no_link"
    assert classify_udp(snap, local, remote, b"\x00")[0] == "short"
    assert classify_udp(snap, local, remote, wire.pack_udp(8, b""))[0] == "unknown_vli"


def test_counters_survive_recompile():
    tables = Tables(loads(CFG), {"eth0": IfaceFacts(3, ME, 1500)})
    s1 = bound(tables.compile())
    v = classify_eth(s1, 3, frame(P1, 100), 10)[2].vlink
    v.packets = 42
    s2 = bound(tables.compile())
    assert s2.generation == s1.generation + 1
    assert classify_eth(s2, 3, frame(P1, 100), 10)[2].vlink.packets == 42


def test_dynamic_interfaces_and_current_rate_survive_rebuild():
    from vnet_router.model.config import LogicalInterface, Rate
    from vnet_router.model.tables import IfaceFacts, Tables
    from vnet_router.model.config import loads
    cfg = loads('[[substrate_link]]\nid="p"\nkind="p2p"\ninterface="e0"\n'
                'peer_mac="02:00:00:00:00:02"\nvlan=10\n[[vnet]]\nname="b"\nid=1\n'
                '[[interface]]\nvnet="b"\nname="t0"\nsubstrate_link="p"\nin_vli=5\n'
                'rate={min="1Mbit",max="9Mbit"}\n')
    t = Tables(cfg, {"e0": IfaceFacts(3, b"\x02\x00\x00\x00\x00\x01", 1500)})
    out = t.output_vlink("p", 5)
    assert out.rate.current == 9_000_000 and out.rate.managed
    out.rate = out.rate.model_copy(update={"cur": 4_000_000})
    li = LogicalInterface("b", "dyn", "p", 1024, 1025, Rate(1, 2))
    t.add_interface(li)
    assert t.output_vlink("p", 5).rate.current == 4_000_000       # kept across the rebuild
    assert not t.vli_free("p", 1024) and 1024 in t.compile().links["p"].in_vlinks
    import pytest
    with pytest.raises(ValueError):
        t.add_interface(li)
    assert t.remove_interface("b", "dyn") is li
    assert t.vli_free("p", 1024) and 1024 not in t.compile().links["p"].in_vlinks


def test_a_udp_link_takes_its_underlay_mtu():
    """Issue 26: a UDP link without ``mtu`` carries what the route towards its remote does
    (``Facts.underlay``, read at start and reload); with no route then, 1500 as before; a
    configured ``mtu`` wins."""
    facts = {"eth0": IfaceFacts(2, bytes.fromhex("020000000099"), 1500)}
    own = 20 + 8 + wire.UDP_SUBSTRATE_HLEN
    for underlay, configured, want in ((None, None, 1500), (1400, None, 1400),
                                       (1400, 1300, 1300), (9000, None, 9000)):
        text = CFG.replace('remote = "192.0.2.2:4799"', 'remote = "192.0.2.2:4799"'
                           + (f"\nmtu = {configured}" if configured else ""))
        f = Facts(facts, underlay={"t": underlay} if underlay else {})
        ctx = Tables(loads(text), f).compile().links["t"]
        assert (ctx.mtu, ctx.payload_mtu) == (want, want - own), (underlay, configured)
    # plain dicts (tests, tools) read as "no route known"
    assert Tables(loads(CFG), facts).compile().links["t"].mtu == 1500
