"""System set-up of a node: vNet namespaces and TAP logical interfaces, and their removal.

Runs outside the datapath's event loop (pyroute2 runs a loop of its own): before the loop
starts, after it ends, and in a worker thread for a reload.  Work is two-phase so a reload is
all-or-nothing: ``prepare(cfg, snap)`` creates what the new configuration adds (namespaces,
TAPs) and changes what it keeps (MTU, addresses) -- on failure it removes what it created and
raises; after the datapath swapped to the new tables, ``commit(change)`` removes what the new
configuration dropped.  Only what this node created is ever removed; ``on_owned`` hears of
every change to the namespaces it created (the daemon records them in its state file, so a
start after a crash adopts or removes them: ``adopt_namespaces``).
"""
from __future__ import annotations

import hashlib
import logging
import socket
from dataclasses import dataclass, field

from vnet_router.ops import netlink
from vnet_router.wire import substrate as wire
from vnet_router.model.config import LogicalInterface, NodeConfig
from vnet_router.model.tables import Facts, IfaceFacts, Snapshot, interface_mtu
from vnet_router.ops.tap import Tap

log = logging.getLogger(__name__)


class EnvironmentError_(RuntimeError):
    """The system does not match the configuration (missing interface, ...)."""


def underlay_mtu(link) -> int | None:
    """MTU of the underlay of UDP substrate link ``link``: the route's from its local address
    towards its remote (``netlink.route_mtu``), None when there is no route (yet)."""
    try:
        return netlink.route_mtu(link.remote[0], link.local[0])
    except OSError:
        return None


def read_facts(cfg: NodeConfig, owned: set | None = None) -> Facts:
    """Read index, MAC and MTU of every substrate interface, and the underlay MTU of every UDP
    substrate link (read-only; touches nothing).

    ``owned``: (namespace, name) of TAPs this node already has (a reload keeps them)."""
    facts = Facts()
    for s in cfg.substrate_links:
        if s.kind == "udp":
            if not s.mtu and (mtu := underlay_mtu(s)):
                facts.underlay[s.id] = mtu
            continue
        if s.interface in facts:
            continue
        info = netlink.link_info(s.interface)
        if info is None:
            idx = cfg.substrate_links.index(s)
            raise EnvironmentError_(f"{cfg.path}: substrate_link[{idx}].interface: no interface "
                                    f"{s.interface!r} on this node")
        facts[s.interface] = IfaceFacts(info["index"], info["mac"], info["mtu"])
    privileged = netlink.can_enter_namespaces()
    hidden = netlink.netns_hidden() if privileged and cfg.vnets else None
    if hidden:
        raise EnvironmentError_(
            f"{cfg.path}: vnet: the namespaces it creates would be invisible from the host: this "
            f"process runs in a private mount namespace (`ip netns exec`?) and {hidden}; start "
            f"it with `nsenter --net=/run/netns/NS vnet-router -c {cfg.path}` instead")
    if not privileged:
        for idx, v in enumerate(cfg.vnets):
            if not netlink.netns_exists(v.namespace):
                raise EnvironmentError_(
                    f"{cfg.path}: vnet[{idx}].namespace: namespace {v.namespace!r} does not "
                    f"exist and this process may not create it (no CAP_SYS_ADMIN); run "
                    f"`vnet-router -c {cfg.path} --prepare` as root first")
    for idx, li in enumerate(cfg.interfaces):
        ns = cfg.vnet(li.vnet).namespace
        if (ns, li.name) in (owned or ()) or not privileged:
            continue
        if netlink.netns_exists(ns) and netlink.link_index(li.name, ns) is not None:
            raise EnvironmentError_(f"{cfg.path}: interface[{idx}].name: {li.name!r} already "
                                    f"exists in namespace {ns!r}")
    return facts


@dataclass
class Change:
    """What a prepare() did and what its commit() will undo of the old configuration."""

    new_ns: list = field(default_factory=list)
    new_taps: dict = field(default_factory=dict)      # (ns, name) -> Tap
    drop_taps: list = field(default_factory=list)     # (ns, name)
    drop_ns: list = field(default_factory=list)
    summary: list = field(default_factory=list)       # human-readable lines


class SocketEnd:
    """A library logical interface: a SOCK_SEQPACKET pair.  The datapath reads and writes
    ``fd`` (one vNet packet per message, like a TAP); ``app`` is the other end, handed to one
    application at a time (``take_app``).  When that application closes it the datapath reads
    end-of-file and the owner calls ``renew`` for the next one."""

    tmpname = None

    def __init__(self):
        self._mine, self.app = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (self._mine, self.app):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self._mine.setblocking(False)
        self.fd = self._mine.fileno()
        self.holder: int | None = None         # pid of the application holding ``app``

    def take_app(self, pid: int | None) -> socket.socket:
        """The application end (caller sends it, then closes it); None if already taken."""
        app, self.app, self.holder = self.app, None, pid
        return app

    def close(self):
        for s in (self._mine, self.app):
            if s is not None:
                s.close()
        self.app = None


