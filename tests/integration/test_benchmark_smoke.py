"""Smoke run of the benchmark command: it builds its topology, runs, prints numbers and cleans
up.  Never asserts on speed (the machine is shared; see docs/benchmarks.md for real runs)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("trafgen") is None,
                                 reason="trafgen missing (apt-get install netsniff-ng)")]

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_command_runs_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.run", "--seconds", "0.5",
                        "--sizes", "64", "--pings", "5", "--interval", "0.05",
                        "--only", "bridge", "--only", "(d)", "--repeat", "2", "--rounds", "5", "--out", str(tmp_path / "b.md"),
                        "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    data = json.loads(out.read_text())
    cases = {x["case"]: x for x in data["results"]}
    assert set(cases) == {"(a) Linux bridge", "(d) fast path, VLI switch"}
    for x in cases.values():
        assert x["offered"] > 0 and x["delivered"] > 0      # numbers, whatever they are
    # bridge, router on the end-systems' core and on the other, the bare relay on both
    assert [l["replies"] > 0 for l in data["latency"]] == [True] * 5
    assert all(len(x["runs"]) == 2 for x in cases.values())      # --repeat 2, median shown
    assert [r["what"] for r in data["ratios"]] == ["fast path / Linux bridge, pass-through 64 B"]
    assert "| (d) fast path, VLI switch | 64 B |" in (tmp_path / "b.md").read_text()
    assert "delivered kpps" in r.stdout
