"""What the control plane shows: ``status()['control']`` and ``alloc`` (``vnetctl``, metrics).

Functions of a running ``plane.ControlPlane``; they read, never change it.
"""
from __future__ import annotations

from vnet_router.wire import substrate as wire

# refusals counted by the transport and by the plane (with the guard's, in ``refused``)
REFUSALS = ("replay", "replay_restart", "old_incarnation", "bad_seq", "limit_peer", "limit_vnet")


def dynamic(d) -> dict:
    """``d`` as ``alloc`` and ``vlink add`` show it."""
    return {"vnet": d.vnet, "name": d.name, "substrate_link": d.link,
            "peer": peer_str(d.peer), "in_vli": d.in_vli, "out_vli": d.out_vli,
            "min": d.min, "max": d.max, "upstream": d.upstream, "state": d.fsm.state.name}


def status(cp) -> dict:
    """``status()['control']``: the protocol's counters (flat, by event), plus
    ``messages`` (type -> outcome -> count) and ``allocations`` (as ``alloc``)."""
    messages: dict[str, dict[str, int]] = {}
    for (kind, outcome), n in sorted(cp.messages.items()):
        messages.setdefault(kind, {})[outcome] = n
    refused = dict(cp.guard.refused)
    for reason in REFUSALS:
        refused[reason] = cp.counters.get(reason, 0)
    return {**dict(sorted(cp.counters.items())), "messages": messages,
            "refused": refused, "unauthenticated_links": cp.guard.unauthenticated(),
            "allocations": allocations(cp)}


def allocations(cp) -> dict:
    """The Traffic Manager's allocations, the VBM's, members, neighbours (``alloc``)."""
    tm = cp.tm
    outs = []
    for (peer, vli), o in sorted(tm.outputs.items(), key=lambda kv: (kv[0][0][0], kv[0][1])):
        outs.append({"substrate_link": peer[0], "peer": peer_str(peer), "vli": vli,
                     "vnet": cp.vnet_names.get(o.vnet, str(o.vnet)), "min": o.min,
                     "current": o.current, "max": o.max, "demand": o.want,
                     "state": o.state.name})
    ins = []
    for (peer, vli), i in sorted(tm.inputs.items(), key=lambda kv: (kv[0][0][0], kv[0][1])):
        ins.append({"substrate_link": peer[0], "peer": peer_str(peer), "vli": vli,
                    "vnet": cp.vnet_names.get(i.vnet, str(i.vnet)), "min": i.min,
                    "current": i.current, "max": i.max})
    aggs = {cp.vnet_names.get(v, str(v)): {"aggregate": a.rate, "used": tm.input_sum(v),
                                           "minimum": tm.input_min_sum(v)}
            for v, a in sorted(tm.aggregates.items())}
    return {
        "node": cp.cfg.node.name, "node_id": f"{cp.node_id:08x}",
        "vbm_peer": peer_str(tm.vbm_peer) if tm.vbm_peer else None,
        "vbm_link": cp.cfg.tm_settings.vbm_link,
        "vbm_reachable": vbm_reachable(cp),
        "outputs": outs, "inputs": ins, "aggregates": aggs,
        "dynamic": [dynamic(d) for d in cp.dynamic.values()],
        "members": cp.members.view(),
        "neighbours": [{"peer": peer_str(p), **{k: v for k, v in n.items() if k != "seen"}}
                       for p, n in cp.neighbours.items()],
        "vbm": cp.vbm.view() if cp.vbm is not None else None,
        "kernel_shaping": cp.kshaping.rates() if cp.kshaping is not None else None,
        "counters": dict(sorted(cp.counters.items())),
    }


def vbm_reachable(cp) -> bool:
    """Is the VBM this node expects (``[tm] vbm_link``) heard: a HELLO with role VBM from it
    on that link within ``[tm] neighbour_timeout`` (on a keyed link: one that authenticated;
    with ``vbm_public_key``: one it signed)?  False where no VBM is expected."""
    peer = cp.tm.vbm_peer
    if not cp.cfg.tm_settings.vbm_link or peer is None:
        return False
    n = cp.neighbours.get(peer)
    return n is not None and n["role"] == "VBM"


def peer_str(peer) -> str:
    link_id, mac = peer
    return f"{link_id}/{wire.mac_to_str(mac)}" if mac else str(link_id)