class Ports:
    def __init__(self, cfg: NodeConfig, privileged: bool | None = None, on_owned=None):
        self.cfg = cfg
        # without CAP_SYS_ADMIN the TAP is moved into its namespace with an alias naming it,
        # and `vnet-router --configure` (privileged) names it, addresses it and brings it up
        self.privileged = netlink.can_enter_namespaces() if privileged is None else privileged
        self.created_ns: list[str] = []
        self.taps: dict[tuple[str, str], Tap] = {}          # (namespace, name) -> Tap
        self._addresses: dict[tuple[str, str], tuple] = {}
        self._mtu: dict[tuple[str, str], int] = {}
        self.dynamic: set[tuple[str, str]] = set()   # TAPs made at run time (control plane)
        self.on_owned = on_owned       # on_owned(namespaces): created_ns (plus new ones) changed

    def _owned(self, extra=()):
        if self.on_owned is not None:
            self.on_owned(self.created_ns + [ns for ns in extra if ns not in self.created_ns])

    def adopt_namespaces(self, cfg: NodeConfig, left) -> list[str]:
        """Namespaces a previous run of this node made and did not remove (it was killed):
        those ``cfg`` still names become this run's own (removed when it stops); the others
        are removed now.  Returns what was done."""
        wanted = {v.namespace for v in cfg.vnets}
        done = []
        for ns in left:
            if ns in self.created_ns or not netlink.netns_exists(ns):
                continue
            if ns in wanted:
                self.created_ns.append(ns)
                done.append(f"adopted namespace {ns} (made by a previous run)")
                continue
            try:
                netlink.netns_remove(ns)
                done.append(f"removed namespace {ns} left by a previous run")
            except OSError as e:
                self.created_ns.append(ns)        # tried again when the node stops
                done.append(f"cannot remove namespace {ns} left by a previous run: {e}")
        for line in done:
            log.info("%s", line)
        self._owned()
        return done

    @staticmethod
    def key(cfg: NodeConfig, li: LogicalInterface) -> tuple[str, str]:
        return cfg.vnet(li.vnet).namespace, li.name

    def tap_for(self, cfg: NodeConfig, li: LogicalInterface) -> Tap:
        return self.taps[self.key(cfg, li)]

    def setup(self, snap: Snapshot):
        self.commit(self.prepare(self.cfg, snap))

    def prepare(self, cfg: NodeConfig, snap: Snapshot) -> Change:
        ch = Change()
        try:
            self._prepare(cfg, snap, ch)
        except BaseException:
            self._undo(ch)
            raise
        return ch

    def _prepare(self, cfg: NodeConfig, snap: Snapshot, ch: Change):
        wanted_ns = {v.namespace for v in cfg.vnets}
        for v in cfg.vnets:
            if not netlink.netns_exists(v.namespace):
                netlink.netns_create(v.namespace)
                ch.new_ns.append(v.namespace)
                ch.summary.append(f"vnet {v.name}: created namespace {v.namespace}")
        if ch.new_ns:
            self._owned(ch.new_ns)            # recorded before anything can go wrong
        for v in cfg.vnets:
            if v.members is not None and self.privileged:
                self._virtual_router(cfg, v, ch)
        wanted = {}
        for li in cfg.interfaces:
            key = self.key(cfg, li)
            wanted[key] = li
            mtu = interface_mtu(snap.links[li.substrate_link], li,
                                snap.path_mtu.get((li.substrate_link, li.out_vli)))
            if key in self.taps:
                self._update(key, li, mtu, ch)
                continue
            if li.kind == "socket":
                ch.new_taps[key] = SocketEnd()
                ch.summary.append(f"vnet {li.vnet}: library endpoint {li.name} on "
                                  f"{li.substrate_link} (in VLI {li.in_vli}, out VLI "
                                  f"{li.out_vli}, mtu {mtu})")
                continue
            tap = Tap()
            ch.new_taps[key] = tap
            netlink.link_set(tap.tmpname, mtu=mtu,
                             mac=wire.mac_to_str(stable_mac(cfg.node.name, li)),
                             alias=tap_alias(li), netns_to=key[0])
            if self.privileged:
                configure_logical(key[0], li, tap.tmpname)
            else:
                ch.summary.append(f"{key[0]}/{tap.tmpname}: left for `vnet-router --configure` "
                                  f"to name {li.name}, address and bring up (no CAP_SYS_ADMIN)")
            self._addresses[key], self._mtu[key] = li.addresses, mtu
            ch.summary.append(f"vnet {li.vnet}: logical interface {li.name} in {key[0]} on "
                              f"{li.substrate_link} (in VLI {li.in_vli}, out VLI {li.out_vli}, "
                              f"mtu {mtu})")
        ch.drop_taps = [k for k in self.taps if k not in wanted and k not in self.dynamic]
        ch.drop_ns = [ns for ns in self.created_ns if ns not in wanted_ns]

    @staticmethod
    def _virtual_router(cfg: NodeConfig, v, ch: Change):
        """The bridge members of ``v`` are attached to (``[vnet.members]``), with a MAC of
        its own (a bridge would otherwise take its lowest port's, changing as members come
        and go, under the neighbours' ARP caches) and its addresses."""
        ns, br = v.namespace, v.members.bridge
        if netlink.link_index(br, ns) is None:
            netlink.bridge_create(br, ns)
            h = hashlib.sha256(f"{cfg.node.name}/{v.name}/{br}".encode()).digest()
            netlink.link_set(br, ns, mac=wire.mac_to_str(bytes([(h[0] & 0xFC) | 2]) + h[1:6]))
            ch.summary.append(f"vnet {v.name}: virtual router {br} in {ns}")
        have = set(netlink.addr_list(br, ns))
        for a in v.members.addresses:
            if a not in have:
                netlink.addr_add(br, a, ns)

    def attach(self, cfg: NodeConfig, vnet: str, name: str) -> None:
        """Attach run-time logical interface ``name`` to its vNet's virtual router (worker
        thread: netlink)."""
        v = cfg.vnet(vnet)
        netlink.bridge_attach(name, v.members.bridge, v.namespace)

    # -- run-time logical interfaces (control protocol: VLINK_SETUP, ``vnetctl vlink add``) --
    # They are made and removed at once, outside the two-phase reload, and a reload leaves
    # them alone.  ``create`` does the blocking netlink work (the daemon runs it in a worker
    # thread); ``adopt`` and ``remove`` run on the event loop.

    def create(self, cfg: NodeConfig, li: LogicalInterface, ctx) -> Tap:
        """Create the TAP of run-time logical interface ``li`` in its vNet's namespace."""
        ns = self.key(cfg, li)[0]
        mtu = interface_mtu(ctx, li)
        tap = Tap()
        try:
            netlink.link_set(tap.tmpname, mtu=mtu,
                             mac=wire.mac_to_str(stable_mac(cfg.node.name, li)),
                             alias=tap_alias(li), netns_to=ns)
            if self.privileged:
                configure_logical(ns, li, tap.tmpname)
            else:
                log.warning("vnet %s: run-time logical interface %s left down in %s (no "
                            "CAP_SYS_ADMIN to name and address it)", li.vnet, li.name, ns)
        except BaseException:
            tap.close()
            raise
        log.info("vnet %s: logical interface %s in %s on %s (in VLI %d, out VLI %d, mtu %d)",
                 li.vnet, li.name, ns, li.substrate_link, li.in_vli, li.out_vli, mtu)
        return tap

    def adopt(self, cfg: NodeConfig, li: LogicalInterface, tap: Tap):
        key = self.key(cfg, li)
        self.taps[key] = tap
        self.dynamic.add(key)

    def remove(self, cfg: NodeConfig, vnet: str, name: str) -> bool:
        """Remove run-time logical interface ``vnet``/``name`` (closing a TAP deletes it)."""
        key = (cfg.vnet(vnet).namespace, name)
        if key not in self.dynamic:
            return False
        self.dynamic.discard(key)
        self.taps.pop(key).close()
        log.info("vnet %s: removed logical interface %s", vnet, name)
        return True

    def set_mtu(self, cfg: NodeConfig, li: LogicalInterface, mtu: int) -> bool:
        """Give TAP ``li`` MTU ``mtu`` (a path MTU notice changed it; blocking netlink: the
        daemon runs it in a worker thread).  False if there is nothing to change here."""
        key = self.key(cfg, li)
        if key not in self.taps or li.kind == "socket" or self._mtu.get(key) == mtu:
            return False
        if not self.privileged:
            log.warning("vnet %s: cannot set the MTU of %s to %d (no CAP_SYS_ADMIN)",
                        li.vnet, li.name, mtu)
            return False
        netlink.link_set(key[1], key[0], mtu=mtu)
        log.info("vnet %s: logical interface %s: mtu %s -> %d (path MTU)", li.vnet, li.name,
                 self._mtu.get(key), mtu)
        self._mtu[key] = mtu
        return True

    def _update(self, key, li, mtu, ch: Change):
        ns, name = key
        if not self.privileged or li.kind == "socket":
            return
        if self._mtu.get(key) != mtu:
            netlink.link_set(name, ns, mtu=mtu)
            ch.summary.append(f"{ns}/{name}: mtu {self._mtu.get(key)} -> {mtu}")
            self._mtu[key] = mtu
        old = set(self._addresses.get(key, ()))
        for a in li.addresses:
            if a not in old:
                netlink.addr_add(name, a, ns)
                ch.summary.append(f"{ns}/{name}: address {a} added")
        for a in old - set(li.addresses):
            netlink.addr_del(name, a, ns)
            ch.summary.append(f"{ns}/{name}: address {a} removed")
        self._addresses[key] = li.addresses

    def _undo(self, ch: Change):
        for key, tap in ch.new_taps.items():
            tap.close()
            self._addresses.pop(key, None)
            self._mtu.pop(key, None)
        for ns in ch.new_ns:
            netlink.netns_remove(ns)
        if ch.new_ns:
            self._owned()

    def abort(self, ch: Change):
        """Undo a prepare() whose configuration was not taken after all."""
        self._undo(ch)

    def commit(self, ch: Change):
        self.taps.update(ch.new_taps)
        self.created_ns.extend(ch.new_ns)
        for key in ch.drop_taps:
            self.taps.pop(key).close()
            self._addresses.pop(key, None)
            self._mtu.pop(key, None)
            ch.summary.append(f"removed logical interface {key[1]} from {key[0]}")
        for ns in ch.drop_ns:
            self._remove_ns(ns)
            ch.summary.append(f"removed namespace {ns}")
        self._owned()
        for line in ch.summary:
            log.info("%s", line)

    def _remove_ns(self, ns):
        try:
            netlink.netns_remove(ns)
            self.created_ns.remove(ns)
        except OSError as e:
            log.error("cannot remove namespace %s: %s", ns, e)

    def teardown(self):
        for tap in self.taps.values():
            tap.close()
        if self.taps:
            log.info("removed %d logical interfaces", len(self.taps))
        self.taps.clear()
        for ns in list(self.created_ns):
            self._remove_ns(ns)
            log.info("removed namespace %s", ns)
        self._owned()


