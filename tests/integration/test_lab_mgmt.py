"""The lab's management network (docs/lab.md, "Management network"): `vnet-lab up
--prometheus` starts a Prometheus that scrapes every node through it, its web UI on a host
loopback port; each node's /metrics passes `promtool check metrics`; Ctrl-C leaves nothing."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request

import pytest

from vnet_router.lab.owners import processes_in

import topo as t
from lab_remains import namespaces, remove_lab
from harness import eventually, repo_env

pytestmark = [pytest.mark.root, pytest.mark.one_tier,
              pytest.mark.skipif(shutil.which("prometheus") is None or
                                 shutil.which("promtool") is None,
                                 reason="prometheus/promtool not installed (Debian's "
                                        "prometheus; run.sh installs it)")]

# a router (metrics on its loopback, as configs usually say) and a host daemon (no metrics
# key: the lab serves them on its management address) on one switch; no path MTU notices on
# r (nothing on the LAN carries its v0: its start waited 2.25 s for a report)
TOPO = t.text(t.topology(
    t.switch_node("sw"),
    t.node("r", t.multiaccess("lan", "eth0"), t.vnet("v", 1), t.iface("v", "v0", "lan", 200),
           settings={"metrics": "127.0.0.1:9477", "path_mtu_interval": 0},
           addresses={"eth0": ["192.168.9.1/24"]}),
    t.node("h", t.multiaccess("lan", "eth0"), daemon="host"),
    t.link("r:eth0", "sw"), t.link("h:eth0", "sw")))


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read().decode())


def test_vnet_lab_up_prometheus_scrapes_every_node_and_leaves_nothing(tmp_path):
    prefix = f"vl{os.getpid()}mg-"
    topo_file = tmp_path / "mgmt.toml"
    topo_file.write_text(TOPO)
    log = tmp_path / "lab.out"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vnet_router.lab.cli", "up", "--prefix", prefix,
             "--prometheus", "127.0.0.1:0", str(topo_file)], stdout=f,
            stderr=subprocess.STDOUT, env=repo_env(), start_new_session=True)
    procs = []
    try:
        def up():
            assert proc.poll() is None, f"vnet-lab ended ({proc.returncode}):\n{log.read_text()}"
            return "up; press Ctrl-C" in log.read_text()
        eventually(up, 60, "the lab to be up", step=0.1)
        out = log.read_text()
        port = int(re.search(r"web UI http://127\.0\.0\.1:(\d+)/", out).group(1))
        mgmt_ns = prefix + "mgmt"
        assert mgmt_ns in namespaces(prefix)
        procs = processes_in(mgmt_ns)

        # Prometheus, through the forwarded loopback port: every node a target, and up
        def targets():
            active = _get(f"http://127.0.0.1:{port}/api/v1/targets")["data"]["activeTargets"]
            return {a["labels"]["node"]: a["health"] for a in active}
        seen = eventually(lambda: targets(), 60, "Prometheus to scrape both nodes",
                          until=lambda s: s == {"r": "up", "h": "up"}, ignore=(OSError,))
        print("targets", seen)
        q = _get(f"http://127.0.0.1:{port}/api/v1/query?query=up")["data"]["result"]
        assert {(s["metric"]["node"], s["value"][1]) for s in q} == {("r", "1"), ("h", "1")}

        # the documented command: each node's /metrics from the management namespace
        cmds = re.findall(r"(ip netns exec \S+ curl -s http://\S+/metrics)\s+# (\w+)", out)
        assert sorted(n for _c, n in cmds) == ["h", "r"], out
        for cmd, node in cmds:
            text = subprocess.run(cmd.split(), capture_output=True, text=True, timeout=30)
            assert text.returncode == 0 and "vnet_" in text.stdout, (node, text.stderr)
            r = subprocess.run(["promtool", "check", "metrics"], input=text.stdout,
                               capture_output=True, text=True, timeout=30)
            print(f"{node}: promtool check metrics exit {r.returncode}, "
                  f"{len(text.stdout.splitlines())} lines")
            assert (r.returncode, r.stdout + r.stderr) == (0, ""), (node, r.stdout + r.stderr)
        # r's loopback endpoint still answers inside r
        inside = subprocess.run(["ip", "netns", "exec", prefix + "r", "curl", "-s",
                                 "http://127.0.0.1:9477/metrics"], capture_output=True,
                                text=True, timeout=30)
        assert "vnet_" in inside.stdout, inside.stderr
        # the control sockets are files: vnetctl reaches them without entering a namespace
        socks = re.findall(r"control: vnetctl -s (\S+) show\s+# (\w+)", out)
        assert sorted(n for _s, n in socks) == ["h", "r"]

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()
        assert namespaces(prefix) == []
        assert not [p for p in procs if os.path.exists(f"/proc/{p}")], \
            "prometheus or the forwarder outlived the lab"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    finally:
        remove_lab(proc, prefix)
