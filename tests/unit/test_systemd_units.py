"""The shipped systemd units pass `systemd-analyze verify` (with the commands pointed at where
this machine installed them) and keep the promised security settings."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"


def _bindir() -> str:
    """pip puts the console scripts next to the interpreter that installed the package."""
    return str(Path(sys.executable).parent)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("unit, instance", [("vnet-router.service", None),
                                            ("vnet-router@.service", "r1")])
def test_unit_verifies(tmp_path, unit, instance):
    bindir = _bindir()
    assert os.access(f"{bindir}/vnet-router", os.X_OK), f"vnet-router not installed in {bindir}"
    text = (UNITS / unit).read_text().replace("/usr/local/bin/", bindir + "/")
    (tmp_path / unit).write_text(text)
    name = unit.replace("@.", f"@{instance}.") if instance else unit
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


@pytest.mark.parametrize("unit", ["vnet-router.service", "vnet-router@.service"])
def test_unit_settings(unit):
    lines = {tuple(l.split("=", 1)) for l in (UNITS / unit).read_text().splitlines() if "=" in l}
    for want in [("Type", "notify"), ("User", "vnet"),
                 ("AmbientCapabilities", "CAP_NET_ADMIN CAP_NET_RAW"),
                 ("CapabilityBoundingSet", "CAP_NET_ADMIN CAP_NET_RAW"),
                 ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict")]:
        assert want in lines, want
    keys = {k for k, _ in lines}
    assert {"RuntimeDirectory", "ExecReload", "ExecStartPre", "ExecStopPost"} <= keys
