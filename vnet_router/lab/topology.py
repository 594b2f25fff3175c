"""Lab topology files: nodes, switches and links, validated into frozen objects.

A topology file is TOML (the format is documented in ``docs/lab.md``, whose key tables are
generated from the schema below)::

    [lab]
    name = "two hosts"

    [[switch]]
    name = "sw"

    [[node]]
    name = "h1"
    addresses = { eth0 = ["192.168.77.1/24"] }     # legacy IP, not the substrate's
    sysctl = { "net.ipv4.ip_forward" = 1 }
    router = { ... a vnet-router config (vnet_router/model/config.py) as a TOML table ... }
    # or: router_config = "h1.toml"                 (relative to the topology file)
    routes = ["10.1.0.0/16 via 192.168.77.254"]     # before the daemon starts
    [[node.commands]]                               # run after the daemons are ready
    vnet = "blue"                                   # in this vNet's namespace (else the node's)
    run = "ip link add br0 type bridge"             # (when = "before": before them;
                                                    # background = true: a long-lived process)

    [[link]]
    a = "h1:eth0"                                   # node:interface
    b = "sw"                                        # a switch, or another node:interface
    a_mac = "02:00:00:00:00:01"                     # optional; else derived from the names
    mtu = 1500                                      # optional

Each table is a :class:`~vnet_router.model.schema.Schema` model (:class:`Node`, :class:`Link`
...); :class:`Topology`'s rules resolve the links (switch ports, MACs) and validate each
embedded router config (with the router's or the host's schema, ``vnet_router.model``).
:func:`load` checks everything before the lab touches the system; every problem raises
:class:`~vnet_router.model.schema.ConfigError` naming the file and the key.  Router configs may
use the placeholders ``{prefix}`` (the lab's namespace prefix), ``{node}``, ``{workdir}`` and
``{mac:NODE:IFNAME}``; :func:`render_router` substitutes them when a lab starts.  Building the
topology is ``lab.py``'s business; this module never touches the system.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from vnet_router.model import config as rconfig
from vnet_router.model import host as hconfig
from vnet_router.model.config import Cidr, RateBps, valid_ifname
from vnet_router.model.paths import End, Net
from vnet_router.wire import substrate as wire
from vnet_router.model.schema import (Bool, ConfigError, Invalid, Schema, Shown, Str, derived,
                                      int_range, key, pairs, parsed, pattern, prepare, rules,
                                      tables, validate)
from vnet_router.model.toml import parse_toml, read_toml
from vnet_router.lab import mgmt, trunks
from vnet_router.lab.procs import Command, Route       # [[node.commands]], node routes

_NAME_RULE = "a letter, then letters, digits, '_'; at most 12"
_NAME = r"[A-Za-z][A-Za-z0-9_]{0,11}"                   # no '-': it separates name parts
NodeName = pattern(_NAME, "bad node name {v} (" + _NAME_RULE + ")", "name")
SwitchName = pattern(_NAME, "bad switch name {v} (" + _NAME_RULE + ")", "name")
_PLACEHOLDER = re.compile(r"\{([a-z]+)(?::([^{}]*))?\}")

#: a prefix as long as a real one can get ("vl" + a 7-digit pid + "x" + counter + "-"), used
#: to validate router configs before the real prefix is known
SAMPLE_PREFIX = "vl4194304x9-"
SAMPLE_WORKDIR = "/tmp/vnet-lab-sample"


def _mac(v):
    if not isinstance(v, str):
        raise ValueError(f"must be str, not {type(v).__name__} {v!r}")
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", v):
        raise ValueError(f"bad MAC {v!r} (want e.g. 02:00:00:00:00:01)")
    if int(v[:2], 16) & 1:
        raise ValueError(f"MAC {v} is a multicast address (first octet must be even)")
    return v.lower()


Mac = parsed(_mac, "MAC", str)
_QUEUE = int_range(2, 100000, "queue length", "frames")
PORT_QUEUE = 128                # frames per queue of a shaped switch port (docs/lab.md)
SysctlKey = pattern(r"net\.[A-Za-z0-9_.\-/]+",
                    "only per-namespace network settings (net.*) may be set", "net.* key")


def _sysctl_value(v):
    if isinstance(v, bool):
        v = int(v)
    if not isinstance(v, (int, str)):
        raise ValueError(f"must be an integer or a string, not {v!r}")
    return str(v)


class Endpoint(Schema):
    """One end of a link: an interface of a node, or a port of a switch."""

    ifname: str
    mac: str = ""
    node: str | None = None
    switch: str | None = None

    @property
    def owner(self) -> str:
        return self.node if self.node is not None else self.switch

    def __str__(self):
        return f"{self.owner}:{self.ifname}"


def _end(value) -> Endpoint:
    """``"NODE:IFNAME"`` or a switch name, as written in a link (resolved by the topology)."""
    if not isinstance(value, str):
        raise ValueError(f"must be str, not {type(value).__name__} {value!r}")
    if ":" not in value:
        return Endpoint(ifname="", switch=value)
    node, _, ifname = value.partition(":")
    if not valid_ifname(ifname):
        raise ValueError(f"bad interface name {ifname!r} (at most 15 of letters, digits, '.-_')")
    return Endpoint(ifname=ifname, node=node)


class Link(Schema):
    """``[[link]]``: a veth pair.  ``a`` is a node interface (or a switch port: a trunk);
    ``b`` a node interface or a switch port."""

    a: Annotated[Endpoint, Shown("`NODE:IFNAME` or name")] = key(
        "`NODE:IFNAME` (IFNAME at most 15 characters), or a switch name when `b` is one too: "
        "a trunk, each end a port named after the other switch (docs/lab.md, \"A campus\")")
    b: Annotated[Endpoint, Shown("`NODE:IFNAME` or name")] = key(
        "`NODE:IFNAME`, or a switch name: the end becomes a bridge port named `NODE-IFNAME` "
        "(or `p<link index>` when that is longer than 15 characters)")
    mtu: int_range(68, 65535, "MTU") | None = key("MTU of both ends", None,
                                                  shown="the kernel's")
    a_mac: Mac | None = key(
        "fixed MAC of `a` (unicast); default: derived from the names, `02:` + 5 bytes of "
        "SHA-256 of `\"owner:ifname\"` — stable across runs and prefixes", None, shown="derived")
    b_mac: Mac | None = key("fixed MAC of `b`, the same way", None, shown="derived")
    port_rate: RateBps | None = key(
        "when `b` is a switch: this port's egress rate, instead of the switch's `port_rate`; "
        "on a trunk (`a` a switch too) both ends'", None, shown="the switch's")
    port_queue: _QUEUE | None = key("when `b` is a switch: this port's queue, instead of the "
                                    "switch's `port_queue`", None, shown="the switch's")

    @prepare
    def _ends(cls, data):
        if isinstance(data, dict):
            data = dict(data)
            for end in ("a", "b"):
                if end in data and not isinstance(data[end], Endpoint):
                    try:
                        data[end] = _end(data[end])
                    except ValueError as e:
                        raise Invalid(end, str(e)) from None
        return data


class Switch(Schema):
    """``[[switch]]``: a Linux bridge (named like the switch) in a namespace of its own; its
    ports may have an egress rate and 802.1p priority queues (`lab/switching.py`)."""

    name: SwitchName = key(_NAME_RULE + ". Namespace `PREFIX+name`, bridge `name`")
    port_rate: RateBps | None = key(
        "egress rate of each port (`\"100Mbit\"`: Ethernet frames, header included), over a "
        "bounded queue; a `[[link]]`'s `port_rate` overrides it for its port", None,
        shown="unshaped")
    port_queue: _QUEUE = key("frames each queue of a shaped port holds (per band); more are "
                             "dropped", PORT_QUEUE)
    priority_queues: Bool = key(
        "802.1p strict priority at shaped ports: PCP 5-7 sent first, then PCP 0, 3, 4 (and "
        "untagged frames), then PCP 1-2", False)


class Node(Schema):
    """``[[node]]``: a namespace, its link ends and (optionally) a daemon."""

    name: NodeName = key("same rule as switches; node and switch names share one space")
    addresses: pairs(Str, tuple[Cidr, ...], "table of lists") = key(
        "legacy IP per link end: `{ eth0 = [\"192.168.77.1/24\"] }` (set before the daemon "
        "starts)", (), shown="`{}`")
    sysctl: pairs(SysctlKey, parsed(_sysctl_value, "integer or string", str), "table") = key(
        "per-namespace network settings: `{ \"net.ipv4.ip_forward\" = 1 }` (only `net.*`)", (),
        shown="`{}`")
    routes: tuple[Route, ...] = key(
        "`[\"10.1.0.0/16 via 192.168.1.1\", \"default via 192.168.1.1\"]`: `ip route add` in the "
        "node's namespace, after its addresses, before any daemon starts", (), shown="`[]`")
    router: dict | None = key("the node's vnet-router config, inline (a TOML table in the "
                              "format of `docs/configuration.md`)", None)
    router_config: Str | None = key("or: a vnet-router config file, relative to the topology "
                                    "file", None)
    daemon: Literal["router", "host"] = key(
        "`\"router\"`: run `vnet-router`; `\"host\"`: run `vnet-hostd` (`python3 -m "
        "vnet_host.daemon`) with the config as a host profile (`[host]` allowed, no "
        "`[[switch]]`); the lab defaults `host.state_dir` to `{workdir}/NODE-state` and "
        "`host.namespace_prefix` to `{prefix}NODE-`, so vNets joined at run time are named "
        "like the others", "router")
    commands: tables(Command) = key(
        "`[[node.commands]]`: commands run in order, after all daemons are ready or before them "
        "(below)", ())
    interfaces: tuple[str, ...] = derived((), "from the links, in file order")
    router_key: str = derived("", '"node[1].router" or the router_config file, for messages')
    vnets: tuple[str, ...] = derived((), "vNet names of the router config")

    @property
    def has_router(self) -> bool:
        return self.router is not None

    @property
    def role(self) -> str:
        """What the node is in the lab: ``"router"`` (a substrate router: it forwards within
        a vNet -- a ``[[switch]]``, a vNet with several logical interfaces or with members),
        ``"end-system"`` (it only terminates vNets; any ``vnet-hostd`` node), ``"daemon"``
        (runs vnet-router with no vNet of its own, e.g. only the VBM) or ``"plain"`` (no
        daemon)."""
        if self.router is None:
            return "plain"
        if self.daemon == "host":
            return "end-system"
        r = self.router
        per_vnet: dict = {}
        for li in r.get("interface", []):
            per_vnet[li.get("vnet")] = per_vnet.get(li.get("vnet"), 0) + 1
        if r.get("switch") or any(n > 1 for n in per_vnet.values()) or \
                any("members" in v for v in r.get("vnet", [])):
            return "router"
        return "end-system" if per_vnet else "daemon"

    @rules
    def _one_router(self):
        if self.router is not None and self.router_config is not None:
            raise Invalid("router_config", "give either 'router' or 'router_config', not both")


class LabSection(Schema):
    """``[lab]`` (optional)."""

    name: Str | None = key("shown in messages", None, shown="the file's stem")
    description: Str = key("free text", "")
    keys: Bool = key(
        "authenticate the control messages: the lab writes a fresh key file, "
        "`WORKDIR/lab.key`, and every substrate link without a `key_file` of its own gets it; "
        "`false`: links without one run unauthenticated (each daemon warns at start)", True)
    management: Cidr | None = key(
        "an IPv4 network, e.g. `\"172.31.0.0/24\"`, for the lab's management network "
        "(docs/lab.md, \"Management network\"); none of the lab's addresses in it", None,
        shown="none")


class Topology(Schema):
    """A whole topology file."""

    path: str = derived("<string>", "the file it was read from")
    name: str = derived("", "[lab].name or the file's stem")
    nodes: tables(Node) = key("`[[node]]`", (), alias="node")
    switches: tables(Switch) = key("`[[switch]]`", (), alias="switch")
    links: tables(Link) = key("`[[link]]`", (), alias="link")
    lab: LabSection = key("`[lab]`", LabSection())

    @classmethod
    def from_file(cls, data, file):
        return {**data, "path": file}

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if name == n.name:
                return n
        raise KeyError(f"no node {name!r} in topology {self.path} "
                       f"(nodes: {', '.join(n.name for n in self.nodes)})")

    def endpoints(self):
        for link in self.links:
            yield link.a
            yield link.b

    def macs(self) -> dict[tuple[str, str], str]:
        """(node or switch name, ifname) -> MAC of every link end."""
        return {(e.owner, e.ifname): e.mac for e in self.endpoints()}

    def mac(self, node: str, ifname: str) -> str:
        try:
            return self.macs()[(node, ifname)]
        except KeyError:
            raise KeyError(f"no interface {node}:{ifname} in topology {self.path}") from None

    @rules
    def _resolve(self):
        switches: set[str] = set()
        for i, sw in enumerate(self.switches):
            if sw.name in switches:
                raise Invalid(("switch", i, "name"), f"duplicate switch {sw.name!r}")
            switches.add(sw.name)
        nodes: set[str] = set()
        for i, n in enumerate(self.nodes):
            if n.name in nodes:
                raise Invalid(("node", i, "name"), f"duplicate node {n.name!r}")
            if n.name in switches:
                raise Invalid(("node", i, "name"), f"{n.name!r} is already a switch (names "
                              "share one namespace)")
            nodes.add(n.name)
        links, ifaces = _resolve_links(self.links, nodes, switches)
        if self.lab.management is not None:
            mgmt.check(self.lab.management, nodes | switches, ifaces, self.nodes)
        macmap = {(e.owner, e.ifname): e.mac for link in links for e in (link.a, link.b)}
        base = Path(self.path).parent if not self.path.startswith("<") else Path(".")
        self._complete(name=self.lab.name if self.lab.name is not None else Path(self.path).stem,
                       links=links,
                       nodes=tuple(_complete_node(self.path, i, n, tuple(ifaces[n.name]), macmap,
                                                  base) for i, n in enumerate(self.nodes)))


def _resolve_links(items, nodes: set[str], switches: set[str]):
    """Links with their ends resolved (switch ports, MACs); each node's interfaces."""
    links: list[Link] = []
    ifaces: dict[str, list[str]] = {n: [] for n in nodes}
    ports: dict[str, list[str]] = {sw: [] for sw in switches}
    macs: dict[str, str] = {}
    for i, link in enumerate(items):
        at = ("link", i)
        if link.a.switch in switches and link.b.switch in switches:     # a trunk
            links.append(trunk_link(link, i, ports))
            continue
        if link.a.switch in switches and link.b.switch is not None:     # say what b lacks
            _node_end(link.b, at + ("b",), ifaces, switches, allow_switch=True)
        a_node, a_if = _node_end(link.a, at + ("a",), ifaces, switches, allow_switch=False)
        b_node, b_if = _node_end(link.b, at + ("b",), ifaces, switches, allow_switch=True)
        if b_if is None:                    # a switch port: named after what plugs into it
            port = f"{a_node}-{a_if}"
            if len(port) > 15 or port in ports[b_node]:
                port = f"p{i}"
            ports[b_node].append(port)
            b = Endpoint(ifname=port, mac=link.b_mac or derived_mac(b_node, port), switch=b_node)
        else:
            for k in ("port_rate", "port_queue"):
                if getattr(link, k) is not None:
                    raise Invalid(at + (k,), f"{k} is for a switch port; b = "
                                  f"{b_node}:{b_if} is a node's interface")
            ifaces[b_node].append(b_if)
            b = Endpoint(ifname=b_if, mac=link.b_mac or derived_mac(b_node, b_if), node=b_node)
        ifaces[a_node].append(a_if)
        a = Endpoint(ifname=a_if, mac=link.a_mac or derived_mac(a_node, a_if), node=a_node)
        links.append(link.model_copy(update={"a": a, "b": b}))
    for i, link in enumerate(links):
        for end, name in ((link.a, "a_mac"), (link.b, "b_mac")):
            if end.mac in macs:
                raise Invalid(("link", i, name), f"MAC {end.mac} of {end} is already used by "
                              f"{macs[end.mac]}")
            macs[end.mac] = str(end)
    return tuple(links), ifaces


