"""The learned-MAC table (``datapath/learn.py``): bounded, ageing like the Linux bridge, O(1)
per frame; driven by an injected clock."""
import itertools
import threading

import pytest

from vnet_router.datapath.learn import DEFAULT_AGEING, DEFAULT_LIMIT, SWEEP_STEP, LearnTable

BCAST = b"\xff" * 6
O1, O2 = bytes.fromhex("0200000000a1"), bytes.fromhex("0200000000a2")


def mac(i: int) -> bytes:
    return b"\x02\x10" + i.to_bytes(4, "big")


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return Clock()


def counters(t: LearnTable) -> tuple:
    s = t.stats()
    return s["entries"], s["learned"], s["expired"], s["overflow"]


def test_defaults_are_the_bridges():
    t = LearnTable()
    assert (t.limit, t.ageing) == (DEFAULT_LIMIT, DEFAULT_AGEING) == (4096, 300.0)
    assert t.stats() == {"entries": 0, "max": 4096, "ageing_seconds": 300.0, "learned": 0,
                         "expired": 0, "overflow": 0}


def test_learn_and_lookup(clock):
    t = LearnTable(8, 300, clock)
    t.learn(mac(1), O1)
    assert t.lookup(mac(1), BCAST) == O1
    assert t.lookup(mac(2), BCAST) == BCAST
    assert t.items() == [(mac(1), O1)]


def test_cap_refuses_new_macs_and_counts_overflow(clock):
    t = LearnTable(5, 300, clock)
    for i in range(12):
        t.learn(mac(i), O1)
    assert counters(t) == (5, 5, 0, 7)
    assert [m for m, _ in t.items()] == [mac(i) for i in range(5)]       # the first five stay
    assert t.lookup(mac(9), BCAST) == BCAST                              # not learned: flooded
    t.learn(mac(3), O1)                       # a known MAC is refreshed, never refused
    t.learn(mac(3), O2)                       # nor when it moved
    assert t.lookup(mac(3), BCAST) == O2
    assert counters(t) == (5, 5, 0, 7)


def test_refresh_of_an_unchanged_entry_changes_no_counter(clock):
    t = LearnTable(5, 300, clock)
    t.learn(mac(1), O1)
    for _ in range(1000):
        clock.t += 0.01
        t.learn(mac(1), O1)
    assert counters(t) == (1, 1, 0, 0)


def test_a_moved_station_is_followed(clock):
    t = LearnTable(5, 300, clock)
    t.learn(mac(1), O1)
    t.learn(mac(1), O2)
    assert t.lookup(mac(1), BCAST) == O2
    assert counters(t) == (1, 1, 0, 0)        # updated, not learned twice


def test_ageing(clock):
    t = LearnTable(5, 300, clock)
    t.learn(mac(1), O1)
    clock.t += 299.999
    assert t.lookup(mac(1), BCAST) == O1
    assert counters(t) == (1, 1, 0, 0)
    clock.t += 0.001                          # 300 s without a frame: expired
    assert t.lookup(mac(1), BCAST) == BCAST   # at once, before any sweep
    assert t.items() == []
    assert counters(t) == (0, 1, 1, 0)        # the sweep of stats() removed it


@pytest.mark.parametrize("step", [0.05, 0.5, 5.0, 60.0])
def test_every_refresh_counts_however_often(clock, step):
    """Whether a refresh takes the fast path (only the time) or requeues the entry, the
    entry expires exactly ``ageing`` after the last frame."""
    t = LearnTable(5, 300, clock)
    t.learn(mac(1), O1)
    for _ in range(int(200 / step)):
        clock.t += step
        t.learn(mac(1), O1)
    last = clock.t
    clock.t = last + 299.99
    assert t.lookup(mac(1), BCAST) == O1
    clock.t = last + 300
    assert t.lookup(mac(1), BCAST) == BCAST
    assert counters(t) == (0, 1, 1, 0)


