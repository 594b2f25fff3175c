"""The reference engine: pure Python, one frame at a time, on the event loop.

It defines what the datapath does; the compiled engine (``_fastpath.CEngine``) must decide
exactly like it (``tests/unit/test_datapath_diff.py``).  It adds nothing of its own to the
core's semantics: a substrate frame is ``classify.classify_eth`` then ``Datapath.receive``; a
TAP frame is ``Datapath.output``.  What it owns is the reading: one AF_PACKET socket per
substrate interface (VLAN tag from PACKET_AUXDATA), read by an event-loop callback, and the
TAP reads.
"""
from __future__ import annotations

import logging
import os
import socket

from vnet_router.datapath import packet_io
from vnet_router.datapath.classify import classify_eth, classify_udp
from vnet_router.datapath.core import BATCH, RXBUF, Datapath
from vnet_router.datapath.engine import Capabilities, TapPort, engine_tier
from vnet_router.datapath.entries import Compiled
from vnet_router.model.tables import Snapshot

log = logging.getLogger(__name__)


class PyEngine:
    name = "reference"
    # the core reads the UDP tunnel sockets (``Datapath._on_udp``); TAPs are read with read()
    capabilities = Capabilities()
    tier_of = engine_tier

    def __init__(self, dp: Datapath):
        self.dp = dp
        self.rx: dict[int, socket.socket] = {}     # ifindex -> receive socket
        self._buf = bytearray(RXBUF)
        self._view = memoryview(self._buf)

    # -- set-up ----------------------------------------------------------------------------

    def sync_substrate(self, snap: Snapshot, close: bool):
        for ifindex, iface in snap.ifaces.items():
            if ifindex not in self.rx:
                self.rx[ifindex] = packet_io.open_rx(iface.ifname, snap.ethertype)
        if close:
            for ifindex in [i for i in self.rx if i not in snap.ifaces]:
                s = self.rx.pop(ifindex)
                self.dp.stop_reading(s.fileno())
                s.close()

    def start(self):
        for ifindex, s in self.rx.items():
            self.dp.read(s.fileno(), self._on_eth, s, ifindex)

    def install(self, snap: Compiled):
        """Nothing to compile: every decision reads the core's entries."""

    def retune(self, entry):
        """The core's meter is the one this engine uses: nothing to follow."""

    def sync_counters(self):
        """Every count is the core's already."""

    def set_peers(self, peers):
        """VLI 0 is sorted by the core's queues only (``copp``)."""

    def close(self):
        for s in self.rx.values():
            self._kernel_drops(s)
            self.dp.stop_reading(s.fileno())
            s.close()
        self.rx.clear()

    def stats(self) -> dict[str, int]:
        return {}

    # -- substrate -> TAP / substrate ------------------------------------------------------

    def _on_eth(self, sock: socket.socket, ifindex: int):
        buf, view = self._buf, self._view
        for _ in range(BATCH):
            try:
                n, anc, _flags, _addr = sock.recvmsg_into([buf], packet_io.AUX_SPACE)
            except (BlockingIOError, InterruptedError):
                self._kernel_drops(sock)       # drained: what the kernel could not queue
                return
            except OSError as e:
                log.warning("receive error on ifindex %d: %s", ifindex, e)
                return
            self.process_eth(ifindex, view[:n], packet_io.aux_vlan_tci(anc))

    def _kernel_drops(self, sock: socket.socket):
        """Frames the kernel dropped for want of room in the socket's buffer (ring_full)."""
        n = packet_io.socket_drops(sock)
        if n:
            self.dp.drops["ring_full"] += n

    def process_eth(self, ifindex: int, frame, tci: int | None):
        dp = self.dp
        view = memoryview(frame)
        dp.receive(dp.snap, classify_eth(dp.snap, ifindex, view, tci), view, len(view))

    def process_udp(self, local, remote, datagram):
        dp = self.dp
        view = memoryview(datagram)
        dp.receive(dp.snap, classify_udp(dp.snap, local, remote, view), view, len(view))

    def flush(self):
        """The reference sends each frame at once: nothing is held."""

    def flush_tx(self):
        """Nothing is held."""

    # -- TAP -> substrate ------------------------------------------------------------------

    def on_tap(self, port: TapPort):
        fd, out, dp = port.fd, port.out, self.dp
        for _ in range(BATCH):
            try:
                frame = os.read(fd, RXBUF)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("read error on %s/%s: %s", port.vnet, port.name, e)
                return
            if not frame:                   # library endpoint: the application closed its end
                dp.port_closed(port)
                return
            port.rx_packets += 1
            port.rx_bytes += len(frame)
            if out is None:
                continue
            dp.output(out, frame, port)
            if port.paused:
                return
