"""TOML files in and out: the one module that imports ``tomllib`` and ``tomli_w``.

``read_toml``/``parse_toml`` give a file's tables, or a :class:`ConfigError` naming the file
(key ``-``) when it cannot be read or is not TOML; what the tables mean is the business of the
schema modules (``config.py``, ``host.py``, ``vnet_router.lab.topology``).  ``dump_toml`` writes
config-shaped tables (the lab writes each node's rendered config with it).
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import tomli_w

from vnet_router.model.schema import ConfigError


def read_toml(path: str | Path) -> dict:
    """The tables of a TOML file; ConfigError naming the file if it is missing or not TOML."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "-", "file not found") from None
    except OSError as e:
        raise ConfigError(path, "-", f"cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "-", f"not valid TOML: {e}") from None


def parse_toml(text: str, path: str = "<string>") -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "-", f"not valid TOML: {e}") from None


def dump_toml(data: dict) -> str:
    """TOML text of config-shaped tables: scalars, lists, tables and arrays of tables.

    The file's own arrays of tables are written as ``[[name]]`` sections (tomli-w writes short
    ones inline, ``vnet = [{ ... }]``), so a written config can be extended by appending
    ``[[vnet]]`` and the like to it, as to a file written by hand."""
    plain = {k: v for k, v in data.items() if not _is_aot(v)}
    parts = [tomli_w.dumps(plain)] if plain else []
    for k, items in data.items():
        if _is_aot(items):
            header = tomli_w.dumps({k: {}}).strip()             # "[name]", quoted if need be
            for item in items:
                body = tomli_w.dumps({k: item})
                if body.startswith(header + "\n"):
                    body = body[len(header) + 1:]
                parts.append(f"[{header}]\n{body}")
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


def _is_aot(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