def test_expired_entries_make_room(clock):
    t = LearnTable(3, 300, clock)
    for i in range(3):
        t.learn(mac(i), O1)
    t.learn(mac(3), O1)
    assert counters(t)[3] == 1
    clock.t += 150
    t.learn(mac(0), O1)                       # mac 0 stays, 1 and 2 will age out
    clock.t += 150
    t.learn(mac(4), O1)                       # the frame path sweeps, then learns
    assert t.lookup(mac(4), BCAST) == O1
    assert t.lookup(mac(0), BCAST) == O1
    assert counters(t) == (2, 4, 2, 1)


def test_a_sweep_in_the_frame_path_is_bounded(clock):
    """No frame pays for a large sweep: at most SWEEP_STEP entries per new MAC; what is
    left goes with the next frames or the next read of the counters."""
    t = LearnTable(1000, 300, clock)
    for i in range(1000):
        t.learn(mac(i), O1)
    clock.t += 300
    t.learn(mac(5000), O1)
    assert len(t) == 1000 - SWEEP_STEP + 1 and t.expired == SWEEP_STEP
    t.learn(mac(5001), O1)
    assert len(t) == 1000 - 2 * SWEEP_STEP + 2
    assert counters(t) == (2, 1002, 1000, 0)


def test_seen_again_after_expiry_before_a_sweep_is_expired_and_learned_anew(clock):
    """Counters do not depend on when sweeps run: a gap longer than the ageing time is one
    expiry, whether the entry was removed before the next frame or not."""
    t = LearnTable(5, 300, clock)
    t.learn(mac(1), O1)
    clock.t += 400
    t.learn(mac(1), O1)
    assert t.lookup(mac(1), BCAST) == O1
    assert counters(t) == (1, 2, 1, 0)


def test_an_expired_entry_is_removed_at_most_one_requeue_interval_late(clock):
    """Entries are queued in the order they were last requeued (at most once a second):
    an expired entry behind one refreshed a little later waits for it, at most 1 s."""
    t = LearnTable(5, 300, clock)
    t.learn(mac(1), O1)                       # queued first
    clock.t += 0.5
    t.learn(mac(2), O1)
    clock.t += 0.25
    t.learn(mac(1), O1)                       # refreshed without requeueing (< 1 s)
    clock.t += 299.75                         # mac 2 expired, mac 1 not yet (0.25 s left)
    assert t.lookup(mac(2), BCAST) == BCAST   # never returned once expired
    assert [m for m, _ in t.items()] == [mac(1)]
    assert len(t) == 2                        # still held behind mac 1
    clock.t += 0.25
    assert counters(t) == (0, 2, 2, 0)


def test_lowering_the_cap_drops_the_oldest(clock):
    t = LearnTable(5, 300, clock)
    for i in range(5):
        clock.t += 2
        t.learn(mac(i), O1)
    clock.t += 2
    t.learn(mac(0), O1)                       # requeued: now the newest
    t.configure(3, 60)
    assert [m for m, _ in t.items()] == [mac(0), mac(3), mac(4)]
    assert counters(t) == (3, 5, 2, 0)
    assert t.ageing == 60
    t.configure(10, 60)
    t.learn(mac(7), O1)
    assert counters(t) == (4, 6, 2, 0)


def test_entries_report_the_time_since_seen(clock):
    t = LearnTable(5, 300, clock)
    t.learn(mac(1), O1)
    clock.t += 42.5
    t.learn(mac(2), O2)
    assert t.entries() == [(mac(1), O1, 42.5), (mac(2), O2, 0.0)]


