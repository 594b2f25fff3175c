"""The compiled entries every engine decides frames by: one immutable :class:`Compiled` per
table generation.

The model's :class:`~vnet_router.model.tables.Snapshot` says which virtual links exist, what
each does and where it leads, in the model's terms (keys, logical interface names).  ``bind``
joins it with what only the datapath owns -- the logical interfaces' ports, the meters (token
buckets and shapers, whose state lives across generations), the sockets of outputs the kernel
shapes -- into typed entries:

* :class:`OutEntry` for an output virtual link: its substrate link context, the precomputed
  encapsulation, its fixed outer destination (multiaccess), its own send socket when HTB
  shapes it, its shaper;
* :class:`InEntry` for an input virtual link: its action, the port it delivers to or the
  :class:`OutEntry` it switches to, its policer.

Entries are frozen and the mappings read-only: nothing a frame might be looking at changes
under it.  What does change is state, never structure: counters (the model's ``VLink`` and
``LinkState``), bucket credit and queued frames (the meters), a port's learned MACs.  A change
of structure (a reload, a link that becomes metered, an output HTB takes over) binds a new
``Compiled`` and the datapath swaps it in with one assignment.  This module does no I/O and
writes nothing into the model.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from vnet_router.model.tables import IN, OUT, LinkCtx, Snapshot, VLink

_LEN = struct.Struct("!H")


@dataclass(frozen=True, slots=True, eq=False)
class OutEntry:
    """An output virtual link, as the transmit path needs it."""

    vlink: VLink                # configuration and counters (the model's)
    ctx: LinkCtx                # the substrate link it leaves on
    encap: bytes                # precomputed header up to the VLI (multiaccess: without dst)
    dst: bytes | None           # multiaccess: fixed outer destination (else learned/broadcast)
    txsock: object | None       # shaped by the kernel (HTB): its own send socket
    meter: object | None        # the user-space shaper (``meters.Shaper``), if it is shaped
    queue: int                  # the shaper's queue limit (frames)

    @property
    def key(self):
        return self.vlink.key


@dataclass(frozen=True, slots=True, eq=False)
class InEntry:
    """An input virtual link, as the receive path needs it."""

    vlink: VLink                # configuration and counters (the model's)
    ctx: LinkCtx                # the substrate link it arrives on
    action: int                 # tables.DELIVER / SWITCH / DROP
    port: object | None         # DELIVER: the logical interface (``core.TapPort``), if open
    out: OutEntry | None        # SWITCH: the output virtual link
    meter: object | None        # the policer (``meters.TokenBucket``), if it has a rate

    @property
    def key(self):
        return self.vlink.key


@dataclass(frozen=True, slots=True, eq=False)
class Compiled:
    """One table generation bound to the datapath: the snapshot's receive-path view plus the
    entries.  ``rx[link id][VLI]`` is what classification looks up."""

    model: Snapshot
    generation: int
    ethertype: int
    links: Mapping              # id -> LinkCtx
    ifaces: Mapping             # ifindex -> IfaceCtx
    udp: Mapping                # (local ip, port) -> {(remote ip, port): LinkCtx}
    vlinks: Mapping             # key -> VLink
    path_mtu: Mapping
    rx: Mapping                 # link id -> {VLI -> InEntry}
    inputs: Mapping             # key -> InEntry
    outputs: Mapping            # key -> OutEntry
    port_out: Mapping           # (vNet, name) -> OutEntry

    def entry(self, key) -> InEntry | OutEntry | None:
        return (self.inputs if key[2] == IN else self.outputs).get(key)


def encap(ctx: LinkCtx, vli: int) -> bytes:
    """Precomputed encapsulation prefix of an output virtual link (all but LEN and payload;
    multiaccess: without the destination MAC, chosen per frame)."""
    vli_bytes = _LEN.pack(vli)
    if ctx.kind == "p2p":
        return ctx.tx_header + vli_bytes
    if ctx.kind == "multiaccess":
        return ctx.tx_header[6:] + vli_bytes
    return vli_bytes


def bind(snap: Snapshot, ports: Mapping, meter: Callable[[VLink, LinkCtx, int], object],
         txsocks: Mapping) -> Compiled:
    """The entries of ``snap``: ``ports`` maps (vNet, name) to the open logical interfaces,
    ``meter(vlink, ctx, queue)`` gives the meter a virtual link runs at now (None: unmetered),
    ``txsocks`` maps output keys to the sockets of kernel-shaped outputs."""
    ro = MappingProxyType
    outputs: dict[tuple, OutEntry] = {}
    for key, v in snap.vlinks.items():
        if key[2] == OUT:
            ctx = snap.links[v.link_id]
            queue = snap.queues.get(key, 256)
            outputs[key] = OutEntry(v, ctx, encap(ctx, v.vli), v.dst, txsocks.get(key),
                                    meter(v, ctx, queue), queue)
    inputs: dict[tuple, InEntry] = {}
    rx: dict[str, dict[int, InEntry]] = {lid: {} for lid in snap.links}
    for key, v in snap.vlinks.items():
        if key[2] != IN:
            continue
        ctx = snap.links[v.link_id]
        lead = snap.leads.get(key)
        port = ports.get(lead.port) if lead is not None and lead.port is not None else None
        out = outputs.get(lead.out) if lead is not None and lead.out is not None else None
        e = InEntry(v, ctx, v.action, port, out, meter(v, ctx, 0))
        inputs[key] = e
        rx[v.link_id][v.vli] = e
    port_out = {name: outputs[key] for name, key in snap.port_out.items() if key in outputs}
    return Compiled(snap, snap.generation, snap.ethertype, snap.links, snap.ifaces, snap.udp,
                    snap.vlinks, snap.path_mtu, ro({k: ro(d) for k, d in rx.items()}),
                    ro(inputs), ro(outputs), ro(port_out))