def trunk_link(link: Link, i: int, ports: dict[str, list[str]]) -> Link:
    """A switch-to-switch link with its ports named (``trunks.port_names``)."""
    a_sw, b_sw = link.a.switch, link.b.switch
    if a_sw == b_sw:
        raise Invalid(("link", i, "b"), f"a trunk from switch {a_sw!r} to itself")
    a, b = trunks.port_names(a_sw, b_sw, i, ports)
    return link.model_copy(update={
        "a": Endpoint(ifname=a, mac=link.a_mac or derived_mac(a_sw, a), switch=a_sw),
        "b": Endpoint(ifname=b, mac=link.b_mac or derived_mac(b_sw, b), switch=b_sw)})


def _node_end(end: Endpoint, where: tuple, ifaces, switches, *, allow_switch: bool):
    if end.switch is not None:
        value = end.switch
        if allow_switch and value in switches:
            return value, None
        known = "a switch name or NODE:IFNAME" if allow_switch else "NODE:IFNAME"
        problem = (f"{value!r} is a switch: 'b' must be one too (a trunk), else put the node "
                   "side in 'a'" if value in switches
                   else f"unknown switch {value!r}" if allow_switch else f"bad endpoint {value!r}")
        raise Invalid(where, f"{problem} (want {known})")
    if end.node not in ifaces:
        raise Invalid(where, f"unknown node {end.node!r} (known: "
                      f"{', '.join(sorted(ifaces)) or 'none'})")
    if end.ifname == "lo" or end.ifname in ifaces[end.node]:
        raise Invalid(where, f"interface {end.node}:{end.ifname} is already in use")
    return end.node, end.ifname


