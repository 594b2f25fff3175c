"""The control socket of a real daemon (vnet-hostd, socket mode 0666, and vnet-router) under
connection floods by unprivileged users: root's ``vnetctl show`` still answers, the daemon's
descriptors stay bounded, every refusal is counted; a request with 60,000 nested ``[`` gets
an error reply and the daemon serves on; half a request is closed after the request
timeout."""
import json
import os
import resource
import signal
import socket
import time

import pytest

import topo as t
from harness import eventually, vnetctl

# one_tier: the control socket's limits do not depend on the datapath tier
pytestmark = [pytest.mark.root, pytest.mark.one_tier]

NOBODY = 65534
FLOOD = 2000


@pytest.fixture
def lab(make_lab, sock_dir):
    settings = {"control_request_timeout": 1.0}
    return make_lab(t.topology(
        t.switch_node("sw"), t.link("h1:e0", "sw"), t.link("r:e0", "sw"),
        t.node("h1", t.multiaccess("lan", "e0"), daemon="host",
               settings={"control_socket": f"{sock_dir}/h1.sock", **settings}),
        t.node("r", t.multiaccess("lan", "e0"),
               settings={"control_socket": f"{sock_dir}/r.sock", **settings})))


def _flood(path: str, uids, per_uid: int):
    """Fork one child per uid; each, as that uid, opens ``per_uid`` connections to ``path``
    and holds them until told to go.  Returns [(pid, release_fd)] once all have connected
    (each child reports how many connects succeeded)."""
    kids = []
    for uid in uids:
        r_ready, w_ready = os.pipe()
        r_go, w_go = os.pipe()
        pid = os.fork()
        if pid == 0:                                            # child: never returns
            code = 1
            try:
                os.close(r_ready)
                os.close(w_go)
                resource.setrlimit(resource.RLIMIT_NOFILE, (per_uid + 64, per_uid + 64))
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                held, failed = [], 0
                signal.alarm(60)        # blocking connects (a full backlog waits, not fails)
                for _ in range(per_uid):
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        s.connect(path)
                        held.append(s)
                    except OSError:
                        failed += 1
                        s.close()
                signal.alarm(0)
                os.write(w_ready, f"{len(held)} {failed}\n".encode())
                os.read(r_go, 1)                # held until the parent closes its end
                code = 0
            finally:
                os._exit(code)
        os.close(w_ready)
        os.close(r_go)
        with os.fdopen(r_ready) as f:
            line = f.readline()
        assert line, f"flood child for uid {uid} died before connecting"
        held, failed = map(int, line.split())
        assert held == per_uid and failed == 0, (uid, held, failed)
        kids.append((pid, w_go))
    return kids


def _release(kids):
    """Let the children go: every release pipe closed first (a later child inherited the
    earlier children's write ends), then wait for them."""
    for _, w_go in kids:
        os.close(w_go)
    for pid, _ in kids:
        os.waitpid(pid, 0)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _show(lab, node):
    began = time.monotonic()
    r = vnetctl(lab, node, "show", "--json", timeout=30)
    took = time.monotonic() - began
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), took


def _raw(path, data: bytes, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(data)
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf) if buf else None


