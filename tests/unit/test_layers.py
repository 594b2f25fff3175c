"""The tree's shape: layering contracts that bite, modules of one concern, no cycles.

The contracts live in pyproject.toml ([tool.importlinter]); ``./run.sh test`` runs
``lint-imports`` before pytest.  Here each kind of contract is shown to fail on a copy of the
tree with one deliberate bad import, so a contract that silently stopped checking is noticed.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 600


def _ours():
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return [ROOT / f for f in out]


def test_no_module_over_600_lines():
    files = _ours()
    assert len(files) > 50, files          # the listing found the tree
    long = {str(f.relative_to(ROOT)): n for f in files
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _lint(tree: Path):
    env = {"PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent), "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import "
                           "lint_imports_command as c; sys.exit(c())", "--no-cache", "--no-logo"],
                          cwd=tree, capture_output=True, text=True, env=env, timeout=120)


def test_contracts_hold_on_the_tree():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "BROKEN" not in r.stdout and " KEPT" in r.stdout


@pytest.fixture
def tree(tmp_path):
    for pkg in ("vnet_router", "vnet_host"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def _add_import(tree: Path, module: str, line: str):
    path = tree / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{line}\n")


@pytest.mark.parametrize("module, line, expect", [
    # a lower layer importing a higher one
    ("vnet_router.wire.substrate", "from vnet_router.node import lifecycle",
     "vnet_router.wire.substrate -> vnet_router.node.lifecycle"),
    ("vnet_router.datapath.reference", "from vnet_router.control import tm",
     "vnet_router.datapath.reference -> vnet_router.control.tm"),
    # siblings that must stay independent
    ("vnet_router.ops.logs", "from vnet_router.datapath import meters",
     "vnet_router.ops.logs -> vnet_router.datapath.meters"),
    # an outside library imported outside its one owner
    ("vnet_router.model.units", "import pyroute2", "vnet_router.model.units -> pyroute2"),
    # the router depending on the host daemon
    ("vnet_router.node.status", "import vnet_host.state", "vnet_router.node.status -> vnet_host.state"),
], ids=["upward", "upward-datapath", "siblings", "library-owner", "host"])
def test_contract_breaks_on_a_bad_import(tree, module, line, expect):
    assert _lint(tree).returncode == 0          # the copy is as good as the tree
    _add_import(tree, module, line)
    r = _lint(tree)
    assert r.returncode != 0
    assert "BROKEN" in r.stdout and expect in r.stdout, r.stdout


def test_contract_breaks_on_a_cycle(tree):
    # ops.logs <-> ops.sdnotify: a cycle between sibling modules of one package
    _add_import(tree, "vnet_router.ops.logs", "from vnet_router.ops import sdnotify")
    _add_import(tree, "vnet_router.ops.sdnotify", "from vnet_router.ops import logs")
    r = _lint(tree)
    assert r.returncode != 0
    assert "no import cycle" in r.stdout and "BROKEN" in r.stdout, r.stdout
