"""Control protocol state machines, retry/dedup, TM and VBM rules -- all on injected clocks."""
import random

import pytest

from vnet_router.wire import control as m
from vnet_router.control.fsm import (PendingState, RateState, TransitionError, VbmState,
                                      VlinkFSM, VlinkState)
from vnet_router.control.transport import Requester, Responder
from vnet_router.control.tm import TrafficManager
from vnet_router.control.vbm import VBM, AdmissionError

M = 1_000_000


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_vlink_fsm_table_and_guard():
    f = VlinkFSM(VlinkState.SETTING_UP)
    assert f.fire("accepted") == VlinkState.UP
    with pytest.raises(TransitionError):
        f.fire("accepted")
    assert f.fire("teardown") == VlinkState.TEARING_DOWN
    assert f.fire("timeout") == VlinkState.DOWN


def test_requester_retries_with_backoff_then_times_out():
    clock, sent, results = Clock(), [], []
    r = Requester(lambda p, msg: sent.append((clock.t, msg)), clock, node=7, incarnation=1,
                  seq_start=41, rng=random.Random(0), initial=0.2, tries=4)
    seq = r.request("peer", m.RateRequest(vli=5, rate=10), results.append)
    assert seq == 42 and sent[0][1].seq == 42 and sent[0][1].node == 7
    p = r.pending[("peer", 42)]
    for _ in range(200):
        clock.t += 0.05
        r.tick()
    assert len(sent) == 4 and results == [None] and p.state == PendingState.TIMED_OUT
    gaps = [b[0] - a[0] for a, b in zip(sent, sent[1:])]
    assert gaps[0] < gaps[1] < gaps[2]           # exponential backoff
    assert r.counters["timeouts"] == 1 and r.counters["retries"] == 3


def test_requester_matches_reply_and_refuses_unknown_sequence():
    clock, results = Clock(), []
    r = Requester(lambda p, msg: None, clock, node=1, incarnation=1, seq_start=0)
    seq = r.request("a", m.RateRequest(vli=5, rate=10), results.append)
    assert not r.on_reply("a", m.RateReply(seq=seq + 5, rate=10))       # wrong sequence
    assert not r.on_reply("b", m.RateReply(seq=seq, rate=10))           # wrong peer
    assert not r.on_reply("a", m.AggAssign(seq=seq, rate=10))           # wrong reply type
    assert r.counters["bad_seq"] == 3 and results == []
    assert r.on_reply("a", m.RateReply(seq=seq, rate=10))
    assert results[0].rate == 10
    assert not r.on_reply("a", m.RateReply(seq=seq, rate=10))           # late duplicate
    assert r.counters["late_replies"] == 1 and r.counters["bad_seq"] == 3 and len(results) == 1
    assert not r.on_reply("a", m.AggAssign(seq=seq, rate=10))           # not its reply type
    assert r.counters["bad_seq"] == 4


def test_requester_takes_a_retried_request_answered_twice_as_no_refusal():
    """The responder answers each retry from its cache: a request retried because its reply
    was slow is answered twice.  The second reply is counted as late, not refused (bad_seq)."""
    clock, sent, results = Clock(), [], []
    r = Requester(lambda p, msg: sent.append(msg), clock, node=1, incarnation=1,
                  rng=random.Random(1), seq_start=0)
    seq = r.request("a", m.Join(vnet=2), results.append)
    while len(sent) < 2:                          # the first reply is slow: a retry goes out
        clock.t += 0.05
        r.tick()
    assert r.on_reply("a", m.Ack(seq=seq)) and not r.on_reply("a", m.Ack(seq=seq))
    assert r.counters == {"requests": 1, "retries": 1, "late_replies": 1}, r.counters
    seq2 = r.request("a", m.Join(vnet=2), results.append)
    for _ in range(200):                          # times out, then its reply arrives
        clock.t += 0.05
        r.tick()
    assert not r.on_reply("a", m.Ack(seq=seq2))
    assert results[-1] is None and r.counters["late_replies"] == 2 and "bad_seq" not in r.counters


def test_responder_executes_once_and_replays_the_reply():
    clock, sent, runs = Clock(), [], []

    def execute(peer, msg):
        runs.append(msg.seq)
        return m.Ack()

    resp = Responder(lambda p, msg: sent.append(msg), clock, node=2, incarnation=9)
    req = m.VlinkTeardown(node=1, incarnation=3, seq=1000, vli=5)
    resp.handle("a", req, execute)
    resp.handle("a", req, execute)              # a retry: same reply, not executed again
    assert runs == [1000] and len(sent) == 2 and sent[0] == sent[1] and sent[0].seq == 1000
    resp.handle("a", m.VlinkTeardown(node=1, incarnation=3, seq=999, vli=6), execute)
    assert runs == [1000, 999]                  # overtaken within the window: fine
    resp.handle("a", m.VlinkTeardown(node=1, incarnation=3, seq=(1000 - 5000) % 2**32, vli=6),
                execute)
    assert runs == [1000, 999] and resp.counters["bad_seq"] == 1     # far behind: refused
    resp.handle("a", m.VlinkTeardown(node=1, incarnation=4, seq=10, vli=6), execute)
    assert runs[-1] == 10                       # the peer restarted: new incarnation


