"""Kernel-resident protocol instances (vnet_router/node/kernel.py): the VNP virtual router's
forwarding as an eBPF program at TC ingress of r's TAP logical interfaces of vNet vnp, loaded
by vnet-router through the kernel's verifier with ``vnetctl instance start --kernel``.  Two
hosts exchange VNP echo messages (VNP over Ethernet on their library endpoints) through it
while IPv4 runs in vNet blue on the same links; a program the verifier refuses is reported
with the verifier's message and leaves nothing attached; stopping leaves the interfaces as
they were."""
import json
import os
import subprocess

import pytest

import topo as t
from harness import eventually, repo_env, vnetctl
from host_topo import VNP_SOCKET, join_all, topology

pytestmark = [pytest.mark.root, pytest.mark.one_tier]

# r's part of vNet vnp: TAPs towards each host (the kernel router attaches to them)
ROUTER_PARTS = (t.vnet("vnp", 5),
                t.iface("vnp", "p1", "to-h1", 500, 501),
                t.iface("vnp", "p2", "to-h2", 500, 501))
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3"]
BAD = os.path.join(os.path.dirname(__file__), "bpf", "bad_unchecked.bpf.c")


@pytest.fixture
def lab(make_lab, sock_dir):
    lab = make_lab(topology(sock_dir, router_parts=ROUTER_PARTS, vnets=(("blue", 1, 100),)))
    join_all(lab, (("blue", 1, 100, ()), VNP_SOCKET))
    return lab


def _tc(lab) -> str:
    """What TC has on r's logical interfaces of vnp (qdiscs, ingress and egress filters)."""
    out = []
    for dev in ("p1", "p2"):
        for what in (["qdisc", "show", "dev", dev], ["filter", "show", "dev", dev, "ingress"],
                     ["filter", "show", "dev", dev, "egress"]):
            r = lab.exec("r", ["tc", *what], vnet="vnp")
            assert r.returncode == 0, r.stderr
            out.append(f"{' '.join(what)}: {r.stdout}")
    return "\n".join(out)


def _app(lab, node, address, *args):
    return [*NOBODY, "-m", "vnet_host.vnp.app", "-s", lab.socket(node), "--vnet", "vnp",
            "--interface", "vnp0", "--address", address, "--ethernet", *args]


