"""The demultiplexing rule (DESIGN section 3, steps 2-4): where the VLI is looked up.

``classify_eth`` / ``classify_udp`` take the compiled entries (:class:`~vnet_router.datapath.
entries.Compiled`) and one received frame and return ``(reason, link ctx, input entry, payload
offset, payload length)``.
``reason`` is None for a frame to act on, else the drop reason (or an ignore reason,
``tables.IGNORE_REASONS``: ``not_member``, a multiaccess frame of a vNet this node does not
host: its VLI is unknown here and it is not addressed to this node's MAC); link ctx / entry are
filled as far as the frame got.  They never raise on frame contents.  The reference datapath calls them
per frame; the compiled engine (``_fastpath.pyx``) implements the same rule in C on the same
snapshot, and the differential tests hold the two to the same answers.
"""
from __future__ import annotations

from vnet_router.datapath.entries import Compiled
from vnet_router.model.tables import LinkCtx
from vnet_router.wire import substrate as wire


def classify_eth(snap: Compiled, ifindex: int, frame, aux_tci: int | None):
    """Steps 2-4 of DESIGN section 3 for a frame received on ``ifindex``.

    ``aux_tci`` is the VLAN TCI the kernel stripped (PACKET_AUXDATA / ring header) or None;
    a tag still inline in the frame is read from the frame.
    """
    iface = snap.ifaces.get(ifindex)
    if iface is None:
        return "no_link", None, None, 0, 0
    view = memoryview(frame)
    try:
        dst, src, tag, off = wire.parse_l2(view, snap.ethertype)
    except wire.DecodeError as e:
        return ("short" if e.reason == "short" else "no_link"), None, None, 0, 0
    vid = tag.vid if tag is not None else (aux_tci & 0x0FFF if aux_tci is not None else None)
    if vid is None or vid == 0:           # untagged (or priority-tagged) -> multiaccess
        ctx = iface.multiaccess
        if ctx is None:
            return "no_link", None, None, 0, 0
    else:
        ctx = iface.p2p.get((vid, bytes(src)))
        if ctx is None:
            return ("bad_peer" if vid in iface.p2p_vids else "unknown_vlan"), None, None, 0, 0
    return _lookup_vli(snap, ctx, view, off)


def _lookup_vli(snap: Compiled, ctx: LinkCtx, view, off: int):
    try:
        vli, start, length = wire.parse_substrate(view, off)
    except wire.DecodeError as e:
        return e.reason, ctx, None, 0, 0
    if length > ctx.payload_mtu:
        return "oversize", ctx, None, start, length
    v = snap.rx[ctx.id].get(vli)
    if v is None:
        if vli == wire.VLI_CONTROL:
            return "control", ctx, None, start, length
        if ctx.kind == "multiaccess" and view[0:6] != ctx.local_mac:
            # flooded on the LAN for a vNet this node does not host: not ours, not a fault
            return "not_member", ctx, None, start, length
        return "unknown_vli", ctx, None, start, length
    return None, ctx, v, start, length


def classify_udp(snap: Compiled, local: tuple, remote: tuple, datagram):
    """Demultiplex a UDP tunnel datagram received on ``local`` from ``remote``."""
    ctx = snap.udp.get(local, {}).get(remote)
    if ctx is None:
        return "no_link", None, None, 0, 0
    view = memoryview(datagram)
    try:
        vli = wire.parse_udp(view)
    except wire.DecodeError as e:
        return e.reason, ctx, None, 0, 0
    length = len(view) - wire.UDP_SUBSTRATE_HLEN
    if length > ctx.payload_mtu:
        return "oversize", ctx, None, wire.UDP_SUBSTRATE_HLEN, length
    v = snap.rx[ctx.id].get(vli)
    if v is None:
        return ("control" if vli == wire.VLI_CONTROL else "unknown_vli"), ctx, None, \
            wire.UDP_SUBSTRATE_HLEN, length
    return None, ctx, v, wire.UDP_SUBSTRATE_HLEN, length
