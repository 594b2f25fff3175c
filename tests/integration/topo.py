"""Lab topologies of the integration tests, built as tables (the format is in docs/lab.md).

``switch_node()``, ``link()``, ``node()`` and ``lab()`` each return a :class:`Topo`, the tables
of a topology file; ``+`` joins them and ``text()`` writes the file (with the project's TOML writer,
``vnet_router.model.toml.dump_toml``).  ``make_lab`` takes a Topo as it is.

A node's router config is made of parts -- ``p2p()``, ``multiaccess()``, ``udp()``, ``vnet()``,
``iface()``, ``switch()`` return ``(table, entry)`` pairs that ``node()`` puts under
``[node.router]``; other router tables (``tm``, ``vbm``) go in its ``router=`` argument and
the router's own ``[node]`` table in ``settings=``; ``router_config()`` makes the same tables
for a config file of its own (a daemon started without a lab).  Keys a helper does not name
are passed on as they are (``capacity=``, ``kind=``, ``in_rate=`` ...).  Peers are named
``"node:ifname"`` and become ``{mac:node:ifname}`` placeholders the lab fills in.
"""
from __future__ import annotations

from vnet_router.model.toml import dump_toml


class Topo(dict):
    """Arrays of tables of a topology file (``switch``, ``node``, ``link``) and its ``[lab]``
    table; ``a + b`` has the entries of both, in order (and both ``[lab]`` tables' keys)."""

    def __add__(self, other: dict) -> "Topo":
        out = Topo({k: dict(v) if isinstance(v, dict) else list(v) for k, v in self.items()})
        for k, v in other.items():
            if isinstance(v, dict):
                out.setdefault(k, {}).update(v)
            else:
                out.setdefault(k, []).extend(v)
        return out


def topology(*parts: Topo) -> Topo:
    out = Topo()
    for p in parts:
        out = out + p
    return out


def text(topo: Topo) -> str:
    """The topology file."""
    return dump_toml(topo)


def _entry(**kw) -> dict:
    return {k: v for k, v in kw.items() if v is not None}


def lab(**settings) -> Topo:
    """The ``[lab]`` table: ``lab(keys=False)`` runs the links without a ``key_file`` of their
    own unauthenticated (labs are keyed by default, docs/lab.md)."""
    return Topo(lab=dict(settings))


def link(a: str, b: str, mtu: int | None = None, **extra) -> Topo:
    return Topo(link=[_entry(a=a, b=b, mtu=mtu, **extra)])


def switch_node(name: str) -> Topo:
    return Topo(switch=[{"name": name}])


def node(name: str, *parts: tuple[str, dict], addresses: dict | None = None,
         settings: dict | None = None, router: dict | None = None, commands=(),
         daemon: str | None = None, sysctl: dict | None = None) -> Topo:
    """``commands``: ``(run, vnet)`` pairs (``vnet`` None: in the node's namespace) or plain
    command strings, run after the daemons are ready."""
    n = _entry(name=name, daemon=daemon, addresses=addresses, sysctl=sysctl)
    r = router_config(*parts, settings=settings, **(router or {}))
    if r:
        n["router"] = r
    cmds = []
    for c in commands:
        run, vnet_name = (c, None) if isinstance(c, str) else c
        cmds.append(_entry(vnet=vnet_name, run=run))
    if cmds:
        n["commands"] = cmds
    return Topo(node=[n])


def router_config(*parts: tuple[str, dict], settings: dict | None = None, **tables) -> dict:
    """The tables of a router (or host) config: ``settings`` is its ``[node]`` table, ``parts``
    its arrays of tables, ``tables`` any others (``tm={...}``).  A config file of its own is
    ``dump_toml(router_config(...))``."""
    r = dict(tables)
    if settings:
        r["node"] = dict(settings)
    for table, item in parts:
        r.setdefault(table, []).append(item)
    return r


def p2p(lid: str, ifname: str, peer: str | None = None, vlan: int = 10,
        priority: int | None = None, mtu: int | None = None, peer_mac: str | None = None,
        **extra) -> tuple[str, dict]:
    """``peer``: "node:ifname" in a lab; or ``peer_mac`` itself."""
    return "substrate_link", _entry(id=lid, kind="p2p", interface=ifname,
                                    peer_mac=peer_mac or f"{{mac:{peer}}}", vlan=vlan,
                                    priority=priority, mtu=mtu, **extra)


def multiaccess(lid: str, ifname: str, mtu: int | None = None, **extra) -> tuple[str, dict]:
    return "substrate_link", _entry(id=lid, kind="multiaccess", interface=ifname, mtu=mtu,
                                    **extra)


def udp(lid: str, local: str, remote: str, **extra) -> tuple[str, dict]:
    return "substrate_link", _entry(id=lid, kind="udp", local=local, remote=remote, **extra)


def vnet(name: str, vid: int, namespace: str | None = None) -> tuple[str, dict]:
    return "vnet", _entry(name=name, id=vid, namespace=namespace)


def iface(vnet_name: str, name: str, lid: str, in_vli: int, out_vli: int | None = None,
          rate: str | dict | None = None, addresses=(), **extra) -> tuple[str, dict]:
    """``rate``: e.g. ``"20Mbit"`` or ``{"min": "5Mbit", "max": "20Mbit"}``."""
    return "interface", _entry(vnet=vnet_name, name=name, substrate_link=lid, in_vli=in_vli,
                               out_vli=out_vli, rate=rate,
                               addresses=list(addresses) or None, **extra)


def switch(vnet_name: str, in_link: str, in_vli: int, out_link: str, out_vli: int,
           **extra) -> tuple[str, dict]:
    return "switch", _entry(vnet=vnet_name, in_link=in_link, in_vli=in_vli, out_link=out_link,
                            out_vli=out_vli, **extra)
