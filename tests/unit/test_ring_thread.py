"""The compiled engine's ring thread: it stops when asked, and when it fails the datapath says
so through ``on_fatal`` (the node then exits with status 1) instead of silently not
forwarding."""
import pytest

from test_datapath_diff import Rig, fast_mod

pytestmark = pytest.mark.skipif(fast_mod is None, reason="fast path not built")


def test_ring_thread_starts_and_stops():
    rig = Rig(fast_mod)
    engine = rig.dp.engine
    engine.start()
    thread = engine._thread
    assert thread is not None and thread.is_alive() and thread.name == "vnet-rings"
    engine._stop_ring_thread()
    assert not thread.is_alive() and engine._thread is None


class _Broken:
    """Stands in for the C engine: its ring loop fails at once, as on an epoll error."""

    def __init__(self, real):
        self.timer_fd = real.timer_fd

    def run_rings(self, epfd, rings, udps, cap=None):
        raise OSError(9, "Bad file descriptor")


def test_a_failed_ring_thread_reports_fatal():
    failures = []
    rig = Rig(fast_mod, on_fatal=failures.append)
    ce = rig.dp.engine
    engine, ce._engine = ce._engine, _Broken(ce._engine)
    ce.start()
    ce._thread.join(5)
    assert not ce._thread.is_alive()
    assert failures == []                # reported in the loop thread, not in the ring thread
    rig.loop.call_soon(rig.loop.stop)
    rig.loop.run_forever()
    ce._engine = engine
    ce._stop_ring_thread()
    assert failures == ["the ring thread failed: OSError(9, 'Bad file descriptor')"], failures
