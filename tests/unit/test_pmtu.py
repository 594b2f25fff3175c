"""Path MTU notices (control/pmtu.py): what a node reports upstream, what it takes from
downstream, expiry, and the datapath callback -- on tables, with a recording datapath and a
test clock (no sockets)."""
import asyncio
import functools

from vnet_router.control.plane import ControlPlane
from vnet_router.control.pmtu import HOLD, TICK, PathMtu
from vnet_router.datapath.dispatch import ControlDispatch
from vnet_router.model.config import loads
from vnet_router.model.tables import IfaceFacts, Tables
from vnet_router.wire import control as m
from vnet_router.wire import substrate as wire

ME = bytes.fromhex("0200000000aa")
PEER = bytes.fromhex("020000000001")
LAN1, LAN2 = bytes.fromhex("0200000000c1"), bytes.fromhex("0200000000c2")

CFG = """
[node]
path_mtu_interval = {interval}
[[substrate_link]]
id = "west"
kind = "p2p"
interface = "eth0"
peer_mac = "02:00:00:00:00:01"
vlan = 10
[[substrate_link]]
id = "tun"
kind = "udp"
local = "192.168.60.1:4799"
remote = "192.168.60.2:4799"
[[substrate_link]]
id = "lan"
kind = "multiaccess"
interface = "eth1"
[[vnet]]
name = "blue"
id = 1
[[interface]]
vnet = "blue"
name = "b0"
substrate_link = "lan"
in_vli = 50
out_vli = 51
mtu = 1400
[[switch]]
vnet = "blue"
in_link = "west"
in_vli = 100
out_link = "tun"
out_vli = 200
[[switch]]
vnet = "blue"
in_link = "tun"
in_vli = 201
out_link = "west"
out_vli = 101
"""


class FakeDp:
    def __init__(self, tables):
        self.snap = tables.compile()
        self.sent = []

    def send_control(self, ctx, payload, dst=None):
        self.sent.append((ctx.id, dst, m.decode(payload)))
        return True

    def set_control_peers(self, peers):
        self.peers = peers


class FakeLoop:
    def call_soon(self, fn, *args):
        return None

    def call_later(self, delay, fn, *args):
        return None


class Clock:
    t = 100.0

    def __call__(self):
        return self.t


def rig(interval=2.0):
    tables = Tables(loads(CFG.format(interval=interval)),
                    {"eth0": IfaceFacts(2, ME, 1500), "eth1": IfaceFacts(3, ME, 9000)})
    dp, clock, applied = FakeDp(tables), Clock(), []
    pm = PathMtu(tables, dp, FakeLoop(), node=7, incarnation=9, clock=clock,
                 on_interface=lambda li, mtu: applied.append((li.name, mtu)))
    return tables, dp, clock, applied, pm


def last(dp, link):
    return [msg.entries for lid, _dst, msg in dp.sent if lid == link][-1]


def test_reports_what_each_input_carries_onwards():
    tables, dp, clock, applied, pm = rig()
    assert pm.entries("west") == ((100, 1470),)       # switched onto the tunnel
    assert pm.entries("tun") == ((201, 1496),)        # switched onto west
    assert pm.entries("lan") == ((50, 1414),)         # delivered: the interface's mtu + 14
    pm._tick()
    assert {(lid, dst) for lid, dst, _ in dp.sent} == {("west", PEER), ("tun", None),
                                                       ("lan", None)}
    assert all(msg.node == 7 and msg.incarnation == 9 for _, _, msg in dp.sent)
    dp.sent.clear()
    pm._tick()                                        # nothing changed, interval not over
    assert dp.sent == []
    clock.t += 2.0
    pm._tick()
    assert len(dp.sent) == 3                          # the refresh


def test_a_pass_through_node_passes_the_smaller_mtu_on_at_once():
    tables, dp, clock, applied, pm = rig()
    pm._tick()
    dp.sent.clear()
    pm.on_message("tun", None, m.PathMtu(entries=((200, 1400), (999, 1000))))
    assert tables.path_mtu == {("tun", 200): 1400}
    assert pm.counters["unknown_vlink"] == 1
    assert last(dp, "west") == ((100, 1400),)         # triggered, not waiting for the refresh
    assert applied == []                              # no logical interface sends on tun:200
    # larger than the link: the link's own is the limit
    pm.on_message("tun", None, m.PathMtu(entries=((200, 9000),)))
    assert pm.entries("west") == ((100, 1470),)
    # a report not heard again expires: back to the link's own
    clock.t += HOLD * 2.0 + 0.1
    pm._tick()
    assert tables.path_mtu == {} and pm.counters["expired"] == 1


