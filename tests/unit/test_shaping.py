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
