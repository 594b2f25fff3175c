"""The key tables of ``docs/`` generated from the schema, so they cannot drift from it.

A table in a doc is written between two marker comments naming the schema model it shows::

    <!-- schema: vnet_router.model.config.NodeSection -->
    | key | type | default | meaning |
    ...
    <!-- /schema -->

``python3 -m vnet_router.model.docgen`` rewrites every such table in :data:`DOCS` from the
model's keys (name in the file, value type, default, ``key(description=...)``, see
``schema.describe``); ``--check`` only reports the files that are not what it would write
(``tests/unit/test_docgen.py`` fails on them).  The prose around the tables is written by hand.
A marker names its model as text (the lab's topology models live above this layer, in
``vnet_router.lab``), so the model is imported by name when a doc is rendered.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

from vnet_router.model.schema import describe

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("docs/configuration.md", "docs/host.md", "docs/lab.md")
_BLOCK = re.compile(r"(<!-- schema: ([\w.]+) -->\n)(.*?)(<!-- /schema -->)", re.S)


def model(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def table(cls: type) -> str:
    """The markdown key table of one model."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for k in describe(cls):
        default = "required" if k.default is None else k.default or "—"
        cells = (f"`{k.key}`", k.type, default, k.description)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """``text`` with every schema table regenerated."""
    return _BLOCK.sub(lambda m: m.group(1) + table(model(m.group(2))) + m.group(4), text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m vnet_router.model.docgen",
                                description="Regenerate the key tables of docs/ from the schema.")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if a doc is not what would be written")
    args = p.parse_args(argv)
    stale = []
    for name in DOCS:
        path = ROOT / name
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(name)
            if not args.check:
                path.write_text(new)
    for name in stale:
        print(f"{name}: {'out of date' if args.check else 'rewritten'}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
