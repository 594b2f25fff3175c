import pytest

from test_datapath_diff import fast_mod
from vnet_router.datapath.meters import Shaper, TokenBucket


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_bucket_polices_to_rate():
    clock = Clock()
    b = TokenBucket(8_000_000, 2000, clock)       # 1 MB/s, 2000 B burst
    assert b.take(1500) and not b.take(1500)
    clock.t += 0.001                              # 500 B left + 1000 B refilled
    assert b.take(1500) and not b.take(1)
    sent = 0
    for _ in range(10_000):                       # one simulated second in 100 us steps
        clock.t += 0.0001
        while b.take(100):
            sent += 100
    assert 990_000 <= sent <= 1_003_000


def test_shaper_queues_then_releases_in_order():
    clock = Clock()
    s = Shaper(TokenBucket(8000, 1000, clock), limit=3)    # 1000 B/s
    assert s.offer("a", 1000) == 1
    assert s.offer("b", 500) == 0 and s.offer("c", 500) == 0 and s.offer("d", 10) == 0
    assert s.offer("e", 10) == -1                          # queue full
    assert abs(s.next_departure() - 0.5) < 1e-9
    clock.t += 0.5
    assert s.release() == ["b"]
    clock.t += 0.51
    assert s.release() == ["c", "d"]
    assert s.depth == 0 and s.next_departure() is None


# -- the compiled engine's shaper, frames offered one at a time ---------------------------------

def run_paced(late: float, seconds=20.0, fps=130):
    """The compiled engine's switch p1:13 -> p2:14 (1 Mbit/s = 125,000 B/s, 3 KB burst, queue
    of 2) offered ``fps`` 1000-byte frames a second, one at a time (4% above its rate), for
    ``seconds`` of a simulated clock; the shapers are drained as the clock reaches each
    departure, ``late`` seconds after it (a timer's and a wake-up's latency).  Frames sent,
    dropped (queue_full) and still queued; bytes sent."""
    from test_datapath_diff import IF0, ME0, P1, Rig, sub
    from vnet_router.wire import substrate as wire
    now = [100.0]
    rig = Rig(fast_mod, clock=lambda: now[0])
    engine = rig.dp.engine._engine
    sent = 0

    def until(t):
        """Every departure due before ``t``, each drained ``late`` after it; then ``t``."""
        while True:
            due = engine.drain_due()
            if not due or due > t:
                break
            now[0] = max(now[0], due + late)
        now[0] = max(now[0], t)

    def count():
        nonlocal sent
        sent += sum(1 for k, fs in rig.outputs()["if:2"].items() if k[2] == 14 for _ in fs)
    try:
        t0 = now[0]
        frame = sub(ME0, P1, 13, b"\x55" * 1000, wire.VlanTag(10))
        for k in range(int(seconds * fps)):
            until(t0 + k / fps)
            rig.eth(IF0, frame)
            if k % 50 == 49:
                count()
        until(t0 + seconds)
        count()
        v = rig.counters()["vlinks"][("p2", 14, "out")]
        return sent, v[2].get("queue_full", 0), v[3], v[1]
    finally:
        rig.close()


@pytest.mark.skipif(fast_mod is None, reason="fast path not built")
@pytest.mark.parametrize("late", [0.0, 0.00003, 0.0004])
def test_compiled_shaper_meets_its_rate_with_frames_offered_one_at_a_time(late):
    """Each frame finds the queue holding one or two: the departure timer must come back when
    the next frame has credit, and a late drain must keep the credit it found.  Over 20
    simulated seconds the link sends its rate (plus its burst), within 1%: 2,503 frames."""
    sent, dropped, held, nbytes = run_paced(late)
    assert sent + dropped + held == 2600                  # every frame offered is accounted for
    expected = 125_000 * 20 + 3_000                       # rate x time + the burst it starts with
    assert abs(nbytes - expected) <= 0.01 * expected, (sent, dropped, held, nbytes)
    assert nbytes == sent * 1000
