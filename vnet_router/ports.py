"""System set-up of a node: vNet namespaces and TAP logical interfaces, and their removal.

Runs after the configuration validated and before the datapath opens its sockets.  Everything
created is recorded so ``teardown()`` removes exactly that (and nothing the node did not
create), also when set-up fails half-way.
"""
from __future__ import annotations

import logging

from . import netlink, wire
from .config import NodeConfig
from .tables import IfaceFacts, Snapshot, logical_mtu
from .tap import Tap

log = logging.getLogger(__name__)


class EnvironmentError_(RuntimeError):
    """The system does not match the configuration (missing interface, ...)."""


def read_facts(cfg: NodeConfig) -> dict[str, IfaceFacts]:
    """Read index, MAC and MTU of every substrate interface (read-only; touches nothing)."""
    facts = {}
    for s in cfg.substrate_links:
        if s.kind == "udp" or s.interface in facts:
            continue
        info = netlink.link_info(s.interface)
        if info is None:
            idx = cfg.substrate_links.index(s)
            raise EnvironmentError_(f"{cfg.path}: substrate_link[{idx}].interface: no interface "
                                    f"{s.interface!r} on this node")
        facts[s.interface] = IfaceFacts(info["index"], info["mac"], info["mtu"])
    for li in cfg.interfaces:
        ns = cfg.vnet(li.vnet).namespace
        if netlink.netns_exists(ns) and netlink.link_index(li.name, ns) is not None:
            idx = cfg.interfaces.index(li)
            raise EnvironmentError_(f"{cfg.path}: interface[{idx}].name: {li.name!r} already "
                                    f"exists in namespace {ns!r}")
    return facts


class Ports:
    def __init__(self, cfg: NodeConfig):
        self.cfg = cfg
        self.created_ns: list[str] = []
        self.taps: dict[tuple[str, str], Tap] = {}

    def setup(self, snap: Snapshot):
        cfg = self.cfg
        for v in cfg.vnets:
            if not netlink.netns_exists(v.namespace):
                netlink.netns_create(v.namespace)
                self.created_ns.append(v.namespace)
                log.info("vnet %s: created namespace %s", v.name, v.namespace)
        for li in cfg.interfaces:
            self.add(li, snap.links[li.substrate_link])

    def add(self, li, ctx) -> Tap:
        """Create the TAP of logical interface ``li`` in its vNet's namespace (blocking
        netlink work: the daemon calls this from a worker thread once its loop runs)."""
        ns = self.cfg.vnet(li.vnet).namespace
        mtu = logical_mtu(ctx)
        tap = Tap()
        self.taps[(li.vnet, li.name)] = tap
        try:
            netlink.link_set(tap.tmpname, mtu=mtu,
                             mac=wire.mac_to_str(li.mac) if li.mac else None, netns_to=ns)
            netlink.link_set(tap.tmpname, ns, rename=li.name)
            for a in li.addresses:
                netlink.addr_add(li.name, a, ns)
            netlink.link_set(li.name, ns, up=True)
        except BaseException:
            self.taps.pop((li.vnet, li.name), None)
            tap.close()
            raise
        log.info("vnet %s: logical interface %s in %s on %s (in VLI %d, out VLI %d, mtu %d)",
                 li.vnet, li.name, ns, li.substrate_link, li.in_vli, li.out_vli, mtu)
        return tap

    def remove(self, vnet: str, name: str) -> bool:
        tap = self.taps.pop((vnet, name), None)
        if tap is None:
            return False
        tap.close()
        log.info("vnet %s: removed logical interface %s", vnet, name)
        return True

    def teardown(self):
        for (vnet, name), tap in self.taps.items():
            tap.close()
        if self.taps:
            log.info("removed %d logical interfaces", len(self.taps))
        self.taps.clear()
        for ns in self.created_ns:
            try:
                netlink.netns_remove(ns)
                log.info("removed namespace %s", ns)
            except OSError as e:
                log.error("cannot remove namespace %s: %s", ns, e)
        self.created_ns.clear()
