"""Value types of the configuration files: names, VLIs, MACs, addresses, rates, sizes.

Each is an annotated type of ``schema.py`` (a checked or parsed value with the name the error
messages and the docs use); ``config.py``, ``host.py`` and the lab's topology use them.
"""
from __future__ import annotations

import ipaddress
import re

from vnet_router.wire import substrate as wire
from vnet_router.model.schema import Int, Str, checked, int_range, parsed, pattern
from vnet_router.model.units import parse_rate, parse_size

_IFNAME = r"[A-Za-z0-9_.\-]{1,15}"
_MAC = r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}"

Name = pattern(r"[A-Za-z0-9_\-]{1,32}", "bad name {v} (letters, digits, '-', '_'; at most 32)",
               "name")
IfName = pattern(_IFNAME, "bad interface name {v} (at most 15 of letters, digits, '.-_')",
                 "interface name")


def valid_ifname(name: str) -> bool:
    """An interface name the config accepts (at most 15 of letters, digits, '.-_')."""
    return isinstance(name, str) and re.fullmatch(_IFNAME, name) is not None


def _vli(v):
    if not 1 <= v <= 0xFFFE:
        raise ValueError(f"VLI {v} out of range 1..65534 (0 is the control channel, "
                         f"65535 is reserved)")
    return v


VLI = checked(Int, _vli, "VLI 1..65534")


def _mac(v):
    if isinstance(v, bytes) and len(v) == 6:
        return v
    if not isinstance(v, str):
        raise ValueError(f"must be str, not {type(v).__name__} {v!r}")
    if not re.fullmatch(_MAC, v):
        raise ValueError(f"bad MAC address {v!r} (want six hex pairs like 02:00:00:00:00:01)")
    return wire.mac_to_bytes(v)


Mac = parsed(_mac, "MAC", bytes)


def _endpoint(v):
    if isinstance(v, tuple) and len(v) == 2:
        v = f"[{v[0]}]:{v[1]}"
    if not isinstance(v, str):
        raise ValueError(f"must be str, not {type(v).__name__} {v!r}")
    host, sep, port = v.rpartition(":")
    host = host.strip("[]")
    if not sep:
        raise ValueError(f"bad address {v!r} (want IP:PORT)")
    try:
        host = str(ipaddress.ip_address(host))
        port = int(port)
    except ValueError:
        raise ValueError(f"bad address {v!r} (want IP:PORT)") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1..65535")
    return host, port


HostPort = parsed(_endpoint, '`"IP:PORT"`', tuple[str, int])


def _cidr(v):
    try:
        ipaddress.ip_interface(v)
    except ValueError:
        raise ValueError(f"bad address {v!r} (want e.g. 10.0.0.1/24 or fd00::1/64)") from None
    if "/" not in v:
        raise ValueError(f"address {v!r} needs a prefix length, e.g. {v}/24")
    return v


Cidr = checked(Str, _cidr, '`"ADDRESS/PREFIX"`')
RateBps = parsed(parse_rate, "rate", int)
SizeBytes = parsed(parse_size, "size", int)
Queue = int_range(1, 1_000_000, "queue length")
VNetId = int_range(1, 0xFFFF, "vNet id")
