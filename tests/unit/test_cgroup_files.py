"""The cgroup files an instance's group writes and reads, on a fake directory: v2 (not
mounted with its controllers on this machine, so checked here) and v1 (also run for real by
tests/integration/test_containment.py)."""
from vnet_host.cgroup import Group, Limits


def _fake(d, files):
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def test_v2_limits_and_usage(tmp_path):
    d = tmp_path / "vnet-hostd-1" / "bird"
    _fake(d, {"cgroup.procs": "11\n12\n", "memory.swap.max": "max\n",
              "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
              "memory.current": "1048576\n", "memory.peak": "4194304\n",
              "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"})
    g = Group(True, {"unified": str(d)})
    g.set_limits(Limits(0.5, 64 << 20, 32))
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "pids.max").read_text() == "32"
    u = g.usage()
    assert (u.cpu_seconds, u.memory, u.memory_peak, u.oom_kills, u.processes) == \
        (2.5, 1 << 20, 4 << 20, 1, 2)
    assert g.paths == [str(d)]


def test_v1_limits_and_usage(tmp_path):
    dirs = {c: tmp_path / c / "vnet-hostd-1" / "bird" for c in
            ("cpu", "cpuacct", "memory", "pids")}
    _fake(dirs["cpu"], {})
    _fake(dirs["cpuacct"], {"cpuacct.usage": "4200000000\n"})
    _fake(dirs["memory"], {"memory.usage_in_bytes": "100\n", "memory.max_usage_in_bytes": "200\n",
                           "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
                           "memory.memsw.limit_in_bytes": ""})
    _fake(dirs["pids"], {"cgroup.procs": "7\n"})
    g = Group(False, {c: str(p) for c, p in dirs.items()})
    g.set_limits(Limits(1.0, 32 << 20, 64))
    assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text() == "100000"
    assert (dirs["memory"] / "memory.limit_in_bytes").read_text() == str(32 << 20)
    assert (dirs["memory"] / "memory.memsw.limit_in_bytes").read_text() == str(32 << 20)
    assert (dirs["pids"] / "pids.max").read_text() == "64"
    u = g.usage()
    assert (u.cpu_seconds, u.memory, u.memory_peak, u.oom_kills, u.processes) == \
        (4.2, 100, 200, 0, 1)
