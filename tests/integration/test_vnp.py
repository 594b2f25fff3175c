"""A non-IP vNet (VNP, vnet_host.vnp) on the protocol library: two hosts exchange messages
through its virtual router on the substrate router, while IPv4 runs in vNet blue on the same
links; endpoints are handed out only to users the vNet allows."""
import subprocess
import sys

import pytest

import topo as t
from harness import eventually, repo_env, vnetctl
from host_topo import VNP_SOCKET, join_all, topology

pytestmark = pytest.mark.root

# r's part of vNet vnp: a library endpoint towards each host (the VNP router opens them)
ROUTER_PARTS = (t.vnet("vnp", 5),
                t.iface("vnp", "p1", "to-h1", 500, 501, kind="socket"),
                t.iface("vnp", "p2", "to-h2", 500, 501, kind="socket"))

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3"]


@pytest.fixture
def lab(make_lab, sock_dir):
    return make_lab(topology(sock_dir, router_parts=ROUTER_PARTS, vnets=(("blue", 1, 100),)))


def _app(lab, node, address, *args, **kw):
    argv = [*NOBODY, "-m", "vnet_host.vnp.app", "-s", lab.socket(node), "--vnet", "vnp",
            "--interface", "vnp0", "--address", address, *args]
    return argv


def test_vnp_echo_through_virtual_router_beside_ipv4(lab, tmp_path):
    env = repo_env()
    join_all(lab, (("blue", 1, 100, ()), VNP_SOCKET))
    rlog = open(tmp_path / "router.out", "w+")
    router = lab.popen("r", [sys.executable, "-m", "vnet_host.vnp.router", "-s", lab.socket("r"),
                             "--port", "vnp:p1", "--port", "vnp:p2"], env=env, stdout=rlog,
                       stderr=subprocess.STDOUT)
    slog = open(tmp_path / "server.out", "w+")
    server = lab.popen("h2", _app(lab, "h2", "2.1", "echo-server"), env=env, stdout=slog,
                       stderr=subprocess.STDOUT)
    # IPv4 in blue on the same links, all the while
    ping = lab.popen("h1", ["ping", "-n", "-q", "-c", "40", "-i", "0.1", "10.0.0.2"],
                     vnet="blue", stdout=subprocess.PIPE, text=True)
    client = lab.exec("h1", _app(lab, "h1", "1.1", "echo", "2.1", "hello-vnp", "--count", "5"),
                      env=env, timeout=60)
    out, _ = ping.communicate(timeout=60)
    assert client.returncode == 0, client.stdout + client.stderr + open(tmp_path / "router.out").read()
    assert "5/5 replies" in client.stdout
    assert "reply from 2.1: hello-vnp #4" in client.stdout
    assert " 0% packet loss" in out, out
    # the server got them through the router: the router counted forwarded packets
    router.send_signal(15)
    router.wait(10)
    server.terminate()
    rlog.seek(0)
    text = rlog.read()
    assert '"forwarded": ' in text and '"forwarded": 0' not in text, text
    assert "1.1@p1" in text and "2.1@p2" in text, text
    # VNP frames went over the router's substrate links as VLI 500/501 of vNet vnp
    st = lab.control("r")
    vl = {(v["substrate_link"], v["vli"], v["direction"]): v for v in st["virtual_links"]}
    assert vl[("to-h1", 500, "in")]["packets"] >= 5 and vl[("to-h2", 501, "out")]["packets"] >= 5
    # the endpoint was released when the router exited: it can be opened again
    eventually(lambda: lab.log_path("r").read_text(), 10, "r to log the release of vnp/p1",
               until=lambda log: "endpoint vnp/p1 released" in log)
    r = lab.exec("r", [sys.executable, "-c", "import sys; from vnet_host import lib; "
                       "e = lib.open_endpoint('vnp', 'p1', sys.argv[1]); print(e)",
                       lab.socket("r")], env=env)
    assert r.returncode == 0 and "vnp/p1" in r.stdout, r.stderr


def test_endpoint_only_on_allowed_vnets(lab):
    env = repo_env()
    r = vnetctl(lab, "h1", "join", "vnp", "--id", "5", "--link", "up", "--in-vli", "501",
                "--out-vli", "500", "--kind", "socket", "--name", "vnp0", "--allow", "nobody")
    assert r.returncode == 0, r.stderr
    r = vnetctl(lab, "h1", "join", "sec", "--id", "6", "--link", "up", "--in-vli", "601",
                "--kind", "socket", "--name", "sec0")
    assert r.returncode == 0, r.stderr
    probe = ("import sys; from vnet_host import lib\n"
             "try:\n e = lib.open_endpoint(sys.argv[2], sys.argv[3], sys.argv[1]); print('OPEN', e)\n"
             "except lib.EndpointError as x: print('REFUSED', x)")
    sock = lab.socket("h1")
    r = subprocess.run([*NOBODY, "-c", probe, sock, "sec", "sec0"], capture_output=True,
                       text=True, env=env, timeout=30)
    assert "REFUSED" in r.stdout and "permission denied" in r.stdout \
        and "may not open endpoints of vNet sec" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([*NOBODY, "-c", probe, sock, "nosuch", "x"], capture_output=True,
                       text=True, env=env, timeout=30)
    assert "REFUSED" in r.stdout and "unknown vNet 'nosuch'" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([*NOBODY, "-c", probe, sock, "vnp", "vnp0"], capture_output=True,
                       text=True, env=env, timeout=30)
    assert "OPEN <Endpoint vnp/vnp0" in r.stdout, r.stdout + r.stderr
    # the prober exited: the host takes the endpoint back, for the next application
    eventually(lambda: lab.log_path("h1").read_text(), 10, "h1 to log the release of vnp/vnp0",
               until=lambda log: "endpoint vnp/vnp0 released" in log)
    assert lab.alive()["h1"] is None