def tap_alias(li: LogicalInterface) -> str:
    return f"vnet:{li.vnet}/{li.name}"


def stable_mac(node: str, li: LogicalInterface) -> bytes:
    """The logical interface's MAC: configured, else derived from the node, vNet and interface
    names (locally administered, unicast), so a restarted node keeps the MACs its neighbours
    have in their ARP / neighbour caches."""
    if li.mac:
        return li.mac
    h = hashlib.sha256(f"{node}/{li.vnet}/{li.name}".encode()).digest()
    return bytes([(h[0] & 0xFC) | 0x02]) + h[1:6]


def configure_logical(ns: str, li: LogicalInterface, current: str | None = None) -> str:
    """Name, address and bring up a logical interface inside its namespace (idempotent).
    ``current``: its name now (found by alias if None).  Coming up, the kernel announces it:
    a gratuitous ARP (``arp_notify``) and an unsolicited neighbour advertisement
    (``ndisc_notify``), so neighbours that cached another MAC for its addresses update at once.
    Returns what was done."""
    name = current or netlink.link_by_alias(tap_alias(li), ns)
    if name is None:
        return f"{ns}: no logical interface {li.vnet}/{li.name} (is the daemon running?)"
    if name != li.name:
        netlink.link_set(name, ns, rename=li.name)
    have = set(netlink.addr_list(li.name, ns))
    for a in li.addresses:
        if a not in have:
            netlink.addr_add(li.name, a, ns)
    netlink.sysctl_set(ns, {f"net/ipv4/conf/{li.name}/arp_notify": 1,
                            f"net/ipv6/conf/{li.name}/ndisc_notify": 1}, missing_ok=True)
    netlink.link_set(li.name, ns, up=True)
    return f"{ns}/{li.name}: up, addresses {', '.join(li.addresses) or '-'}"


def prepare_namespaces(cfg: NodeConfig) -> list[str]:
    """Privileged helper step: create the vNet namespaces of ``cfg`` that do not exist."""
    done = []
    for v in cfg.vnets:
        if not netlink.netns_exists(v.namespace):
            netlink.netns_create(v.namespace)
            done.append(f"created namespace {v.namespace} for vNet {v.name}")
    return done


def configure_namespaces(cfg: NodeConfig) -> list[str]:
    """Privileged helper step: configure every logical interface inside its namespace."""
    return [configure_logical(cfg.vnet(li.vnet).namespace, li) for li in cfg.interfaces
            if li.kind == "tap" and netlink.netns_exists(cfg.vnet(li.vnet).namespace)]


def remove_namespaces(cfg: NodeConfig) -> list[str]:
    """Privileged helper step after the daemon stopped: remove the vNet namespaces."""
    done = []
    for v in cfg.vnets:
        if netlink.netns_exists(v.namespace):
            netlink.netns_remove(v.namespace)
            done.append(f"removed namespace {v.namespace}")
    return done
