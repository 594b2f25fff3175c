"""The control socket's limits (api.ControlServer): connection caps, root's reserve and
eviction, idle and request timeouts, request size and nesting; every refusal counted and
logged at most once per interval.  A real server on a Unix socket in a temporary directory;
the callers' uids are set through the credentials the server reads (``api._peer``)."""
import asyncio
import json
import logging

import pytest

from vnet_router.node import api
from vnet_router.node.api import ControlServer, Limits, Peer, too_deep


@pytest.fixture
def uids(monkeypatch):
    """``uids.append(uid)`` before a connect: the server sees that uid for it."""
    queue = []
    monkeypatch.setattr(api, "_peer", lambda writer: Peer(1, queue.pop(0), 0))
    return queue


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _server(tmp_path, **limits) -> ControlServer:
    srv = ControlServer(str(tmp_path / "c.sock"), {"ping": lambda: "pong", "show": lambda **kw: kw},
                        limits=Limits(**limits))
    await srv.start()
    return srv


async def _connect(srv, uids, uid):
    uids.append(uid)
    return await asyncio.open_unix_connection(srv.path)


async def _ask(conn, data=b'{"cmd": "ping"}\n'):
    r, w = conn
    w.write(data)
    await w.drain()
    line = await r.readline()
    return json.loads(line) if line else None


async def _until(fn):
    while not fn():
        await asyncio.sleep(0.01)       # poll step: the test waits on the server's state


def test_per_uid_cap_total_cap_root_reserve_and_eviction(tmp_path, uids):
    async def main():
        srv = await _server(tmp_path, max_connections=6, max_per_uid=2, root_reserve=2)
        held = []
        for uid in (1000, 1000):
            held.append(await _connect(srv, uids, uid))
            assert (await _ask(held[-1]))["ok"]
        refused = await _ask(await _connect(srv, uids, 1000))
        assert not refused["ok"] and "uid 1000 (limit 2)" in refused["error"]
        for uid in (1001, 1001):
            held.append(await _connect(srv, uids, uid))
            assert (await _ask(held[-1]))["ok"]
        # 4 of 6 in use, 2 kept for root: uid 1002 is refused, root is not
        refused = await _ask(await _connect(srv, uids, 1002))
        assert not refused["ok"] and "2 kept for root" in refused["error"]
        for _ in range(2):
            held.append(await _connect(srv, uids, 0))
            assert (await _ask(held[-1]))["ok"]
        assert srv.stats()["connections"] == 6
        # all 6 in use: root closes the longest-idle connection of another user (the first)
        root = await _connect(srv, uids, 0)
        assert (await _ask(root))["ok"]
        assert await held[0][0].read() == b""
        assert srv.stats()["connections"] == 6
        st = srv.stats()
        assert st["refused"]["per_uid"] == 1 and st["refused"]["connections"] == 1
        assert st["refused"]["evicted"] == 1 and st["by_uid"] == {"1000": 1, "1001": 2, "0": 3}
        for _, w in held[1:] + [root]:
            w.close()
        await _until(lambda: not srv._conns)
        await srv.close()
    run(main())


def test_idle_and_request_timeouts(tmp_path, uids):
    async def main():
        srv = await _server(tmp_path, idle_timeout=0.3, request_timeout=0.3)
        idle = await _connect(srv, uids, 1000)
        assert (await _ask(idle))["ok"]
        assert await idle[0].read() == b""            # closed once idle
        half = await _connect(srv, uids, 1000)
        reply = await _ask(half, b'{"cmd": "pi')      # half a request, then nothing
        assert not reply["ok"] and "request timed out" in reply["error"]
        assert srv.refused["idle_timeout"] == 1 and srv.refused["request_timeout"] == 1
        await _until(lambda: not srv._conns)
        await srv.close()
    run(main())


def test_long_and_deep_requests_get_an_error_reply_and_the_connection_serves_on(tmp_path,
                                                                                 uids):
    async def main():
        srv = await _server(tmp_path)
        c = await _connect(srv, uids, 1000)
        reply = await _ask(c, b"[" * 60000 + b"\n")
        assert reply == {"ok": False, "error": f"malformed request: nested deeper than "
                                                f"{api.MAX_DEPTH} levels"}
        reply = await _ask(c, b'{"cmd": "show", "x": ' + b"[" * 20 + b"]" * 20 + b"}\n")
        assert reply["ok"], reply                      # within the bound: fine
        assert (await _ask(c))["ok"]
        reply = await _ask(c, b" " * (api.MAX_REQUEST + 10) + b"\n")
        assert not reply["ok"] and "request too long" in reply["error"]
        assert srv.refused["too_deep"] == 1 and srv.refused["too_long"] == 1
        c2 = await _connect(srv, uids, 1000)
        assert (await _ask(c2))["ok"]
        c2[1].close()
        c[1].close()
        await _until(lambda: not srv._conns)
        await srv.close()
    run(main())


def test_refusals_are_logged_once_per_interval(tmp_path, uids, caplog, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(api.time, "monotonic", lambda: clock[0])
    srv = ControlServer(str(tmp_path / "c.sock"), {})
    with caplog.at_level(logging.WARNING, "vnet_router.node.api"):
        for _ in range(500):
            srv._refuse("per_uid", Peer(7, 1000, 1000), "refused a connection")
        clock[0] += api.LOG_INTERVAL
        srv._refuse("per_uid", Peer(7, 1000, 1000), "refused a connection")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "and 499 more of this kind" in lines[1]
    assert srv.refused["per_uid"] == 501


def test_too_deep_ignores_brackets_in_strings():
    assert too_deep(b"[" * 60000)
    assert not too_deep(b'{"a": "' + b"[" * 100 + b'"}')
    assert not too_deep(b'{"a": ["\\"[[[["]}', 2)
    assert too_deep(b'{"a": [[1]]}', 2)


def test_refusals_are_exported_as_a_prometheus_counter(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest
    import asyncio as aio
    from vnet_router.datapath.select import DatapathPy
    from vnet_router.model.tables import Tables
    from vnet_router.model import config
    from vnet_router.node.status import status
    from vnet_router.ops.metrics import Collector

    cfg = config.parse({"node": {"name": "x"}})
    srv = ControlServer(str(tmp_path / "c.sock"), {})
    srv._refuse("per_uid", None, "refused")
    srv._refuse("too_deep", None, "refused")
    tables, loop = Tables(cfg, {}), aio.new_event_loop()
    try:
        dp = DatapathPy(tables, loop)
        dp.snap = tables.compile()
        st = status(cfg, tables, dp, 0.0)
    finally:
        loop.close()
    st["control_socket"] = srv.stats()
    reg = CollectorRegistry()
    reg.register(Collector(lambda: st))
    text = generate_latest(reg).decode()
    assert 'vnet_control_socket_refused_total{reason="per_uid"} 1.0' in text
    assert 'vnet_control_socket_refused_total{reason="too_deep"} 1.0' in text
    assert 'vnet_control_socket_refused_total{reason="idle_timeout"} 0.0' in text
    assert "vnet_control_socket_connections 0.0" in text
