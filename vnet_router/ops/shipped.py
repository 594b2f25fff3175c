"""Files shipped inside the package: example configurations, lab topologies, systemd units.

The documented copies are the repository's top-level ``etc/`` and ``systemd/``; the wheel
carries them as package data under ``vnet_router/data/`` (same relative paths), so the
commands find them however the package was installed (``pip install .``, a wheel, ``-e``).
The package copies are generated, never edited by hand::

    python3 -m vnet_router.ops.shipped           # copy etc/ and systemd/ into vnet_router/data/
    python3 -m vnet_router.ops.shipped --check   # exit 1 if they differ (tests/unit/test_shipped.py)

``path("etc/lab/demo.toml")`` and ``read_text("systemd/vnet-router.service")`` read them.
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from importlib import resources
from pathlib import Path

DIRS = ("etc", "systemd")                                   # top-level dirs that are shipped
ROOT = Path(__file__).resolve().parents[2]                  # the source tree (when there is one)
DATA = Path(__file__).resolve().parents[1] / "data"         # vnet_router/data/ in that tree


def _resource(rel: str):
    r = resources.files("vnet_router").joinpath("data")
    for part in rel.split("/"):
        r = r.joinpath(part)
    return r


def path(rel: str) -> Path:
    """The installed file ``rel`` (e.g. ``"etc/lab/demo.toml"``) as a path on disk."""
    p = Path(str(_resource(rel)))
    if not p.is_file():
        raise FileNotFoundError(f"{rel} is not in the installed package ({p})")
    return p


def read_text(rel: str) -> str:
    return _resource(rel).read_text(encoding="utf-8")


def names(top: str) -> list[str]:
    """Relative paths of the shipped files under ``top`` (``"systemd"``), sorted."""
    base = _resource(top)
    out, todo = [], [(base, top)]
    while todo:
        d, rel = todo.pop()
        for child in d.iterdir():
            if child.name in ("__pycache__",):
                continue
            if child.is_dir():
                todo.append((child, f"{rel}/{child.name}"))
            else:
                out.append(f"{rel}/{child.name}")
    return sorted(out)


def _files(base: Path) -> set[str]:
    return {str(p.relative_to(base)) for d in DIRS if (base / d).is_dir()
            for p in (base / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def differences(root: Path = ROOT, data: Path = DATA) -> list[str]:
    """How the package copies under ``data`` differ from the documented files under ``root``."""
    src, dst = _files(root), _files(data)
    out = [f"{n}: missing from {data}" for n in sorted(src - dst)]
    out += [f"{n}: in {data} but not in {root}" for n in sorted(dst - src)]
    out += [f"{n}: differs" for n in sorted(src & dst)
            if not filecmp.cmp(root / n, data / n, shallow=False)]
    return out


def sync(root: Path = ROOT, data: Path = DATA) -> None:
    for d in DIRS:
        if (data / d).exists():
            shutil.rmtree(data / d)
        shutil.copytree(root / d, data / d, ignore=shutil.ignore_patterns("__pycache__"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python3 -m vnet_router.ops.shipped",
        description="Copy the documented etc/ and systemd/ into the package data "
                    "(vnet_router/data/), or check that they are equal.")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if they differ")
    args = p.parse_args(argv)
    if not all((ROOT / d).is_dir() for d in DIRS):
        print(f"no source tree at {ROOT} (an installed package has only the copies)",
              file=sys.stderr)
        return 2
    diff = differences()
    if args.check:
        for line in diff:
            print(line)
        return 1 if diff else 0
    sync()
    for line in diff:
        print(f"updated: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
