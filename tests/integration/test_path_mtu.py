"""Path MTU across pass-through nodes and a UDP tunnel (issue 15, item 2), real daemons.

a --p2p-- r1 ==udp tunnel== r2 --p2p-- b : r1 and r2 only swap VLIs; blue's instances are on a
and b (one subnet).  Each end's own substrate link carries 1,496-byte payloads (TAP MTU 1482);
the tunnel (1500 - IPv4 - UDP - VLI) only 1,470, i.e. an inner frame of 1470 (TAP MTU 1456).
"""
import os
import subprocess

import pytest

import topo as t
from harness import eventually, iperf_run, received_rate
from vnet_router.ops import netlink

pytestmark = [pytest.mark.root, pytest.mark.one_tier]


@pytest.fixture(params=["fast", "reference", "kernel"])
def datapath(monkeypatch, request):
    """Each datapath (the daemons inherit VNET_DATAPATH)."""
    monkeypatch.setenv("VNET_DATAPATH", request.param)
    return request.param

TUNNEL_MTU = 1500 - 20 - 8 - 2 - 14           # 1456: what the path carries, as a TAP MTU
LINK_MTU = 1500 - 4 - 14                      # 1482: what each end's own link carries
RATE = "40Mbit"


def topology(settings: dict | None = None, underlay_mtu: int | None = None) -> t.Topo:
    def end(name, peer, vlan, in_vli, out_vli, address):
        return t.node(name, t.p2p("up", "e0", peer, vlan=vlan), t.vnet("blue", 1),
                      t.iface("blue", "blue0", "up", in_vli, out_vli, rate=RATE,
                              addresses=[address]), settings=settings)

    def mid(name, ifname, peer, local, remote, tun_in, tun_out, p2p_in, p2p_out, vlan):
        return t.node(name, t.p2p("p2p", ifname, peer, vlan=vlan),
                      t.udp("tun", f"{local}:4799", f"{remote}:4799"),
                      t.switch("blue", "p2p", p2p_in, "tun", tun_out),
                      t.switch("blue", "tun", tun_in, "p2p", p2p_out),
                      addresses={"t0": [f"{local}/24"]}, settings=settings)

    return (t.link("a:e0", "r1:e0") + t.link("r1:t0", "r2:t0", mtu=underlay_mtu)
            + t.link("r2:e0", "b:e0")
            + end("a", "r1:e0", 10, 101, 100, "10.9.0.1/24")
            + mid("r1", "e0", "a:e0", "192.168.60.1", "192.168.60.2", 201, 200, 100, 101, 10)
            + mid("r2", "e0", "b:e0", "192.168.60.2", "192.168.60.1", 200, 201, 301, 300, 30)
            + end("b", "r2:e0", 30, 300, 301, "10.9.0.2/24"))


def _mtu(lab, node):
    return int(lab.exec(node, ["cat", "/sys/class/net/blue0/mtu"], vnet="blue").stdout)


def _ping_df(lab, size):
    return lab.exec("a", ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s",
                          str(size), "10.9.0.2"], vnet="blue", timeout=30)


def _drops(lab, node):
    return {k: n for k, n in lab.control(node)["drops"].items() if n}


def test_default_settings_give_the_ends_the_path_mtu(make_lab, datapath):
    lab = make_lab(topology())
    assert lab.control("r1")["datapath"] == datapath
    # the pass-through nodes report the tunnel's MTU upstream; both ends' TAPs follow
    eventually(lambda: (_mtu(lab, "a"), _mtu(lab, "b")), 20, "both TAPs to get the path MTU",
               until=lambda v: v == (TUNNEL_MTU, TUNNEL_MTU))
    pm = lab.control("a")["path_mtu"]
    assert pm["virtual_links"] == [{"substrate_link": "up", "vli": 100,
                                    "path_mtu": TUNNEL_MTU + 14, "reported_by": 1}], pm
    # drops from here on (a tunnel end whose peer's daemon was not up yet may have had one
    # send refused, ICMP port unreachable, while the lab started)
    before = {node: _drops(lab, node) for node in ("a", "r1", "r2", "b")}

    full = _ping_df(lab, TUNNEL_MTU - 28)                 # a full-size DF ping passes
    assert full.returncode == 0, full.stdout + full.stderr
    over = _ping_df(lab, TUNNEL_MTU - 27)                 # one byte more: refused locally
    assert over.returncode != 0
    assert f"mtu={TUNNEL_MTU}" in over.stdout + over.stderr, over.stdout + over.stderr

    report = iperf_run(lab, "a", "b", "10.9.0.2", 5201, 4, vnet="blue")
    rate = received_rate(report)
    assert 0.8 * 40e6 <= rate <= 1.1 * 40e6, rate          # the configured rate, no loss
    after = {node: _drops(lab, node) for node in ("a", "r1", "r2", "b")}
    assert after == before, (before, after)               # nothing lost, nothing too_big
    assert not any("too_big" in d for d in after.values()), after