class Net:
    """Two TMs (+ optional VBM) wired back to back without loss."""

    def __init__(self, clock, agg_room=0, vbm=None, idle=10.0):
        self.clock, self.vbm = clock, vbm
        self.inbox = []
        self.a = self._tm("A", idle)
        self.b = self._tm("B", idle)
        self.vbm_resp = Responder(lambda p, msg: self.inbox.append(("VBM", p, msg)), clock,
                                  node=99, incarnation=1)

    def _tm(self, name, idle):
        req = Requester(lambda p, msg: self.inbox.append((name, p, msg)), self.clock,
                        node=ord(name), incarnation=1, rng=random.Random(1))
        resp = Responder(lambda p, msg: self.inbox.append((name, p, msg)), self.clock,
                         node=ord(name), incarnation=1)
        tm = TrafficManager(req, self.clock, idle_interval=idle, hold=0.5,
                            vbm_peer="VBM" if self.vbm else None, capacity=100 * M)
        tm.req_, tm.resp_ = req, resp
        return tm

    def run(self, seconds=0.0, step=0.05):
        end = self.clock.t + seconds
        while True:
            while self.inbox:
                src, dst, msg = self.inbox.pop(0)
                if dst == "VBM":
                    self.vbm_resp.handle(src, msg, self.vbm.handle)
                    continue
                tm = {"A": self.a, "B": self.b}[dst]
                if msg.IS_REPLY:
                    tm.req_.on_reply(src, msg)
                else:
                    tm.resp_.handle(src, msg, tm.handle)
            if self.clock.t >= end:
                return
            self.clock.t += step
            for tm in (self.a, self.b):
                tm.req_.tick()
                tm.tick()
            if self.vbm:
                self.vbm.tick()


def _link(net, lo=1 * M, hi=10 * M):
    net.b.add_input("A", 5, 1, lo, hi)
    return net.a.add_output("B", 5, 1, lo, hi)


def test_increase_is_bounded_by_the_downstream_aggregate():
    clock = Clock()
    net = Net(clock)
    out = _link(net)
    net.b.aggregates[1].rate = 4 * M               # room for 3 Mbit/s above the minimum
    net.a.set_demand(out.key, 8 * M)
    net.run(0.2)
    assert out.current == 4 * M and net.b.inputs[("A", 5)].current == 4 * M
    assert net.b.input_sum(1) <= net.b.aggregates[1].rate


def test_decrease_always_succeeds_and_idle_link_falls_to_minimum():
    clock = Clock()
    net = Net(clock, idle=2.0)
    out = _link(net)
    net.b.aggregates[1].rate = 10 * M
    net.a.set_demand(out.key, 10 * M)
    net.run(0.5)
    assert out.current == 10 * M
    net.a.set_demand(out.key, None, active=False)      # demand unknown, no traffic
    net.run(1.0)
    assert out.current == 10 * M                        # not yet idle for 2 s
    net.run(1.5)
    assert out.current == 1 * M and net.b.inputs[("A", 5)].current == 1 * M
    assert out.state == RateState.STABLE


def test_refused_requests_are_counted():
    clock = Clock()
    net = Net(clock)
    _link(net)
    r = net.b.handle("A", m.RateRequest(vli=77, rate=M))
    assert r.status == m.Status.UNKNOWN_VLINK
    r = net.b.handle("A", m.RateRequest(vli=5, rate=50 * M))
    assert r.status == m.Status.ABOVE_MAX
    r = net.b.handle("X", m.RateRequest(vli=5, rate=2 * M))    # right VLI, wrong peer
    assert r.status == m.Status.UNKNOWN_VLINK
    assert net.b.counters == {"unknown_vlink": 2, "above_max": 1}
    assert net.b.inputs[("A", 5)].current == 1 * M


def test_vbm_grants_aggregate_and_increase_completes():
    clock = Clock()
    vbm = VBM(clock, lan_capacity=100 * M, rebuild_time=0.0)
    vbm.admit(1, 0.5)
    net = Net(clock, vbm=vbm)
    out = _link(net, hi=40 * M)
    net.a.set_demand(out.key, 40 * M)
    net.run(5.0)
    assert out.current == 40 * M
    assert vbm.allocated(1) == net.b.aggregates[1].rate == 40 * M
    net.a.set_demand(out.key, 80 * M)                   # above max: capped at max
    net.run(2.0)
    assert out.current == 40 * M


