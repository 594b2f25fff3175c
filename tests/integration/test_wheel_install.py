"""Installed like a package: build a wheel of this tree, install it (with its dependencies, from
PyPI) into a fresh venv, then the venv's own commands must work without the source tree:
``vnet-lab demo`` passes (its topology comes from the package data) and
``vnet-router install-units`` writes units that ``systemd-analyze verify`` accepts, whose
``Documentation=`` names the pages the wheel installed.

Needs root (the demo builds namespaces) and network access to PyPI. Slow: the wheel build
(Cython fast path included when a compiler is there), the venv install and the demo."""
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.one_tier]

SRC = Path(__file__).resolve().parents[2]
_IGNORE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                 ".pytest_cache", ".hypothesis", "*.so", "_fastpath.c", "*.bpf.o",
                                 "vnet-demo-rates.png")


def _env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)                  # nothing may come from the source tree
    env.pop("VIRTUAL_ENV", None)
    return env


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), **kw)
    print(f"[{time.monotonic() - t0:6.1f} s] {' '.join(map(str, cmd))} -> {r.returncode}")
    return r


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with the wheel of this tree installed; yields its bin directory."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"                              # a copy: the build writes into its tree
    shutil.copytree(SRC, src, ignore=_IGNORE)
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
              "-w", str(tmp / "dist"), str(src)], cwd=tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    wheel, = (tmp / "dist").glob("vnet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "vnet_router/data/etc/lab/demo.toml" in names
    assert "vnet_router/data/systemd/vnet-router@.service" in names
    assert "vnet_router/bpf/vnp_router.bpf.c" in names          # kernel instances: C source
    if shutil.which("clang"):                                   # built with the package
        for prog in ("substrate", "tap_capture", "vnp_router"):
            assert f"vnet_router/bpf/{prog}.bpf.o" in names, names
    print(f"wheel {wheel.name}: fast path "
          f"{'compiled' if any(n.endswith('.so') for n in names) else 'NOT compiled'}")
    env = tmp / "venv"
    r = _run([sys.executable, "-m", "venv", str(env)], cwd=tmp)
    assert r.returncode == 0, r.stderr
    r = _run([env / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check",
              "-q", str(wheel)], cwd=tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run([env / "bin" / "python", "-c",
              "import vnet_router, vnet_router.ops.shipped as s; print(vnet_router.__file__); "
              "print(s.path('etc/lab/demo.toml'))"], cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert all(line.startswith(str(env)) for line in r.stdout.split()), r.stdout
    shutil.rmtree(src)
    yield env / "bin"


def test_installed_demo_passes(venv, tmp_path):
    r = _run([venv / "vnet-lab", "demo", "--workdir", str(tmp_path / "lab"),
              "--plot", str(tmp_path / "rates.png")], cwd=tmp_path, timeout=900)
    print(r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "Traceback" not in r.stderr, r.stderr[-4000:]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_installed_units_verify(venv, tmp_path):
    out = tmp_path / "units"
    r = _run([venv / "vnet-router", "install-units", "--dir", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hidden from the services" in r.stderr      # the venv is under /tmp: said so
    written = sorted(p.name for p in out.iterdir())
    assert written == ["vnet-hostd.service", "vnet-router.service", "vnet-router@.service",
                       "vnet-vbm.service"]
    for name in written:
        text = (out / name).read_text()
        assert "/usr/local/bin/" not in text and f"ExecStart={venv}/vnet-" in text, name
        doc, = [l.split("=", 1)[1] for l in text.splitlines() if l.startswith("Documentation=")]
        assert doc.startswith(f"file://{venv.parent}/share/doc/vnet/"), doc    # the wheel's pages
        assert Path(doc[len("file://"):]).is_file(), doc
        unit = name.replace("@.", "@r1.")            # a template is verified as an instance
        r = _run(["systemd-analyze", "verify", str(out / unit)], cwd=out)
        assert r.returncode == 0 and not r.stderr.strip(), (unit, r.stderr)
