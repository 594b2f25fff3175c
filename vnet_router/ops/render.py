"""Tables for people, drawn by rich (the one module of ours that imports it).

``vnetctl show``/``alloc``/``top`` and the lab demo's report build their rows; this module only
draws them.  ``table(headers, rows, title=)`` makes a table (cells are shown as given: no
markup, no highlighting; :func:`cell` gives one a style); ``write(out, *parts)`` prints strings
and tables to ``out``; ``live(out)`` is the refreshing view of ``top``.

On a terminal the output is styled and fitted to its width.  To anything else (a pipe, a file,
a test's capture) it is plain: no colour or control codes, every table as wide as its cells
need (nothing wrapped or cut), columns separated by two blanks, no trailing blanks -- so
scripts can split the lines on whitespace.
"""
from __future__ import annotations

import io
from contextlib import contextmanager

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

PLAIN_WIDTH = 100_000          # "as wide as it needs": no table is wider than this


def cell(value, style: str | None = None) -> Text:
    """One cell, shown as ``str(value)`` (no markup), in ``style`` on a terminal."""
    return value if isinstance(value, Text) else Text(str(value), style=style or "")


def table(headers, rows, title: str | None = None):
    """A table without borders: a title line (if given), a header line, one line per row."""
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for h in headers:
        t.add_column(Text(h))
    for r in rows:
        t.add_row(*(cell(c) for c in r))
    return t if title is None else Group(Text(title, style="bold"), t)


def _parts(parts) -> Group:
    """One renderable: each part on its own lines ("" is a blank line)."""
    return Group(*(Text(p) if isinstance(p, str) else p for p in parts))


def _terminal(out) -> bool:
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def _plain(parts) -> str:
    buf = io.StringIO()
    Console(file=buf, width=PLAIN_WIDTH, force_terminal=False, color_system=None,
            no_color=True, highlight=False, markup=False, emoji=False,
            soft_wrap=False).print(_parts(parts))
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())


def write(out, *parts) -> None:
    """Print ``parts`` (strings, tables), one after the other, to ``out``."""
    if _terminal(out):
        Console(file=out, highlight=False, markup=False, emoji=False).print(_parts(parts))
    else:
        out.write(_plain(parts))
    out.flush()


@contextmanager
def live(out):
    """``with live(out) as show: show(*parts)`` -- each call replaces the view: redrawn in
    place on a terminal (rich's Live); elsewhere printed, views separated by a blank line."""
    if _terminal(out):
        console = Console(file=out, highlight=False, markup=False, emoji=False)
        with Live(console=console, auto_refresh=False) as view:
            yield lambda *parts: view.update(_parts(parts), refresh=True)
        return
    first = True

    def show(*parts):
        nonlocal first
        out.write(("" if first else "\n") + _plain(parts))
        out.flush()
        first = False
    yield show
