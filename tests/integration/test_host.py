"""vnet-hostd: run-time join/leave with vnetctl, IPv4 + IPv6 between hosts, access control,
bad requests, restart."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from vnet_router.ops import netlink

from harness import eventually, repo_env, vnetctl
from host_topo import topology

pytestmark = pytest.mark.root


@pytest.fixture
def lab(make_lab, sock_dir):
    return make_lab(topology(sock_dir))


def _join(lab, h, vnet, vid, base, octet):
    r = vnetctl(lab, h, "join", vnet, "--id", str(vid), "--link", "up", "--in-vli",
                str(base + 1), "--out-vli", str(base), "--address", f"10.0.0.{octet}/24",
                "--address", f"fd00::{octet}/64")
    assert r.returncode == 0, r.stderr
    return r


def test_join_ping_v4_v6_and_leave(lab):
    for i, h in enumerate(("h1", "h2"), 1):
        r = _join(lab, h, "blue", 1, 100, i)
        assert "logical interface blue0" in r.stdout
    ns = lab.vnet_ns("h1", "blue")
    assert netlink.netns_exists(ns)
    # the vNet's namespace holds only its logical interface (and lo)
    links = lab.exec("h1", ["ip", "-o", "link"], vnet="blue").stdout
    assert {l.split(":")[1].strip() for l in links.splitlines()} == {"lo", "blue0"}
    p4 = lab.ping("h1", "10.0.0.2", vnet="blue", count=3)
    assert p4.received == 3, p4.output
    # IPv6 duplicate address detection takes a moment
    eventually(lambda: lab.ping("h1", "fd00::2", vnet="blue", count=1), 15,
               "IPv6 between h1 and h2 (after duplicate address detection)", step=0.3,
               until=lambda p: p.ok)
    p6 = lab.ping("h1", "fd00::2", vnet="blue", count=3)
    assert p6.received == 3, p6.output
    # legacy IP on the same wire is untouched
    assert lab.ping("h1", "192.168.77.2", count=2).received == 2
    st = lab.control("h1")
    assert st["runtime"]["vnets"] == ["blue"] and st["profile"] == "host"
    # leave removes it cleanly: namespace gone, no virtual links left
    r = vnetctl(lab, "h1", "leave", "blue")
    assert r.returncode == 0, r.stderr
    assert not netlink.netns_exists(ns)
    st = lab.control("h1")
    assert st["vnets"] == [] and st["virtual_links"] == [] and st["logical_interfaces"] == []
    assert not lab.ping("h2", "10.0.0.1", vnet="blue", count=1).ok


def test_unprivileged_cannot_change_state_but_can_read(lab):
    r = vnetctl(lab, "h1", "show", user=65534)
    assert r.returncode == 0, r.stderr
    assert "substrate links" in r.stdout
    for args in (("vnet", "add", "red", "--id", "9"),
                 ("join", "blue", "--id", "1", "--link", "up", "--in-vli", "101"),
                 ("instance", "start", "x", "--vnet", "blue", "--", "true")):
        r = vnetctl(lab, "h1", *args, user=65534)
        assert r.returncode == 1
        assert "permission denied" in r.stderr and "needs root or group 'vnet'" in r.stderr, \
            r.stderr
    assert lab.control("h1")["vnets"] == []


def _raw(path, data: bytes, read=True):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(data)
    if not read:
        s.close()
        return None
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf) if buf else None


def test_bad_requests_get_clear_errors_and_daemon_keeps_serving(lab):
    sock = lab.socket("h1")
    r = _raw(sock, b'{"cmd": "vnet_del", "name": "nosuch"}\n')
    assert not r["ok"] and "unknown vNet 'nosuch'" in r["error"]
    r = _raw(sock, b'{"cmd": "endpoint", "vnet": "nosuch", "interface": "x"}\n')
    assert not r["ok"] and "unknown vNet 'nosuch'" in r["error"]
    r = _raw(sock, b'this is not json\n')
    assert not r["ok"] and "malformed request" in r["error"]
    r = _raw(sock, b'{"cmd": "vnet_add", "name": "red"}\n')
    assert not r["ok"] and "bad arguments" in r["error"]
    r = _raw(sock, b'{"cmd": "vnet_add", "name": "bad name!", "id": 3}\n')
    assert not r["ok"] and "vnet[0].name" in r["error"] and "bad name" in r["error"]
    r = _raw(sock, b'{"cmd": "join", "vnet": "red", "id": 3, "substrate_link": "nope", '
                   b'"in_vli": 5}\n')
    assert not r["ok"] and "unknown substrate link 'nope'" in r["error"]
    _raw(sock, b'{"cmd": "vnet_add", "name": "re', read=False)      # truncated, disconnects
    _raw(sock, b'', read=False)                                       # connects, says nothing
    r = _raw(sock, b'{"cmd": "ping"}\n')
    assert r == {"ok": True, "result": "pong"}
    # nothing was half-applied
    assert lab.control("h1")["vnets"] == []
    assert lab.alive()["h1"] is None


def test_restart_restores_state_and_removes_what_it_no_longer_owns(lab):
    for i, h in enumerate(("h1", "h2"), 1):
        _join(lab, h, "blue", 1, 100, i)
    r = vnetctl(lab, "h1", "vnet", "add", "red", "--id", "7")
    assert r.returncode == 0, r.stderr
    red = lab.vnet_ns("h1", "red")
    assert netlink.netns_exists(red)
    # crash: the namespaces stay behind
    proc = lab.daemons["h1"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert netlink.netns_exists(red)
    # while it is down, red is dropped from its state (the admin, or a del that never finished)
    path = lab.workdir / "h1-state" / "state.json"
    state = json.loads(path.read_text())
    assert red in state["owned"]
    state["vnets"] = [v for v in state["vnets"] if v["name"] != "red"]
    path.write_text(json.dumps(state))
    env = repo_env()
    with open(lab.log_path("h1"), "ab") as log:
        lab.daemons["h1"] = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{lab.ns('h1')}", sys.executable, "-m",
             "vnet_host.daemon", "-c", str(lab.workdir / "h1.toml")], stdout=log,
            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    lab._wait_ready("h1", lab.daemons["h1"])
    assert not netlink.netns_exists(red), "restart kept a namespace it no longer owns"
    st = lab.control("h1")
    assert [v["name"] for v in st["vnets"]] == ["blue"]
    p = lab.ping("h1", "10.0.0.2", vnet="blue", count=3, wait=2)
    assert p.received >= 2, p.output
    # a clean stop removes everything it owns
    lab.daemons["h1"].terminate()
    lab.daemons["h1"].wait(15)
    assert not netlink.netns_exists(lab.vnet_ns("h1", "blue"))
