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
    """TOML text of config-shaped tables: scalars, lists, tables and arrays of tables."""
    return tomli_w.dumps(data)