def test_threads_keep_the_counters_consistent():
    """The compiled engine learns in its ring thread while the event loop looks up and reads
    the counters: no error, never more than the cap, entries = learned - expired."""
    ticks = itertools.count()
    t = LearnTable(300, 1, lambda: next(ticks) * 0.001)
    done = threading.Event()
    errors = []

    def frames():
        try:
            for i in range(150_000):
                t.learn(mac(i % 2000), O1 if i % 3 else O2)
                t.lookup(mac(i % 1000), BCAST)
        except Exception as e:                      # pragma: no cover - the failure shown
            errors.append(e)
        finally:
            done.set()
    th = threading.Thread(target=frames)
    th.start()
    reads = 0
    while not done.is_set() or reads == 0:
        s = t.stats()
        reads += 1
        assert s["entries"] <= 300
        assert s["entries"] == s["learned"] - s["expired"], s
        t.entries()
    th.join()
    assert not errors, errors
    s = t.stats()
    assert s["entries"] == s["learned"] - s["expired"]
    assert s["overflow"] > 0 and s["expired"] > 0, s


# -- what show and the metrics make of it ------------------------------------------------------

NODE = """
[[substrate_link]]
id = "lan"
kind = "multiaccess"
interface = "eth0"
[[substrate_link]]
id = "up"
kind = "p2p"
interface = "eth0"
peer_mac = "02:00:00:00:00:01"
vlan = 10
[[vnet]]
name = "green"
id = 2
[[interface]]
vnet = "green"
name = "green0"
substrate_link = "lan"
in_vli = 200
learned_max = 3
learned_ageing = 60
[[interface]]
vnet = "green"
name = "green1"
substrate_link = "up"
in_vli = 200
"""


def test_counters_in_show_and_metrics(clock):
    import asyncio

    from prometheus_client import CollectorRegistry, generate_latest

    from vnet_router.datapath.select import DatapathPy
    from vnet_router.model.config import loads
    from vnet_router.model.tables import IfaceFacts, Tables
    from vnet_router.node.status import status
    from vnet_router.ops.metrics import Collector

    cfg = loads(NODE)
    tables = Tables(cfg, {"eth0": IfaceFacts(2, b"\x02" * 6, 1500)})
    loop = asyncio.new_event_loop()
    try:
        dp = DatapathPy(tables, loop, clock=clock)
        port = dp.add_port("green", "green0", 99)
        dp.add_port("green", "green1", 98)
        dp.install(tables.compile())          # the interface's limit, ageing and the clock
        assert (port.learned.limit, port.learned.ageing) == (3, 60.0)
        for i in range(5):
            port.learned.learn(mac(i), O1)
        clock.t += 10
        port.learned.learn(mac(0), O2)
        brief = status(cfg, tables, dp, 0.0)
        full = status(cfg, tables, dp, 0.0, learned=True)
    finally:
        loop.close()
    ports = {p["name"]: p["learned"] for p in brief["logical_interfaces"]}
    assert ports == {"green0": {"entries": 3, "max": 3, "ageing_seconds": 60.0, "learned": 3,
                                "expired": 0, "overflow": 2},
                     "green1": None}                    # p2p: no table to speak of
    listed = next(p for p in full["logical_interfaces"] if p["name"] == "green0")["learned"]
    assert listed["macs"] == [
        {"mac": "02:10:00:00:00:00", "outer": "02:00:00:00:00:a2", "age_seconds": 0.0},
        {"mac": "02:10:00:00:00:01", "outer": "02:00:00:00:00:a1", "age_seconds": 10.0},
        {"mac": "02:10:00:00:00:02", "outer": "02:00:00:00:00:a1", "age_seconds": 10.0}]
    reg = CollectorRegistry()
    reg.register(Collector(lambda: brief))
    text = generate_latest(reg).decode()
    lv = '{interface="green0",vnet="green"}'
    for line in (f"vnet_logical_interface_learned_macs{lv} 3.0",
                 f"vnet_logical_interface_learned_macs_max{lv} 3.0",
                 f"vnet_logical_interface_macs_learned_total{lv} 3.0",
                 f"vnet_logical_interface_macs_expired_total{lv} 0.0",
                 f"vnet_logical_interface_macs_overflow_total{lv} 2.0"):
        assert line in text.splitlines(), line
    assert "green1" not in "".join(l for l in text.splitlines() if "macs" in l)
