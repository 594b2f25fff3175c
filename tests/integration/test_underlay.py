"""UDP links that wait for their underlay (issue 26, item 1), real daemons.

x ==udp tunnel== y over one Ethernet segment.  y's end of the tunnel is 192.168.51.2, an
address x has no route to at start (x's own subnet is 192.168.50.0/24): x's daemon keeps the
link down, says so once, runs on, and brings it up once the test adds the route.  A ``local``
address that is not on the node is what ``vnet-router --check`` warns about, naming the link
and the address; the daemon waits for it the same way.
"""
import time

import pytest

import topo as t
from harness import eventually, vnetctl

pytestmark = [pytest.mark.root]

GET = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
"""


def _node(name, local, remote, inner, addresses, settings=None):
    # no path MTU notices: over a tunnel that is down at start none comes, and x and y each
    # waited 2.25 s at start for the other's
    return t.node(name, t.udp("tun", f"{local}:4799", f"{remote}:4799"), t.vnet("blue", 1),
                  t.iface("blue", "blue0", "tun", 7, addresses=[inner]),
                  addresses={"e0": addresses},
                  settings={"path_mtu_interval": 0, **(settings or {})})


def topology(x_local="192.168.50.1", y_end="192.168.51.2"):
    """By default x reaches y's tunnel end (192.168.51.2) only once a route to
    192.168.51.0/24 is there; y reaches x's (192.168.50.1) on its own subnet."""
    return (t.link("x:e0", "y:e0")
            + _node("x", x_local, y_end, "10.0.0.1/24", ["192.168.50.1/24"],
                    settings={"metrics": "127.0.0.1:9479"})
            + _node("y", y_end, x_local, "10.0.0.2/24",
                    ["192.168.50.2/24", "192.168.51.2/24"]))


def _tun(lab, node):
    return next(s for s in lab.control(node)["substrate_links"] if s["id"] == "tun")


