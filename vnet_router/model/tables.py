"""Substrate link table and virtual link table (DESIGN 4), compiled into snapshots.

:class:`Tables` is the one authoritative in-memory model of a node, built from a validated
``NodeConfig`` plus the facts read off the system (interface index, MAC, MTU).  ``compile()``
turns it into an immutable :class:`Snapshot` shaped for the receive path: per interface, a
mapping from (VLAN id, sender MAC) to the substrate link context, per substrate link a mapping
from VLI to the input virtual link, and which logical interface or output virtual link each
input leads to.  Nothing in a snapshot can be reassigned (frozen dataclasses over read-only
mappings); the datapath binds it to what it owns (ports, meters, sockets: ``datapath/
entries.py``) and swaps the result in atomically.

A :class:`VLink` holds a virtual link's configuration and its counters, nothing of the
datapath's; it is shared by successive snapshots, so counters survive a recompile.

This module imports only ``wire``, ``config`` and ``names``; it does no I/O.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from vnet_router.wire import substrate as wire
from vnet_router.model import names
from vnet_router.model.config import NodeConfig, Rate

DELIVER, SWITCH, DROP = 1, 2, 3
ACTION_NAMES = {DELIVER: "deliver", SWITCH: "switch", DROP: "drop"}
IN, OUT = "in", "out"

# Drop reasons and ignore reasons (each has its own counter, globally and per substrate link
# where known) are written once, numbered, in names.py; these are their names in number order.
DROP_REASONS, IGNORE_REASONS = names.DROP_REASONS, names.IGNORE_REASONS


class LinkState:
    """Counters of one substrate link (plain ints, read by ``show`` and metrics)."""

    __slots__ = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "drops", "ignored")

    def __init__(self):
        self.rx_packets = self.rx_bytes = self.tx_packets = self.tx_bytes = 0
        self.drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.ignored: dict[str, int] = dict.fromkeys(IGNORE_REASONS, 0)


class VLink:
    """One direction of a virtual link, key (substrate link, VLI, direction): its configuration
    and its counters (the datapath adds to ``packets``, ``bytes``, ``drops``)."""

    __slots__ = ("link_id", "vli", "direction", "vnet", "action", "rate", "owner", "dst",
                 "packets", "bytes", "drops")

    def __init__(self, link_id: str, vli: int, direction: str, vnet: str, action: int,
                 rate: Rate, owner: str):
        self.link_id, self.vli, self.direction = link_id, vli, direction
        self.vnet, self.action, self.rate, self.owner = vnet, action, rate, owner
        self.dst = None       # multiaccess output: fixed outer destination MAC (else learned)
        self.packets = self.bytes = 0
        self.drops: dict[str, int] = {}

    @property
    def key(self):
        return (self.link_id, self.vli, self.direction)

    def drop(self, reason: str, n: int = 1):
        self.drops[reason] = self.drops.get(reason, 0) + n


@dataclass(frozen=True, slots=True, eq=False)
class LinkCtx:
    """Compiled context of one substrate link, as the receive path needs it (``state``: the
    link's counters, the one mutable part)."""

    id: str
    kind: str
    state: LinkState
    in_vlinks: Mapping[int, VLink]      # VLI -> input virtual link
    mtu: int
    payload_mtu: int
    ifname: str | None = None
    ifindex: int | None = None
    local_mac: bytes | None = None
    peer_mac: bytes | None = None
    vlan: wire.VlanTag | None = None
    priority: int | None = None
    local: tuple | None = None
    remote: tuple | None = None
    tx_header: bytes | None = None


@dataclass(frozen=True, slots=True)
class IfaceCtx:
    ifindex: int
    ifname: str
    mac: bytes
    p2p: Mapping            # (vid, peer MAC bytes) -> LinkCtx
    p2p_vids: frozenset
    multiaccess: LinkCtx | None


@dataclass(frozen=True, slots=True)
class Leads:
    """Where the frames of one input virtual link go next: a logical interface (``DELIVER``)
    or an output virtual link (``SWITCH``)."""

    port: tuple[str, str] | None = None         # (vNet, interface name)
    out: tuple | None = None                    # key of the output virtual link
    learned_max: int = 0                        # the port's learned-MAC bound and ageing
    learned_ageing: float = 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    generation: int
    ethertype: int
    links: Mapping          # id -> LinkCtx
    ifaces: Mapping         # ifindex -> IfaceCtx
    udp: Mapping            # (local ip, port) -> {(remote ip, port): LinkCtx} (links up)
    vlinks: Mapping         # (link, vli, dir) -> VLink
    # (link, out VLI) -> payload MTU the downstream reported (PATH_MTU)
    path_mtu: Mapping = field(default_factory=lambda: MappingProxyType({}))
    # input key -> where it leads; logical interface (vNet, name) -> its output key; output
    # key -> its shaper queue limit
    leads: Mapping = field(default_factory=lambda: MappingProxyType({}))
    port_out: Mapping = field(default_factory=lambda: MappingProxyType({}))
    queues: Mapping = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class IfaceFacts:
    """What the daemon read off the system about one interface."""

    ifindex: int
    mac: bytes
    mtu: int


class Facts(dict):
    """What the daemon read off the system: interface name -> :class:`IfaceFacts`, and
    ``underlay``: UDP substrate link id -> the MTU of its route towards the remote (a link
    with no route when it was read is not there)."""

    def __init__(self, *args, underlay=None, **kw):
        super().__init__(*args, **kw)
        self.underlay: dict[str, int] = dict(underlay or {})


def udp_link_mtu(link, facts) -> int:
    """MTU of UDP substrate link ``link`` (its datagrams, IP header included): its configured
    ``mtu``, else its underlay's (``Facts.underlay``: the route's towards the remote, or its
    device's), else 1500 (no route when the facts were read)."""
    return link.mtu or getattr(facts, "underlay", {}).get(link.id) or 1500


def udp_overhead(link) -> int:
    ipver = ipaddress.ip_address(link.remote[0]).version
    return (20 if ipver == 4 else 40) + 8 + wire.UDP_SUBSTRATE_HLEN


def logical_mtu(ctx: LinkCtx) -> int:
    """MTU for a TAP on this link so its frames fit the substrate MTU after encapsulation."""
    return ctx.payload_mtu - wire.ETH_HLEN


def interface_mtu(ctx: LinkCtx, li, reported: int | None = None) -> int:
    """MTU of logical interface ``li`` on substrate link ``ctx``: what its output virtual link
    carries -- the link's payload MTU, lowered to the path MTU its neighbour ``reported``
    (PATH_MTU) -- less the TAP's Ethernet header, and at most ``li.mtu`` when configured."""
    payload = ctx.payload_mtu if reported is None else min(ctx.payload_mtu, reported)
    mtu = payload - (wire.ETH_HLEN if li.kind == "tap" else 0)
    return min(mtu, li.mtu) if li.mtu else mtu


def receive_limit(ctx: LinkCtx, li) -> int:
    """The largest payload logical interface ``li`` takes from its input virtual link (what
    this node reports upstream for it): the link's payload MTU, or ``li.mtu`` (+ header)."""
    if not li.mtu:
        return ctx.payload_mtu
    return min(ctx.payload_mtu, li.mtu + (wire.ETH_HLEN if li.kind == "tap" else 0))


class Tables:
    """The authoritative model: substrate links, vNets, virtual links and their state."""

    def __init__(self, config: NodeConfig, facts: dict[str, IfaceFacts],
                 underlay_down=frozenset()):
        self.config = config
        self.facts = facts
        # UDP links waiting for their underlay (local address or route missing, node/
        # underlay.py): compiled without a place in ``Snapshot.udp``, so the datapath opens no
        # socket for them and their frames are ``send_error`` drops until they are up
        self.underlay_down: frozenset[str] = frozenset(underlay_down)
        self.generation = 0
        self.link_states: dict[str, LinkState] = {}
        self.vlinks: dict[tuple, VLink] = {}
        self.drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.ignored: dict[str, int] = dict.fromkeys(IGNORE_REASONS, 0)
        # (substrate link, output VLI) -> the path MTU (payload bytes) the downstream node
        # reported for that virtual link (control/pmtu.py); absent: the link's own
        self.path_mtu: dict[tuple[str, int], int] = {}
        self.dynamic: list = []       # LogicalInterfaces made at run time (control protocol)
        self._build()

    def update(self, config: NodeConfig, facts: dict[str, IfaceFacts],
               underlay_down=frozenset()):
        """Adopt a new configuration.  Virtual links whose key, vNet and action stay keep their
        state (counters, meters); run-time logical interfaces (``dynamic``) stay; the datapath
        installs the next ``compile()``."""
        self.config, self.facts = config, facts
        self.underlay_down = frozenset(underlay_down)
        self._build()
        for link_id in list(self.link_states):
            if not any(s.id == link_id for s in config.substrate_links):
                del self.link_states[link_id]

    @property
    def interfaces(self) -> tuple:
        """Logical interfaces: the configured ones, then those created at run time."""
        return self.config.interfaces + tuple(self.dynamic)

    def add_interface(self, li) -> None:
        """Add a run-time logical interface (its VLIs must be free); ``compile()`` next."""
        for x in self.interfaces:
            if (x.vnet, x.name) == (li.vnet, li.name):
                raise ValueError(f"interface {li.name!r} already exists in vNet {li.vnet!r}")
        if (li.substrate_link, li.in_vli, IN) in self.vlinks or \
                (li.substrate_link, li.out_vli, OUT) in self.vlinks:
            raise ValueError(f"VLI in use on substrate link {li.substrate_link!r}")
        self.dynamic.append(li)
        self._build()

    def remove_interface(self, vnet: str, name: str):
        """Remove a run-time logical interface; returns it (None if there was none)."""
        for li in self.dynamic:
            if (li.vnet, li.name) == (vnet, name):
                self.dynamic.remove(li)
                self._build()
                return li
        return None

    def vli_free(self, link_id: str, vli: int) -> bool:
        return (link_id, vli, IN) not in self.vlinks and (link_id, vli, OUT) not in self.vlinks

    def _build(self):
        cfg = self.config
        old = self.vlinks
        vlinks: dict[tuple, VLink] = {}

        def vlink(link, vli, direction, vnet, action, rate, owner):
            key = (link, vli, direction)
            v = old.get(key)
            if v is None or v.action != action or v.vnet != vnet:
                v = VLink(link, vli, direction, vnet, action, rate, owner)
            elif v.rate.cur is not None and (v.rate.min, v.rate.max) == (rate.min, rate.max):
                rate = v.rate                   # keep the Traffic Manager's current rate
            v.rate, v.owner = rate, owner
            vlinks[key] = v
            return v

        for li in self.interfaces:
            owner = f"{li.vnet}/{li.name}"
            vlink(li.substrate_link, li.in_vli, IN, li.vnet, DELIVER, li.in_rate, owner)
            vlink(li.substrate_link, li.out_vli, OUT, li.vnet, DELIVER, li.rate, owner)
        for sw in cfg.switches:
            owner = f"{sw.vnet}/switch {sw.in_link}:{sw.in_vli}->{sw.out_link}:{sw.out_vli}"
            vlink(sw.in_link, sw.in_vli, IN, sw.vnet, SWITCH, Rate(), owner)
            vlink(sw.out_link, sw.out_vli, OUT, sw.vnet, SWITCH, sw.rate, owner)
        for link_id, vli in cfg.drops:
            vlink(link_id, vli, IN, "-", DROP, Rate(), "drop")
        self.vlinks = vlinks
        for s in cfg.substrate_links:
            self.link_states.setdefault(s.id, LinkState())

    def input_vlink(self, link_id: str, vli: int) -> VLink:
        return self.vlinks[(link_id, vli, IN)]

    def output_vlink(self, link_id: str, vli: int) -> VLink:
        return self.vlinks[(link_id, vli, OUT)]

    def compile(self) -> Snapshot:
        """Build the immutable receive-path view of the current tables."""
        self.generation += 1
        cfg = self.config
        ro = MappingProxyType
        in_vlinks: dict[str, dict[int, VLink]] = {s.id: {} for s in cfg.substrate_links}
        for (link_id, vli, direction), v in self.vlinks.items():
            if direction == IN:
                in_vlinks[link_id][vli] = v
        links: dict[str, LinkCtx] = {}
        for s in cfg.substrate_links:
            common = dict(id=s.id, kind=s.kind, state=self.link_states[s.id],
                          in_vlinks=ro(in_vlinks[s.id]))
            if s.kind == "udp":
                mtu = udp_link_mtu(s, self.facts)
                ctx = LinkCtx(local=s.local, remote=s.remote, mtu=mtu,
                              payload_mtu=mtu - udp_overhead(s), **common)
            else:
                f = self.facts[s.interface]
                mtu = s.mtu or f.mtu
                vlan = wire.VlanTag(s.vlan, s.priority) if s.kind == "p2p" else None
                ctx = LinkCtx(ifname=s.interface, ifindex=f.ifindex, local_mac=f.mac,
                              peer_mac=s.peer_mac, vlan=vlan, priority=s.priority, mtu=mtu,
                              payload_mtu=mtu - wire.SUBSTRATE_HLEN,
                              tx_header=wire.pack_eth_header(
                                  s.peer_mac or wire.BROADCAST_MAC, f.mac, vlan,
                                  cfg.node.ethertype), **common)
            links[s.id] = ctx

        ifaces: dict[int, IfaceCtx] = {}
        by_if: dict[str, list[LinkCtx]] = {}
        for ctx in links.values():
            if ctx.kind != "udp":
                by_if.setdefault(ctx.ifname, []).append(ctx)
        for ifname, ctxs in by_if.items():
            f = self.facts[ifname]
            p2p = {(c.vlan.vid, c.peer_mac): c for c in ctxs if c.kind == "p2p"}
            multi = next((c for c in ctxs if c.kind == "multiaccess"), None)
            ifaces[f.ifindex] = IfaceCtx(f.ifindex, ifname, f.mac, ro(p2p),
                                         frozenset(v for v, _ in p2p), multi)
        udp: dict = {}
        for ctx in links.values():
            if ctx.kind == "udp" and ctx.id not in self.underlay_down:
                udp.setdefault(ctx.local, {})[ctx.remote] = ctx
        leads: dict[tuple, Leads] = {}
        port_out: dict[tuple, tuple] = {}
        queues: dict[tuple, int] = {}
        for li in self.interfaces:
            out = (li.substrate_link, li.out_vli, OUT)
            leads[(li.substrate_link, li.in_vli, IN)] = Leads(
                port=(li.vnet, li.name), learned_max=li.learned_max,
                learned_ageing=li.learned_ageing)
            port_out[(li.vnet, li.name)] = out
            queues.setdefault(out, li.queue)
        for sw in cfg.switches:
            out = (sw.out_link, sw.out_vli, OUT)
            leads[(sw.in_link, sw.in_vli, IN)] = Leads(out=out)
            queues.setdefault(out, sw.queue)
        return Snapshot(self.generation, cfg.node.ethertype, ro(links), ro(ifaces),
                        ro({k: ro(v) for k, v in udp.items()}), ro(dict(self.vlinks)),
                        ro(dict(self.path_mtu)), ro(leads), ro(port_out), ro(queues))
