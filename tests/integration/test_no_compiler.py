"""The shipped BPF programs need no compiler where the daemon runs: their objects are built with
the package (``setup.py build_bpf``, run by ``pip install`` / ``pip install -e`` and the wheel
build, into ``vnet_router/bpf/*.bpf.o``) and the daemon loads them (``ebpf.shipped_object``).

a --p2p-- r1 --p2p-- r2 --p2p-- b as in test_passthrough, r1 on the kernel tier.  Every daemon
runs as ``env PATH=/nonexistent <python> -m vnet_router.node.daemon``: no clang (nor anything
else) can be found, and the daemon execs nothing but clang.  r1 reports the kernel tier, a's
TAP is captured, and a's pings reach b through r1's program.
"""
import copy
import shutil
import subprocess
import sys

import pytest

from vnet_router.lab import topology
from vnet_router.lab.lab import Lab
from vnet_router.ops import ebpf

import topo as t
from harness import REPO
from test_kernel_tier import _kernel, _vlinks
from test_passthrough import PASSTHROUGH

pytestmark = [pytest.mark.root, pytest.mark.one_tier]

NO_PATH = "/nonexistent"


def _outdated() -> list[str]:
    return [src.name for src in sorted(ebpf.BPF_DIR.glob("*.bpf.c"))
            if ebpf.outdated(src, src.with_suffix(".o")) is not None]


@pytest.fixture(scope="module")
def objects():
    """The objects as the package build makes them (in a checkout after an edit of a program,
    built again the way ``pip install -e`` does)."""
    if _outdated():
        r = subprocess.run([sys.executable, "setup.py", "-q", "build_bpf"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    assert not _outdated(), f"not built: {_outdated()} (is clang installed here?)"


def test_kernel_tier_and_tap_capture_start_without_clang(objects, tmp_path, monkeypatch):
    monkeypatch.delenv("VNET_DATAPATH", raising=False)
    monkeypatch.delenv("VNET_TAP_CAPTURE", raising=False)
    assert shutil.which("clang", path=NO_PATH) is None
    # PASSTHROUGH as test_passthrough writes it: test_kernel_tier's rated-switch test gives
    # one of its switches a rate in place, which would keep that switch in the engine
    topo = copy.deepcopy(PASSTHROUGH)
    for n in topo["node"]:
        for sw in n.get("router", {}).get("switch", []):
            sw.pop("rate", None)
    text = t.text(_kernel(topo))
    (tmp_path / "topology.toml").write_text(text)
    lab = Lab(topology.loads(text, str(tmp_path / "topology.toml")), workdir=tmp_path / "lab",
              daemon_cmd=["env", f"PATH={NO_PATH}", sys.executable, "-m",
                          "vnet_router.node.daemon"])
    try:
        lab.start()
        st = lab.control("r1")
        print("r1:", st["datapath"], st["datapath_stats"])
        assert st["datapath"] == "kernel", st["datapath"]
        assert _vlinks(st)[("west", 100, "in")]["tier"] == "kernel"
        a = lab.control("a")
        print("a:", a["datapath"], a["datapath_stats"])
        assert "capture_taken" in a["datapath_stats"], a["datapath_stats"]   # capture loaded
        ping = lab.ping("a", "10.9.2.2", vnet="blue", count=5)
        assert ping.received == 5, ping.output
        st = lab.control("r1")
        assert st["datapath_stats"]["kernel_frames"] >= 5, st["datapath_stats"]
        assert lab.control("a")["datapath_stats"]["capture_taken"] >= 5
        for node in ("r1", "a"):
            log = lab.log_path(node).read_text()
            assert "cannot run" not in log and "compiling" not in log, log[-3000:]
    finally:
        lab.stop()