def _complete_node(file: str, i: int, node: Node, interfaces: tuple[str, ...], macmap,
                   base: Path) -> Node:
    at = ("node", i)
    for ifname, _cidrs in node.addresses:
        if ifname not in interfaces and ifname != "lo":
            raise Invalid(at + ("addresses", ifname), f"node {node.name} has no interface "
                          f"{ifname!r} (its links give it: {', '.join(interfaces) or 'none'})")
    router, router_key, vnets = _router(file, i, node, interfaces, macmap, base)
    commands = []
    names = set()
    for j, c in enumerate(node.commands):
        if c.vnet is not None and c.vnet not in vnets:
            raise Invalid(at + ("commands", j, "vnet"), f"node {node.name} has no vNet "
                          f"{c.vnet!r} (its router config has: {', '.join(vnets) or 'none'})")
        if c.vnet is not None and c.when == "before":
            raise Invalid(at + ("commands", j, "when"), "a command run before the daemons "
                          "cannot run in a vNet namespace (the daemon makes it)")
        if (c.name or f"cmd{j}") in names:
            raise Invalid(at + ("commands", j, "name"), f"node {node.name} has two commands "
                          f"named {c.name or f'cmd{j}'!r}")
        names.add(c.name or f"cmd{j}")
        commands.append(c.model_copy(update={"key": f"node[{i}].commands[{j}]"}))
    return node.model_copy(update={"interfaces": interfaces, "router": router,
                                   "router_key": router_key, "vnets": vnets,
                                   "commands": tuple(commands)})


