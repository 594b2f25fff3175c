"""The kernel tier (``datapath = "kernel"``): pass-through switches forwarded by the eBPF
program at TC ingress, everything else by the compiled engine, one set of counters.

a --p2p-- r1 --p2p-- r2 --p2p-- b as in test_passthrough, r1 on the kernel tier; r1's second
switch pair has a user-space-shaped output, which stays in the engine.
"""
import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vnet_router.model.toml import dump_toml
from vnet_router.node import api as control
from vnet_router.ops import netlink

import topo as t
from harness import eventually, iperf_run, received_rate, repo_env, vnetctl
from test_passthrough import PASSTHROUGH
from test_unprivileged import LIMITED

pytestmark = [pytest.mark.root, pytest.mark.one_tier]


def _kernel(topo, **r1_tables):
    """PASSTHROUGH with r1 on the kernel tier (``r1_tables``: more of r1's router tables)."""
    out = t.Topo(copy.deepcopy({k: v for k, v in topo.items()}))     # a test may edit it
    for n in out["node"]:
        if n["name"] == "r1":
            n["router"] = dict(n.get("router", {}), **r1_tables)
            n["router"]["node"] = dict(n["router"].get("node", {}), datapath="kernel")
    return out


def _vlinks(st):
    return {(v["substrate_link"], v["vli"], v["direction"]): v for v in st["virtual_links"]}


def _filters(lab, ifname):
    return lab.run_in(lab.ns("r1"), ["tc", "filter", "show", "dev", ifname, "ingress"],
                      check=True).stdout


def test_switches_forwarded_in_the_kernel_with_the_engines_counters(make_lab):
    lab = make_lab(_kernel(PASSTHROUGH))
    assert "substrate_tc" in _filters(lab, "e0") and "substrate_tc" in _filters(lab, "e1")
    st = lab.control("r1")
    assert st["datapath"] == "kernel"
    v = _vlinks(st)
    assert v[("west", 100, "in")]["tier"] == "kernel"
    assert v[("east", 201, "in")]["tier"] == "kernel"

    ping = lab.ping("a", "10.9.2.2", vnet="blue", count=5)
    assert ping.received == 5, ping.output
    result = iperf_run(lab, "a", "b", "10.9.2.2", 5201, 3, vnet="blue")
    assert "error" not in result, result["error"]
    received = result["end"]["sum_received"]["bytes"]
    assert received > 1_000_000

    # the program's per-CPU counters arrive in the same fields the engine fills
    st = eventually(lambda: lab.control("r1"),
                    what="r1's west/100 counters to cover iperf3's bytes",
                    until=lambda s: _vlinks(s)[("west", 100, "in")]["bytes"] >= received)
    v = _vlinks(st)
    links = {x["id"]: x for x in st["substrate_links"]}
    kernel = st["datapath_stats"]["kernel_frames"]
    assert v[("east", 200, "out")]["packets"] >= v[("west", 100, "in")]["packets"] > 1000
    assert v[("west", 101, "out")]["packets"] >= 5
    assert links["west"]["rx_packets"] >= v[("west", 100, "in")]["packets"]
    assert links["east"]["tx_packets"] >= v[("east", 200, "out")]["packets"]
    assert kernel >= v[("west", 100, "in")]["packets"] + v[("east", 201, "in")]["packets"]
    # the engine's ring saw none of them: the socket filter keeps what the kernel forwards
    assert st["datapath_stats"]["ring_frames"] < kernel // 100, st["datapath_stats"]
    assert not {k: n for k, n in st["drops"].items() if n}
    text = vnetctl(lab, "r1", "show").stdout
    assert re.search(r"datapath kernel \(kernel tier: [\d,]+ frames\)", text), text
    row = next(ln for ln in text.splitlines() if re.search(r"\bwest\b.*\b100\b.*\bin\b", ln))
    assert "kernel" in row, row          # the tier column: no other cell says kernel

    # a clean stop takes the program off the interfaces
    lab.kill_daemon("r1", 15)
    assert "substrate_tc" not in _filters(lab, "e0") + _filters(lab, "e1")


