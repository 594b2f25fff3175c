"""Lab topology files: nodes, switches and links, parsed into frozen objects.

A topology file is TOML (the format is documented in ``docs/lab.md``)::

    [lab]
    name = "two hosts"

    [[switch]]
    name = "sw"

    [[node]]
    name = "h1"
    addresses = { eth0 = ["192.168.77.1/24"] }     # legacy IP, not the substrate's
    sysctl = { "net.ipv4.ip_forward" = 1 }
    router = { ... a vnet-router config (vnet_router/config.py) as a TOML table ... }
    # or: router_config = "h1.toml"                 (relative to the topology file)
    [[node.commands]]                               # run after the daemons are ready
    vnet = "blue"                                   # in this vNet's namespace (else the node's)
    run = "ip link add br0 type bridge"

    [[link]]
    a = "h1:eth0"                                   # node:interface
    b = "sw"                                        # a switch, or another node:interface
    a_mac = "02:00:00:00:00:01"                     # optional; else derived from the names
    mtu = 1500                                      # optional

:func:`load` validates everything before the lab touches the system, including each embedded
router config (through :func:`vnet_router.config.parse`); every problem raises
:class:`vnet_router.config.ConfigError` naming the file and the key.  Router configs may use the
placeholders ``{prefix}`` (the lab's namespace prefix), ``{node}``, ``{workdir}`` and
``{mac:NODE:IFNAME}``; :func:`render_router` substitutes them when a lab starts.  Building the
topology is ``lab.py``'s business; this module never touches the system.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from vnet_router.model import config as rconfig
from vnet_router.model.config import ConfigError

_NODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,11}$")       # no '-': it separates name parts
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_SYSCTL = re.compile(r"^net\.[A-Za-z0-9_.\-/]+$")
_PLACEHOLDER = re.compile(r"\{([a-z]+)(?::([^{}]*))?\}")

#: a prefix as long as a real one can get ("vl" + a 7-digit pid + "x" + counter + "-"), used
#: to validate router configs before the real prefix is known
SAMPLE_PREFIX = "vl4194304x9-"
SAMPLE_WORKDIR = "/tmp/vnet-lab-sample"


@dataclass(frozen=True)
class Endpoint:
    """One end of a link: an interface of a node, or a port of a switch."""

    ifname: str
    mac: str
    node: str | None = None
    switch: str | None = None

    @property
    def owner(self) -> str:
        return self.node if self.node is not None else self.switch

    def __str__(self):
        return f"{self.owner}:{self.ifname}"


@dataclass(frozen=True)
class Link:
    """A veth pair.  ``a`` is always a node interface; ``b`` a node interface or a switch port."""

    a: Endpoint
    b: Endpoint
    mtu: int | None = None


@dataclass(frozen=True)
class Switch:
    """A Linux bridge (named like the switch) in a namespace of its own."""

    name: str


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    vnet: str | None = None        # None = the node's own namespace
    key: str = ""                  # where it was defined, for error messages

    def __str__(self):
        return shlex.join(self.argv)


@dataclass(frozen=True)
class Node:
    name: str
    interfaces: tuple[str, ...] = ()                          # from the links, in file order
    addresses: tuple[tuple[str, tuple[str, ...]], ...] = ()   # (ifname, (cidr, ...))
    sysctl: tuple[tuple[str, str], ...] = ()
    commands: tuple[Command, ...] = ()
    router: dict | None = field(default=None, hash=False)     # TOML table, placeholders intact
    router_key: str = ""           # "node[1].router" or the router_config file, for messages
    vnets: tuple[str, ...] = ()    # vNet names of the router config
    daemon: str = "router"         # "router": vnet-router; "host": vnet-hostd (host profile)

    @property
    def has_router(self) -> bool:
        return self.router is not None


@dataclass(frozen=True)
class Topology:
    path: str
    name: str
    nodes: tuple[Node, ...]
    switches: tuple[Switch, ...]
    links: tuple[Link, ...]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
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


# -- loading ----------------------------------------------------------------------------------

def load(path: str | Path) -> Topology:
    return parse(rconfig.read_toml(path), str(path))


def loads(text: str, path: str = "<string>") -> Topology:
    return parse(rconfig.parse_toml(text, path), path)


def derived_mac(owner: str, ifname: str) -> str:
    """A stable, locally administered unicast MAC for ``owner:ifname`` (02:xx:xx:xx:xx:xx)."""
    digest = hashlib.sha256(f"{owner}:{ifname}".encode()).digest()
    return ":".join(f"{b:02x}" for b in b"\x02" + digest[:5])


def parse(data: dict, file: str = "<string>") -> Topology:
    try:
        return _parse(data, file)
    except ConfigError as e:
        if e.key.startswith("."):       # top-level keys: "link", not ".link"
            raise ConfigError(e.file, e.key[1:], e.problem) from None
        raise


def _parse(data: dict, file: str) -> Topology:
    base = Path(file).parent if not file.startswith("<") else Path(".")
    top = rconfig._Section(file, "", data)

    def tables(name):
        top.used.add(name)
        items = data.get(name, [])
        if not isinstance(items, list):
            raise ConfigError(file, name, f"must be an array of tables ([[{name}]])")
        return [rconfig._Section(file, f"{name}[{i}]", item) for i, item in enumerate(items)]

    name = Path(file).stem
    if "lab" in data:
        top.used.add("lab")
        s = rconfig._Section(file, "lab", data["lab"])
        name = s.get("name", str, name)
        s.get("description", str, "")
        s.done()

    switches: dict[str, Switch] = {}
    for s in tables("switch"):
        sname = s.get("name", str, check=_check(_NODE, "switch name", _NAME_RULE))
        if sname in switches:
            raise s.err("name", f"duplicate switch {sname!r}")
        s.done()
        switches[sname] = Switch(sname)

    node_secs: dict[str, rconfig._Section] = {}
    for s in tables("node"):
        nname = s.get("name", str, check=_check(_NODE, "node name", _NAME_RULE))
        if nname in node_secs:
            raise s.err("name", f"duplicate node {nname!r}")
        if nname in switches:
            raise s.err("name", f"{nname!r} is already a switch (names share one namespace)")
        node_secs[nname] = s

    # links first: they define the nodes' interfaces
    links: list[Link] = []
    ifaces: dict[str, list[str]] = {n: [] for n in node_secs}
    ports: dict[str, list[str]] = {sw: [] for sw in switches}
    macs: dict[str, str] = {}
    for i, s in enumerate(tables("link")):
        a_node, a_if = _node_end(s, "a", node_secs, ifaces, allow_switch=False, switches=switches)
        b_node, b_if = _node_end(s, "b", node_secs, ifaces, allow_switch=True, switches=switches)
        mtu = s.get("mtu", int, None, rconfig._range(68, 65535, "MTU"))
        a_mac = s.get("a_mac", str, None, _mac)
        b_mac = s.get("b_mac", str, None, _mac)
        if b_if is None:                    # a switch port: named after what plugs into it
            port = f"{a_node}-{a_if}"
            if len(port) > 15 or port in ports[b_node]:
                port = f"p{i}"
            ports[b_node].append(port)
            b = Endpoint(port, b_mac or derived_mac(b_node, port), switch=b_node)
        else:
            ifaces[b_node].append(b_if)
            b = Endpoint(b_if, b_mac or derived_mac(b_node, b_if), node=b_node)
        ifaces[a_node].append(a_if)
        a = Endpoint(a_if, a_mac or derived_mac(a_node, a_if), node=a_node)
        for end, key in ((a, "a_mac"), (b, "b_mac")):
            if end.mac in macs:
                raise s.err(key, f"MAC {end.mac} of {end} is already used by {macs[end.mac]}")
            macs[end.mac] = str(end)
        s.done()
        links.append(Link(a, b, mtu))

    macmap = {(e.owner, e.ifname): e.mac for link in links for e in (link.a, link.b)}
    nodes = [_node(s, nname, tuple(ifaces[nname]), macmap, base)
             for nname, s in node_secs.items()]
    top.done()
    return Topology(file, name, tuple(nodes), tuple(switches.values()), tuple(links))


_NAME_RULE = "a letter, then letters, digits, '_'; at most 12"


def _check(regex, what, rule):
    def check(v):
        if not regex.match(v):
            raise ValueError(f"bad {what} {v!r} ({rule})")
        return v
    return check


def _mac(v):
    if not _MAC.match(v):
        raise ValueError(f"bad MAC {v!r} (want e.g. 02:00:00:00:00:01)")
    if int(v[:2], 16) & 1:
        raise ValueError(f"MAC {v} is a multicast address (first octet must be even)")
    return v.lower()


def _node_end(s, key, nodes, ifaces, *, allow_switch, switches):
    value = s.get(key, str)
    if ":" not in value:
        if allow_switch and value in switches:
            return value, None
        known = "a switch name or NODE:IFNAME" if allow_switch else "NODE:IFNAME"
        problem = (f"{value!r} is a switch; put the node side in 'a'" if value in switches
                   else f"unknown switch {value!r}" if allow_switch else f"bad endpoint {value!r}")
        raise s.err(key, f"{problem} (want {known})")
    node, _, ifname = value.partition(":")
    if node not in nodes:
        raise s.err(key, f"unknown node {node!r} (known: {', '.join(sorted(nodes)) or 'none'})")
    if not _IFNAME.match(ifname):
        raise s.err(key, f"bad interface name {ifname!r} (at most 15 of letters, digits, '.-_')")
    if ifname == "lo" or ifname in ifaces[node]:
        raise s.err(key, f"interface {node}:{ifname} is already in use")
    return node, ifname


def _node(s, name, interfaces, macmap, base: Path) -> Node:
    addresses = []
    s.used.add("addresses")
    raw = s.data.get("addresses", {})
    if not isinstance(raw, dict):
        raise s.err("addresses", "must be a table { IFNAME = [\"CIDR\", ...] }")
    for ifname, cidrs in raw.items():
        if ifname not in interfaces and ifname != "lo":
            raise s.err(f"addresses.{ifname}", f"node {name} has no interface {ifname!r} "
                        f"(its links give it: {', '.join(interfaces) or 'none'})")
        if not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs):
            raise s.err(f"addresses.{ifname}", "must be a list of strings like \"10.0.0.1/24\"")
        for j, c in enumerate(cidrs):
            try:
                rconfig._address(c)
            except ValueError as e:
                raise s.err(f"addresses.{ifname}[{j}]", str(e)) from None
        addresses.append((ifname, tuple(cidrs)))

    sysctl = []
    s.used.add("sysctl")
    raw = s.data.get("sysctl", {})
    if not isinstance(raw, dict):
        raise s.err("sysctl", "must be a table { \"net.ipv4.ip_forward\" = 1 }")
    for key, value in raw.items():
        if not _SYSCTL.match(key):
            raise s.err(f"sysctl.{key}", "only per-namespace network settings (net.*) may be set")
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, str)):
            raise s.err(f"sysctl.{key}", f"must be an integer or a string, not {value!r}")
        sysctl.append((key, str(value)))

    daemon = s.get("daemon", str, "router", rconfig._choice(("router", "host")))
    router, router_key, vnets = _router(s, name, interfaces, macmap, base, daemon)

    commands = []
    s.used.add("commands")
    raw = s.data.get("commands", [])
    if not isinstance(raw, list):
        raise s.err("commands", "must be an array of tables ([[node.commands]])")
    for j, item in enumerate(raw):
        c = rconfig._Section(s.file, f"{s.key}.commands[{j}]", item)
        run = c.get("run", (str, list))
        if isinstance(run, str):
            try:
                argv = tuple(shlex.split(run))
            except ValueError as e:
                raise c.err("run", f"cannot split {run!r}: {e}") from None
        else:
            if not all(isinstance(a, str) for a in run):
                raise c.err("run", "must be a string or a list of strings")
            argv = tuple(run)
        if not argv:
            raise c.err("run", "empty command")
        vnet = c.get("vnet", str, None)
        if vnet is not None and vnet not in vnets:
            raise c.err("vnet", f"node {name} has no vNet {vnet!r} "
                        f"(its router config has: {', '.join(vnets) or 'none'})")
        c.done()
        commands.append(Command(argv, vnet, c.key))
    s.done()
    return Node(name, interfaces, tuple(addresses), tuple(sysctl), tuple(commands),
                router, router_key, vnets, daemon)


def parse_node_config(rendered: dict, file: str, daemon: str) -> rconfig.NodeConfig:
    """Validate a rendered node config with the parser of its daemon."""
    if daemon == "host":
        from vnet_host import config as hconfig        # the lab drives both daemons
        return hconfig.parse(rendered, file).node
    return rconfig.parse(rendered, file)


def _router(s, name, interfaces, macmap, base: Path, daemon: str = "router"):
    inline = s.get("router", dict, None)
    ref = s.get("router_config", str, None)
    if inline is not None and ref is not None:
        raise s.err("router_config", "give either 'router' or 'router_config', not both")
    if inline is None and ref is None:
        return None, "", ()
    if inline is not None:
        table, where, file = inline, f"{s.key}.router", s.file
    else:
        file = str(base / ref)
        try:
            with open(file, "rb") as f:
                table = tomllib.load(f)
        except OSError as e:
            raise s.err("router_config", f"cannot read {file}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise s.err("router_config", f"{file} is not valid TOML: {e}") from None
        where = ""
    # validate with a sample prefix now, so a lab never half-builds on a bad router config
    try:
        rendered = render(table, name, SAMPLE_PREFIX, SAMPLE_WORKDIR, macmap, daemon)
        cfg = parse_node_config(rendered, file, daemon)
    except ConfigError as e:
        key = ".".join(k for k in (where, e.key.lstrip(".")) if k and k != "-") or "-"
        raise ConfigError(file if e.file == "-" else e.file, key, e.problem) from None
    for link in cfg.substrate_links:
        if link.interface is not None and link.interface not in interfaces:
            i = cfg.substrate_links.index(link)
            raise ConfigError(file, _join(where, f"substrate_link[{i}].interface"),
                              f"node {name} has no interface {link.interface!r} "
                              f"(its links give it: {', '.join(interfaces) or 'none'})")
    for i, v in enumerate(cfg.vnets):
        if not v.namespace.startswith(SAMPLE_PREFIX):
            raise ConfigError(file, _join(where, f"vnet[{i}].namespace"),
                              f"{table['vnet'][i].get('namespace')!r} must start with "
                              "'{prefix}' so the lab can find and remove it "
                              "(or leave it out: the lab names it {prefix}NODE-VNET)")
    return table, where or file, tuple(v.name for v in cfg.vnets)


def _join(*parts):
    return ".".join(p for p in parts if p)


# -- rendering router configs -----------------------------------------------------------------

def render(table: dict, node: str, prefix: str, workdir: str,
           macs: dict[tuple[str, str], str], daemon: str = "router") -> dict:
    """The router config of ``node`` with placeholders substituted and lab defaults filled in.

    Defaults: ``node.name`` = the node's name, ``node.control_socket`` = WORKDIR/NODE.sock,
    a vNet's ``namespace`` = PREFIX + NODE + "-" + VNET.  Raises ConfigError (file "-") on an
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
    if daemon == "host":        # vnet-hostd: state and run-time vNet namespaces in the lab
        host = out.setdefault("host", {})
        if isinstance(host, dict):
            host.setdefault("state_dir", f"{workdir}/{node}-state")
            host.setdefault("namespace_prefix", f"{prefix}{node}-")
    return out


def render_router(topo: Topology, node: str, prefix: str, workdir: str) -> dict:
    n = topo.node(node)
    if n.router is None:
        raise ValueError(f"node {node} has no router config")
    return render(n.router, node, prefix, workdir, topo.macs(), n.daemon)


# -- writing TOML (the lab writes each node's rendered config to a file) ----------------------

_BARE = re.compile(r"^[A-Za-z0-9_\-]+$")


def dump_toml(data: dict) -> str:
    """Serialise a config-shaped table: scalars, lists, tables and arrays of tables."""
    lines: list[str] = []
    _dump_table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)          # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def _is_aot(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _dump_table(data: dict, path: list[str], lines: list[str]):
    for k, v in data.items():
        if not isinstance(v, dict) and not _is_aot(v):
            lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", "[" + ".".join(_key(p) for p in path + [k]) + "]"]
            _dump_table(v, path + [k], lines)
    for k, v in data.items():
        if _is_aot(v):
            for item in v:
                lines += ["", "[[" + ".".join(_key(p) for p in path + [k]) + "]]"]
                _dump_table(item, path + [k], lines)