def parse_node_config(rendered: dict, file: str, daemon: str) -> rconfig.NodeConfig:
    """Validate a rendered node config with the schema of its daemon."""
    if daemon == "host":
        return hconfig.parse(rendered, file).node
    return rconfig.parse(rendered, file)


def _router(topo_file: str, i: int, node: Node, interfaces, macmap, base: Path):
    if node.router is None and node.router_config is None:
        return None, "", ()
    if node.router is not None:
        table, where, file = node.router, f"node[{i}].router", topo_file
    else:
        file = str(base / node.router_config)
        try:
            table = read_toml(file)
        except ConfigError as e:
            raise Invalid(("node", i, "router_config"),
                          f"cannot read {file}: {e.problem}") from None
        where = ""
    # validate with a sample prefix now, so a lab never half-builds on a bad router config
    try:
        rendered = render(table, node.name, SAMPLE_PREFIX, SAMPLE_WORKDIR, macmap, node.daemon)
        cfg = parse_node_config(rendered, file, node.daemon)
    except ConfigError as e:
        key = ".".join(k for k in (where, e.key) if k and k != "-") or "-"
        raise ConfigError(file if e.file == "-" else e.file, key, e.problem) from None
    for j, link in enumerate(cfg.substrate_links):
        if link.interface is not None and link.interface not in interfaces:
            raise ConfigError(file, _join(where, f"substrate_link[{j}].interface"),
                              f"node {node.name} has no interface {link.interface!r} "
                              f"(its links give it: {', '.join(interfaces) or 'none'})")
    for j, v in enumerate(cfg.vnets):
        if not v.namespace.startswith(SAMPLE_PREFIX):
            raise ConfigError(file, _join(where, f"vnet[{j}].namespace"),
                              f"{table['vnet'][j].get('namespace')!r} must start with "
                              "'{prefix}' so the lab can find and remove it "
                              "(or leave it out: the lab names it {prefix}NODE-VNET)")
    return table, where or file, tuple(v.name for v in cfg.vnets)


