"""A routing daemon as hosted virtual router: bird2 runs OSPF inside vNet "ospf" across
virtual links of the substrate.  h1 and h2 join the vNet at run time and start bird as a
sandboxed instance of vnet-hostd (user nobody, CAP_NET_ADMIN/NET_RAW only, its namespace
only; its bird.conf given with ``--file``); the substrate router r runs bird in its own "ospf"
namespace between its two TAPs.  Adjacencies form and h1 reaches h2's stub address over the
route OSPF learned."""
import shutil
import time

import pytest

import topo as t
from harness import poll, vnetctl
from host_topo import topology

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 not installed")]

# r's part of vNet ospf: a TAP towards each host, IP forwarding between them
ROUTER_PARTS = (t.vnet("ospf", 3),
                t.iface("ospf", "t1", "to-h1", 700, 701, addresses=["10.1.1.254/24"]),
                t.iface("ospf", "t2", "to-h2", 700, 701, addresses=["10.1.2.254/24"]))
ROUTER_COMMANDS = (("sysctl -q -w net.ipv4.ip_forward=1", "ospf"),
                   ("ip link set dev lo up", "ospf"))


def bird_conf(router_id, ifaces, stub=True):
    lines = [f"router id {router_id};", "log stderr all;",
             "protocol device { scan time 1; }",
             "protocol kernel { ipv4 { import none; export all; }; }",
             "protocol ospf v2 {", "  ipv4 { import all; export none; };", "  area 0 {"]
    for i in ifaces:
        lines.append(f'    interface "{i}" {{ type ptp; hello 1; dead 4; }};')
    if stub:
        lines.append('    interface "lo" { stub yes; };')
    lines += ["  };", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def lab(make_lab, sock_dir):
    return make_lab(topology(sock_dir, router_parts=ROUTER_PARTS,
                             router_commands=ROUTER_COMMANDS, vnets=()))


def test_bird_ospf_adjacency_and_learned_route_carries_traffic(lab, tmp_path):
    for i, h in enumerate(("h1", "h2"), 1):
        r = vnetctl(lab, h, "join", "ospf", "--id", "3", "--link", "up", "--in-vli", "701",
                    "--out-vli", "700", "--address", f"10.1.{i}.1/24")
        assert r.returncode == 0, r.stderr
        lab.exec(h, ["ip", "link", "set", "dev", "lo", "up"], vnet="ospf", check=True)
        lab.exec(h, ["ip", "addr", "add", f"10.9.{i}.1/32", "dev", "lo"], vnet="ospf",
                 check=True)
        conf = tmp_path / f"{h}-bird.conf"           # vnetctl reads it, the daemon puts it
        conf.write_text(bird_conf(f"10.1.{i}.1", ["ospf0"]))      # into the instance's dir
        r = vnetctl(lab, h, "instance", "start", "bird", "--vnet", "ospf", "--cap", "net_admin",
                    "--cap", "net_raw", "--cap", "net_bind_service", "--memory", "128MB",
                    "--cpu", "600", "--file", f"{conf}:bird.conf",
                    "--", "bird", "-f", "-c", "bird.conf", "-s", "bird.ctl")
        assert r.returncode == 0, r.stderr
    conf = tmp_path / "r-bird.conf"
    conf.write_text(bird_conf("10.1.255.254", ["t1", "t2"], stub=False))
    rbird = lab.popen("r", ["bird", "-f", "-c", str(conf), "-s", str(tmp_path / "r-bird.ctl")],
                      vnet="ospf")
    t0 = time.monotonic()

    def route_to_h2():
        assert rbird.poll() is None, "bird on r exited"
        return lab.exec("h1", ["ip", "route", "show", "10.9.2.1"], vnet="ospf").stdout
    _, route = poll(route_to_h2, 60, until=lambda route: "proto bird" in route, step=0.5)
    took = time.monotonic() - t0
    st = lab.control("h1", "instances")
    assert "proto bird" in route, (route, st,
                                   (lab.workdir / "h1-state/instances/bird/output.log").read_text())
    assert "via 10.1.1.254 dev ospf0" in route, route
    print(f"route to h2's stub learned after {took:.1f} s: {route.strip()}")
    nb = lab.exec("h1", ["birdc", "-s", str(lab.workdir / "h1-state/instances/bird/bird.ctl"),
                         "show", "ospf", "neighbors"], vnet="ospf").stdout
    assert "Full" in nb, nb
    # until r and h2 have computed their routes too (the ping below says what was wrong)
    poll(lambda: lab.exec("h1", ["ping", "-n", "-c", "1", "-W", "1", "-I", "10.9.1.1",
                                 "10.9.2.1"], vnet="ospf", timeout=30), 30,
         until=lambda p: p.returncode == 0, step=0.5)
    p = lab.exec("h1", ["ping", "-n", "-c", "3", "-i", "0.2", "-I", "10.9.1.1", "10.9.2.1"],
                 vnet="ospf", timeout=30)
    assert p.returncode == 0 and " 0% packet loss" in p.stdout, (
        p.stdout + p.stderr + lab.exec("r", ["ip", "route"], vnet="ospf").stdout
        + lab.exec("h2", ["ip", "route"], vnet="ospf").stdout
        + lab.exec("r", ["birdc", "-s", str(tmp_path / "r-bird.ctl"), "show", "route"],
                   vnet="ospf").stdout)
    # the traffic went over the substrate: r switched nothing, it routed in its vNet namespace
    st = lab.control("r")
    vl = {(v["substrate_link"], v["vli"], v["direction"]): v for v in st["virtual_links"]}
    assert vl[("to-h2", 701, "out")]["packets"] > 0 and vl[("to-h1", 700, "in")]["packets"] > 0
    # bird runs unprivileged in its sandbox
    inst = lab.control("h1", "instances")["running"]
    assert inst and inst[0]["user"] == "nobody" and inst[0]["name"] == "bird"
