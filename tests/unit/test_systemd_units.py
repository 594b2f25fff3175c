"""The shipped systemd units, as ``vnet-router install-units`` writes them (the commands pointed
at where this machine installed them), pass `systemd-analyze verify` and keep the promised
security settings."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vnet_router.node import units

UNITS = Path(__file__).resolve().parents[2] / "systemd"


def _bindir() -> str:
    """pip puts the console scripts next to the interpreter that installed the package."""
    return str(Path(sys.executable).parent)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("unit, instance", [("vnet-router.service", None),
                                            ("vnet-router@.service", "r1"),
                                            ("vnet-vbm.service", None),
                                            ("vnet-hostd.service", None)])
def test_unit_verifies(tmp_path, unit, instance):
    bindir = _bindir()
    assert os.access(f"{bindir}/vnet-router", os.X_OK), f"vnet-router not installed in {bindir}"
    assert units.main(["--dir", str(tmp_path), "--bindir", bindir]) == 0
    text = (tmp_path / unit).read_text()
    assert "/usr/local/bin/" not in text and f"ExecStart={bindir}/vnet-" in text
    name = unit.replace("@.", f"@{instance}.") if instance else unit
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    docs = [l.split("=", 1)[1] for l in text.splitlines() if l.startswith("Documentation=")]
    assert docs, text
    for url in docs:                          # names a page this installation has
        assert url.startswith("file:///") and Path(url[len("file://"):]).is_file(), url


def _settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for l in (UNITS / unit).read_text().splitlines():
        if "=" in l and not l.startswith("#"):
            k, v = l.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


KERNEL_TIER_CAPS = {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF", "CAP_PERFMON"}


@pytest.mark.parametrize("unit", ["vnet-router.service", "vnet-router@.service",
                                  "vnet-vbm.service", "vnet-hostd.service"])
def test_units_carry_what_the_bpf_datapaths_need(unit):
    """The eBPF classifier (the default datapath), the kernel tier and kernel instances load
    with CAP_BPF and CAP_PERFMON (tests/integration/test_kernel_tier.py runs the kernel tier
    with exactly the router unit's capabilities)."""
    s = _settings(unit)
    assert KERNEL_TIER_CAPS <= set(s["CapabilityBoundingSet"][0].split()), s
    if unit != "vnet-hostd.service":                      # runs as root: bounded, not ambient
        assert KERNEL_TIER_CAPS == set(s["AmbientCapabilities"][0].split()), s
        assert set(s["AmbientCapabilities"][0].split()) == \
            set(s["CapabilityBoundingSet"][0].split())


@pytest.mark.parametrize("unit", ["vnet-router.service", "vnet-router@.service",
                                  "vnet-vbm.service", "vnet-hostd.service"])
def test_units_restart_a_crash_at_once_but_not_a_refused_configuration(unit):
    s = _settings(unit)
    assert s["Restart"] == ["on-failure"]
    restart = s["RestartSec"][0]
    ms = float(restart[:-2]) if restart.endswith("ms") else float(restart.rstrip("s")) * 1000
    assert ms <= 200, restart          # + the daemon's own start (about 1.3 s): under 2 s
    assert s["RestartPreventExitStatus"] == ["2"]          # exit 2: the config was refused


@pytest.mark.parametrize("unit", ["vnet-router.service", "vnet-router@.service",
                                  "vnet-vbm.service"])
def test_unit_settings(unit):
    lines = {tuple(l.split("=", 1)) for l in (UNITS / unit).read_text().splitlines() if "=" in l}
    for want in [("Type", "notify"), ("User", "vnet"),
                 ("AmbientCapabilities", "CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON"),
                 ("CapabilityBoundingSet", "CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON"),
                 ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict")]:
        assert want in lines, want
    keys = {k for k, _ in lines}
    assert {"RuntimeDirectory", "ExecReload"} <= keys
    if unit.startswith("vnet-router"):        # hosts vNets: privileged namespace steps
        assert {"ExecStartPre", "ExecStartPost", "ExecStopPost"} <= keys


def test_hostd_unit_bounds_its_capabilities():
    lines = dict(l.split("=", 1) for l in (UNITS / "vnet-hostd.service").read_text().splitlines()
                 if "=" in l and not l.startswith("#"))
    assert lines["Type"] == "notify" and "ExecReload" in lines
    caps = set(lines["CapabilityBoundingSet"].split())
    assert "CAP_SYS_MODULE" not in caps and "CAP_SYS_PTRACE" not in caps
    assert {"CAP_NET_ADMIN", "CAP_NET_RAW"} <= caps


def _fake_bin(tmp_path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("vnet-router", "vnetctl", "vnet-hostd"):
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    return bindir


def test_install_units_writes_every_unit_with_the_real_paths(tmp_path, capsys):
    bindir = _fake_bin(tmp_path)
    out = tmp_path / "units"
    assert units.main(["--dir", str(out), "--bindir", str(bindir)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in UNITS.iterdir())
    docs = Path(__file__).resolve().parents[2] / "docs"    # no wheel here: the tree's pages
    for p in out.iterdir():
        shipped = (UNITS / p.name).read_text()
        assert p.read_text() == shipped.replace("/usr/local/bin/", f"{bindir}/").replace(
            "file:///usr/local/share/doc/vnet/", f"file://{docs}/")
        assert oct(p.stat().st_mode & 0o777) == "0o644"
    assert f"ExecStart={bindir}/vnet-router -c /etc/vnet/router.toml" in \
        (out / "vnet-router.service").read_text()
    err = capsys.readouterr().err
    assert "hidden from the services" in err          # pytest's tmp_path is under /tmp


def test_documentation_names_only_pages_that_are_there(tmp_path):
    text = (UNITS / "vnet-hostd.service").read_text()
    assert "Documentation=file:///usr/local/share/doc/vnet/host.md" in text
    docs = tmp_path / "doc"
    docs.mkdir()
    (docs / "host.md").write_text("# host\n")
    out = units.render(text, {"vnet-hostd": Path("/opt/x/vnet-hostd"),
                              "vnetctl": Path("/opt/x/vnetctl")}, docs)
    assert f"Documentation=file://{docs}/host.md\n" in out
    (docs / "host.md").unlink()
    out = units.render(text, {"vnet-hostd": Path("/opt/x/vnet-hostd"),
                              "vnetctl": Path("/opt/x/vnetctl")}, docs)
    assert "Documentation=" not in out and "ExecStart=/opt/x/vnet-hostd" in out


def test_install_units_print_writes_nothing(tmp_path, capsys):
    bindir = _fake_bin(tmp_path)
    out = tmp_path / "units"
    assert units.main(["--dir", str(out), "--bindir", str(bindir), "--print"]) == 0
    assert not out.exists()
    text = capsys.readouterr().out
    assert f"# {out}/vnet-router@.service" in text
    assert f"ExecStart={bindir}/vnet-hostd -c /etc/vnet/hostd.toml" in text


def test_install_units_refuses_when_a_command_is_missing(tmp_path, capsys):
    bindir = _fake_bin(tmp_path)
    (bindir / "vnetctl").unlink()
    assert units.main(["--dir", str(tmp_path / "units"), "--bindir", str(bindir)]) == 1
    assert "cannot find vnetctl" in capsys.readouterr().err
    assert not (tmp_path / "units").exists()


def test_install_units_is_a_vnet_router_command(capsys):
    from vnet_router.node import daemon
    with pytest.raises(SystemExit) as e:
        daemon.main(["install-units", "--help"])
    assert e.value.code == 0
    assert "--dir DIR" in capsys.readouterr().out