def test_vbm_admission_and_pool():
    vbm = VBM(Clock(), lan_capacity=100 * M, rebuild_time=0)
    vbm.admit(1, 0.6)
    with pytest.raises(AdmissionError):
        vbm.admit(2, 0.5)
    vbm.admit(2, 0.4)
    vbm.tick()
    r = vbm.handle("n1", m.AggRequest(node=1, vnet=1, current=M, want=100 * M, minimum=M))
    assert r.rate == 60 * M and r.status == m.Status.PARTIAL
    r = vbm.handle("n2", m.AggRequest(node=2, vnet=1, current=M, want=10 * M, minimum=M))
    assert r.rate == M and r.status == m.Status.DENIED       # pool used up by node 1
    r = vbm.handle("n1", m.AggRequest(node=1, vnet=1, current=60 * M, want=20 * M, minimum=M))
    assert r.rate == 20 * M                                   # give back
    r = vbm.handle("n2", m.AggRequest(node=2, vnet=1, current=M, want=10 * M, minimum=M))
    assert r.rate == 10 * M
    assert vbm.handle("n1", m.AggRequest(node=1, vnet=9, want=1)).status == m.Status.UNKNOWN_VNET


def test_restarted_vbm_rebuilds_before_granting():
    clock = Clock()
    vbm = VBM(clock, lan_capacity=100 * M, rebuild_time=10)
    vbm.admit(1, 1.0)
    assert vbm.state == VbmState.REBUILDING
    r = vbm.handle("n1", m.AggRequest(node=1, vnet=1, current=70 * M, want=70 * M, minimum=M))
    assert r.rate == 70 * M                                   # report adopted
    r = vbm.handle("n2", m.AggRequest(node=2, vnet=1, current=M, want=50 * M, minimum=M))
    assert r.rate == M and r.status == m.Status.DENIED        # no increase while rebuilding
    clock.t += 10
    r = vbm.handle("n2", m.AggRequest(node=2, vnet=1, current=M, want=50 * M, minimum=M))
    assert vbm.state == VbmState.ACTIVE and r.rate == 30 * M


def test_vbm_unreachable_node_keeps_its_aggregate():
    clock = Clock()
    vbm = VBM(clock, lan_capacity=100 * M, rebuild_time=0)
    vbm.admit(1, 1.0)
    net = Net(clock, vbm=vbm)
    out = _link(net, hi=40 * M)
    net.a.set_demand(out.key, 20 * M)
    net.run(5.0)
    assert net.b.aggregates[1].rate == 20 * M
    net.vbm_resp.handle = lambda *a: None
    net.a.set_demand(out.key, 40 * M)
    net.run(20.0)
    assert net.b.aggregates[1].rate == 20 * M and out.current == 20 * M
    assert net.b.input_sum(1) <= 20 * M


def test_responder_refuses_what_it_answered_before_a_restart():
    """``floor`` (node/answered.py) is what the last run answered; ``journal`` learns each new
    request before it is executed."""
    clock, runs, journal = Clock(), [], []

    def execute(peer, msg):
        runs.append((msg.incarnation, msg.seq))
        journal_then = list(journal)
        assert journal_then[-1] == (("a", 1), msg.incarnation, msg.seq)   # recorded first
        return m.Ack()

    resp = Responder(lambda p, msg: None, clock, node=2, incarnation=9,
                     floor={("a", 1): (3, 1000)},
                     journal=lambda sender, inc, seq: journal.append((sender, inc, seq)))
    for seq in (1000, 999, 5):                  # answered (or overtaken) before the restart
        resp.handle("a", m.VlinkSetup(node=1, incarnation=3, seq=seq, name="x"), execute)
    resp.handle("a", m.VlinkSetup(node=1, incarnation=2, seq=2000, name="x"), execute)
    assert runs == [] and journal == []
    assert resp.counters == {"replay_restart": 3, "old_incarnation": 1}
    resp.handle("a", m.VlinkSetup(node=1, incarnation=3, seq=1001, name="x"), execute)
    resp.handle("b", m.VlinkSetup(node=1, incarnation=3, seq=7, name="x"), lambda p, msg: None)
    assert runs == [(3, 1001)] and journal[-1] == (("b", 1), 3, 7)
    resp.handle("a", m.VlinkSetup(node=1, incarnation=3, seq=1000, name="x"), execute)
    assert resp.counters["replay_restart"] == 4  # still refused after newer ones
    resp.handle("a", m.VlinkSetup(node=1, incarnation=4, seq=1, name="x"), execute)
    assert runs[-1] == (4, 1)                   # the sender restarted too: a new run


def test_responder_holds_every_request_while_a_lost_record_may_hide_replays():
    clock, runs = Clock(), []
    resp = Responder(lambda p, msg: None, clock, node=2, incarnation=9, hold=18)
    execute = lambda peer, msg: runs.append(msg.seq) or m.Ack()        # noqa: E731
    resp.handle("a", m.Leave(node=1, incarnation=3, seq=1), execute)
    clock.t += 17.9
    resp.handle("a", m.Leave(node=1, incarnation=3, seq=2), execute)
    assert runs == [] and resp.counters == {"replay_restart": 2}
    clock.t += 0.2
    resp.handle("a", m.Leave(node=1, incarnation=3, seq=2), execute)
    assert runs == [2]
