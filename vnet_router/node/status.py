"""The ``show`` view of a node: tables and counters as plain JSON-able data.

Read by ``vnetctl show`` over the control socket and by the metrics collector; it reads the
datapath's plain counters (after ``sync_counters``: the kernel tier's arrive), it never changes
them (reading a learned-MAC table removes the
entries that have expired: see ``datapath/learn.py``).
"""
from __future__ import annotations

import time

from vnet_router.wire import substrate as wire
from vnet_router.model.tables import ACTION_NAMES


def _rate(r):
    return {"min": r.min, "max": r.max, "current": r.current}


def _learned(p, entries: bool):
    """The learned-MAC table of a logical interface on a multiaccess link (None elsewhere):
    its counters, and with ``entries`` every entry."""
    ctx = getattr(p.out, "ctx", None)
    if getattr(ctx, "kind", None) != "multiaccess":
        return None
    d = p.learned.stats()
    if entries:
        d["macs"] = [{"mac": wire.mac_to_str(mac), "outer": wire.mac_to_str(outer),
                      "age_seconds": round(age, 3)} for mac, outer, age in p.learned.entries()]
    return d


def _by_vnet(counts) -> dict:
    """(vNet, reason) -> n as {vNet: {reason: n}}, sorted, without zeros."""
    out: dict = {}
    for (vnet, reason), n in sorted(counts.items()):
        if n:
            out.setdefault(vnet, {})[reason] = n
    return out


def status(cfg, tables, dp, started: float, cp=None, learned: bool = False,
           underlay=None) -> dict:
    """The node's tables and counters; ``learned``: also list every learned MAC.
    ``underlay``: link id -> the state of a UDP link (``UnderlayWatch.status``); every other
    link is ``up`` (its interface was there at start)."""
    dp.sync_counters()
    snap = dp.snap
    links = []
    for s in cfg.substrate_links:
        ctx = snap.links[s.id]
        st = ctx.state
        d = {"id": s.id, "kind": s.kind, "mtu": ctx.mtu,
             "rx_packets": st.rx_packets, "rx_bytes": st.rx_bytes,
             "tx_packets": st.tx_packets, "tx_bytes": st.tx_bytes,
             "drops": {k: n for k, n in st.drops.items() if n},
             "ignored": {k: n for k, n in st.ignored.items() if n}}
        d.update(underlay(s.id) if underlay is not None and s.kind == "udp" else
                 {"state": "up"})
        if s.kind == "udp":
            d.update(local=f"{s.local[0]}:{s.local[1]}", remote=f"{s.remote[0]}:{s.remote[1]}")
        else:
            d.update(interface=s.interface, local_mac=wire.mac_to_str(ctx.local_mac))
        if s.kind == "p2p":
            d.update(peer_mac=wire.mac_to_str(s.peer_mac), vlan=s.vlan, priority=s.priority)
        links.append(d)
    vlinks = []
    for (link, vli, direction), v in sorted(tables.vlinks.items()):
        meter = dp.meter_of(v.key)
        depth = getattr(meter, "depth", 0)
        vlinks.append({"substrate_link": link, "vli": vli, "direction": direction,
                       "vnet": v.vnet, "action": ACTION_NAMES[v.action], "owner": v.owner,
                       "rate": _rate(v.rate), "packets": v.packets, "bytes": v.bytes,
                       "shaper": "kernel" if dp.is_kernel_shaped(v.key) else
                                 ("user" if meter is not None else "none"),
                       "queue_depth": depth, "drops": dict(v.drops),
                       # input: which tier forwards its frames (kernel: the eBPF program)
                       "tier": dp.tier_of(v.key) if direction == "in" else None,
                       # output: the path MTU (payload bytes) the downstream node reported
                       "path_mtu": tables.path_mtu.get((link, vli)) if direction == "out"
                       else None})
    ports = [{"vnet": p.vnet, "name": p.name, "namespace": cfg.vnet(p.vnet).namespace,
              "dynamic": (p.vnet, p.name) in getattr(cp, "dynamic", {}),
              "rx_packets": p.rx_packets, "rx_bytes": p.rx_bytes,
              "tx_packets": p.tx_packets, "tx_bytes": p.tx_bytes,
              "learned": _learned(p, learned)}
             for p in dp.ports.values()]
    return {
        "node": cfg.node.name, "config": cfg.path, "generation": snap.generation,
        "datapath": getattr(dp, "name", "reference"), "uptime_seconds": round(time.time() - started, 3),
        # frames each tier handled (kernel_frames: forwarded or dropped by the eBPF program)
        "datapath_stats": dp.stats(),
        "substrate_links": links, "virtual_links": vlinks,
        "vnets": [{"name": v.name, "id": v.id, "namespace": v.namespace} for v in cfg.vnets],
        "logical_interfaces": ports,
        "drops": {k: n for k, n in tables.drops.items()},
        # the drops of virtual links, by vNet and reason ("-": a VLI configured to drop)
        "vnet_drops": _by_vnet(dp.vnet_drops),
        # frames not for this node (no fault): not_member
        "ignored": {k: n for k, n in tables.ignored.items()},
        # control plane ([tm]/[vbm]): event counters, messages by type and outcome, allocations
        "control": cp.status() if cp is not None else None,
    }
