"""A router started with ``ip netns exec NODE vnet-router ...`` runs in a private mount namespace
(``ip netns exec`` unshares it and remounts /sys).  The vNet namespaces it creates are still
seen from the host (``ip netns exec VNETNS ip link`` works there) and go at its clean stop; one
that may not mount them where the host sees them (no CAP_SYS_CHROOT) refuses to start, in one
line saying how to start it."""
import os
import subprocess
import sys

import pytest

from vnet_router.model.toml import dump_toml
from vnet_router.ops import netlink

import topo as t
from harness import eventually, repo_env

pytestmark = [pytest.mark.root, pytest.mark.one_tier]


@pytest.fixture
def node(tmp_path):
    """Namespaces x and y joined by a veth; a router config for y with vNet blue in its own
    (not yet existing) namespace.  Yields (y, the vNet's namespace, config, socket)."""
    pid = os.getpid()
    x, y = f"vl{pid}ex", f"vl{pid}ey"
    blue = f"{y}-blue"
    for ns in (x, y):
        netlink.netns_create(ns)
    try:
        netlink.veth_create_between("e0", x, "e0", y, mac="02:00:00:00:ae:01",
                                    peer_mac="02:00:00:00:ae:02")
        sock = tmp_path / "y.sock"
        cfg = tmp_path / "y.toml"
        cfg.write_text(dump_toml(t.router_config(
            t.p2p("p", "e0", peer_mac="02:00:00:00:ae:01", vlan=10),
            t.vnet("blue", 1, namespace=blue),
            t.iface("blue", "blue0", "p", 10, 11, addresses=["10.0.0.2/24"]),
            settings={"control_socket": str(sock)})))
        yield y, blue, cfg, sock
    finally:
        for ns in (x, y, blue):
            netlink.netns_remove(ns)


def _host_sees(ns: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "ip", "-br", "link"], capture_output=True,
                          text=True, timeout=30)


def test_vnet_namespaces_of_a_router_under_ip_netns_exec_are_seen_from_the_host(node):
    y, blue, cfg, sock = node
    proc = subprocess.Popen(["ip", "netns", "exec", y, sys.executable, "-m",
                             "vnet_router.node.daemon", "-c", str(cfg)],
                            stderr=subprocess.PIPE, text=True, env=repo_env())
    try:
        def up():
            assert proc.poll() is None, proc.stderr.read()
            return os.path.exists(sock)
        eventually(up, 30, "the daemon's control socket")
        # the daemon really is in another mount namespace than this test
        assert os.stat(f"/proc/{proc.pid}/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino
        r = eventually(lambda: _host_sees(blue), 10, f"ip netns exec {blue} ip link",
                       until=lambda r: r.returncode == 0 and "blue0" in r.stdout)
        assert "UP" in r.stdout.split("blue0", 1)[1].splitlines()[0], r.stdout
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "created namespace" in err and "Traceback" not in err, err
    assert blue not in netlink.netns_list(), "the clean stop left the vNet's namespace"
    r = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True)
    assert f"/run/netns/{blue}" not in r.stdout.split(), "a mount of it is left on the host"


def test_one_that_cannot_mount_them_for_the_host_refuses_in_one_line(node):
    y, blue, cfg, sock = node
    r = subprocess.run(["setpriv", "--bounding-set=-sys_chroot", "ip", "netns", "exec", y,
                        sys.executable, "-m", "vnet_router.node.daemon", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=60, env=repo_env())
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "private mount namespace" in lines[0] and "CAP_SYS_CHROOT" in lines[0], lines
    assert f"nsenter --net=/run/netns/NS vnet-router -c {cfg}" in lines[0], lines
    assert blue not in netlink.netns_list() and not sock.exists()
