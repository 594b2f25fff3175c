"""``vnet-router install-units``: write the systemd units with the real paths of the commands.

The shipped units (``systemd/``, in the package as ``vnet_router/data/systemd/``) name the
console scripts as ``/usr/local/bin/NAME``, where ``pip install`` as root puts them on Debian.
Installed anywhere else (a venv, pyenv, ``--user``), the units are written with the directory
the scripts really are in: the one this command was started from, else the scripts directory of
this interpreter (sysconfig), else the interpreter's own directory, else ``PATH``.

Their ``Documentation=`` names ``/usr/local/share/doc/vnet/``, where the same install puts the
pages of ``docs/`` (the wheel's data files, ``share/doc/vnet`` under the installation's
prefix: a venv, ``~/.local``, ``/usr/local``).  They are written with the directory this
installation really put the pages in (recorded in the package's file list), else the source
tree's ``docs/`` (an editable install); a unit never names a page that is not there.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import sys
import sysconfig
from pathlib import Path

from vnet_router.ops import shipped

DEFAULT_DIR = "/etc/systemd/system"
TEMPLATE_PREFIX = "/usr/local/bin/"
_SCRIPT = re.compile(re.escape(TEMPLATE_PREFIX) + r"([A-Za-z0-9_.-]+)")
DOC_PREFIX = "/usr/local/share/doc/vnet/"
_DOC = re.compile(r"file://" + re.escape(DOC_PREFIX) + r"([A-Za-z0-9_.-]+)")
DOC_PAGE = "operations.md"                       # a page every unit may name: found = all there
# hidden from the services by their hardening: PrivateTmp=yes, ProtectHome=yes
_HIDDEN = ("/tmp/", "/var/tmp/", "/home/", "/root/", "/run/user/")


def _executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def candidate_dirs() -> list[Path]:
    out = []
    if sys.argv and sys.argv[0]:
        out.append(Path(os.path.abspath(sys.argv[0])).parent)
    scripts = sysconfig.get_path("scripts")
    if scripts:
        out.append(Path(scripts))
    out.append(Path(os.path.abspath(sys.executable)).parent)
    out += [Path(d) for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    seen, uniq = set(), []
    for d in out:
        if d not in seen:
            seen.add(d)
            uniq.append(d)
    return uniq


def find_script(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        if _executable(d / name):
            return d / name
    return None


def doc_dir() -> Path | None:
    """Where this installation put the pages of ``docs/``: the wheel's data files (found in
    the distribution's file list), else the source tree's ``docs/``; None if neither is there."""
    try:
        files = importlib.metadata.distribution("vnet").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == DOC_PAGE and f.parent.name == "vnet" and f.parent.parent.name == "doc":
            p = Path(os.path.normpath(f.locate()))
            if p.is_file():
                return p.parent
    p = shipped.ROOT / "docs" / DOC_PAGE
    return p.parent if p.is_file() else None


def render(text: str, paths: dict[str, Path], docs: Path | None) -> str:
    """``text`` with every ``/usr/local/bin/NAME`` replaced by ``paths[NAME]`` and every
    ``Documentation=file:///usr/local/share/doc/vnet/PAGE`` by the page in ``docs``; such a
    line is left out where ``docs`` is None or has no such page."""
    text = _SCRIPT.sub(lambda m: str(paths[m.group(1)]), text)
    out = []
    for line in text.splitlines(keepends=True):
        m = _DOC.search(line) if line.startswith("Documentation=") else None
        if m:
            page = docs / m.group(1) if docs is not None else None
            if page is None or not page.is_file():
                continue
            line = line.replace(m.group(0), f"file://{page}")
        out.append(line)
    return "".join(out)


def units() -> dict[str, str]:
    """Unit file name -> shipped text."""
    return {Path(n).name: shipped.read_text(n) for n in shipped.names("systemd")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="vnet-router install-units",
        description="Write the vnet systemd units (vnet-router.service, vnet-router@.service, "
                    "vnet-vbm.service, vnet-hostd.service) with the real paths of the installed "
                    "commands. It does not run systemctl; afterwards: "
                    "useradd --system --no-create-home --shell /usr/sbin/nologin vnet; "
                    "systemctl daemon-reload; systemctl enable --now vnet-router.")
    p.add_argument("--dir", metavar="DIR", default=DEFAULT_DIR,
                   help="where to write the units (default: %(default)s)")
    p.add_argument("--bindir", metavar="DIR",
                   help="take the commands from DIR instead of finding them")
    p.add_argument("-n", "--print", dest="dry_run", action="store_true",
                   help="write nothing: print the units that would be written to stdout")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    texts = units()
    needed = sorted({m.group(1) for t in texts.values() for m in _SCRIPT.finditer(t)})
    dirs = [Path(args.bindir)] if args.bindir else candidate_dirs()
    paths = {n: find_script(n, dirs) for n in needed}
    missing = [n for n, p in paths.items() if p is None]
    if missing:
        print(f"vnet-router install-units: cannot find {', '.join(missing)} in "
              f"{', '.join(map(str, dirs))} (use --bindir)", file=sys.stderr)
        return 1
    hidden = sorted({str(p.parent) for p in paths.values()
                     if (str(p.parent) + "/").startswith(_HIDDEN)})
    for d in hidden:
        print(f"vnet-router install-units: warning: {d} is hidden from the services "
              f"(PrivateTmp=yes / ProtectHome=yes): install the package system-wide for "
              f"units that start", file=sys.stderr)
    docs = doc_dir()
    if docs is None:
        print("vnet-router install-units: warning: the pages of docs/ are not installed: the "
              "units are written without Documentation=", file=sys.stderr)
    out_dir = Path(args.dir)
    if not args.dry_run:
        out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        new = render(text, paths, docs)
        if args.dry_run:
            print(f"# {out_dir / name}\n{new}")
            continue
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(new)
        tmp.chmod(0o644)
        tmp.replace(out_dir / name)
        print(f"wrote {out_dir / name}")
    if not args.dry_run:
        print("commands: " + ", ".join(f"{n}={p}" for n, p in sorted(paths.items())))
        if docs is not None:
            print(f"documentation: {docs}")
        if out_dir == Path(DEFAULT_DIR):
            print("next: systemctl daemon-reload (and useradd --system vnet, if not done)")
    return 0
