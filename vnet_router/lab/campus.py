"""A campus of several switches: trunks, and the VBM's LAN capacity.

A ``[[link]]`` whose two ends are switches is a trunk (``trunks.port_names`` names its
ports).  Its ``port_rate`` holds the egress of both ends (``switching.py`` shapes every switch
port, trunk ends included), as an uplink slower than the access ports would.

The paper's VBM treats the LAN as one segment whose bandwidth is that of its slowest link.
:func:`lan_rate` finds it for a VBM node: the slowest shaped port (a trunk's or an access
port's) among the switches its ``[vbm] link``'s interface reaches (switches joined by trunks
are one segment, ``trunks.segments``).  When the VBM's config names no ``capacity`` the lab
fills that in (:func:`render`); when it names one above it, ``vnet-lab check`` warns
(:func:`report`).  ``lab.py`` calls :func:`render` on each node's config.
"""
from __future__ import annotations

from vnet_router.model.units import format_rate
from vnet_router.lab import switching, topology as topo_mod, trunks
from vnet_router.lab.topology import Topology


def trunk_links(topo: Topology):
    return [link for link in topo.links if link.a.switch is not None]


def lan_rate(topo: Topology, node: str, link_id: str) -> int | None:
    """The slowest shaped switch port of the LAN segment that ``node``'s substrate link
    ``link_id`` is on (None: no shaped port there, or the link is on no switch)."""
    n = topo.node(node)
    table = n.router or {}
    iface = next((s.get("interface") for s in table.get("substrate_link", [])
                  if isinstance(s, dict) and s.get("id") == link_id), None)
    switch = next((link.b.switch for link in topo.links
                   if link.a.node == node and link.a.ifname == iface and link.b.switch), None)
    if switch is None:
        return None
    seg = trunks.segments(topo)
    rates = [rate for sw in seg if seg[sw] == seg[switch]
             for _port, rate, _queue in switching.switch_ports(topo, sw) if rate is not None]
    return min(rates) if rates else None


def render(topo: Topology, node: str, config: dict) -> dict:
    """A VBM's rendered config with ``capacity`` derived from the campus when it has none."""
    vbm = config.get("vbm")
    if isinstance(vbm, dict) and vbm.get("capacity") is None and isinstance(vbm.get("link"),
                                                                              str):
        rate = lan_rate(topo, node, vbm["link"])
        if rate is not None:
            vbm["capacity"] = rate
    return config


def report(topo: Topology) -> list[str]:
    """``vnet-lab check``: each VBM's LAN capacity against the slowest link of its LAN."""
    lines = []
    for name, cfg in topo_mod._configs(topo).items():
        if cfg.vbm is None:
            continue
        rate = lan_rate(topo, name, cfg.vbm.link)
        if rate is None:
            continue
        if cfg.vbm.capacity is None:
            lines.append(f"node {name}: VBM capacity {format_rate(rate)}, the slowest link "
                         f"of its LAN (derived: [vbm] capacity is not set)")
        elif cfg.vbm.capacity > rate:
            lines.append(f"warning: node {name}: [vbm] capacity {format_rate(cfg.vbm.capacity)} "
                         f"is above the slowest link of its LAN ({format_rate(rate)}): the "
                         f"VBM would grant more than the LAN carries")
    return lines
