"""systemd readiness protocol (sd_notify) without a dependency: one datagram per state change
to $NOTIFY_SOCKET.  A no-op when the daemon does not run under systemd."""
from __future__ import annotations

import os
import socket
import time


def notify(*states: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.connect(path)
            s.sendall("\n".join(states).encode())
        except OSError:
            return False
    return True


def monotonic_usec() -> str:
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
