"""The IP underlay of UDP tunnel substrate links: is the local address on this node, is there
a route to the remote?

``probe`` asks the kernel exactly what opening the link's sockets will ask it -- a UDP socket
bound to the local address (port 0: the link's own port may be held by a running daemon)
and connected to the remote (a route lookup; nothing is sent) -- and says what is missing.
The node (``node/underlay.py``) keeps a link whose probe fails down and probes it again with
backoff; ``vnet-router --check`` prints the same answer as a warning.  ``netns_name`` says in
which network namespace the answer holds (``--check`` may run outside the node's namespace).
"""
from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

#: errors of connect() that mean "no route to the remote" (101, 113; 13 and 22: a
#: prohibit / blackhole / unreachable route, or a source the route refuses)
_NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EPERM, errno.EINVAL}


@dataclass(frozen=True)
class Missing:
    """What a UDP link lacks: ``what`` is ``address`` (``local`` is not on the node) or
    ``route`` (no route to ``remote``); ``address`` the IP concerned; ``error`` the kernel's
    words."""

    what: str
    address: str
    error: str

    def __str__(self) -> str:
        if self.what == "address":
            return f"local address {self.address} is not on this node ({self.error})"
        return f"no route to remote {self.address} ({self.error})"


def probe(local: tuple, remote: tuple) -> Missing | None:
    """None if ``local`` (ip, port) is an address of this node and ``remote`` has a route from
    it, else what is missing.  Errors other than those two (e.g. too many open files) raise."""
    fam = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.bind((local[0], 0))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                return Missing("address", local[0], os.strerror(e.errno))
            raise
        try:
            s.connect(remote)
        except OSError as e:
            if e.errno in _NO_ROUTE:
                return Missing("route", remote[0], os.strerror(e.errno))
            raise
    return None


def is_missing(e: OSError) -> bool:
    """``e`` (from opening a UDP link's socket) says its address or route is missing."""
    return e.errno == errno.EADDRNOTAVAIL or e.errno in _NO_ROUTE


def netns_name() -> str:
    """Which network namespace this process runs in, for a message: ``network namespace
    NAME`` (a named one, ``ip netns``), ``the initial network namespace``, or ``an unnamed
    network namespace``."""
    try:
        mine = os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return "this network namespace"
    try:
        for name in sorted(os.listdir("/run/netns")):
            try:
                if os.stat(f"/run/netns/{name}").st_ino == mine:
                    return f"network namespace {name}"
            except OSError:
                continue
    except OSError:
        pass
    try:
        if os.stat("/proc/1/ns/net").st_ino == mine:
            return "the initial network namespace"
    except OSError:
        pass
    return "an unnamed network namespace"
