"""Parse rates and sizes with units ("100Mbit", "1Gbit", "12.5MB/s", "15KB").

Rates are returned in bits per second, sizes in bytes.  Plain integers are taken as the
base unit.  Errors are ``ValueError`` with a message that shows the accepted forms.

A rate's unit says plainly whether it counts bits or bytes: ``bit``/``kbit``/``Mbit``/...
(``/s`` optional) are bits per second, ``B/s``/``kB/s``/``MB/s``/... (capital ``B``) bytes
per second.  Spellings read both ways are refused rather than guessed: ``bps``/``Mbps`` in any
case (tc reads ``Mbps`` as megabytes per second, most people mean megabits) and ``b/s`` with a
small ``b`` (``mb/s``).
"""
from __future__ import annotations

import re

_PREFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_PREFIX_WORD = {"": "", "k": "kilo", "m": "mega", "g": "giga", "t": "tera"}
_SHOWN = {"": "", "k": "k", "m": "M", "g": "G", "t": "T"}
_BITS = re.compile(r"^([kmgt]?)bit(?:/s)?$", re.IGNORECASE)
_BYTES = re.compile(r"^([kmgtKMGT]?)B/s$")
_AMBIGUOUS = re.compile(r"^([kmgt]?)(?:bps|b/s)$", re.IGNORECASE)
_RATE_FORMS = ("bit, kbit, Mbit, Gbit, Tbit (bits per second, \"/s\" optional); "
               "B/s, kB/s, MB/s, GB/s, TB/s (bytes per second)")
_SIZE_UNITS = {
    "": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}
_NUM = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*(?:/[A-Za-z]*)?)\s*$")


def _number(value, what: str):
    """The number and the unit text of ``value``; ints and floats come back unit-less."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} must be a number or a string like {_example(what)}, not {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{what} must not be negative: {value!r}")
        return value, None
    m = _NUM.match(value)
    if not m:
        raise ValueError(f"bad {what} {value!r} (want e.g. {_example(what)}; units: "
                         f"{_units(what)})")
    return m.group(1), m.group(2)


def _units(what: str) -> str:
    return _RATE_FORMS if what == "rate" else ", ".join(u for u in _SIZE_UNITS if u)


def _example(what: str) -> str:
    return '"100Mbit"' if what == "rate" else '"15KB"'


def parse_rate(value) -> int:
    """Bits per second from 100000000, "100Mbit", "1.5Gbit", "12.5MB/s"; "10Mbps" is refused."""
    num, unit = _number(value, "rate")
    if unit is None or unit == "":
        return int(float(num))
    if m := _BITS.match(unit):
        return int(float(num) * _PREFIX[m.group(1).lower()])
    if m := _BYTES.match(unit):
        return int(float(num) * 8 * _PREFIX[m.group(1).lower()])
    if m := _AMBIGUOUS.match(unit):
        p = m.group(1).lower()
        bits = int(float(num) * 8 * _PREFIX[p])
        tc = "; tc's reading" if unit.lower().endswith("bps") else ""
        raise ValueError(
            f"ambiguous rate {value!r}: {unit!r} is read both as {_PREFIX_WORD[p]}bits per "
            f"second (write \"{num}{_SHOWN[p]}bit\") and as {_PREFIX_WORD[p]}bytes per second "
            f"= {format_rate(bits)} (write \"{num}{_SHOWN[p]}B/s\"{tc})")
    raise ValueError(f"bad rate {value!r} (want e.g. \"100Mbit\"; units: {_RATE_FORMS})")


def parse_size(value) -> int:
    """Bytes from 1500, "15KB", "1MiB"."""
    num, unit = _number(value, "size")
    if unit is None:
        return int(num)
    if unit.lower() not in _SIZE_UNITS:
        raise ValueError(f"bad size {value!r} (want e.g. \"15KB\"; units: {_units('size')})")
    return int(float(num) * _SIZE_UNITS[unit.lower()])


def format_rate(bps: int | None) -> str:
    if bps is None:
        return "unlimited"
    for unit, scale in (("Gbit", 10**9), ("Mbit", 10**6), ("kbit", 10**3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps}bit"


def format_bitrate(bps: float | None) -> str:
    """A measured rate for people: two decimals at most and a spaced unit, ``19.99 Mbit/s``
    (``format_rate`` writes a configured one as the file would, ``20Mbit``)."""
    if bps is None:
        return "unlimited"
    for unit, scale in (("Gbit/s", 10**9), ("Mbit/s", 10**6), ("kbit/s", 10**3)):
        if bps >= scale:
            return f"{bps / scale:.2f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{bps:.0f} bit/s"
