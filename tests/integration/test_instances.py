"""Sandboxed protocol instances of vnet-hostd: own vNet namespace only, unprivileged, CPU and
memory limits; one over its limit is stopped and unloaded while another vNet keeps
forwarding without loss."""
import base64
import os
import subprocess
import time

import pytest

from vnet_router.node.api import ControlError

from harness import eventually, vnetctl
from host_topo import join_all, topology

pytestmark = [pytest.mark.root, pytest.mark.one_tier]


@pytest.fixture
def lab(make_lab, sock_dir):
    lab = make_lab(topology(sock_dir))
    join_all(lab)
    return lab


def _wait_stopped(lab, name, timeout=30.0):
    """(its last stop event, seconds waited, the instances status) once instance ``name``
    has stopped."""
    t0 = time.monotonic()
    st = eventually(lambda: lab.control("h1", "instances"), timeout,
                    f"instance {name} to be stopped",
                    until=lambda st: any(e["instance"] == name for e in st["events"]))
    ev = [e for e in st["events"] if e["instance"] == name]
    return ev[-1], time.monotonic() - t0, st


def _out_packets(lab, node, vnet):
    return sum(v["packets"] for v in lab.control(node)["virtual_links"]
               if v["vnet"] == vnet and v["direction"] == "out")


def test_instance_sees_only_its_vnet_and_runs_unprivileged(lab):
    r = vnetctl(lab, "h1", "instance", "start", "look", "--vnet", "blue", "--",
                "sh", "-c", "ip -o link; id -u; cat /proc/self/status | grep CapEff")
    assert r.returncode == 0, r.stderr
    ev, _, _ = _wait_stopped(lab, "look")
    assert ev["reason"] == "exited" and ev["status"] == 0, ev
    out = (lab.workdir / "h1-state" / "instances" / "look" / "output.log").read_text()
    names = {l.split(":")[1].strip() for l in out.splitlines() if l[:1].isdigit() and ": " in l}
    assert names == {"lo", "blue0"}, out            # not green0, not the host's e0
    assert "\n65534\n" in out and "CapEff:\t0000000000000000" in out, out


def test_files_put_in_by_the_client_and_bad_destinations_refused(lab, tmp_path):
    """--file SRC[:DST]: vnetctl reads SRC, the daemon writes it into the instance's directory
    (owned by the instance's user) before the command starts; a link the instance left there is
    replaced, never written through; an absolute, ``..`` or oversize one is refused."""
    workdir = lab.workdir / "h1-state" / "instances" / "cat"
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    # a first run leaves a link to a file of root's where the next run's file goes
    r = vnetctl(lab, "h1", "instance", "start", "cat", "--vnet", "blue", "--",
                "ln", "-s", str(victim), "link.conf")
    assert r.returncode == 0, r.stderr
    ev, _, _ = _wait_stopped(lab, "cat")
    assert ev["status"] == 0 and os.path.islink(workdir / "link.conf"), ev
    conf = tmp_path / "app.conf"
    conf.write_text("hello from the client\n")
    conf.chmod(0o600)
    r = vnetctl(lab, "h1", "instance", "start", "cat", "--vnet", "blue", "--file", str(conf),
                "--file", f"{conf}:etc/sub/app.conf", "--file", f"{conf}:link.conf", "--",
                "sh", "-c", "cat app.conf etc/sub/app.conf link.conf; "
                            "stat -c '%n %u %a' app.conf etc/sub/app.conf")
    assert r.returncode == 0, r.stderr
    ev, _, _ = _wait_stopped(lab, "cat")
    out = (workdir / "output.log").read_text()
    assert ev["status"] == 0 and out.count("hello from the client\n") == 3, (ev, out)
    assert "app.conf 65534 600\netc/sub/app.conf 65534 600" in out, out
    assert victim.read_text() == "untouched\n"
    assert not os.path.islink(workdir / "link.conf")
    # refused, with the reason, and nothing started
    for dst, reason in (("../escape.conf", "not inside the instance's directory"),
                        ("/etc/escape.conf", "an absolute path"),
                        ("a/../../escape.conf", "not inside the instance's directory")):
        r = vnetctl(lab, "h1", "instance", "start", "bad", "--vnet", "blue", "--file",
                    f"{conf}:{dst}", "--", "true")
        assert r.returncode == 1 and reason in r.stderr and dst in r.stderr, r.stderr
        assert "nothing created" in r.stderr, r.stderr
    assert not (workdir.parent / "escape.conf").exists()
    assert not (workdir.parent / "bad").exists()
    big = tmp_path / "big.conf"
    big.write_bytes(b"x" * (32 * 1024 + 1))
    r = vnetctl(lab, "h1", "instance", "start", "bad", "--vnet", "blue", "--file", str(big),
                "--", "true")
    assert r.returncode == 2 and "larger than 32 KiB" in r.stderr, r.stderr
    # the daemon's own bound, for a client that does not check
    with pytest.raises(ControlError, match="larger than 32 KiB"):
        lab.control("h1", "instance_start", name="bad", vnet="blue", argv=["true"],
                    files=[{"path": "big.conf",
                            "data": base64.b64encode(big.read_bytes()).decode()}])
    assert "bad" not in {i["name"] for i in lab.control("h1", "instances")["running"]}
    assert not (workdir.parent / "bad").exists()


def test_over_limit_instances_are_stopped_while_another_vnet_loses_nothing(lab):
    n = 160
    start = _out_packets(lab, "h1", "green")
    ping = lab.popen("h1", ["ping", "-n", "-q", "-c", str(n), "-i", "0.05", "-W", "2",
                            "10.0.0.2"], vnet="green", stdout=subprocess.PIPE, text=True)
    eventually(lambda: _out_packets(lab, "h1", "green"), 10, "the green ping to get going",
               until=lambda sent: sent - start >= 3)
    r = vnetctl(lab, "h1", "instance", "start", "spin", "--vnet", "blue", "--cpu", "2", "--",
                "sh", "-c", "while :; do :; done")
    assert r.returncode == 0, r.stderr
    ev, took, st = _wait_stopped(lab, "spin")
    assert ev["reason"] == "cpu", ev
    assert took < 30
    print(f"spin: stopped after {took:.1f} s wall, {ev['cpu_seconds_used']} s CPU")
    r = vnetctl(lab, "h1", "instance", "start", "hog", "--vnet", "blue", "--memory", "32MB",
                "--", "sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; sleep 0.05; done")
    assert r.returncode == 0, r.stderr
    ev, took, st = _wait_stopped(lab, "hog")
    assert ev["reason"] == "memory", ev
    print(f"hog: stopped after {took:.1f} s wall, memory peak {ev['memory_peak_bytes'] >> 20} MB")
    assert st["stopped"]["cpu"] == 1 and st["stopped"]["memory"] == 1
    assert st["running"] == []
    out, _ = ping.communicate(timeout=60)
    assert f"{n} packets transmitted, {n} received" in out, out
    print("green ping:", out.strip().splitlines()[-2])
    # logged and counted; unloaded: no process of theirs remains
    log = lab.log_path("h1").read_text()
    assert "instance spin (vnet blue) exceeded its CPU limit" in log
    assert "instance hog (vnet blue) exceeded its memory limit" in log
    assert lab.control("h1")["instances_stopped"]["cpu"] == 1
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "while :; do :; done" not in ps and "x=$x$x" not in ps
