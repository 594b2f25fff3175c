"""The interface between the datapath's core (``core.Datapath``) and its engines.

* ``Engine``: what the core asks of an engine -- the fourteen methods every engine has;
* ``Capabilities``: what an engine declares beyond them (it reads the UDP tunnel sockets
  itself, walks the TAP capture's ring, forwards in the kernel).  The core and the builders
  (``select``) choose by these, never by an engine's ``name``, which is a label for ``show``,
  metrics and logs;
* ``TapPort``: a logical interface, as the core keeps it and the engines read it.

The engines: ``reference.PyEngine`` (pure Python, the definition), ``_fastpath.CEngine``
(compiled, the default), ``ktier.KernelEngine`` (the compiled engine with the kernel tier).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from vnet_router.datapath.learn import LearnTable
from vnet_router.datapath.entries import Compiled, InEntry, OutEntry
from vnet_router.model.tables import Snapshot


class TapPort:
    """A logical interface: TAP fd + its output virtual link (+ learned outer MACs)."""

    __slots__ = ("vnet", "name", "fd", "out", "max_frame", "learned", "paused", "closed",
                 "reading", "capture", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes")

    def __init__(self, vnet: str, name: str, fd: int):
        self.vnet, self.name, self.fd = vnet, name, fd
        self.out: OutEntry | None = None        # its output virtual link (``install``)
        self.max_frame = 0
        self.learned = LearnTable()             # inner MAC -> outer MAC (multiaccess)
        self.paused = False
        self.closed = False     # a library endpoint whose application went away
        self.reading = False    # the event loop reads fd (``Datapath.tap_reader``)
        self.capture = None     # (capture id, map key) when the TAP capture takes its frames
        self.rx_packets = self.rx_bytes = self.tx_packets = self.tx_bytes = 0


@dataclass(frozen=True)
class Capabilities:
    """What an engine does beyond the ``Engine`` methods every engine has.  A class attribute
    of each engine (so a builder can ask before building one: ``select``); an engine whose
    means change at run time (the kernel tier failing) shows it in its own instance's."""

    reads_udp: bool = False       # reads the UDP tunnel sockets itself (else the core does)
    walks_capture: bool = False   # walks the TAP capture's ring (``tapcap.TapCapture``): the
    #                               only kind of engine a capture may be given to
    kernel_tier: bool = False     # forwards some input virtual links in the kernel, so
    #                               ``tier_of`` can answer ``kernel``


def engine_tier(engine, key) -> str:
    """``Engine.tier_of`` of an engine without a kernel tier: every link is the engine's."""
    return "engine"


def delegate(*names: str, to: str):
    """Class decorator: each method in ``names`` calls the same method of the object in
    attribute ``to`` -- composition without a hand-written forwarder per method, and the
    methods stay visible on the class (the interface tests, ``help``)."""
    def method(name):
        def call(self, *args, **kw):
            return getattr(getattr(self, to), name)(*args, **kw)
        call.__name__ = call.__qualname__ = name
        call.__doc__ = f"``self.{to}.{name}``"
        return call

    def decorate(cls):
        for name in names:
            setattr(cls, name, method(name))
        return cls
    return decorate


class Engine(Protocol):
    """What the core asks of an engine.  An engine is built with the core (``engine(core)``)
    and keeps it to call back; it reads what the core owns but changes only its own state and
    the counters it is given.

    Every engine has all fourteen methods: set-up ``sync_substrate``, ``start``, ``install``,
    ``retune``, ``set_peers``, ``close``; frames ``process_eth``, ``process_udp``, ``on_tap``,
    ``flush``, ``flush_tx``; reading ``sync_counters``, ``stats``, ``tier_of``.  Besides them:
    ``name`` (a label: ``reference``, ``fast``, ``kernel``) and ``capabilities``."""

    name: str
    capabilities: Capabilities

    def sync_substrate(self, snap: Snapshot, close: bool) -> None:
        """Open the receive side of the substrate interfaces ``snap`` has and this engine does
        not read yet (sockets, rings; not read until ``start``); with ``close``, close those of
        interfaces ``snap`` no longer has."""

    def start(self) -> None:
        """Read every substrate interface opened so far (the snapshot is installed)."""

    def install(self, snap: Compiled) -> None:
        """Take ``snap`` (the core's entries: meters, headers, ports bound) as the tables the
        next frame is decided by.  Also called when what the engine compiled from an entry
        changed (metered or not, its send socket): the core bound a new ``Compiled``."""

    def retune(self, entry: InEntry | OutEntry) -> None:
        """``entry``'s meter got a new rate (``Datapath.set_rate``): follow it."""

    def process_eth(self, ifindex: int, frame, tci: int | None) -> None:
        """Decide and act on one substrate frame (``tci``: the VLAN TCI the kernel stripped,
        None if none).  Frames may be held for a batched send until ``flush``."""

    def process_udp(self, local: tuple, remote: tuple, datagram) -> None:
        """Decide and act on one UDP tunnel datagram received on ``local`` from ``remote``.
        An engine with ``capabilities.reads_udp`` reads the tunnel sockets itself; else the
        core does and calls this."""

    def flush(self) -> None:
        """Send what is held and bring every counter up to date."""

    def flush_tx(self) -> None:
        """Send what is held: the core is about to send on the same sockets itself."""

    def on_tap(self, port: TapPort) -> None:
        """``port``'s fd is readable: read a batch and send it on its output virtual link."""

    def sync_counters(self) -> None:
        """Bring in counts kept outside Python (kernel maps) before a read."""

    def close(self) -> None:
        """Stop reading and close what ``sync_substrate`` opened."""

    def stats(self) -> dict[str, int]:
        """Engine-specific counters for the exit log and ``show``."""

    def set_peers(self, peers: dict) -> None:
        """The control plane's known neighbours (link id -> their MACs): an engine that sorts
        VLI 0 before its queues puts theirs first (the classifier's map); others ignore it."""

    def tier_of(self, key) -> str:
        """``kernel`` if the kernel forwards the frames of input virtual link ``key``, else
        ``engine`` (always ``engine`` without ``capabilities.kernel_tier``: ``engine_tier``)."""