def _prog_id(lab, ifname):
    m = re.search(r"substrate_tc.* id (\d+)", _filters(lab, ifname))
    return int(m.group(1)) if m else None


def test_kill_9_leaves_the_program_the_next_start_replaces(make_lab):
    lab = make_lab(_kernel(PASSTHROUGH))
    old = _prog_id(lab, "e0")
    assert old is not None
    lab.kill_daemon("r1")
    # a cls_bpf filter outlives the process that loaded it
    assert _prog_id(lab, "e0") == old
    # frames keep coming while r1 starts: until its first install the new program leaves them
    # to the engine with their VLAN tag (none may reach the ring untagged: no_link)
    flood = lab.popen("a", ["ping", "-q", "-i", "0.002", "-c", "1500", "10.9.2.2"],
                      vnet="blue", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lab.restart_daemon("r1")
    flood.communicate(timeout=60)
    drops = {k: n for k, n in lab.control("r1")["drops"].items() if n}
    assert not drops, drops
    new = _prog_id(lab, "e0")
    assert new is not None and new != old, (old, new)
    st = lab.control("r1")
    assert st["datapath"] == "kernel", st["datapath"]
    assert lab.ping("a", "10.9.2.2", vnet="blue", count=5).received == 5
    st = eventually(lambda: lab.control("r1"), what="kernel frames after the restart",
                    until=lambda s: s["datapath_stats"]["kernel_frames"] >= 10)
    assert _vlinks(st)[("west", 100, "in")]["packets"] >= 5
    lab.kill_daemon("r1", 15)
    assert _prog_id(lab, "e0") is None and _prog_id(lab, "e1") is None


def test_a_rated_switch_is_shaped_by_htb_in_the_kernel(make_lab):
    """r1's west/100 -> east/200 switch has a rate of 20 Mbit/s; with [tm] kernel_shaping its
    class is HTB's and the program forwards it (skb->priority picks the class)."""
    topo = _kernel(PASSTHROUGH, tm={"kernel_shaping": True})
    for n in topo["node"]:
        if n["name"] == "r1":
            for sw in n["router"]["switch"]:
                if sw["in_vli"] == 100:
                    sw["rate"] = "20Mbit"
    lab = make_lab(topo)
    st = eventually(lambda: lab.control("r1"), what="the switch's output in HTB",
                    until=lambda s: _vlinks(s)[("east", 200, "out")]["shaper"] == "kernel")
    assert _vlinks(st)[("west", 100, "in")]["tier"] == "kernel"
    classes = lab.run_in(lab.ns("r1"), ["tc", "class", "show", "dev", "e1"], check=True).stdout
    assert "htb 564e:" in classes and "rate 20Mbit" in classes, classes
    result = iperf_run(lab, "a", "b", "10.9.2.2", 5201, 4, vnet="blue")
    assert "error" not in result, result["error"]
    rate = received_rate(result)
    assert 14e6 < rate < 21e6, rate
    st = lab.control("r1")
    kernel = st["datapath_stats"]["kernel_frames"]
    assert kernel >= _vlinks(st)[("west", 100, "in")]["packets"] > 1000, st["datapath_stats"]
    assert st["datapath_stats"]["ring_frames"] < kernel // 100, st["datapath_stats"]


UNIT = Path(__file__).resolve().parents[2] / "systemd" / "vnet-router.service"


def _unit_caps() -> list[str]:
    """setpriv's arguments for exactly the shipped unit's capabilities (AmbientCapabilities=)."""
    line, = [l for l in UNIT.read_text().splitlines() if l.startswith("AmbientCapabilities=")]
    caps = ",".join("+" + c[len("CAP_"):].lower() for c in line.split("=", 1)[1].split())
    return ["setpriv", f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}",
            f"--bounding-set=-all,{caps}"]