def test_static_mismatch_is_counted_too_big_at_the_first_node_that_can_tell(make_lab,
                                                                           datapath):
    """Notices off: the ends keep their own links' MTU; r1 (whose output, the tunnel, is too
    small) counts the full-size frame as ``too_big`` on the tunnel's output virtual link."""
    lab = make_lab(topology(settings={"path_mtu_interval": 0}))
    assert (_mtu(lab, "a"), _mtu(lab, "b")) == (LINK_MTU, LINK_MTU)
    small = _ping_df(lab, TUNNEL_MTU - 28)
    assert small.returncode == 0, small.stdout + small.stderr
    big = _ping_df(lab, LINK_MTU - 28)
    assert big.returncode != 0

    def r1_too_big():
        return {(v["substrate_link"], v["vli"], v["direction"]): v["drops"]
                for v in lab.control("r1")["virtual_links"] if v["drops"]}
    seen = eventually(r1_too_big, 10, "r1 to count the big frames", until=bool)
    assert seen == {("tun", 200, "out"): {"too_big": 2}}, seen
    assert _drops(lab, "r1") == {"too_big": 2}
    assert _drops(lab, "r2") == {} and _drops(lab, "b") == {} and _drops(lab, "a") == {}
    # r1's own check names the switch that narrows the path (vnet-lab check: test_paths.py)
    check = lab.exec("r1", [*lab.daemon_cmd, "-c", str(lab.workdir / "r1.toml"), "--check"],
                     timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "path MTU: warning: switch p2p:100 -> tun:200 (vNet blue) narrows the path from " \
           "1496 to 1470 payload bytes" in check.stdout, check.stdout


def _too_big(lab, node):
    st = lab.control(node)
    return st["drops"].get("too_big", 0)


def test_the_taps_start_at_the_path_mtu(make_lab, datapath):
    """Issue 26 (no black hole at start): right after the lab is up, the ends' TAPs already
    have the path's MTU (each daemon is ready only once its output virtual links' path MTU is
    known, or a notice interval passed), so a full-size DF ping and a TCP transfer started at
    once lose nothing, and r1 (where the tunnel narrows the path) counts nothing too big."""
    lab = make_lab(topology())
    first = (_mtu(lab, "a"), _mtu(lab, "b"))             # the first look, before any traffic
    assert first == (TUNNEL_MTU, TUNNEL_MTU), first
    full = lab.exec("a", ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-M", "do", "-s",
                          str(first[0] - 28), "10.9.0.2"], vnet="blue", timeout=30)
    assert " 0% packet loss" in full.stdout, full.stdout + full.stderr
    report = iperf_run(lab, "a", "b", "10.9.0.2", 5201, 2, vnet="blue")   # ~10 MB at 40 Mbit/s
    assert report["end"]["sum_received"]["bytes"] >= 4 << 20, report["end"]
    assert (_mtu(lab, "a"), _mtu(lab, "b")) == first      # and it stays (no later lowering)
    assert {n: _too_big(lab, n) for n in ("a", "r1", "r2", "b")} == dict.fromkeys(
        ("a", "r1", "r2", "b"), 0)
    assert report["end"]["sum_sent"].get("retransmits", 0) == 0, report["end"]["sum_sent"]


def test_a_tunnel_takes_its_underlay_mtu(make_lab, datapath):
    """A UDP link with no ``mtu`` of its own carries what its route towards the remote does
    (here the veth under the tunnel has MTU 1400, not the 1500 assumed before issue 26): the
    ends' TAPs start at 1400 - IPv4 - UDP - VLI - Ethernet, and a full-size DF ping passes."""
    lab = make_lab(topology(underlay_mtu=1400))
    narrow = 1400 - 20 - 8 - 2 - 14
    assert (_mtu(lab, "a"), _mtu(lab, "b")) == (narrow, narrow)
    tun = {s["id"]: s["mtu"] for s in lab.control("r1")["substrate_links"]}["tun"]
    assert tun == 1400
    full = _ping_df(lab, narrow - 28)
    assert full.returncode == 0, full.stdout + full.stderr
    assert {n: _too_big(lab, n) for n in ("a", "r1", "r2", "b")} == dict.fromkeys(
        ("a", "r1", "r2", "b"), 0)


def test_route_mtu_reads_the_route_then_its_device():
    """``netlink.route_mtu`` (what a UDP link's underlay MTU is read with): a route's ``mtu``
    wins over its device's; no route (or a source not on the node): None."""
    ns = f"i26smtu-{os.getpid()}"
    netlink.netns_create(ns)
    try:
        netlink.veth_create_between("u0", ns, "u1", ns, mtu=1420)
        netlink.addr_add("u0", "10.77.0.1/24", ns)
        subprocess.run(["ip", "-n", ns, "route", "add", "10.78.0.0/24", "via", "10.77.0.2",
                        "mtu", "1300"], check=True)
        assert netlink.route_mtu("10.77.0.2", "10.77.0.1", ns) == 1420
        assert netlink.route_mtu("10.78.0.9", "10.77.0.1", ns) == 1300
        assert netlink.route_mtu("10.79.0.9", "10.77.0.1", ns) is None
        assert netlink.route_mtu("10.77.0.2", "10.66.0.1", ns) is None
    finally:
        netlink.netns_remove(ns)