def test_an_interface_takes_the_smallest_report_of_the_lan():
    tables, dp, clock, applied, pm = rig()
    pm.on_message("lan", LAN1, m.PathMtu(entries=((51, 8000),)))
    pm.on_message("lan", LAN2, m.PathMtu(entries=((51, 1300),)))
    assert tables.path_mtu == {("lan", 51): 1300}
    assert applied == [("b0", 8000), ("b0", 1300)]
    assert pm.status()["virtual_links"] == [{"substrate_link": "lan", "vli": 51,
                                             "path_mtu": 1300, "reported_by": 2}]
    clock.t += 5.0
    pm.on_message("lan", LAN1, m.PathMtu(entries=((51, 8000),)))     # LAN2 falls silent
    clock.t += HOLD * 2.0 - 4.0
    pm._tick()
    assert tables.path_mtu == {("lan", 51): 8000} and applied[-1] == ("b0", 8000)
    pm.on_message("lan", LAN1, m.PathMtu(entries=((51, 40),)))       # below the floor
    assert pm.counters["refused"] == 1 and tables.path_mtu == {("lan", 51): 8000}


def test_a_run_time_lan_link_takes_only_its_neighbours_report():
    tables, dp, clock, applied, pm = rig()
    tables.output_vlink("lan", 51).dst = LAN1        # as a dynamic link to LAN1 has
    pm.on_message("lan", LAN2, m.PathMtu(entries=((51, 1300),)))
    assert tables.path_mtu == {} and pm.counters["unknown_vlink"] == 1
    pm.on_message("lan", LAN1, m.PathMtu(entries=((51, 1350),)))
    assert tables.path_mtu == {("lan", 51): 1350}


def test_off_sends_nothing_and_takes_nothing():
    tables, dp, clock, applied, pm = rig(interval=0)
    pm._tick()
    pm.on_message("tun", None, m.PathMtu(entries=((200, 1400),)))
    assert dp.sent == [] and tables.path_mtu == {} and pm.counters["ignored"] == 1


def test_datapath_callback_takes_path_mtu_only():
    tables, dp, clock, applied, pm = rig()
    ctx = dp.snap.links["west"]

    def frame(payload):
        f = wire.pack_eth(ME, PEER, 0, payload, wire.VlanTag(10))
        return memoryview(f), 18 + 4, len(payload)
    view, start, n = frame(m.PathMtu(entries=((101, 1400),)).pack())
    assert pm.on_control(ctx, view, start, n) is True
    assert tables.path_mtu == {("west", 101): 1400}
    view, start, n = frame(m.Hello(name="x").pack())
    assert pm.on_control(ctx, view, start, n) is False       # the control drop, as before
    view, start, n = frame(b"\x01garbage")
    assert pm.on_control(ctx, view, start, n) is False


def test_behind_a_control_plane_on_the_vli0_dispatcher():
    """The node's wiring with [tm]: on VLI 0 the plane is asked first and this service is the
    fallback; the plane makes the service, hands it PATH_MTU and sends its notices (counted as
    the plane's), and a frame the plane refuses never reaches the service."""
    tables = Tables(loads(CFG.format(interval=2.0) + "[tm]\n"),
                    {"eth0": IfaceFacts(2, ME, 1500), "eth1": IfaceFacts(3, ME, 9000)})
    dp, clock, applied = FakeDp(tables), Clock(), []
    cp = ControlPlane(tables.config, tables, dp, None, FakeLoop(), clock=clock,
                      path_mtu=functools.partial(
                          PathMtu, tables, dp, FakeLoop(), node=7, incarnation=9, clock=clock,
                          on_interface=lambda li, mtu: applied.append((li.name, mtu))))
    pm = cp.pmtu
    vli0 = ControlDispatch()
    vli0.register(pm.on_control, fallback=True)
    vli0.register(cp.on_control)
    ctx = dp.snap.links["west"]

    def frame(payload):
        f = wire.pack_eth(ME, PEER, 0, payload, wire.VlanTag(10))
        return memoryview(f), 18 + 4, len(payload)
    assert vli0(ctx, *frame(m.PathMtu(entries=((101, 1400),)).pack())) is True
    assert tables.path_mtu == {("west", 101): 1400}
    assert cp.counters["rx_path_mtu"] == 1 and pm.counters["received"] == 1
    assert vli0(ctx, *frame(m.Hello(name="x").pack())) is True       # the plane's
    assert vli0(ctx, *frame(b"\x01garbage")) is False
    assert cp.counters["malformed"] == 1 and pm.counters["refused"] == 0
    pm._tick()
    assert [msg.entries for lid, _dst, msg in dp.sent if lid == "west"] == [((100, 1470),)]
    assert cp.messages[("path_mtu", "sent")] == 3 and cp.counters["tx_path_mtu"] == 3


