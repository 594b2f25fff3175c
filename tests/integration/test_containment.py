"""Protocol instances cannot escape their containment (issue 14): the attempts that worked
against the /proc watchdog, tried again on real vnet-hostd daemons.

* 30 ``setsid`` children (ignoring SIGTERM) are all gone within 1 s of ``instance stop`` and
  within 1 s of the instance's CPU time crossing its limit; their CPU time and memory are
  charged to the instance; the cgroup directories go when it stops and when the daemon stops
  (or, after kill -9, when the next one starts); pids.max and the CPU rate hold;
* writes to /tmp, /dev/shm, /var/tmp, /etc and another instance's directory do not reach the
  host, nor does the daemon write through a link left in its directory; the seccomp filter
  refuses user namespaces, mounts and packet sockets;
* bad names are refused with the name in the error, and nothing is created;
* a ping stream in another vNet loses nothing meanwhile.
"""
import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from harness import eventually, vnetctl
from host_topo import join_all, topology

pytestmark = [pytest.mark.root, pytest.mark.one_tier]


@pytest.fixture
def lab(make_lab, sock_dir):
    lab = make_lab(topology(sock_dir))
    join_all(lab)
    return lab


def marked(mark: str) -> list[int]:
    """Host pids of processes whose command line contains ``mark``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if mark.encode() in f.read():
                        out.append(int(entry))
            except OSError:
                pass
    return out


def children(mark: str, n: int = 30, body: str = "while :; do sleep 0.2; done",
             then: str = "wait") -> str:
    """sh code that starts ``n`` setsid children ignoring SIGTERM, each running ``body``
    (its command line carries ``mark``), then ``then``."""
    child = f"trap '' TERM; : {mark}; {body}"
    return f"for i in $(seq {n}); do setsid sh -c \"{child}\" & done; {then}"


def running(lab, name):
    st = lab.control("h1", "instances")
    return next((i for i in st["running"] if i["name"] == name), None)


def stop_event(lab, name):
    st = lab.control("h1", "instances")
    return next((e for e in reversed(st["events"]) if e["instance"] == name), None)


def green_ping(lab, n):
    start = sum(v["packets"] for v in lab.control("h1")["virtual_links"]
                if v["vnet"] == "green" and v["direction"] == "out")
    ping = lab.popen("h1", ["ping", "-n", "-q", "-c", str(n), "-i", "0.05", "-W", "2",
                            "10.0.0.2"], vnet="green", stdout=subprocess.PIPE, text=True)
    eventually(lambda: sum(v["packets"] for v in lab.control("h1")["virtual_links"]
                           if v["vnet"] == "green" and v["direction"] == "out"), 10,
               "the green ping to get going", until=lambda sent: sent - start >= 3)
    return ping


def test_stop_kills_every_setsid_child_within_1s_and_removes_the_cgroup(lab):
    mark = f"i14stop-{uuid.uuid4().hex[:8]}"
    ping = green_ping(lab, 100)
    r = vnetctl(lab, "h1", "instance", "start", "forks", "--vnet", "blue", "--pids", "200",
                "--", "sh", "-c", "trap 'echo graceful-bye; exit 0' TERM; " + children(mark))
    assert r.returncode == 0, r.stderr
    eventually(lambda: marked(mark), 20, "30 setsid children", until=lambda p: len(p) >= 30)
    inst = eventually(lambda: running(lab, "forks"), 10, "the instance to count them",
                      until=lambda i: i and i["processes"] >= 61)
    assert all(os.path.isdir(p) for p in inst["cgroup"]), inst["cgroup"]
    sessions = {os.getsid(p) for p in marked(mark)}
    assert len(sessions) >= 30                 # each child in a session of its own
    t0 = time.monotonic()
    r = vnetctl(lab, "h1", "instance", "stop", "forks")
    assert r.returncode == 0, r.stderr
    eventually(lambda: marked(mark), 5, "every child of forks to be gone", step=0.01,
               until=lambda p: p == [])
    gone = time.monotonic() - t0
    ev = eventually(lambda: stop_event(lab, "forks"), 5, "the stop event")
    assert ev["reason"] == "stopped", ev
    eventually(lambda: [p for p in inst["cgroup"] if os.path.exists(p)], 5,
               "its cgroup directories to be removed", until=lambda left: left == [])
    print(f"stop -> none of {inst['processes']} processes left: {gone:.3f} s (daemon: "
          f"{ev['stop_seconds']} s from the stop decision to the empty, removed cgroup)")
    assert gone < 1.0
    log = lab.workdir / "h1-state" / "instances" / "forks" / "output.log"
    assert "graceful-bye" in log.read_text()           # the command itself got its TERM
    out, _ = ping.communicate(timeout=60)
    assert "100 packets transmitted, 100 received" in out, out


def test_children_are_charged_and_all_killed_within_1s_of_the_cpu_limit(lab):
    mark = f"i14cpu-{uuid.uuid4().hex[:8]}"
    ping = green_ping(lab, 160)
    # 28 sleepers, 2 burners, and one child that holds 48 MiB: the main shell only waits
    hold = "import time; b = b'x' * (48 << 20); time.sleep(600)"
    code = (children(mark, 28, then="") + children(mark, 2, "while :; do :; done", then="")
            + f"setsid python3 -c \"{hold}\" {mark} & wait")
    r = vnetctl(lab, "h1", "instance", "start", "burn", "--vnet", "blue", "--cpu", "4",
                "--pids", "200", "--memory", "128MB", "--", "sh", "-c", code)
    assert r.returncode == 0, r.stderr
    def listed():                      # what `vnetctl instance list` shows
        r = vnetctl(lab, "h1", "instance", "list", "--json")
        assert r.returncode == 0, r.stderr
        return next((i for i in json.loads(r.stdout)["running"] if i["name"] == "burn"), None)
    inst = eventually(listed, 20, "burn's children to be charged", step=0.05,
                      until=lambda i: i and i["cpu_seconds_used"] >= 1.0
                      and i["memory_bytes"] >= 48 << 20)
    print(f"charged to burn (vnetctl instance list): {inst['cpu_seconds_used']} s CPU, "
          f"{inst['memory_bytes'] >> 20} MiB, {inst['processes']} processes")
    shown = vnetctl(lab, "h1", "show").stdout
    assert any(l.split()[:2] == ["burn", "blue"] for l in shown.splitlines()), shown
    usage = next(os.path.join(p, "cpuacct.usage") for p in inst["cgroup"]
                 if "cpuacct" in p.split("/"))
    # the moment the kernel's count crosses 4 s, seen from here
    eventually(lambda: int(open(usage).read()) / 1e9, 30, "the CPU limit to be crossed",
               step=0.01, until=lambda s: s > 4.0)
    crossed = time.monotonic()
    eventually(lambda: marked(mark), 5, "every process of burn to be gone", step=0.01,
               until=lambda p: p == [])
    gone = time.monotonic() - crossed
    ev = eventually(lambda: stop_event(lab, "burn"), 5, "burn's stop event")
    assert ev["reason"] == "cpu", ev
    print(f"CPU limit crossed -> no process: {gone:.3f} s; charged {ev['cpu_seconds_used']} s "
          f"CPU, memory peak {ev['memory_peak_bytes'] >> 20} MiB")
    assert gone < 1.0
    assert ev["cpu_seconds_used"] >= 4.0 and ev["memory_peak_bytes"] >= 48 << 20
    eventually(lambda: [p for p in inst["cgroup"] if os.path.exists(p)], 5,
               "burn's cgroup directories to be removed", until=lambda left: left == [])
    out, _ = ping.communicate(timeout=60)
    assert "160 packets transmitted, 160 received" in out, out
    print("green ping:", out.strip().splitlines()[-2])


def test_pids_and_cpu_rate_limits(lab):
    mark = f"i14pids-{uuid.uuid4().hex[:8]}"
    spawn = ("import subprocess, sys, time\n"
             "ok = bad = 0\n"
             "for i in range(60):\n"
             "    try:\n"
             f"        subprocess.Popen(['setsid', 'sh', '-c', 'sleep 600; : {mark}'])\n"
             "        ok += 1\n"
             "    except OSError:\n"
             "        bad += 1\n"
             "print(f'started {ok} refused {bad}', flush=True)\n"
             "time.sleep(600)\n")
    r = vnetctl(lab, "h1", "instance", "start", "many", "--vnet", "blue", "--pids", "20",
                "--", "python3", "-c", spawn)
    assert r.returncode == 0, r.stderr
    log = lab.workdir / "h1-state" / "instances" / "many" / "output.log"
    out = eventually(lambda: log.read_text(), 20, "many's fork count",
                     until=lambda t: "started" in t)
    inst = running(lab, "many")
    print(next(l for l in out.splitlines() if l.startswith("started")),
          f"({inst['processes']} processes in the cgroup, pids.max 20)")
    assert inst["processes"] <= 20 and len(marked(mark)) <= 20, (inst, marked(mark))
    assert " refused 0" not in out, out
    assert vnetctl(lab, "h1", "instance", "stop", "many").returncode == 0
    eventually(lambda: marked(mark), 5, "many's processes to be gone", until=lambda p: p == [])
    # CPU rate: two spinning children of an instance limited to a quarter of a CPU
    r = vnetctl(lab, "h1", "instance", "start", "slow", "--vnet", "blue", "--cpu-rate", "0.25",
                "--", "sh", "-c", children(mark, 2, "while :; do :; done"))
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    eventually(lambda: running(lab, "slow"), 20, "slow to use 0.5 s of CPU", step=0.05,
               until=lambda i: i and i["cpu_seconds_used"] >= 0.5)
    took = time.monotonic() - t0
    print(f"0.5 s of CPU at --cpu-rate 0.25 took {took:.2f} s")
    assert took >= 1.6                         # 0.5 / 0.25 = 2 s, less what start-up took
    assert vnetctl(lab, "h1", "instance", "stop", "slow").returncode == 0
    eventually(lambda: marked(mark), 5, "slow's processes to be gone", until=lambda p: p == [])


WRITES = {"tmp": "/tmp/{f}", "shm": "/dev/shm/{f}", "vartmp": "/var/tmp/{f}",
          "etc": "/etc/{f}", "victim": "{base}/victim/{f}", "base": "{base}/{f}",
          "up": "{base}/../{f}"}


def test_writes_outside_the_workdir_and_forbidden_calls_fail(lab):
    f = f"i14w-{uuid.uuid4().hex[:8]}"
    base = str(lab.workdir / "h1-state" / "instances")
    r = vnetctl(lab, "h1", "instance", "start", "victim", "--vnet", "blue", "--",
                "sh", "-c", "echo mine > own.txt; exec sleep 600")
    assert r.returncode == 0, r.stderr
    eventually(lambda: os.path.exists(f"{base}/victim/own.txt"), 10, "victim's own file")
    tries = "; ".join(f"(echo x > {p.format(f=f, base=base)}) 2>/dev/null && echo {k}=written "
                      f"|| echo {k}=refused" for k, p in WRITES.items())
    checks = ("unshare -U true 2>/dev/null && echo userns=yes || echo userns=refused; "
              "mount -t tmpfs x /mnt 2>/dev/null && echo mount=yes || echo mount=refused; "
              "python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)' "
              "2>/dev/null && echo packet=yes || echo packet=refused; "
              "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)' "
              "&& echo inet=yes; "
              f"echo mine > own.txt && echo own=written; ls {base} | tr '\\n' ' '; echo")
    r = vnetctl(lab, "h1", "instance", "start", "intruder", "--vnet", "blue", "--",
                "sh", "-c", f"{tries}; {checks}")
    assert r.returncode == 0, r.stderr
    ev = eventually(lambda: stop_event(lab, "intruder"), 20, "intruder to finish")
    out = (lab.workdir / "h1-state" / "instances" / "intruder" / "output.log").read_text()
    print(out)
    assert ev["reason"] == "exited", (ev, out)
    # /tmp, /dev/shm, /var/tmp are its own (written there, never on the host); the rest refused
    for k in ("etc", "victim", "base", "up"):
        assert f"{k}=refused" in out, out
    for k, p in WRITES.items():
        path = os.path.normpath(p.format(f=f, base=base))
        assert not os.path.exists(path), f"{k}: {path} reached the host"
    assert sorted(os.listdir(f"{base}/victim")) == ["output.log", "own.txt"]
    for k in ("userns", "mount", "packet"):
        assert f"{k}=refused" in out, out
    assert "inet=yes" in out and "own=written" in out, out
    assert "victim" not in out.splitlines()[-1], out        # other instances are not even seen
    assert (lab.workdir / "h1-state" / "instances" / "intruder" / "own.txt").exists()
    # its directory is its own, but the root daemon never writes through a link it left there
    target = lab.workdir / f"target-{f}"
    target.write_text("root's\n")
    r = vnetctl(lab, "h1", "instance", "start", "intruder", "--vnet", "blue", "--",
                "sh", "-c", f"rm output.log; ln -s {target} output.log")
    assert r.returncode == 0, r.stderr
    eventually(lambda: stop_event(lab, "intruder")["at"] > ev["at"], 20, "the link to be made")
    r = vnetctl(lab, "h1", "instance", "start", "intruder", "--vnet", "blue", "--", "true")
    assert r.returncode != 0 and "output.log" in r.stderr, r.stderr
    print(r.stderr.strip())
    assert target.read_text() == "root's\n"
    assert vnetctl(lab, "h1", "instance", "stop", "victim").returncode == 0


BAD_NAMES = ("../../victim", "/tmp/i14-abs-{u}", ".hidden", "a/b", "..", "x" * 65, "bad name",
             "ok/../../x")


def test_bad_names_are_refused_and_nothing_is_created(lab):
    state = lab.workdir / "h1-state"

    def files():
        return sorted(str(p) for p in lab.workdir.rglob("*") if not p.name.endswith(".log"))
    before = files()
    for name in BAD_NAMES:
        name = name.format(u=uuid.uuid4().hex[:8])
        target = os.path.normpath(os.path.join(state, "instances", name))
        existed = os.path.exists(target), os.path.exists(name)
        r = vnetctl(lab, "h1", "instance", "start", name, "--vnet", "blue", "--", "true")
        assert r.returncode != 0
        assert f"bad instance name {name!r}" in r.stderr, r.stderr
        assert "nothing created" in r.stderr, r.stderr
        assert (os.path.exists(target), os.path.exists(name)) == existed, name
    print(r.stderr.strip())
    assert files() == before
    assert lab.control("h1", "instances")["running"] == []


def test_daemon_stop_kills_instances_and_removes_its_cgroups(lab):
    mark = f"i14daemon-{uuid.uuid4().hex[:8]}"
    r = vnetctl(lab, "h1", "instance", "start", "left", "--vnet", "blue", "--pids", "100",
                "--", "sh", "-c", children(mark, 10))
    assert r.returncode == 0, r.stderr
    eventually(lambda: marked(mark), 20, "left's children", until=lambda p: len(p) >= 10)
    inst = running(lab, "left")
    bases = {os.path.dirname(p) for p in inst["cgroup"]}
    assert all(os.path.basename(b).startswith("vnet-hostd-") for b in bases), bases
    assert lab.kill_daemon("h1", signal.SIGTERM) == 0
    assert marked(mark) == []
    assert [b for b in bases if os.path.exists(b)] == []


def test_after_kill_9_the_instances_die_and_the_next_daemon_removes_the_cgroups(lab):
    mark = f"i14kill9-{uuid.uuid4().hex[:8]}"
    r = vnetctl(lab, "h1", "instance", "start", "orphan", "--vnet", "blue", "--pids", "100",
                "--", "sh", "-c", children(mark, 10))
    assert r.returncode == 0, r.stderr
    eventually(lambda: marked(mark), 20, "orphan's children", until=lambda p: len(p) >= 10)
    paths = running(lab, "orphan")["cgroup"]
    lab.kill_daemon("h1", signal.SIGKILL)
    # bubblewrap dies with the daemon (PR_SET_PDEATHSIG), and its PID namespace with it
    eventually(lambda: marked(mark), 5, "orphan's processes to die with the daemon",
               until=lambda p: p == [])
    assert all(os.path.isdir(p) for p in paths), paths        # left for the next daemon
    lab.restart_daemon("h1")
    bases = {os.path.dirname(p) for p in paths}
    eventually(lambda: [p for p in paths + sorted(bases) if os.path.exists(p)], 10,
               "the next daemon to remove the old cgroups", until=lambda left: left == [])
    assert "removed the cgroups of an earlier daemon" in lab.log_path("h1").read_text()
