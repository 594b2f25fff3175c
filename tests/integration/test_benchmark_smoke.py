"""Smoke run of the benchmark command: it builds its topology, runs, prints numbers and cleans
up.  Never asserts on speed (the machine is shared; see docs/benchmarks.md for real runs)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.one_tier,
              pytest.mark.skipif(shutil.which("trafgen") is None,
                                 reason="trafgen missing (apt-get install netsniff-ng)")]

ROOT = Path(__file__).resolve().parents[2]
CC = shutil.which("cc") is not None
PASS_THROUGH = {"(a) Linux bridge", "(d) fast path, VLI switch"}


@pytest.fixture(scope="module")
def end_to_end(tmp_path_factory):
    """One run of the benchmark command for the two tests below (each run sets up its
    latency topologies -- the bridge and the router on each core -- anew, so one run for
    both): rows (a) and (d) twice, then ping latency with the bare relay and, with a C
    compiler, the C relay.  (stdout, JSON, markdown)."""
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "bench.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.run", "--seconds", "0.5",
                        "--sizes", "64", "--pings", "10", "--interval", "0.02",
                        "--only", "bridge", "--only", "(d)",
                        *(["--only", "C relay"] if CC else []),
                        "--repeat", "2", "--rounds", "5", "--out", str(tmp / "b.md"),
                        "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r.stdout, json.loads(out.read_text()), (tmp / "b.md").read_text()


def test_benchmark_command_runs_end_to_end(end_to_end):
    stdout, data, md = end_to_end
    cases = {x["case"]: x for x in data["results"]}
    assert set(cases) == PASS_THROUGH
    for x in cases.values():
        assert x["offered"] > 0 and x["delivered"] > 0      # numbers, whatever they are
    # bridge, router on the end-systems' core and on the other, the bare relay on both (and
    # the C relay on both: test_c_relay_latency_beside_the_router)
    lat = {l["case"]: l for l in data["latency"]}
    assert [c for c in lat if "C relay" not in c] == [
        "ping via Linux bridge", "ping via vnet router (fast path), core 0",
        "ping via vnet router (fast path), core 1",
        "ping via bare Python relay (yardstick), core 0",
        "ping via bare Python relay (yardstick), core 1"]
    assert [l["replies"] > 0 for l in lat.values()] == [True] * len(lat)
    assert all(len(x["runs"]) == 2 for x in cases.values())      # --repeat 2, median shown
    assert [r["what"] for r in data["ratios"]] == ["fast path / Linux bridge, pass-through 64 B"]
    assert "| (d) fast path, VLI switch | 64 B |" in md
    assert "delivered kpps" in stdout


def _bench(tmp_path, *args, seconds="0.3", timeout=300):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.run", "--seconds", seconds,
                        "--sizes", "64", "--repeat", "1", "--out", str(tmp_path / "b.md"),
                        "--json", str(out), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(out.read_text()), (tmp_path / "b.md").read_text()


def test_rows_for_what_users_configure_run_once(tmp_path):
    """Rows (g)-(l) and (n) of benchmarks/rows.py, each once and briefly: every one produces
    a number (the bridge, their reference, comes along).  1 s, not 0.3: the compiled engine
    forwards rated links in bursts with pauses of up to ~0.4 s under overload (a 0.3 s window
    can see nothing delivered)."""
    data, md = _bench(tmp_path, "--pings", "0", "--idle-seconds", "1",
                      *[x for o in "ghijkln" for x in ("--only", f"({o})")], seconds="1")
    cases = {x["case"][:3]: x for x in data["results"]}
    assert set(cases) == {"(a)", "(g)", "(h)", "(i)", "(j)", "(k)"}
    for x in cases.values():
        assert x["offered"] > 0 and x["delivered"] > 0, x
    to_bridge = {r["what"][:3]: r["median"] for r in data["ratios"]}
    assert set(to_bridge) == {"(g)", "(h)", "(i)", "(j)", "(k)"}
    assert all(v > 0 for v in to_bridge.values())
    [shaped] = data["shaped"]
    assert shaped["failed"] == "", shaped
    assert shaped["achieved_bps"] > 0 and shaped["flood_pps"] > 0 and shaped["ratio"] > 0
    assert shaped["flood_alone_pps"] > 0 and shaped["flood_ratio"] > 0
    [idle] = data["idle"]
    # an idle router may use less than one clock tick in a second: a number, not a speed
    assert idle["seconds"] > 0 and idle["percent"] >= 0
    assert "| (k) fast path, VLI switch across UDP tunnels | 64 B |" in md
    assert "achieved / 20 Mbit/s" in md and "Idle router CPU" in md


@pytest.mark.skipif(not CC, reason="no C compiler for benchmarks/crelay.c")
def test_c_relay_latency_beside_the_router(end_to_end):
    _, data, md = end_to_end
    # "C relay" names no pps case: the run's are those of "bridge" and "(d)"
    assert {x["case"] for x in data["results"]} == PASS_THROUGH
    lat = {l["case"]: l for l in data["latency"]}
    for core in (0, 1):
        c = lat[f"ping via C relay (yardstick), core {core}"]
        assert c["replies"] > 0 and c["median_us"] > 0
    assert [x["core"] for x in data["router_vs_crelay"]] == [0, 1]
    assert "| added RTT: vnet router vs C relay |" in md


def test_isolation_rows_complete(tmp_path):
    """Rows (o) of benchmarks/isolation.py on the compiled engine, briefly: every case
    completes with B's ping, RTT and TCP numbers beside A and alone, A's rates and the router's
    cost (numbers, whatever they are); the references come along."""
    data, md = _bench(tmp_path, "--pings", "0", "--only", "isolation, fast path",
                      "--only", "Linux bridge (reference)", seconds="0.5", timeout=200)
    rows = {r["kind"]: r for r in data["isolation"]}
    assert set(rows) == {"flood", "in_rate", "policed", "garbage", "tap", "bridge",
                         "bridge_tap"}
    for r in rows.values():
        assert r["failed"] == "", r
        for when in ("alone", "beside"):
            assert r[f"b_sent_{when}"] > 0 and r[f"b_tcp_{when}"] > 0, r
            assert r[f"b_median_{when}"] is not None and r[f"b_p99_{when}"] is not None, r
        assert r["a_offered"] > 0, r
        # the TAP row has no generator reference for its costs (one written through a TAP)
        assert (r["cost_offered_us"] is not None) == (r["kind"] != "tap"), r
        assert (r["switch_us"] is not None) == (not r["kind"].startswith("bridge")), r
    # the bridge references: A's frames cross the bridge (to a0; from a0 to s0)
    for kind in ("bridge", "bridge_tap"):
        assert rows[kind]["a_delivered"] > 0 and rows[kind]["cost_fwd_us"] is not None
    assert rows["garbage"]["a_delivered"] == 0       # garbage never reaches A's TAP
    assert rows["flood"]["cost_fwd_us"] is not None
    assert rows["tap"]["a_delivered"] > 0
    # in_rate: its delivered frames cost what they cost paced (a window of its own)
    assert rows["in_rate"]["cost_drop_us"] is not None
    assert rows["in_rate"]["cost_fwd_us"] is not None
    assert rows["policed"]["cost_drop_us"] is not None
    assert rows["policed"]["a_delivered"] < rows["in_rate"]["a_delivered"]
    assert rows["garbage"]["cost_drop_us"] is not None
    assert "| isolation: A floods, B alone -> beside A |" in md


def test_failed_cases_are_rows(tmp_path):
    """A case that failed is a row of the table saying why, beside the others."""
    from benchmarks.common import Iso, Shaped
    from benchmarks.report import table
    from benchmarks.rows import median_shaped
    ok = Shaped("(l) x", 64, 50e6, 20e6, 300e3, 20e6, flood_alone_pps=310e3)
    bad = Shaped("(l) x", 64, 0, 0, 0, 20e6, [None], failed="flood's trafgen exited (1): boom")
    assert median_shaped([bad, ok]).runs == [None, 20e6]
    assert median_shaped([bad]).failed
    text = table([], [], [median_shaped([bad]), ok], (),
                 [Iso("(o) y", "fast path", "flood", failed="iperf3 did not finish")])
    assert "**failed**: flood's trafgen exited (1): boom" in text
    assert "| (o) y | **failed**: iperf3 did not finish |" in text
    assert "| 0.97 |" in text                   # flood beside / alone: 300 / 310
