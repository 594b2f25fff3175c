"""The datapath: what every engine shares (the core); the interface each engine implements is
``engine.py``.

A ``Datapath`` is composed of this core and one *engine* (``engine.Engine``):

* the core owns the sockets (substrate send sockets, UDP tunnel sockets, those of outputs the
  kernel shapes), the logical interfaces (``TapPort``), the meters, the compiled entries of
  the current table generation (``entries.Compiled``, bound in ``install``: meters,
  encapsulation headers, where each virtual link leads), the shaping queues and their timers,
  control messages on VLI 0, and the *semantics* of a classified frame (``receive``: count,
  police, deliver / switch / drop) and of an output (``output``: MTU, shaper, encapsulation,
  send);
* an engine reads the substrate interfaces and the TAPs and moves the common frames:
  ``reference.PyEngine`` through ``classify`` + ``receive``/``output`` (pure Python, one frame
  at a time; the definition of what the datapath does), ``_fastpath.CEngine`` in C on
  TPACKET_V2 rings with batched sends, its own token buckets and shaper queues (the meters'
  arithmetic; state written back to them) and UDP tunnel sockets, calling the core for
  control frames (its counters, drops included, are C deltas added to the same objects:
  ``count_drops``) and for outputs its C path cannot take (no socket yet), which the core's
  meters then shape: no link is shaped in two places.

The engine calls the core only through its public methods (``receive``, ``output``, ``drop``,

Per frame in the reference: one dict lookup for the substrate link, one for the VLI, and the
write; everything that can be computed when the tables change is computed in ``install``.
Nothing here writes into the model but its counters (``VLink``, ``LinkState``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from collections import Counter

from vnet_router.datapath import entries, packet_io
from vnet_router.datapath.copp import ControlQueues
from vnet_router.wire import control as ctlmsg, substrate as wire
from vnet_router.datapath.entries import Compiled, InEntry, OutEntry
from vnet_router.datapath.meters import Shaper, TokenBucket, default_burst
from vnet_router.datapath.classify import classify_udp
from vnet_router.datapath.engine import Engine, TapPort
from vnet_router.model.tables import DELIVER, IN, OUT, SWITCH, LinkCtx, Snapshot, Tables, VLink

log = logging.getLogger(__name__)

BATCH = 64                  # frames read per readiness event and socket (fairness between fds)
RXBUF = 65536 + 64
MIN_METER_RATE = 8000       # bit/s: a meter never runs at 0 (a TM minimum may be 0)
_LEN = struct.Struct("!H")


class Datapath:
    """The core composed with an engine (see the module docstring)."""

    def __init__(self, tables: Tables, engine, loop: asyncio.AbstractEventLoop | None = None,
                 clock=time.monotonic, capture=None, *, on_control=None, on_port_closed=None,
                 on_fatal=None):
        self.tables = tables
        self.loop = loop or asyncio.get_event_loop()
        self.clock = clock
        self.snap: Compiled | None = None         # the entries frames are decided by
        self.ports: dict[tuple[str, str], TapPort] = {}
        self.meters: dict[tuple, tuple[VLink, object]] = {}     # key -> (its VLink, meter)
        self.txsocks: dict[tuple, socket.socket] = {}   # output key -> socket (kernel-shaped)
        self.tx: dict[int, socket.socket] = {}     # ifindex -> send socket
        self.udp: dict[tuple, socket.socket] = {}  # local (ip, port) -> socket
        self._buf = bytearray(RXBUF)
        self._view = memoryview(self._buf)
        self._reading: set[int] = set()
        self.drops = tables.drops
        self.ignored = tables.ignored
        self.vnet_drops: Counter[tuple[str, str]] = Counter()     # (vNet, reason) -> frames
        # the TAP capture (``tapcap.TapCapture``; its owner closes it after ``close``): ports
        # ``add_port`` attaches get ``capture``, and the engine takes their frames from its
        # ring -- only an engine that walks that ring may have one, or the frames the program
        # takes would be lost
        if capture is not None and not engine.capabilities.walks_capture:
            raise ValueError(f"{engine.__name__} does not walk the TAP capture ring")
        self.capture = capture
        self.engine: Engine = engine(self)
        # VLI 0: on_control(link ctx, frame view, payload start, length) -> taken?  The node's
        # is a ``dispatch.ControlDispatch``; None: every VLI 0 frame is the ``control`` drop.
        # Engines hand the frames to ``control`` (``copp.ControlQueues``: known neighbours
        # first, bounded), which calls it in the loop
        self.on_control = on_control
        self.control = ControlQueues(self.loop, on_control, self.drop)
        # called with the port when a library endpoint's application closed its end (EOF)
        self.on_port_closed = on_port_closed
        # called in the loop thread with a message when the datapath can no longer forward
        # (the node then stops with exit status 1, so a supervisor restarts it)
        self.on_fatal = on_fatal

    @property
    def name(self) -> str:
        """The engine's label for ``show``, metrics and logs (``reference``, ``fast``,
        ``kernel``; the kernel engine says ``fast`` once its tier stopped).  Nothing chooses
        behaviour by it: see ``Capabilities``."""
        return self.engine.name

    # -- set-up --------------------------------------------------------------------------------

    def add_port(self, vnet: str, name: str, fd: int) -> TapPort:
        port = TapPort(vnet, name, fd)
        if self.capture is not None:
            port.capture = self.capture.attach(port)
        self.ports[(vnet, name)] = port
        return port

    def open(self):
        """Open the substrate sockets the tables need and install the first snapshot."""
        snap = self.tables.compile()
        self._sync_sockets(snap)
        self.install(snap)
        self._start_readers()
        for port in self.ports.values():
            self.tap_reader(port)
        log.info("datapath: %s, %d substrate interfaces, %d udp sockets, %d logical "
                 "interfaces", self.name, len(snap.ifaces), len(self.udp), len(self.ports))

    def reconfigure(self, add: dict[tuple[str, str], int], remove: list[tuple[str, str]]):
        """Swap to the tables' current configuration in one step of the event loop: open the
        sockets it needs, attach and detach TAPs, install the new snapshot, close what is no
        longer needed.  No frame is processed half-way through."""
        snap = self.tables.compile()
        for key in remove:
            port = self.ports.pop(key, None)
            if port is not None:
                port.closed = True              # gone: not read again
                self.tap_reader(port)
            if port is not None and port.capture is not None:
                self.capture.detach(port)
        for (vnet, name), fd in add.items():
            self.tap_reader(self.add_port(vnet, name, fd))
        self._sync_sockets(snap)
        self.install(snap)
        self._start_readers()
        for port in self.ports.values():
            self.resume_port(port)

    def open_sockets(self, snap: Snapshot):
        """Open (not yet use) the sockets ``snap`` needs; a reload calls it before the swap so
        the swap itself cannot fail on a socket."""
        self._sync_sockets(snap, close=False)

    def _sync_sockets(self, snap: Snapshot, close: bool = True):
        self._sync_eth(snap, close)
        self._sync_udp(snap, close)

    def _sync_eth(self, snap: Snapshot, close: bool):
        """Open the send sockets of new substrate interfaces and the engine's receive side (not
        read yet); with ``close``, close those of interfaces the snapshot no longer has (the
        engine first: it must stop reading before the send socket goes)."""
        self.engine.sync_substrate(snap, close)
        for ifindex, iface in snap.ifaces.items():
            if ifindex not in self.tx:
                self.tx[ifindex] = packet_io.open_tx(iface.ifname)
        if close:
            for ifindex in [i for i in self.tx if i not in snap.ifaces]:
                self.tx.pop(ifindex).close()

    def _sync_udp(self, snap: Snapshot, close: bool):
        for local in snap.udp:
            if local not in self.udp:
                fam = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
                s = socket.socket(fam, socket.SOCK_DGRAM)
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                    s.bind(local)
                    s.setblocking(False)
                except OSError:
                    s.close()
                    raise
                self.udp[local] = s
        if close:
            for local in [k for k in self.udp if k not in snap.udp]:
                s = self.udp.pop(local)
                self.stop_reading(s.fileno())
                s.close()

    def read(self, fd: int, callback, *args):
        """Call ``callback(*args)`` in the loop whenever ``fd`` is readable (once per fd)."""
        if fd not in self._reading:
            self._reading.add(fd)
            self.loop.add_reader(fd, callback, *args)

    def stop_reading(self, fd: int):
        if fd in self._reading:
            self._reading.discard(fd)
            self.loop.remove_reader(fd)

    def _start_readers(self):
        """Read every substrate interface and UDP socket not read yet (the snapshot is in)."""
        self.engine.start()
        if not self.engine.capabilities.reads_udp:
            for local, s in self.udp.items():
                self.read(s.fileno(), self._on_udp, s, local)

    def install(self, snap: Snapshot):
        """Bind ``snap`` to the ports, meters and sockets the datapath owns (``entries.bind``)
        and swap the result in: one assignment, then the engine compiles its own tables from
        it.  A shaper whose link is no longer shaped here sends what it held."""
        released: list[tuple[tuple, Shaper]] = []
        compiled = entries.bind(snap, self.ports, self._meter(released), self.txsocks)
        for key in [k for k, (v, _m) in self.meters.items() if snap.vlinks.get(k) is not v]:
            del self.meters[key]
        for e in compiled.inputs.values():
            if e.port is not None:
                lead = snap.leads[e.key]
                e.port.learned.configure(lead.learned_max, lead.learned_ageing, self.clock)
        for name, port in self.ports.items():
            port.out = compiled.port_out.get(name)
            if port.out is not None:
                port.max_frame = port.out.ctx.payload_mtu
        self.snap = compiled
        self.engine.install(compiled)
        for key, shaper in released:
            out = compiled.outputs.get(key)
            frames = [f for f, _n in shaper.queue]
            shaper.queue.clear()
            for payload, port in frames:
                self._send(out, payload, port)
            for port in self.ports.values():
                if port.paused and port.out is out:
                    self.resume_port(port)

    def _meter(self, released: list):
        """``meter(v, ctx, queue)`` for ``entries.bind``: the token bucket (input) or shaper
        (output) ``v`` runs at its current rate -- the one it had, retuned, while ``v`` stays
        metered -- or None; a shaper no longer needed goes to ``released``."""
        def meter(v: VLink, ctx: LinkCtx, queue: int):
            key = v.key
            held = self.meters.get(key)
            old = held[1] if held is not None and held[0] is v else None
            rate = v.rate
            if not self._metered(v):
                self.meters.pop(key, None)
                if isinstance(old, Shaper):
                    released.append((key, old))
                return None
            bps = max(rate.current, MIN_METER_RATE)
            burst = rate.burst or default_burst(bps, ctx.mtu)
            if v.direction == IN:
                if isinstance(old, TokenBucket):
                    old.set_rate(bps, burst)
                    m = old
                else:
                    m = TokenBucket(bps, burst, self.clock)
            elif isinstance(old, Shaper):
                old.bucket.set_rate(bps, burst)
                old.limit = queue
                m = old
            else:
                m = Shaper(TokenBucket(bps, burst, self.clock), queue)
            self.meters[key] = (v, m)
            return m
        return meter

    def _metered(self, v: VLink) -> bool:
        """``v`` has a meter here: it has a rate, and HTB does not shape it (an output with a
        kernel-shaped socket)."""
        return v.rate.max is not None and not (v.direction == OUT and v.key in self.txsocks)

    def meter_of(self, key) -> TokenBucket | Shaper | None:
        """The meter virtual link ``key`` runs at (None: unmetered, or no such link)."""
        e = self.snap.entry(key) if self.snap is not None else None
        return e.meter if e is not None else None

    def set_rate(self, v: VLink):
        """The Traffic Manager changed ``v.rate``: the meter follows its current rate.  Only a
        link that became metered or unmetered gets new entries (rare: a rate change retunes
        the same bucket)."""
        e = self.snap.entry(v.key) if self.snap is not None else None
        if e is None or e.vlink is not v:
            return
        metered = self._metered(v)
        if metered != (e.meter is not None):
            self.install(self.snap.model)
        elif metered:
            self._meter([])(v, e.ctx, e.queue if v.direction == OUT else 0)
            self.engine.retune(e)

    def kernel_shaped(self, v: VLink, sock: socket.socket):
        """From now on output ``v`` is shaped by the kernel (HTB class chosen by ``sock``'s
        SO_PRIORITY): frames the user-space shaper still holds go out first, on ``sock``."""
        self.engine.flush_tx()
        self.txsocks[v.key] = sock
        if self.snap is not None:
            self.install(self.snap.model)

    def kernel_unshaped(self, v: VLink):
        """Output ``v`` is no longer shaped by the kernel: its socket closes."""
        sock = self.txsocks.pop(v.key, None)
        if sock is not None:
            if self.snap is not None:
                self.install(self.snap.model)
            sock.close()

    def is_kernel_shaped(self, key) -> bool:
        return key in self.txsocks

    def close(self):
        self.engine.close()
        self.control.clear()
        for s in self.udp.values():
            self.stop_reading(s.fileno())
            s.close()
        for port in self.ports.values():
            port.closed = True
            self.tap_reader(port)
        for s in self.tx.values():
            s.close()
        for sock in self.txsocks.values():
            sock.close()
        self.txsocks.clear()
        self.tx.clear(), self.udp.clear()

    def stats(self) -> dict[str, int]:
        return self.engine.stats()

    def sync_counters(self):
        """Bring in counts kept outside Python (kernel maps) before a read."""
        self.engine.sync_counters()

    def tier_of(self, key) -> str:
        """``kernel`` if the kernel tier forwards input virtual link ``key``, else ``engine``."""
        return self.engine.tier_of(key)

    # -- receive -------------------------------------------------------------------------------

    def process_eth(self, ifindex: int, frame, tci: int | None):
        """Decide and act on one substrate frame received on ``ifindex`` (the engine's way;
        tests feed frames here)."""
        self.engine.process_eth(ifindex, frame, tci)

    def flush(self):
        """Send frames the engine holds for a batched send; counters up to date; waiting VLI 0
        frames handed to the control plane (tests: the datapath has nothing left to do)."""
        self.engine.flush()
        if self.on_control is not None:
            self.control.serve()

    def set_control_peers(self, peers: dict[str, set[bytes]]):
        """The control plane's known neighbours: substrate link id -> their MACs (bytes).  On
        a multiaccess link their VLI 0 frames go ahead of the rest's (``copp``); p2p and UDP
        links' frames are known by the link lookup.  Called when the set changes."""
        self.control.set_peers(peers)
        self.engine.set_peers(peers)

    @property
    def control_peers(self) -> dict[str, frozenset]:
        """What ``set_control_peers`` was last given."""
        return self.control.peers

    def offer_control(self, ctx: LinkCtx, view, n: int, start: int, length: int):
        """VLI 0 frame ``view[:n]`` of link ``ctx``: queued for the control plane (``copp``),
        or counted by the reason it was refused for (no control plane, or a payload no
        receiver would take, ``wire.control.plausible``: ``control``)."""
        if self.on_control is None or not ctlmsg.plausible(view[start:start + length]):
            self.drop("control", ctx, None)
            return
        src = bytes(view[6:12]) if ctx.kind != "udp" else None
        why = self.control.offer(ctx, src, bytes(view[:n]), start, length)
        if why is not None:
            self.drop(why, ctx, None)

    def process_udp(self, local: tuple, remote: tuple, datagram):
        """Decide and act on one UDP tunnel datagram (the engine's way; tests feed here)."""
        self.engine.process_udp(local, remote, datagram)

    def _on_udp(self, sock: socket.socket, local: tuple):
        """UDP tunnel links of an engine that does not read them itself (the reference)."""
        self.engine.flush_tx()
        buf, view = self._buf, self._view
        for _ in range(BATCH):
            try:
                n, addr = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("receive error on udp %s: %s", local, e)
                return
            self.receive(self.snap, classify_udp(self.snap, local, addr[:2], view[:n]), view, n)

    def receive(self, snap: Snapshot, verdict, view: memoryview, n: int):
        """Act on one classified frame (steps 4-5 of the receive rule): the semantics every
        engine's decisions are compared with."""
        reason, ctx, e, start, length = verdict
        if ctx is not None:
            st = ctx.state
            st.rx_packets += 1
            st.rx_bytes += n
        if reason is not None:
            if reason == "control":
                self.offer_control(ctx, view, n, start, length)
                return
            if reason == "not_member":
                self.ignore(reason, ctx)
                return
            self.drop(reason, ctx, None)
            return
        v = e.vlink
        if e.meter is not None and not e.meter.take(length):
            self.drop("policed", ctx, v)
            return
        if e.action == DELIVER:
            port = e.port
            if port is None:
                self.drop("tap_error", ctx, v)
                return
            if ctx.kind == "multiaccess" and length >= 12:
                src = bytes(view[6 + start:12 + start])
                outer = bytes(view[6:12])
                port.learned.learn(src, outer)
            try:
                os.write(port.fd, view[start:start + length])
            except OSError:
                self.drop("tap_error", ctx, v)
                return
            v.packets += 1
            v.bytes += length
            port.tx_packets += 1
            port.tx_bytes += length
        elif e.action == SWITCH:
            v.packets += 1
            v.bytes += length
            self.output(e.out, bytes(view[start:start + length]))
        else:
            self.drop("vli_drop", ctx, v)

    def drop(self, reason: str, ctx: LinkCtx | None, v: VLink | None):
        """Count a lost frame: globally, on its substrate link, on its virtual link and under
        that link's vNet."""
        self.count_drops(reason, 1, ctx, v)

    def count_drops(self, reason: str, n: int, ctx: LinkCtx | None = None,
                    v: VLink | None = None, vnet: str | None = None):
        """Count ``n`` frames lost for ``reason`` as ``drop`` counts one: the one place drops
        are counted, for engines that count them elsewhere (C arrays, BPF maps) and add them
        here at sync.  ``vnet``: the vNet of drops no virtual link stands for (``v``'s own
        otherwise; a VLI configured to drop has vNet ``-``)."""
        self.drops[reason] += n
        if ctx is not None:
            ctx.state.drops[reason] += n
        if v is not None:
            v.drop(reason, n)
            vnet = v.vnet
        if vnet is not None:
            self.vnet_drops[(vnet, reason)] += n

    def ignore(self, reason: str, ctx: LinkCtx):
        """Count a frame that was not for this node (``tables.IGNORE_REASONS``): no fault."""
        self.ignored[reason] += 1
        ctx.state.ignored[reason] += 1

    # -- transmit ------------------------------------------------------------------------------

    def output(self, out: OutEntry, payload: bytes, port: TapPort | None = None):
        """Send ``payload`` on output virtual link ``out``: MTU, shaper, encapsulation, socket
        (the reference engine's way; the compiled engine's for outputs its C path cannot
        take)."""
        ctx = out.ctx
        if len(payload) > ctx.payload_mtu:
            self.drop("too_big", ctx, out.vlink)
            return
        shaper = out.meter
        if shaper is not None:
            verdict = shaper.offer((payload, port), len(payload))
            if verdict == 0:
                if port is not None and shaper.depth >= shaper.limit:
                    self.pause_port(port)
                if not shaper.scheduled:
                    self._schedule(out.vlink, shaper)
                return
            if verdict < 0:
                self.drop("queue_full", ctx, out.vlink)
                return
        self._send(out, payload, port)

    def _send(self, out: OutEntry | None, payload: bytes, port: TapPort | None):
        if out is None:                     # its link went with a reload
            return
        ctx, v = out.ctx, out.vlink
        kind = ctx.kind
        try:
            if kind == "p2p":
                (out.txsock or self.tx[ctx.ifindex]).send(out.encap + _LEN.pack(len(payload)) +
                                                          payload)
            elif kind == "multiaccess":
                dst = out.dst or wire.BROADCAST_MAC
                if out.dst is None and port is not None and not payload[0] & 1:
                    dst = port.learned.lookup(payload[:6], wire.BROADCAST_MAC)
                (out.txsock or self.tx[ctx.ifindex]).send(dst + out.encap +
                                                          _LEN.pack(len(payload)) + payload)
            else:
                self._udp_sock(ctx).sendto(out.encap + payload, ctx.remote)
        except (BlockingIOError, OSError):
            self.drop("send_error", ctx, v)
            return
        v.packets += 1
        v.bytes += len(payload)
        st = ctx.state
        st.tx_packets += 1
        st.tx_bytes += len(payload)

    def send_control(self, ctx: LinkCtx, payload: bytes, dst: bytes | None = None) -> bool:
        """Send a control message on VLI 0 of substrate link ``ctx`` (``dst``: multiaccess
        destination MAC, default broadcast)."""
        try:
            if ctx.kind == "p2p":
                self.tx[ctx.ifindex].send(entries.encap(ctx, wire.VLI_CONTROL) +
                                          _LEN.pack(len(payload)) + payload)
            elif ctx.kind == "multiaccess":
                self.tx[ctx.ifindex].send((dst or wire.BROADCAST_MAC) +
                                          entries.encap(ctx, wire.VLI_CONTROL) +
                                          _LEN.pack(len(payload)) + payload)
            else:
                self._udp_sock(ctx).sendto(entries.encap(ctx, wire.VLI_CONTROL) + payload,
                                           ctx.remote)
        except (BlockingIOError, OSError):
            self.drop("send_error", ctx, None)
            return False
        st = ctx.state
        st.tx_packets += 1
        st.tx_bytes += len(payload)
        return True

    def _udp_sock(self, ctx: LinkCtx) -> socket.socket:
        """The socket UDP link ``ctx`` sends on; a link waiting for its underlay (no socket
        opened: ``Tables.underlay_down``) raises OSError, counted ``send_error`` as a send
        whose route went."""
        sock = self.udp.get(ctx.local)
        if sock is None:
            raise OSError(f"substrate link {ctx.id} is down (no socket)")
        return sock

    def _schedule(self, v: VLink, shaper: Shaper):
        delay = shaper.next_departure()
        if delay is None:
            shaper.scheduled = False
            return
        shaper.scheduled = True
        self.loop.call_later(max(delay, 0.0005), self._drain, v, shaper)

    def _drain(self, v: VLink, shaper: Shaper):
        self.engine.flush_tx()
        shaper.scheduled = False
        out = self.snap.outputs.get(v.key) if self.snap is not None else None
        if out is None or out.meter is not shaper:      # removed by a reload meanwhile
            for _ in shaper.queue:
                self.drop("queue_full", None, v)
            shaper.queue.clear()
            return
        for payload, port in shaper.release():
            self._send(out, payload, port)
        for port in self.ports.values():
            if port.paused and port.out is out and shaper.depth < shaper.limit // 2 + 1:
                self.resume_port(port)
        if shaper.depth:
            self._schedule(v, shaper)

    def pause_port(self, port: TapPort):
        """Stop reading ``port`` (its output's queue is full).  Idempotent: the compiled
        engine's ring thread sets ``paused`` at once and has this run later in the loop."""
        port.paused = True
        self.tap_reader(port)

    def port_closed(self, port: TapPort):
        """A library endpoint's application closed its end (the engine read EOF)."""
        port.closed = True
        self.tap_reader(port)
        if self.on_port_closed is not None:
            self.on_port_closed(port)

    def resume_port(self, port: TapPort):
        if port.paused and not port.closed:
            port.paused = False
            self.tap_reader(port)

    def tap_reader(self, port: TapPort):
        """Read ``port``'s fd in the loop exactly while it is neither paused nor closed."""
        want = not port.paused and not port.closed
        if want and not port.reading:
            self.loop.add_reader(port.fd, self.engine.on_tap, port)
        elif port.reading and not want:
            self.loop.remove_reader(port.fd)
        port.reading = want
