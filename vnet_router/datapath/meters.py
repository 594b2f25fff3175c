"""Token buckets for virtual links: input policing and output shaping (DESIGN 3 step 5).

Pure arithmetic on an injected clock; the datapath owns the timers.  A bucket holds at most
``burst`` bytes of credit and refills at ``rate`` bit/s.  ``Shaper`` adds the bounded FIFO an
output virtual link needs: frames that find the bucket empty wait (up to ``limit`` frames)
until credit arrives, and the datapath asks ``next_departure()`` when to come back.
"""
from __future__ import annotations

import time
from collections import deque


def default_burst(rate_bps: int, mtu: int) -> int:
    """Enough credit for 5 ms at the rate, and never less than two full frames."""
    return max(2 * (mtu + 64), rate_bps // 8 // 200)


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp", "clock")

    def __init__(self, rate_bps: int, burst_bytes: int, clock=time.monotonic):
        self.rate = rate_bps / 8.0          # bytes per second
        self.burst = float(burst_bytes)
        self.tokens = float(burst_bytes)
        self.clock = clock
        self.stamp = clock()

    def _refill(self, now: float):
        t = self.tokens + (now - self.stamp) * self.rate
        self.tokens = t if t < self.burst else self.burst
        self.stamp = now

    def take(self, nbytes: int) -> bool:
        """Police: consume credit for ``nbytes`` if there is enough, else refuse."""
        self._refill(self.clock())
        if self.tokens >= nbytes:
            self.tokens -= nbytes
            return True
        return False

    def wait_time(self, nbytes: int) -> float:
        """Seconds until ``nbytes`` of credit are available (0 if now)."""
        self._refill(self.clock())
        missing = nbytes - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate

    def set_rate(self, rate_bps: int, burst_bytes: int | None = None):
        self._refill(self.clock())
        self.rate = rate_bps / 8.0
        if burst_bytes is not None:
            self.burst = float(burst_bytes)
            self.tokens = min(self.tokens, self.burst)


class Shaper:
    """Token bucket + bounded FIFO of (frame, send callable) for one output virtual link."""

    __slots__ = ("bucket", "queue", "limit", "scheduled", "held")

    def __init__(self, bucket: TokenBucket, limit: int):
        self.bucket, self.limit = bucket, limit
        self.queue: deque = deque()
        self.scheduled = False
        self.held = 0       # frames a compiled engine's own queue holds for this link

    def offer(self, frame, nbytes: int) -> int:
        """1: send now; 0: queued; -1: queue full (drop)."""
        if not self.queue and self.bucket.take(nbytes):
            return 1
        if len(self.queue) >= self.limit:
            return -1
        self.queue.append((frame, nbytes))
        return 0

    def release(self):
        """Pop every queued frame the bucket now has credit for (oldest first)."""
        q, b = self.queue, self.bucket
        out = []
        while q and b.take(q[0][1]):
            out.append(q.popleft()[0])
        return out

    def next_departure(self) -> float | None:
        return self.bucket.wait_time(self.queue[0][1]) if self.queue else None

    @property
    def depth(self) -> int:
        return len(self.queue) + self.held
