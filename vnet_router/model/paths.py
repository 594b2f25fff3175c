"""Static paths of virtual links and their MTU: what ``--check`` tools report (issue 15).

At run time the path MTU notices (``control/pmtu.py``) give each logical interface the MTU of
its path.  Before that, or where they are off (``[node].path_mtu_interval = 0``), two checks
find a mismatch from the configuration alone:

* :func:`narrowing_switches` -- one node (``vnet-router --check``): a ``[[switch]]`` whose
  output substrate link carries less than its input link.  That node is the first that can
  tell a frame is too big (it counts it as the ``too_big`` drop); whether the frames that
  arrive are that big depends on the upstream, which only the notices (or a whole topology)
  know.
* :class:`Net` -- a whole topology (``vnet-lab check``): every logical interface's output
  virtual link followed hop by hop across substrate links (p2p: the peer on the same segment
  with the matching VLAN and MACs; multiaccess: every node of the LAN with an input virtual link
  of that VLI; udp: the node whose tunnel ends match) and through ``[[switch]]`` VLI swaps to
  where it is delivered; the smallest payload MTU along the way is the path's.

Pure computation on validated configurations; no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

from vnet_router.model.tables import interface_mtu, receive_limit, udp_overhead
from vnet_router.wire import substrate as wire


class _Ctx:
    """What ``tables.interface_mtu`` / ``receive_limit`` read of a link: its payload MTU."""

    def __init__(self, payload_mtu: int):
        self.payload_mtu = payload_mtu


def narrowing_switches(cfg, payload: dict[str, int]) -> list[str]:
    """Lines for the switches of ``cfg`` whose output link carries less than their input link
    (``payload``: substrate link id -> payload MTU, e.g. from a compiled snapshot)."""
    out = []
    notices = cfg.node.path_mtu_interval > 0
    for sw in cfg.switches:
        a, b = payload[sw.in_link], payload[sw.out_link]
        if b < a:
            out.append(
                f"{'note' if notices else 'warning'}: switch {sw.in_link}:{sw.in_vli} -> "
                f"{sw.out_link}:{sw.out_vli} (vNet {sw.vnet}) narrows the path from {a} to {b} "
                f"payload bytes: frames above {b} are dropped here as too_big"
                + ("; the path MTU notices tell the upstream" if notices else
                   "; path MTU notices are off: give the upstream logical interface "
                   f"mtu = {b - wire.ETH_HLEN} (a TAP) or less"))
    return out


@dataclass(frozen=True)
class End:
    """A link end of the topology: its MAC, its MTU and the L2 segment it is on."""

    mac: bytes
    mtu: int
    segment: str


@dataclass(frozen=True)
class Branch:
    payload: int                 # smallest payload MTU on the way
    narrowest: str               # "node link (kind)" where it is smallest
    end: str | None              # "node vnet/interface", None: leads nowhere
    nodes: tuple                 # the nodes on the way


class Net:
    """Node configurations (``name -> NodeConfig``) on link ends (``(node, ifname) -> End``)."""

    def __init__(self, configs: dict, ends: dict):
        self.configs, self.ends = configs, ends

    def payload(self, node: str, s) -> int:
        if s.kind == "udp":
            return (s.mtu or 1500) - udp_overhead(s)
        return (s.mtu or self.ends[(node, s.interface)].mtu) - wire.SUBSTRATE_HLEN

    def _receivers(self, node: str, s):
        if s.kind == "udp":
            for m, cfg in self.configs.items():
                for t in cfg.substrate_links:
                    if t.kind == "udp" and (t.local, t.remote) == (s.remote, s.local):
                        yield m, t
            return
        mine = self.ends[(node, s.interface)]
        for (m, ifname), e in self.ends.items():
            if e.segment != mine.segment or m == node or m not in self.configs:
                continue
            for t in self.configs[m].substrate_links:
                if t.kind != s.kind or t.interface != ifname:
                    continue
                if s.kind == "multiaccess" or (t.vlan == s.vlan and t.peer_mac == mine.mac
                                               and s.peer_mac == e.mac):
                    yield m, t

    def follow(self, node: str, link_id: str, vli: int, seen=frozenset()) -> list[Branch]:
        """Where output virtual link ``link_id``:``vli`` of ``node`` leads."""
        s = self.configs[node].link(link_id)
        own = self.payload(node, s)
        here = f"{node} {s.id} ({s.kind})"
        out = []
        for m, t in self._receivers(node, s):
            cfg = self.configs[m]
            li = next((x for x in cfg.interfaces
                       if (x.substrate_link, x.in_vli) == (t.id, vli)), None)
            sw = next((x for x in cfg.switches if (x.in_link, x.in_vli) == (t.id, vli)), None)
            if li is not None:
                limit = receive_limit(_Ctx(self.payload(m, t)), li)
                where = here if own <= limit else f"{m} {li.vnet}/{li.name} (mtu)"
                out.append(Branch(min(own, limit), where, f"{m} {li.vnet}/{li.name}",
                                  (node, m)))
            elif sw is not None and (m, sw.out_link, sw.out_vli) not in seen:
                for b in self.follow(m, sw.out_link, sw.out_vli,
                                     seen | {(m, sw.out_link, sw.out_vli)}):
                    out.append(Branch(min(own, b.payload), here if own <= b.payload
                                      else b.narrowest, b.end, (node,) + b.nodes))
            elif s.kind != "multiaccess":      # a LAN's other members simply do not host it
                out.append(Branch(own, here, None, (node, m)))
        return out

    def report(self) -> tuple[list[str], bool]:
        """(lines, ok): each logical interface whose path carries less than its MTU, each
        output that leads nowhere; ``ok`` False if frames would be lost (notices off)."""
        lines, ok = [], True
        for node, cfg in sorted(self.configs.items()):
            for li in cfg.interfaces:
                s = cfg.link(li.substrate_link)
                if s.kind == "udp" and not any(True for _ in self._receivers(node, s)):
                    continue                   # a tunnel to outside the topology
                branches = self.follow(node, li.substrate_link, li.out_vli)
                name = f"{node}: {li.vnet}/{li.name}"
                for b in branches:
                    if b.end is None:
                        lines.append(f"{name}: VLI {li.out_vli} on {li.substrate_link} leads "
                                     f"nowhere at {b.nodes[-1]} (no input virtual link there)")
                delivered = [b for b in branches if b.end is not None]
                if not delivered:
                    continue
                worst = min(delivered, key=lambda b: b.payload)
                own = interface_mtu(_Ctx(self.payload(node, s)), li)
                path = interface_mtu(_Ctx(self.payload(node, s)), li, worst.payload)
                if path >= own:
                    continue
                off = sorted({n for b in delivered for n in b.nodes
                              if self.configs[n].node.path_mtu_interval <= 0})
                head = (f"{name}: MTU {own}, but the path to {worst.end} carries {path} "
                        f"(narrowest: {worst.narrowest}, {worst.payload}-byte payloads)")
                if off:
                    ok = False
                    lost = (f"exceed the mtu of {worst.end}" if worst.narrowest.endswith("(mtu)")
                            else f"are dropped as too_big at {worst.narrowest.split()[0]}")
                    lines.append(f"{head}: path MTU notices are off at {', '.join(off)}: "
                                 f"larger frames {lost}; set mtu = {path} on this interface "
                                 f"or turn the notices on")
                else:
                    lines.append(f"{head}: the path MTU notices lower it to {path} at run time")
        return lines, ok