def _kernel(lab, node="r") -> list:
    r = vnetctl(lab, node, "instance", "list", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["kernel"]


def test_verifier_refuses_bad_program_nothing_attached(lab):
    before = _tc(lab)
    r = vnetctl(lab, "r", "instance", "start", "bad", "--vnet", "vnp", "--kernel", BAD,
                "--interface", "p1", "--interface", "p2")
    assert r.returncode != 0
    assert "the kernel refused program bad_unchecked" in r.stderr, r.stderr
    assert "the verifier said" in r.stderr and "invalid access to packet" in r.stderr, r.stderr
    assert _tc(lab) == before
    assert _kernel(lab) == []
    # a library endpoint is no network device: refused before anything is built
    r = vnetctl(lab, "h1", "instance", "start", "k", "--vnet", "vnp", "--kernel", "vnp_router",
                "--interface", "vnp0")
    assert r.returncode != 0 and "a kernel instance attaches to TAPs" in r.stderr, r.stderr
    r = vnetctl(lab, "r", "instance", "start", "../x", "--vnet", "vnp", "--kernel",
                "vnp_router", "--interface", "p1")
    assert r.returncode != 0 and "bad instance name" in r.stderr, r.stderr
    r = vnetctl(lab, "r", "instance", "start", "u", "--vnet", "vnp", "--", "sleep", "1")
    assert r.returncode != 0 and "runs kernel instances only" in r.stderr, r.stderr
    assert _tc(lab) == before


def test_kernel_instance_on_a_host_leaves_other_traffic_alone(lab):
    """vnet-hostd loads kernel instances too; frames that are not the program's (IPv4 here)
    pass untouched (TC_ACT_OK) and are counted as such."""
    r = vnetctl(lab, "h1", "instance", "start", "k", "--vnet", "blue", "--kernel",
                "vnp_router", "--interface", "blue0")
    assert r.returncode == 0, r.stderr
    r = lab.exec("h1", ["ping", "-n", "-q", "-c", "20", "-i", "0.05", "10.0.0.2"], vnet="blue")
    assert " 0% packet loss" in r.stdout, r.stdout
    k = _kernel(lab, "h1")
    assert [i["name"] for i in k] == ["k"] and k[0]["counters"]["not_vnp"] >= 20, k
    assert k[0]["counters"]["forwarded"] == 0
    r = vnetctl(lab, "h1", "instance", "stop", "k")
    assert r.returncode == 0, r.stderr
    assert _kernel(lab, "h1") == []
    assert "bpf" not in lab.exec("h1", ["tc", "filter", "show", "dev", "blue0", "ingress"],
                                 vnet="blue").stdout


def test_kernel_vnp_router_beside_ipv4(lab, tmp_path):
    env = repo_env()
    before = _tc(lab)
    r = vnetctl(lab, "r", "instance", "start", "vnpk", "--vnet", "vnp", "--kernel",
                "vnp_router", "--interface", "p1", "--interface", "p2")
    assert r.returncode == 0, r.stderr
    assert "program vnp_router verified, attached at TC ingress of p1, p2" in r.stdout, r.stdout
    attached = _tc(lab)
    assert attached.count("vnp_router") >= 2 and "direct-action" in attached, attached
    slog = open(tmp_path / "server.out", "w+")
    server = lab.popen("h2", _app(lab, "h2", "2.1", "echo-server"), env=env, stdout=slog,
                       stderr=subprocess.STDOUT)
    try:
        ping = lab.popen("h1", ["ping", "-n", "-q", "-c", "40", "-i", "0.1", "10.0.0.2"],
                         vnet="blue", stdout=subprocess.PIPE, text=True)
        client = lab.exec("h1", _app(lab, "h1", "1.1", "echo", "2.1", "hello-kernel", "--count",
                                     "5"), env=env, timeout=60)
        out, _ = ping.communicate(timeout=60)
    finally:
        server.terminate()
        server.wait(10)
    slog.seek(0)
    assert client.returncode == 0, client.stdout + client.stderr + slog.read()
    assert "5/5 replies" in client.stdout and "reply from 2.1: hello-kernel #4" in client.stdout
    assert " 0% packet loss" in out, out
    # the program's maps: it forwarded requests and replies, learned both hosts from HELLO
    k = eventually(lambda: _kernel(lab), 10, "the kernel router's counters",
                   until=lambda ks: ks and ks[0]["counters"].get("forwarded", 0) >= 10)[0]
    assert k["counters"]["hello"] >= 2 and k["counters"]["malformed"] == 0, k
    hosts = {e[0] for e in k["maps"]["hosts"]["entries"]}
    assert {"01000100", "01000200"} <= hosts, k["maps"]["hosts"]        # 1.1, 2.1 (u32 LE)
    assert k["maps"]["vnet_ports"]["read_only_for_program"] is True
    assert len(k["maps"]["vnet_ports"]["entries"]) == 2
    show = vnetctl(lab, "r", "show")
    assert "kernel instances" in show.stdout and "forwarded=" in show.stdout, show.stdout
    # the frames went over r's substrate links as VLI 500/501 of vNet vnp
    vl = {(v["substrate_link"], v["vli"], v["direction"]): v
          for v in lab.control("r")["virtual_links"]}
    assert vl[("to-h1", 500, "in")]["packets"] >= 5 and vl[("to-h2", 501, "out")]["packets"] >= 5
    # stop: detached and unloaded, the interfaces as they were
    r = vnetctl(lab, "r", "instance", "stop", "vnpk")
    assert r.returncode == 0, r.stderr
    assert _tc(lab) == before
    assert _kernel(lab) == []
    # and the router is gone: the echo gets no reply now (once both endpoints are free again)
    for h in ("h1", "h2"):
        eventually(lambda: lab.log_path(h).read_text(), 10, f"{h} to release vnp/vnp0",
                   until=lambda log: log.count("endpoint vnp/vnp0 released") >= 1)
    server = lab.popen("h2", _app(lab, "h2", "2.1", "echo-server", "--seconds", "8"), env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = lab.exec("h1", _app(lab, "h1", "1.1", "echo", "2.1", "gone", "--count", "1",
                                     "--timeout", "3"), env=env, timeout=30)
        assert client.returncode == 1 and "0/1 replies" in client.stdout, client.stdout
    finally:
        server.terminate()
        server.wait(10)
