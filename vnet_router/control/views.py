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


def node_hex(node: int) -> str:
    """A node id as every view, log line and metric label shows it: 8 hex digits."""
    return f"{node:08x}"


def _peer(cp, peer) -> dict:
    """``peer`` (link, MAC), and the node id and name its HELLOs gave (None: not heard)."""
    n = cp.neighbours.get(peer)
    return {"peer": peer_str(peer), "peer_id": node_hex(n["node"]) if n else None,
            "peer_name": n["name"] if n else None}


def allocations(cp) -> dict:
    """The Traffic Manager's allocations, the VBM's, members, neighbours (``alloc``).  Nodes
    are named by id (8 hex digits) and name: the node's own, a peer's and the VBM's from their
    HELLOs."""
    tm = cp.tm
    outs = []
    for (peer, vli), o in sorted(tm.outputs.items(), key=lambda kv: (kv[0][0][0], kv[0][1])):
        outs.append({"substrate_link": peer[0], **_peer(cp, peer), "vli": vli,
                     "vnet": cp.vnet_names.get(o.vnet, str(o.vnet)), "min": o.min,
                     "current": o.current, "max": o.max, "demand": o.want,
                     "state": o.state.name})
    ins = []
    for (peer, vli), i in sorted(tm.inputs.items(), key=lambda kv: (kv[0][0][0], kv[0][1])):
        ins.append({"substrate_link": peer[0], **_peer(cp, peer), "vli": vli,
                    "vnet": cp.vnet_names.get(i.vnet, str(i.vnet)), "min": i.min,
                    "current": i.current, "max": i.max})
    aggs = {cp.vnet_names.get(v, str(v)): {"aggregate": a.rate, "used": tm.input_sum(v),
                                           "minimum": tm.input_min_sum(v)}
            for v, a in sorted(tm.aggregates.items())}
    return {
        "node": cp.cfg.node.name, "node_id": node_hex(cp.node_id),
        "vbm_peer": peer_str(tm.vbm_peer) if tm.vbm_peer else None,
        "vbm_link": cp.cfg.tm_settings.vbm_link,
        "vbm_reachable": vbm_reachable(cp),
        "vbm_node": _vbm_node(cp),
        "outputs": outs, "inputs": ins, "aggregates": aggs,
        "dynamic": [dynamic(d) for d in cp.dynamic.values()],
        "members": cp.members.view(),
        "neighbours": [{"peer": peer_str(p), "name": n["name"], "node": node_hex(n["node"]),
                        "role": n["role"], "incarnation": n["incarnation"]}
                       for p, n in cp.neighbours.items()],
        "vbm": _vbm(cp),
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


def _vbm_node(cp) -> dict | None:
    """The LAN's VBM as this node knows it: itself, the neighbour whose HELLO said VBM, or
    None (not heard yet)."""
    if cp.vbm is not None:
        return {"id": node_hex(cp.node_id), "name": cp.cfg.node.name, "here": True}
    n = cp.neighbours.get(cp.tm.vbm_peer) if cp.tm.vbm_peer else None
    if n is None:
        return None
    return {"id": node_hex(n["node"]), "name": n["name"], "here": False}


def _vbm(cp) -> dict | None:
    """The VBM's view, each node with its name (from its HELLOs; this node's own)."""
    if cp.vbm is None:
        return None
    view = cp.vbm.view()
    names = {node_hex(n["node"]): n["name"] for _p, n in cp.neighbours.items()}
    names[node_hex(cp.node_id)] = cp.cfg.node.name
    for x in view["vnets"].values():
        for node, y in x["nodes"].items():
            y["name"] = names.get(node)
    return view


def peer_str(peer) -> str:
    link_id, mac = peer
    return f"{link_id}/{wire.mac_to_str(mac)}" if mac else str(link_id)
