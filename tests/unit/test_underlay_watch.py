"""UDP links that wait for their underlay: the watch's backoff and state (a probe, a loop and
clocks of the test's own), the tables without the links down, and each datapath run with one
(real sockets).  The daemon's whole story is in tests/integration/test_underlay.py."""
import asyncio
import logging

import pytest

from vnet_router.datapath.select import DatapathC, DatapathPy
from vnet_router.model.config import loads
from vnet_router.model.tables import OUT, Tables
from vnet_router.node.underlay import FIRST_RETRY, MAX_RETRY, UnderlayWatch
from vnet_router.ops import underlay as probes

CFG = """
[[substrate_link]]
id = "t"
kind = "udp"
local = "{local}:4799"
remote = "127.0.0.1:4800"
[[substrate_link]]
id = "u"
kind = "udp"
local = "127.0.0.1:4801"
remote = "127.0.0.1:4802"
[[vnet]]
name = "blue"
id = 1
[[interface]]
vnet = "blue"
name = "b1"
substrate_link = "t"
in_vli = 7
kind = "socket"
"""
NO_ROUTE = probes.Missing("route", "127.0.0.1", "Network is unreachable")
NO_ADDR = probes.Missing("address", "192.0.2.77", "Cannot assign requested address")


def cfg(local="127.0.0.1"):
    return loads(CFG.replace("{local}", local))


class Loop:
    """``call_later`` recorded: the test runs the timers."""

    def __init__(self):
        self.timers = []

    def call_later(self, delay, fn, *args):
        t = Timer(delay, fn, args)
        self.timers.append(t)
        return t

    def fire(self):
        live = [t for t in self.timers if not t.cancelled]
        self.timers = []
        for t in live:
            t.fn(*t.args)
        return [t.delay for t in live]


class Timer:
    def __init__(self, delay, fn, args):
        self.delay, self.fn, self.args, self.cancelled = delay, fn, args, False

    def cancel(self):
        self.cancelled = True


class Probe:
    def __init__(self, answers):
        self.answers = answers          # link remote/local -> Missing or None
        self.calls = []

    def __call__(self, local, remote):
        self.calls.append((local, remote))
        return self.answers.get(local[0])


