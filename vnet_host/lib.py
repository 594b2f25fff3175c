"""Protocol library: an application opens an endpoint on a vNet; its data path runs here.

``open_endpoint(vnet, interface)`` asks the node's daemon (``vnet-hostd``, or ``vnet-router``
for a virtual router on the substrate router) over its control socket; the daemon checks that
the caller may use the vNet (peer credentials) and hands back, with SCM_RIGHTS, a
SOCK_SEQPACKET descriptor already bound to that logical interface's virtual links.  From then
on the application's protocol code sends and receives its own packets on that descriptor
(one packet per message); the daemon only multiplexes them onto the substrate link, so an
application can neither choose another virtual link nor forge substrate headers.

Read-mostly tables (vNets, interfaces, MTUs) are exported read-only: ``read_tables()`` reads
the copy the daemon keeps in its state directory (``tables.json``, mode 0644), or asks the
daemon (``tables`` command) when given a socket.

Standard library only: applications run unprivileged, under any Python 3.11.
"""
from __future__ import annotations

import json
import os
import socket

from vnet_router.node.api import ControlError, request, request_fds

DEFAULT_SOCKET = os.environ.get("VNET_HOSTD_SOCKET", "/run/vnet/vnet-hostd.sock")


class EndpointError(ControlError):
    pass


class Endpoint:
    """A bound library endpoint: ``send(packet)``, ``recv() -> packet``, ``fileno()``."""

    def __init__(self, sock: socket.socket, info: dict):
        self.sock, self.info = sock, info
        self.vnet, self.interface, self.mtu = info["vnet"], info["interface"], info["mtu"]

    def send(self, packet: bytes) -> None:
        if not packet:
            raise ValueError("empty packet (an empty message means 'closed' to the daemon)")
        if len(packet) > self.mtu:
            raise ValueError(f"packet of {len(packet)} bytes exceeds the endpoint's MTU "
                             f"{self.mtu}")
        self.sock.send(packet)

    def recv(self, bufsize: int = 65536) -> bytes:
        return self.sock.recv(bufsize)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<Endpoint {self.vnet}/{self.interface} mtu {self.mtu} fd {self.fileno()}>"


def open_endpoint(vnet: str, interface: str, socket_path: str = DEFAULT_SOCKET) -> Endpoint:
    """Open library endpoint ``interface`` of ``vnet``; raises EndpointError with the
    daemon's reason (unknown vNet, not allowed, busy, ...)."""
    try:
        info, fds = request_fds(socket_path, "endpoint", vnet=vnet, interface=interface)
    except ControlError as e:
        raise EndpointError(str(e)) from None
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise EndpointError(f"daemon sent {len(fds)} descriptors, expected 1")
    return Endpoint(socket.socket(fileno=fds[0]), info)


def read_tables(state_dir: str | None = None, socket_path: str | None = None) -> dict:
    """The daemon's exported tables, from its state directory or over its control socket."""
    if state_dir is not None:
        with open(os.path.join(state_dir, "tables.json")) as f:
            return json.load(f)
    return request(socket_path or DEFAULT_SOCKET, "tables")
