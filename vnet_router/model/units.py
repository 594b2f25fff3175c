"""Parse rates and sizes with units ("100Mbit", "1Gbit", "15KB").

Rates are returned in bits per second, sizes in bytes.  Plain integers are taken as the
base unit.  Errors are ``ValueError`` with a message that shows the accepted forms.
"""
from __future__ import annotations

import re

_RATE_UNITS = {
    "": 1, "bit": 1, "bps": 1,
    "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12,
    "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9,
}
_SIZE_UNITS = {
    "": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}
_NUM = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


def _parse(value, units: dict[str, int], what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number or a string like {_example(what)}, not {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{what} must not be negative: {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a number or a string like {_example(what)}, not {value!r}")
    m = _NUM.match(value)
    if not m or m.group(2).lower() not in units:
        raise ValueError(f"bad {what} {value!r} (want e.g. {_example(what)}; units: "
                         f"{', '.join(u for u in units if u)})")
    return int(float(m.group(1)) * units[m.group(2).lower()])


def _example(what: str) -> str:
    return '"100Mbit"' if what == "rate" else '"15KB"'


def parse_rate(value) -> int:
    """Bits per second from 100000000, "100Mbit", "1.5Gbit", "10MBps"."""
    return _parse(value, _RATE_UNITS, "rate")


def parse_size(value) -> int:
    """Bytes from 1500, "15KB", "1MiB"."""
    return _parse(value, _SIZE_UNITS, "size")


def format_rate(bps: int | None) -> str:
    if bps is None:
        return "unlimited"
    for unit, scale in (("Gbit", 10**9), ("Mbit", 10**6), ("kbit", 10**3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps}bit"
