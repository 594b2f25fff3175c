"""TAP logical interfaces (the only module that imports python-pytun).

``open_tap()`` creates a TAP under a temporary name in the daemon's namespace and returns its
non-blocking file descriptor owner; ``ports.py`` moves it into the vNet's namespace and names it.
Closing the device deletes it (the daemon never makes TAPs persistent).
"""
from __future__ import annotations

import itertools
import os

import pytun

_seq = itertools.count()


class Tap:
    def __init__(self):
        self.tmpname = f"vt{os.getpid() % 100000}x{next(_seq)}"
        self._dev = pytun.TunTapDevice(name=self.tmpname, flags=pytun.IFF_TAP | pytun.IFF_NO_PI)
        self.fd = self._dev.fileno()
        os.set_blocking(self.fd, False)

    def close(self):
        if self._dev is not None:
            self._dev.close()
            self._dev = None