def _metrics(lab, node, port=9479) -> dict:
    r = lab.exec(node, ["python3", "-c", GET, f"http://127.0.0.1:{port}/metrics"], timeout=20)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        if line.startswith(("vnet_substrate_link_up{", "vnet_substrate_link_down_seconds{")) \
                and 'link="tun"' in line:
            out[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
    return out


def _log_lines(lab, node, text):
    return [line for line in lab.log_path(node).read_text(errors="replace").splitlines()
            if text in line]


def test_a_route_that_appears_late_brings_the_link_up(make_lab):
    lab = make_lab(topology())
    # started, link down, and said so once, naming the link and the address
    tun = _tun(lab, "x")
    assert tun["state"] == "down" and tun["missing"] == "route", tun
    assert "192.168.51.2" in tun["down_reason"], tun
    warned = _log_lines(lab, "x", "substrate link tun (udp ")
    assert len(warned) == 1 and "192.168.51.2" in warned[0] and "down" in warned[0], warned
    assert "state" in _tun(lab, "y") and _tun(lab, "y")["state"] == "up"
    m = eventually(lambda: _metrics(lab, "x"), 10, "x's link gauges",
                   until=lambda m: m.get("vnet_substrate_link_down_seconds", 0) > 0)
    assert m["vnet_substrate_link_up"] == 0, m
    # the scenario: the route comes 5 s after the start; the daemon retries meanwhile
    time.sleep(5)             # times the test's input (when the route appears), not a wait
    assert lab.alive()["x"] is None, lab.log_tail("x")
    tun = _tun(lab, "x")
    assert tun["state"] == "down" and tun["retries"] >= 3 and tun["down_seconds"] >= 5, tun
    added = time.time()
    lab.exec("x", ["ip", "route", "add", "192.168.51.0/24", "dev", "e0"], check=True)
    tun = eventually(lambda: _tun(lab, "x"), 10, "x's tunnel to come up",
                     until=lambda s: s["state"] == "up")
    assert tun["up_since"] - added < 2.0, (tun, added)           # the daemon's own clock
    assert len(_log_lines(lab, "x", "substrate link tun (udp ")) == 2   # the warning, then "up"
    m = _metrics(lab, "x")
    assert m == {"vnet_substrate_link_up": 1, "vnet_substrate_link_down_seconds": 0}, m
    # traffic flows over it, both ways
    ping = eventually(lambda: lab.ping("x", "10.0.0.2", vnet="blue", count=3), 20,
                      "a ping across the tunnel", until=lambda p: p.received == 3)
    assert ping.received == 3, ping.output
    tun = _tun(lab, "x")
    assert tun["tx_packets"] >= 3 and tun["rx_packets"] >= 3, tun
    assert lab.alive() == {"x": None, "y": None}


def test_check_warns_about_a_local_address_not_on_the_node(make_lab):
    """x's local address 192.168.50.9 is not on x: --check warns naming the link and the
    address (and where it looked); the daemon starts with the link down, and brings it up
    once the address is added."""
    lab = make_lab(topology(x_local="192.168.50.9", y_end="192.168.50.2"))
    check = lab.exec("x", [*lab.daemon_cmd, "-c", str(lab.workdir / "x.toml"), "--check"],
                     timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    lines = [line for line in check.stdout.splitlines() if line.startswith("underlay:")]
    assert len(lines) == 1, check.stdout
    assert "warning: substrate link tun: local address 192.168.50.9 is not on this node" \
        in lines[0], lines
    assert f"network namespace {lab.ns('x')}" in lines[0], lines
    # y's config is fine where it runs: no warning
    check_y = lab.exec("y", [*lab.daemon_cmd, "-c", str(lab.workdir / "y.toml"), "--check"],
                       timeout=30)
    assert check_y.returncode == 0 and "underlay:" not in check_y.stdout, check_y.stdout
    tun = _tun(lab, "x")
    assert tun["state"] == "down" and tun["missing"] == "address", tun
    assert "192.168.50.9" in tun["down_reason"]
    lab.exec("x", ["ip", "address", "add", "192.168.50.9/24", "dev", "e0"], check=True)
    eventually(lambda: _tun(lab, "x"), 10, "x's tunnel to come up",
               until=lambda s: s["state"] == "up")
    ping = eventually(lambda: lab.ping("x", "10.0.0.2", vnet="blue", count=3), 20,
                      "a ping across the tunnel", until=lambda p: p.received == 3)
    assert ping.received == 3, ping.output
    # and --check no longer warns
    check = lab.exec("x", [*lab.daemon_cmd, "-c", str(lab.workdir / "x.toml"), "--check"],
                     timeout=30)
    assert "underlay:" not in check.stdout, check.stdout


def test_a_reload_that_adds_a_link_without_a_route_is_applied_with_the_link_down(make_lab):
    """Before, a reload whose new udp link had no route was refused ("cannot open substrate
    sockets"); now it is applied and the link waits like one at start."""
    lab = make_lab(topology(y_end="192.168.50.2"))
    assert _tun(lab, "x")["state"] == "up"
    path = lab.workdir / "x.toml"
    text = path.read_text()
    assert text.count('"192.168.50.2:4799"') == 1, text
    path.write_text(text.replace('"192.168.50.2:4799"', '"192.168.51.2:4799"'))
    r = vnetctl(lab, "x", "reload")
    assert r.returncode == 0, r.stdout + r.stderr
    tun = _tun(lab, "x")
    assert tun["state"] == "down" and tun["missing"] == "route", tun
    assert tun["remote"] == "192.168.51.2:4799"
    lab.exec("x", ["ip", "route", "add", "192.168.51.0/24", "dev", "e0"], check=True)
    eventually(lambda: _tun(lab, "x"), 10, "x's tunnel to come up",
               until=lambda s: s["state"] == "up")
    assert lab.alive()["x"] is None