def _join(*parts):
    return ".".join(p for p in parts if p)


# -- loading ----------------------------------------------------------------------------------

def parse(data: dict, file: str = "<string>") -> Topology:
    return validate(Topology, data, file)


def load(path: str | Path) -> Topology:
    return parse(read_toml(path), str(path))


def loads(text: str, path: str = "<string>") -> Topology:
    return parse(parse_toml(text, path), path)


def derived_mac(owner: str, ifname: str) -> str:
    """A stable, locally administered unicast MAC for ``owner:ifname`` (02:xx:xx:xx:xx:xx)."""
    digest = hashlib.sha256(f"{owner}:{ifname}".encode()).digest()
    return ":".join(f"{b:02x}" for b in b"\x02" + digest[:5])


# -- rendering router configs -----------------------------------------------------------------

def render(table: dict, node: str, prefix: str, workdir: str,
           macs: dict[tuple[str, str], str], daemon: str = "router",
           key_file: str | None = None) -> dict:
    """The router config of ``node`` with placeholders substituted and lab defaults filled in.

    Defaults: ``node.name`` = the node's name, ``node.control_socket`` = WORKDIR/NODE.sock,
    a vNet's ``namespace`` = PREFIX + NODE + "-" + VNET, and (``key_file``: the lab's key, when
    ``[lab] keys``) every substrate link's ``key_file``.  Raises ConfigError (file "-") on an
    unknown placeholder.
    """
    values = {"prefix": prefix, "node": node, "workdir": workdir}

    def sub(text: str, key: str) -> str:
        def one(m):
            kind, arg = m.group(1), m.group(2)
            if kind == "mac" and arg is not None:
                owner, _, ifname = arg.partition(":")
                if (owner, ifname) not in macs:
                    raise ConfigError("-", key, f"{{mac:{arg}}}: no link end {arg!r} in the "
                                      f"topology (want {{mac:NODE:IFNAME}})")
                return macs[(owner, ifname)]
            if kind in values and arg is None:
                return values[kind]
            raise ConfigError("-", key, f"unknown placeholder {m.group(0)!r} (known: {{prefix}}, "
                              "{node}, {workdir}, {mac:NODE:IFNAME})")
        return _PLACEHOLDER.sub(one, text)

    def walk(value, key):
        if isinstance(value, str):
            return sub(value, key)
        if isinstance(value, dict):
            return {k: walk(v, f"{key}.{k}" if key else k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return value

    out = walk(table, "")
    section = out.setdefault("node", {})
    if isinstance(section, dict):
        section.setdefault("name", node)
        section.setdefault("control_socket", f"{workdir}/{node}.sock")
    for v in out.get("vnet", []) if isinstance(out.get("vnet"), list) else []:
        if isinstance(v, dict) and "namespace" not in v and isinstance(v.get("name"), str):
            v["namespace"] = f"{prefix}{node}-{v['name']}"
    if key_file is not None:
        for s in out.get("substrate_link", []) if isinstance(out.get("substrate_link"),
                                                              list) else []:
            if isinstance(s, dict):
                s.setdefault("key_file", key_file)
    if daemon == "host":        # vnet-hostd: state and run-time vNet namespaces in the lab
        host = out.setdefault("host", {})
        if isinstance(host, dict):
            host.setdefault("state_dir", f"{workdir}/{node}-state")
            host.setdefault("namespace_prefix", f"{prefix}{node}-")
    return out


def render_router(topo: Topology, node: str, prefix: str, workdir: str,
                  key_file: str | None = None) -> dict:
    """``node``'s config in a lab; ``key_file``: the lab's key (``[lab] keys``)."""
    n = topo.node(node)
    if n.router is None:
        raise ValueError(f"node {node} has no router config")
    return render(n.router, node, prefix, workdir, topo.macs(), n.daemon, key_file)


# -- paths --------------------------------------------------------------------------------------

def _configs(topo: Topology) -> dict:
    macs = topo.macs()
    return {n.name: parse_node_config(render(n.router, n.name, SAMPLE_PREFIX, SAMPLE_WORKDIR,
                                             macs, n.daemon), topo.path, n.daemon)
            for n in topo.nodes if n.router is not None}


def underlay_report(topo: Topology) -> list[str]:
    """``vnet-lab check``: a warning for each UDP link whose ``local`` address is not among its
    node's ``addresses`` or whose ``remote`` is in none of their subnets nor of the node's
    ``routes``.  What the node's ``[[node.commands]]`` add is not known here: those that run
    after the daemons start, which then bring such a link up (the daemon retries)."""
    lines = []
    for name, cfg in _configs(topo).items():
        node = topo.node(name)
        nets = [ipaddress.ip_interface(c) for _if, cidrs in node.addresses for c in cidrs]
        routed = [ipaddress.ip_network("0.0.0.0/0" if r.split()[0] == "default" else
                                       r.split()[0], strict=False) for r in node.routes]
        later = " (unless one of its commands adds it: the daemon waits for it)" \
            if node.commands else ""
        for s in cfg.substrate_links:
            if s.kind != "udp":
                continue
            local, remote = ipaddress.ip_address(s.local[0]), ipaddress.ip_address(s.remote[0])
            if not (local.is_loopback or local.is_unspecified or
                    any(n.ip == local for n in nets)):
                lines.append(f"warning: node {name}: substrate link {s.id}: local address "
                             f"{local} is not among the node's addresses{later}")
            if not (remote.is_loopback or any(remote in n.network for n in nets) or
                    any(remote.version == r.version and remote in r for r in routed)):
                lines.append(f"warning: node {name}: substrate link {s.id}: no route to remote "
                             f"{remote} (in none of the node's subnets){later}")
    return lines


def path_net(topo: Topology) -> Net:
    """The topology's routers and link ends as ``model.paths.Net`` (``vnet-lab check``: the
    MTU of every logical interface's static path)."""
    configs = _configs(topo)
    ends, lan = {}, trunks.segments(topo)
    for i, link in enumerate(topo.links):
        segment = lan[link.b.switch] if link.b.switch is not None else f"link{i}"
        for e in (link.a, link.b):
            if e.node is not None:
                ends[(e.node, e.ifname)] = End(wire.mac_to_bytes(e.mac),
                                               link.mtu or 1500, segment)
    return Net(configs, ends)