def _switch_20_frames(tmp_path, caps: list[str], tag: str):
    """A node ``y`` on ``datapath = "kernel"``, run with the capabilities ``caps`` (setpriv
    arguments), switches 20 injected frames from p/100 to q/200.  Returns ``show``, the TC
    ingress filters of its substrate interface and the daemon's stderr."""
    pid = os.getpid()
    x, y = f"vl{pid}{tag}x", f"vl{pid}{tag}y"
    xmac, ymac = "02:00:00:00:ab:01", "02:00:00:00:ab:02"
    for ns in (x, y):
        netlink.netns_create(ns)
    proc = None
    try:
        netlink.veth_create_between("e0", x, "e0", y, mac=xmac, peer_mac=ymac)
        cfg = tmp_path / "y.toml"
        sock = tmp_path / "y.sock"
        cfg.write_text(dump_toml(t.router_config(
            t.p2p("p", "e0", peer_mac=xmac, vlan=10), t.p2p("q", "e0", peer_mac=xmac, vlan=20),
            t.switch("blue", "p", 100, "q", 200),
            settings={"control_socket": str(sock), "datapath": "kernel"})))
        proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{y}", *caps, sys.executable,
                                 "-m", "vnet_router.node.daemon", "-c", str(cfg)],
                                stderr=subprocess.PIPE, text=True,
                                env=repo_env(VNET_DATAPATH=""))

        def up():
            assert proc.poll() is None, proc.stderr.read()
            return os.path.exists(sock)
        eventually(up, 20, "the daemon's control socket")
        frame = (bytes.fromhex(ymac.replace(":", "") + xmac.replace(":", "")) +
                 b"\x81\x00\x00\x0a\x88\xb5" + (100).to_bytes(2, "big") +
                 (46).to_bytes(2, "big") + bytes(46))
        inj = subprocess.run(["ip", "netns", "exec", x, "python3", "-c",
                              "import socket,sys; s=socket.socket(socket.AF_PACKET, "
                              "socket.SOCK_RAW, 0); s.bind(('e0', 0)); "
                              "[s.send(bytes.fromhex(sys.argv[1])) for _ in range(20)]",
                              frame.hex()], capture_output=True, text=True, timeout=30)
        assert inj.returncode == 0, inj.stderr
        st = eventually(lambda: control.request(str(sock), "show"),
                        what="20 frames switched",
                        until=lambda s: _vlinks(s)[("q", 200, "out")]["packets"] >= 20)
        tc = subprocess.run(["ip", "netns", "exec", y, "tc", "filter", "show", "dev", "e0",
                             "ingress"], capture_output=True, text=True, timeout=30).stdout
    finally:
        err = ""
        if proc is not None:
            proc.terminate()
            _out, err = proc.communicate(timeout=15)
        for ns in (x, y):
            netlink.netns_remove(ns)
    assert proc.returncode == 0, err
    return st, tc, err


def test_without_bpf_privileges_one_error_line_and_the_engine_forwards(tmp_path):
    """Without CAP_BPF and CAP_PERFMON (CAP_NET_ADMIN, CAP_NET_RAW only) BPF cannot load: a
    node configured with the kernel tier says so in one line and the compiled engine forwards."""
    st, tc, err = _switch_20_frames(tmp_path, LIMITED, "k")
    assert st["datapath"] == "fast"
    assert _vlinks(st)[("p", 100, "in")]["tier"] == "engine"
    assert st["datapath_stats"]["kernel_frames"] == 0
    assert "substrate_tc" not in tc, tc
    errors = [ln for ln in err.splitlines() if "level=error" in ln]
    assert len(errors) == 1, errors
    assert "the kernel tier cannot run" in errors[0] and "CAP_BPF" in errors[0], errors
    assert "the compiled engine forwards everything" in errors[0], errors


def test_the_shipped_units_capabilities_run_the_kernel_tier(tmp_path):
    """With exactly the capabilities of systemd/vnet-router.service the kernel tier loads and
    forwards the switch in the kernel: no error line."""
    caps = _unit_caps()
    assert "+bpf" in caps[1] and "+perfmon" in caps[1], caps
    st, tc, err = _switch_20_frames(tmp_path, caps, "u")
    assert st["datapath"] == "kernel", err
    assert st["datapath_stats"]["kernel_frames"] >= 20, st["datapath_stats"]
    assert "substrate_tc" in tc, tc
    assert not [ln for ln in err.splitlines() if "level=error" in ln], err