# -- issue 26: no black hole at start ----------------------------------------------------------

ONLY_OUT = """
[[substrate_link]]
id = "west"
kind = "p2p"
interface = "eth0"
peer_mac = "02:00:00:00:00:01"
vlan = 10
[[substrate_link]]
id = "tun"
kind = "udp"
local = "192.168.60.1:4799"
remote = "192.168.60.2:4799"
[[vnet]]
name = "blue"
id = 1
[[switch]]
vnet = "blue"
in_link = "west"
in_vli = 100
out_link = "tun"
out_vli = 200
"""


def test_a_start_asks_on_every_link_it_sends_on():
    """The tunnel carries only this node's output: nothing to report there, but the start
    sends an (empty) notice on it, which the neighbour answers; then only what changes."""
    tables = Tables(loads(ONLY_OUT), {"eth0": IfaceFacts(2, ME, 1500)})
    dp = FakeDp(tables)
    pm = PathMtu(tables, dp, FakeLoop(), node=7, incarnation=9, clock=Clock(),
                 on_interface=lambda li, mtu: None)
    pm.start()
    pm._tick()
    assert sorted((lid, msg.entries) for lid, _dst, msg in dp.sent) == [
        ("tun", ()), ("west", ((100, 1470),))]
    dp.sent.clear()
    pm._tick()
    assert dp.sent == []


def test_a_new_neighbour_is_answered_at_once():
    tables, dp, clock, applied, pm = rig()
    pm._tick()
    dp.sent.clear()
    clock.t += TICK                            # (at most one answer a TICK on a link)
    hello = m.PathMtu(node=5, incarnation=1, entries=((200, 1470),))
    pm.on_message("tun", None, hello)
    assert [(lid, msg.entries) for lid, _dst, msg in dp.sent] == [("tun", ((201, 1496),))]
    dp.sent.clear()
    pm.on_message("tun", None, hello)                    # heard before: no answer
    assert dp.sent == []
    # it restarted (another incarnation) within a TICK of the answer: at the next tick
    pm.on_message("tun", None, m.PathMtu(node=5, incarnation=2, entries=((200, 1470),)))
    assert dp.sent == []
    clock.t += TICK
    pm._tick()
    assert [lid for lid, _dst, _msg in dp.sent] == ["tun"]


def test_the_start_waits_until_every_output_is_known_or_the_time_is_up():
    async def main(interval, reports, timeout):
        tables = Tables(loads(CFG.format(interval=interval)),
                        {"eth0": IfaceFacts(2, ME, 1500), "eth1": IfaceFacts(3, ME, 9000)})
        loop = asyncio.get_running_loop()
        pm = PathMtu(tables, FakeDp(tables), loop, node=7, incarnation=9,
                     on_interface=lambda li, mtu: None)
        for i, (link, src, vli, mtu) in enumerate(reports):
            loop.call_later(0.01 * (i + 1), pm.on_message, link, src,
                            m.PathMtu(node=i, entries=((vli, mtu),)))
        t0 = loop.time()
        left = await pm.wait_known(timeout)
        return left, loop.time() - t0, pm.start_wait

    outputs = [("tun", None, 200, 1400), ("west", PEER, 101, 1496), ("lan", LAN1, 51, 1500)]
    left, took, start_wait = asyncio.run(main(2.0, outputs, 10.0))
    assert left == set() and took < 5.0 and start_wait == 2.0 + TICK
    left, took, _ = asyncio.run(main(2.0, outputs[:2], 0.2))
    assert left == {("lan", 51)} and took >= 0.2            # one neighbour silent: the bound
    left, took, start_wait = asyncio.run(main(0, [], 10.0))
    assert left == set() and took < 1.0 and start_wait == 0.0   # notices off: no wait