def test_a_link_down_is_warned_once_retried_with_backoff_and_brought_up(caplog):
    now = [100.0]
    probe = Probe({"127.0.0.1": NO_ROUTE})
    ups = []
    w = UnderlayWatch(bring_up=lambda i: ups.append(i) or True, probe=probe,
                      clock=lambda: now[0], wall=lambda: 1000 + now[0])
    c = cfg()
    with caplog.at_level(logging.INFO, "vnet_router"):
        down = w.hold(c, w.plan(c))
    assert down == {"t", "u"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and "substrate link t " in warned[0] and "127.0.0.1" in warned[0]
    loop = Loop()
    w.start(loop)
    delays = []
    for _ in range(5):
        now[0] += 1
        delays += loop.fire()
    assert delays == [FIRST_RETRY] * 2 + [0.5] * 2 + [1.0] * 2 + [MAX_RETRY] * 4
    st = w.status("t")
    assert st["state"] == "down" and st["missing"] == "route" and st["retries"] == 5
    assert st["down_seconds"] == 5 and st["down_since"] == 1100
    assert "no route to remote 127.0.0.1" in st["down_reason"]
    caplog.clear()
    probe.answers = {}
    with caplog.at_level(logging.INFO, "vnet_router"):
        loop.fire()
    assert ups == ["t", "u"] and not w.down and not loop.timers
    assert w.status("t") == {"state": "up", "up_since": 1105}
    assert [r.levelno for r in caplog.records] == [logging.INFO] * 2     # no more warnings


def test_a_link_the_node_cannot_bring_up_yet_stays_down_and_is_retried():
    loop = Loop()
    answers = {"192.0.2.77": NO_ADDR}
    w = UnderlayWatch(loop, bring_up=lambda i: False, probe=Probe(answers))
    c = cfg("192.0.2.77")
    w.hold(c, w.plan(c))
    assert set(w.down) == {"t"} and w.status("u") == {"state": "up"}
    answers.clear()
    assert loop.fire() == [FIRST_RETRY]
    assert set(w.down) == {"t"} and loop.timers[0].delay == 0.5


def test_a_reload_probes_only_links_new_changed_or_down():
    loop = Loop()
    probe = Probe({"192.0.2.77": NO_ADDR})
    w = UnderlayWatch(loop, probe=probe)
    c = cfg("192.0.2.77")
    w.hold(c, w.plan(c))
    probe.calls.clear()
    assert w.plan(c) == {"t": NO_ADDR}
    assert probe.calls == [(("192.0.2.77", 4799), ("127.0.0.1", 4800))]   # not u: up
    # t changed to an address that is there: up, its timer cancelled
    probe.calls.clear()
    c2 = cfg()
    assert w.hold(c2, w.plan(c2)) == frozenset()
    assert probe.calls == [(("127.0.0.1", 4799), ("127.0.0.1", 4800))]
    assert all(t.cancelled for t in loop.timers) and w.status("t")["state"] == "up"


def test_probe_names_a_local_address_that_is_not_here():
    assert probes.probe(("127.0.0.1", 0), ("127.0.0.1", 9)) is None
    m = probes.probe(("192.0.2.77", 4799), ("127.0.0.1", 9))
    assert m.what == "address" and str(m).startswith("local address 192.0.2.77 is not on "
                                                     "this node")


def test_the_tables_give_a_link_down_no_udp_entry():
    c = cfg()
    assert set(Tables(c, {}).compile().udp) == {("127.0.0.1", 4799), ("127.0.0.1", 4801)}
    snap = Tables(c, {}, {"t"}).compile()
    assert set(snap.udp) == {("127.0.0.1", 4801)} and "t" in snap.links


@pytest.mark.parametrize("make", [DatapathPy, DatapathC], ids=["py", "c"])
def test_a_datapath_opens_without_the_link_down_and_counts_its_frames_send_error(make):
    """The link's local address is not here: nothing opens for it (opening would fail with
    EADDRNOTAVAIL), its frames and control messages are send_error drops."""
    loop = asyncio.new_event_loop()
    tables = Tables(cfg("192.0.2.77"), {}, {"t"})
    dp = make(tables, loop)
    try:
        dp.open()
        assert set(dp.udp) == {("127.0.0.1", 4801)}
        out = dp.snap.outputs[("t", 7, OUT)]
        dp.output(out, b"x" * 60)
        dp.flush()
        assert dp.send_control(dp.snap.links["t"], b"hello") is False
        assert tables.drops["send_error"] == 2
        assert tables.link_states["t"].drops["send_error"] == 2
        # the address came: the same datapath opens it
        tables.underlay_down = frozenset()
        with pytest.raises(OSError):
            dp.reconfigure({}, [])              # 192.0.2.77 is still not here, of course
    finally:
        dp.close()
        loop.close()


LAB = """
[[node]]
name = "x"
addresses = {{ e0 = ["192.168.50.1/24"] }}
{commands}
[node.router]
[[node.router.substrate_link]]
id = "tun"
kind = "udp"
local = "{local}:4799"
remote = "{remote}:4799"
[[node]]
name = "y"
addresses = {{ e0 = ["192.168.50.2/24"] }}
[node.router]
[[node.router.substrate_link]]
id = "tun"
kind = "udp"
local = "192.168.50.2:4799"
remote = "192.168.50.1:4799"
[[link]]
a = "x:e0"
b = "y:e0"
"""


def test_lab_check_warns_about_an_address_or_route_the_node_lacks(tmp_path, capsys):
    from vnet_router.lab import cli as lab_cli
    from vnet_router.lab import topology as T

    def report(local="192.168.50.1", remote="192.168.50.2", commands=""):
        return T.underlay_report(T.loads(LAB.format(local=local, remote=remote,
                                                    commands=commands)))
    assert report() == []
    assert report(local="192.168.50.9") == [
        "warning: node x: substrate link tun: local address 192.168.50.9 is not among the "
        "node's addresses"]
    assert report(remote="10.1.1.1") == [
        "warning: node x: substrate link tun: no route to remote 10.1.1.1 (in none of the "
        "node's subnets)"]
    later = report(remote="10.1.1.1", commands='commands = [{ run = "ip route add 10.1.1.0/24 '
                                               'dev e0" }]')
    assert later[0].endswith("(unless one of its commands adds it: the daemon waits for it)")
    path = tmp_path / "t.toml"
    path.write_text(LAB.format(local="192.168.50.9", remote="192.168.50.2", commands=""))
    assert lab_cli.main(["check", str(path)]) == 0           # a warning, not a failure
    out = capsys.readouterr().out
    assert "underlay: warning: node x: substrate link tun: local address 192.168.50.9" in out
