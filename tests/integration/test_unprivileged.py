"""The systemd deployment model: the daemon runs without CAP_SYS_ADMIN (here with only
CAP_NET_ADMIN + CAP_NET_RAW: the units add CAP_BPF, CAP_PERFMON, test_kernel_tier.py); the
privileged helper steps --prepare / --configure / --cleanup (ExecStartPre=+, ExecStartPost=+,
ExecStopPost=+) do what needs CAP_SYS_ADMIN (namespaces)."""
import os
import subprocess
import sys

import pytest

from vnet_router.model.toml import dump_toml
from vnet_router.ops import netlink

import topo as t
from harness import eventually, repo_env

pytestmark = pytest.mark.root


def _config(sock, ifname, peer, ns, vin, vout, octet) -> str:
    return dump_toml(t.router_config(
        t.p2p("p", ifname, peer_mac=peer, vlan=10), t.vnet("blue", 1, namespace=ns),
        t.iface("blue", "blue0", "p", vin, vout, addresses=[f"10.0.0.{octet}/24"]),
        settings={"control_socket": str(sock)}))


LIMITED = ["setpriv", "--inh-caps=-all,+net_admin,+net_raw",
           "--ambient-caps=-all,+net_admin,+net_raw", "--bounding-set=-all,+net_admin,+net_raw"]


def _daemon(ns, cfg, limited):
    return subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", *(LIMITED if limited else []),
                             sys.executable, "-m", "vnet_router.node.daemon", "-c", str(cfg)],
                            stderr=subprocess.PIPE, text=True, env=repo_env())


def _step(ns, cfg, flag):
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-m",
                           "vnet_router.node.daemon", "-c", str(cfg), flag],
                          capture_output=True, text=True, timeout=30, env=repo_env())


def _wait(path, proc):
    def there():
        assert proc.poll() is None, proc.stderr.read()
        return os.path.exists(path)
    eventually(there, 20, f"the daemon's control socket {path}")


def test_daemon_with_only_net_admin_and_net_raw(tmp_path):
    pid = os.getpid()
    x, y = f"vl{pid}ux", f"vl{pid}uy"
    procs = []
    for ns in (x, y):
        netlink.netns_create(ns)
    try:
        netlink.veth_create_between("e0", x, "e0", y, mac="02:00:00:00:aa:01",
                                    peer_mac="02:00:00:00:aa:02")
        cfgs = {}
        for ns, peer, vin, vout, octet in ((x, "02:00:00:00:aa:02", 11, 10, 1),
                                           (y, "02:00:00:00:aa:01", 10, 11, 2)):
            cfgs[ns] = tmp_path / f"{ns}.toml"
            cfgs[ns].write_text(_config(tmp_path / f"{ns}.sock", "e0", peer, f"{ns}-blue", vin,
                                        vout, octet))
        # without --prepare the limited daemon refuses, names the key, creates nothing
        r = subprocess.run(["nsenter", f"--net=/run/netns/{y}", *LIMITED, sys.executable, "-m",
                            "vnet_router.node.daemon", "-c", str(cfgs[y])],
                           capture_output=True, text=True, timeout=30, env=repo_env())
        assert r.returncode == 2 and "vnet[0].namespace" in r.stderr and "--prepare" in r.stderr
        r = _step(y, cfgs[y], "--prepare")
        assert r.returncode == 0 and "created namespace" in r.stdout, r.stderr
        procs = [_daemon(x, cfgs[x], False), _daemon(y, cfgs[y], True)]
        for ns, p in zip((x, y), procs):
            _wait(tmp_path / f"{ns}.sock", p)
        r = _step(y, cfgs[y], "--configure")
        assert r.returncode == 0 and "blue0: up" in r.stdout, r.stdout + r.stderr
        ping = subprocess.run(["ip", "netns", "exec", f"{x}-blue", "ping", "-c", "3", "-i", "0.2",
                               "10.0.0.2"], capture_output=True, text=True, timeout=30)
        assert ping.returncode == 0, ping.stdout
        # nsenter and setpriv exec into python: the Popen pid is the daemon itself
        caps = open(f"/proc/{procs[1].pid}/status").read()
        eff = int(next(l for l in caps.splitlines() if l.startswith("CapEff")).split()[1], 16)
        assert eff == (1 << 12) | (1 << 13)          # CAP_NET_ADMIN | CAP_NET_RAW only
    finally:
        for p in procs:
            p.terminate()
            p.communicate(timeout=15)
        assert all(p.returncode == 0 for p in procs)
        if procs:
            r = _step(y, cfgs[y], "--cleanup")
            assert "removed namespace" in r.stdout, r.stdout + r.stderr
        for ns in (x, y, f"{x}-blue", f"{y}-blue"):
            netlink.netns_remove(ns)