@pytest.mark.parametrize("node", ["h1", "r"])
def test_floods_by_other_users_do_not_lock_root_out(lab, node):
    sock = lab.socket(node)
    os.chmod(sock, 0o666)          # vnet-hostd's mode; the router's is 0660 (root's group)
    pid = lab.daemons[node].pid    # nsenter execs the daemon: the same pid
    base_fds = _fds(pid)
    st, _ = _show(lab, node)
    lim = st["control_socket"]["limits"]
    # one unprivileged user holds 2,000 connections: it is served up to its per-uid cap
    kids = _flood(sock, [NOBODY], FLOOD)
    try:
        st = eventually(lambda: _show(lab, node)[0], 30, "the flood's refusals counted",
                        until=lambda s: s["control_socket"]["refused"]["per_uid"]
                        >= FLOOD - lim["max_per_uid"])
        cs = st["control_socket"]
        assert cs["by_uid"].get(str(NOBODY)) == lim["max_per_uid"], cs
        assert cs["refused"]["per_uid"] == FLOOD - lim["max_per_uid"], cs
        _, took = _show(lab, node)
        fds = _fds(pid)
        print(f"{node}: {FLOOD} connections of uid {NOBODY}: served {cs['by_uid']}, "
              f"refused {cs['refused']}, daemon fds {base_fds} -> {fds}, root's show "
              f"{took:.2f} s")
        assert fds < base_fds + lim["max_connections"] + 10
        # another unprivileged user still gets in
        r = vnetctl(lab, node, "show", user=NOBODY - 1)
        assert r.returncode == 0, r.stderr
        # eight more users fill the connections not kept for root: root is still served
        more = _flood(sock, range(NOBODY - 9, NOBODY - 1), 200)
        kids += more
        st = eventually(lambda: _show(lab, node)[0], 30, "the connections cap reached",
                        until=lambda s: s["control_socket"]["refused"]["connections"] > 0)
        cs = st["control_socket"]
        others = sum(n for uid, n in cs["by_uid"].items() if uid != "0")
        assert others == lim["max_connections"] - lim["root_reserve"], cs
        _, took = _show(lab, node)
        fds = _fds(pid)
        print(f"{node}: + 8 uids x 200: served {others} of other users, refused "
              f"{cs['refused']}, daemon fds {fds}, root's show {took:.2f} s")
        assert fds < base_fds + lim["max_connections"] + 10
        # root holds the whole reserve, then one more root connection evicts an idle one
        mine = []
        for _ in range(lim["root_reserve"]):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)
            mine.append(s)
        eventually(lambda: _show(lab, node)[0], 30, "root's connections served",
                   until=lambda s: s["control_socket"]["refused"]["evicted"] >= 1)
        st, took = _show(lab, node)
        cs = st["control_socket"]
        print(f"{node}: root's reserve held too: root's show {took:.2f} s, refused "
              f"{cs['refused']}")
        assert cs["connections"] <= lim["max_connections"]
        for s in mine:
            s.close()
    finally:
        _release(kids)
    eventually(lambda: _show(lab, node)[0]["control_socket"]["connections"], 30,
               "the flood's connections closed", until=lambda n: n <= 1)
    assert lab.alive()[node] is None
    log = lab.log_path(node).read_text()
    refusals = [l for l in log.splitlines() if "too many control connections" in l]
    assert 1 <= len(refusals) <= 6, refusals[:10]    # once per reason per interval


@pytest.mark.parametrize("node", ["h1", "r"])
def test_deep_and_half_requests_get_error_replies_and_the_daemon_serves_on(lab, node):
    sock = lab.socket(node)
    r = _raw(sock, b"[" * 60000 + b"\n")
    assert r is not None and not r["ok"] and "nested deeper than" in r["error"], r
    r = _raw(sock, b'{"cmd": "show", "x": ' + b"[" * 60000 + b"}\n")
    assert r is not None and not r["ok"] and "nested deeper than" in r["error"], r
    began = time.monotonic()
    r = _raw(sock, b'{"cmd": "sh', timeout=20)               # half a request, then nothing
    took = time.monotonic() - began
    assert r is not None and not r["ok"] and "request timed out" in r["error"], r
    print(f"{node}: half a request closed after {took:.2f} s")
    assert _raw(sock, b'{"cmd": "ping"}\n') == {"ok": True, "result": "pong"}
    st, _ = _show(lab, node)
    refused = st["control_socket"]["refused"]
    assert refused["too_deep"] == 2 and refused["request_timeout"] == 1, refused
    assert lab.alive()[node] is None
    assert "Traceback" not in lab.log_path(node).read_text()


def test_a_reload_changes_the_limits_at_once(lab):
    path = lab.workdir / "r.toml"
    text = path.read_text()
    assert "control_request_timeout = 1.0" in text
    path.write_text(text.replace("control_request_timeout = 1.0",
                                 "control_request_timeout = 1.0\ncontrol_max_per_uid = 3"))
    r = vnetctl(lab, "r", "reload")
    assert r.returncode == 0, r.stderr
    st, _ = _show(lab, "r")
    assert st["control_socket"]["limits"]["max_per_uid"] == 3
    os.chmod(lab.socket("r"), 0o666)
    kids = _flood(lab.socket("r"), [NOBODY], 10)
    try:
        st = eventually(lambda: _show(lab, "r")[0], 30, "the new per-uid cap applied",
                        until=lambda s: s["control_socket"]["refused"]["per_uid"] == 7)
        assert st["control_socket"]["by_uid"][str(NOBODY)] == 3
    finally:
        _release(kids)
