"""TOML configuration of a substrate node, validated into frozen objects.

``load(path)`` reads and validates the whole file before anything touches the system; every
problem raises :class:`ConfigError` naming the file, the key and what is wrong.  The daemon
builds its tables (``tables.py``) from the returned :class:`NodeConfig`.  The reference for
every key is ``docs/configuration.md``.
"""
from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from vnet_router.wire import substrate as wire
from vnet_router.model.units import parse_rate, parse_size

KINDS = ("p2p", "multiaccess", "udp")
IFACE_KINDS = ("tap", "socket")
DATAPATHS = ("auto", "reference", "fast")
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")


class ConfigError(ValueError):
    def __init__(self, file: str, key: str, problem: str):
        super().__init__(f"{file}: {key}: {problem}")
        self.file, self.key, self.problem = file, key, problem


@dataclass(frozen=True)
class Rate:
    """A virtual link's rate in bit/s: min <= current <= max; ``None`` max = unlimited."""

    min: int = 0
    max: int | None = None
    burst: int | None = None        # bytes; None = derived from rate and MTU
    cur: int | None = None          # set by the Traffic Manager; None = run at ``max``

    @property
    def current(self) -> int | None:
        return self.max if self.cur is None else self.cur

    @property
    def managed(self) -> bool:
        """A range the Traffic Manager moves the current rate in."""
        return self.max is not None and self.min < self.max


UNLIMITED = Rate()


@dataclass(frozen=True)
class NodeSection:
    name: str = "vnet"
    control_socket: str = "/run/vnet/vnet-router.sock"
    ethertype: int = wire.ETHERTYPE_SUBSTRATE
    udp_port: int = wire.UDP_PORT_DEFAULT
    datapath: str = "auto"
    log_level: str = "info"
    metrics: tuple[str, int] | None = None     # Prometheus HTTP listen address


@dataclass(frozen=True)
class SubstrateLink:
    id: str
    kind: str
    interface: str | None = None       # p2p, multiaccess
    peer_mac: bytes | None = None      # p2p
    vlan: int | None = None            # p2p
    priority: int = 0                  # p2p (802.1p PCP)
    local: tuple[str, int] | None = None    # udp
    remote: tuple[str, int] | None = None   # udp
    capacity: int | None = None        # bit/s
    mtu: int | None = None             # None = the interface's MTU (udp: 1500)


@dataclass(frozen=True)
class VNet:
    name: str
    id: int
    namespace: str


@dataclass(frozen=True)
class LogicalInterface:
    """A logical interface = input virtual link + output virtual link.

    ``kind`` "tap": a TAP in the vNet's namespace (payload = the vNet's Ethernet frame);
    "socket": a library endpoint (payload = the vNet packet as the protocol wrote it), handed
    to an application by the daemon over its control socket (``vnet_host.lib``)."""

    vnet: str
    name: str
    substrate_link: str
    in_vli: int
    out_vli: int
    rate: Rate = UNLIMITED             # output shaping
    in_rate: Rate = UNLIMITED          # input policing
    queue: int = 256                   # packets held by the output shaper
    mac: bytes | None = None
    addresses: tuple[str, ...] = ()
    kind: str = "tap"


@dataclass(frozen=True)
class Switch:
    """Pass-through: (in_link, in_vli) -> (out_link, out_vli), a VLI swap."""

    vnet: str
    in_link: str
    in_vli: int
    out_link: str
    out_vli: int
    rate: Rate = UNLIMITED
    queue: int = 256


@dataclass(frozen=True)
class TMSection:
    """``[tm]``: the Traffic Manager and the control protocol (present = enabled)."""

    idle_interval: float = 10.0     # an output virtual link idle this long falls to its minimum
    tick: float = 0.25              # how often rates, demand and retries are looked at
    hello_interval: float = 1.0
    report_interval: float = 5.0    # aggregates reported to the VBM (rebuilds a new VBM)
    vbm_link: str | None = None     # substrate link on which the VBM is reached (its LAN)
    dynamic_vli_base: int = 1024    # VLIs this node allocates for dynamic virtual links
    start_at: str = "min"           # managed static links start at their "min" or "max"
    kernel_shaping: bool = False    # shape managed output links with Linux HTB (kshaping.py)


@dataclass(frozen=True)
class VBMShare:
    vnet: int                       # vNet id (a LAN-wide number)
    share: float


@dataclass(frozen=True)
class VBMSection:
    """``[vbm]``: this node runs the LAN's vNet Bandwidth Manager on substrate link ``link``."""

    link: str
    capacity: int | None = None     # LAN bandwidth; default the slowest reported link
    rebuild_time: float = 12.0
    shares: tuple[VBMShare, ...] = ()


@dataclass(frozen=True)
class NodeConfig:
    path: str
    node: NodeSection
    substrate_links: tuple[SubstrateLink, ...]
    vnets: tuple[VNet, ...]
    interfaces: tuple[LogicalInterface, ...]
    switches: tuple[Switch, ...]
    drops: tuple[tuple[str, int], ...] = field(default=())   # (link, vli) explicitly dropped
    tm: TMSection | None = None
    vbm: VBMSection | None = None

    def link(self, link_id: str) -> SubstrateLink:
        return next(s for s in self.substrate_links if s.id == link_id)

    def vnet(self, name: str) -> VNet:
        return next(v for v in self.vnets if v.name == name)


def read_toml(path: str | Path) -> dict:
    """The tables of a TOML file; ConfigError naming the file if it is missing or not TOML."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "-", "file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "-", f"not valid TOML: {e}") from None


def parse_toml(text: str, path: str = "<string>") -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "-", f"not valid TOML: {e}") from None


def load(path: str | Path) -> NodeConfig:
    return parse(read_toml(path), str(path))


def loads(text: str, path: str = "<string>") -> NodeConfig:
    return parse(parse_toml(text, path), path)


class _Section:
    """Reads one table, remembering its key path for error messages."""

    def __init__(self, file: str, key: str, data):
        if not isinstance(data, dict):
            raise ConfigError(file, key, f"must be a table, not {type(data).__name__}")
        self.file, self.key, self.data = file, key, data
        self.used: set[str] = set()

    def err(self, sub: str, problem: str) -> ConfigError:
        return ConfigError(self.file, f"{self.key}.{sub}" if sub else self.key, problem)

    def get(self, name, typ, default=..., check=None):
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise self.err(name, "missing (required)")
            return default
        value = self.data[name]
        if typ is int and isinstance(value, bool) or not isinstance(value, typ):
            tname = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            raise self.err(name, f"must be {tname}, not {type(value).__name__} {value!r}")
        if check is not None:
            try:
                value = check(value)
            except ValueError as e:
                raise self.err(name, str(e)) from None
        return value

    def done(self):
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.err(unknown[0], "unknown key")


def _range(lo, hi, what):
    def check(v):
        if not lo <= v <= hi:
            raise ValueError(f"{what} {v} out of range {lo}..{hi}")
        return v
    return check


def _vli(v):
    if not 1 <= v <= 0xFFFE:
        raise ValueError(f"VLI {v} out of range 1..65534 (0 is the control channel, "
                         f"65535 is reserved)")
    return v


def _name(v):
    if not _NAME.match(v):
        raise ValueError(f"bad name {v!r} (letters, digits, '-', '_'; at most 32)")
    return v


def _ifname(v):
    if not _IFNAME.match(v):
        raise ValueError(f"bad interface name {v!r} (at most 15 of letters, digits, '.-_')")
    return v


def _endpoint(v):
    host, sep, port = v.rpartition(":")
    host = host.strip("[]")
    if not sep:
        raise ValueError(f"bad address {v!r} (want IP:PORT)")
    try:
        host = str(ipaddress.ip_address(host))
        port = int(port)
    except ValueError:
        raise ValueError(f"bad address {v!r} (want IP:PORT)") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1..65535")
    return host, port


def _address(v):
    try:
        ipaddress.ip_interface(v)
    except ValueError:
        raise ValueError(f"bad address {v!r} (want e.g. 10.0.0.1/24 or fd00::1/64)") from None
    if "/" not in v:
        raise ValueError(f"address {v!r} needs a prefix length, e.g. {v}/24")
    return v


def _rate(sec: _Section, name: str) -> Rate:
    sec.used.add(name)
    if name not in sec.data:
        return UNLIMITED
    value = sec.data[name]
    if isinstance(value, dict):
        sub = _Section(sec.file, f"{sec.key}.{name}", value)
        lo = sub.get("min", (int, str), 0, parse_rate)
        hi = sub.get("max", (int, str), None, parse_rate)
        burst = sub.get("burst", (int, str), None, parse_size)
        sub.done()
        if hi is not None and lo > hi:
            raise sub.err("min", f"min rate {lo} bit/s is above max rate {hi} bit/s")
        return Rate(lo, hi, burst)
    try:
        bps = parse_rate(value)
    except ValueError as e:
        raise sec.err(name, str(e)) from None
    return Rate(bps, bps)


def parse(data: dict, file: str = "<string>") -> NodeConfig:
    top = _Section(file, "", data)
    top.key = ""

    def tables(name):
        top.used.add(name)
        items = data.get(name, [])
        if not isinstance(items, list):
            raise ConfigError(file, name, "must be an array of tables ([[%s]])" % name)
        return [_Section(file, f"{name}[{i}]", item) for i, item in enumerate(items)]

    node = NodeSection()
    if "node" in data:
        top.used.add("node")
        s = _Section(file, "node", data["node"])
        node = NodeSection(
            name=s.get("name", str, "vnet", _name),
            control_socket=s.get("control_socket", str, node.control_socket),
            ethertype=s.get("ethertype", int, wire.ETHERTYPE_SUBSTRATE,
                            _range(0x0600, 0xFFFF, "EtherType")),
            udp_port=s.get("udp_port", int, wire.UDP_PORT_DEFAULT, _range(1, 65535, "port")),
            datapath=s.get("datapath", str, "auto", _choice(DATAPATHS)),
            log_level=s.get("log_level", str, "info",
                            _choice(("debug", "info", "warning", "error"))),
            metrics=s.get("metrics", str, None, _endpoint),
        )
        s.done()

    links: dict[str, SubstrateLink] = {}
    multiaccess_on: dict[str, str] = {}
    p2p_peers: dict[tuple, str] = {}
    for s in tables("substrate_link"):
        lid = s.get("id", str, check=_name)
        if lid in links:
            raise s.err("id", f"duplicate substrate link id {lid!r}")
        kind = s.get("kind", str, check=_choice(KINDS))
        capacity = s.get("capacity", (int, str), None, parse_rate)
        mtu = s.get("mtu", int, None, _range(128, 65535, "MTU"))
        if kind == "udp":
            local = s.get("local", str, check=_endpoint)
            remote = s.get("remote", str, check=_endpoint)
            if ipaddress.ip_address(local[0]).version != ipaddress.ip_address(remote[0]).version:
                raise s.err("remote", "local and remote must both be IPv4 or both IPv6")
            link = SubstrateLink(lid, kind, local=local, remote=remote, capacity=capacity, mtu=mtu)
        else:
            ifname = s.get("interface", str, check=_ifname)
            if kind == "p2p":
                peer = s.get("peer_mac", str, check=wire.mac_to_bytes)
                vlan = s.get("vlan", int, check=_range(1, 4094, "VLAN id"))
                prio = s.get("priority", int, 0, _range(0, 7, "priority (PCP)"))
                key = (ifname, vlan, peer)
                if key in p2p_peers:
                    raise s.err("peer_mac", f"substrate link {p2p_peers[key]!r} already uses peer "
                                f"{wire.mac_to_str(peer)} on {ifname} VLAN {vlan}")
                p2p_peers[key] = lid
                link = SubstrateLink(lid, kind, ifname, peer, vlan, prio, capacity=capacity, mtu=mtu)
            else:
                if ifname in multiaccess_on:
                    raise s.err("interface", f"{ifname} already carries multiaccess substrate link "
                                f"{multiaccess_on[ifname]!r} (one per interface)")
                multiaccess_on[ifname] = lid
                link = SubstrateLink(lid, kind, ifname, capacity=capacity, mtu=mtu)
        s.done()
        links[lid] = link

    vnets: dict[str, VNet] = {}
    ids: dict[int, str] = {}
    namespaces: dict[str, str] = {}
    for s in tables("vnet"):
        name = s.get("name", str, check=_name)
        if name in vnets:
            raise s.err("name", f"duplicate vNet {name!r}")
        vid = s.get("id", int, check=_range(1, 0xFFFF, "vNet id"))
        if vid in ids:
            raise s.err("id", f"vNet id {vid} already used by vNet {ids[vid]!r}")
        ns = s.get("namespace", str, f"vnet-{name}", _name)
        if ns in namespaces:
            raise s.err("namespace", f"namespace {ns!r} already used by vNet {namespaces[ns]!r}")
        s.done()
        ids[vid], namespaces[ns] = name, name
        vnets[name] = VNet(name, vid, ns)

    used_in: dict[tuple[str, int], str] = {}
    used_out: dict[tuple[str, int], str] = {}

    def claim(table, sec, key, link_id, vli, what):
        if (link_id, vli) in table:
            raise sec.err(key, f"duplicate VLI {vli} on substrate link {link_id!r} "
                          f"({what}; already used by {table[(link_id, vli)]})")
        table[(link_id, vli)] = sec.key

    def link_ref(sec, key):
        lid = sec.get(key, str)
        if lid not in links:
            raise sec.err(key, f"unknown substrate link {lid!r} (known: "
                          f"{', '.join(sorted(links)) or 'none'})")
        return lid

    def vnet_ref(sec):
        name = sec.get("vnet", str)
        if name not in vnets:
            raise sec.err("vnet", f"unknown vNet {name!r} (known: {', '.join(sorted(vnets)) or 'none'})")
        return name

    interfaces: list[LogicalInterface] = []
    ifnames: dict[tuple[str, str], str] = {}
    for s in tables("interface"):
        vnet = vnet_ref(s)
        name = s.get("name", str, check=_ifname)
        if (vnet, name) in ifnames:
            raise s.err("name", f"interface {name!r} already defined in vNet {vnet!r}")
        ifnames[(vnet, name)] = s.key
        lid = link_ref(s, "substrate_link")
        in_vli = s.get("in_vli", int, check=_vli)
        out_vli = s.get("out_vli", int, in_vli, _vli)
        claim(used_in, s, "in_vli", lid, in_vli, "input")
        claim(used_out, s, "out_vli", lid, out_vli, "output")
        kind = s.get("kind", str, "tap", _choice(IFACE_KINDS))
        if kind == "socket":
            for key in ("addresses", "mac"):
                if key in s.data:
                    raise s.err(key, "a socket interface has no MAC or IP addresses (the "
                                "protocol on the library does its own addressing)")
        li = LogicalInterface(
            vnet=vnet, name=name, substrate_link=lid, in_vli=in_vli, out_vli=out_vli,
            rate=_rate(s, "rate"), in_rate=_rate(s, "in_rate"),
            queue=s.get("queue", int, 256, _range(1, 1_000_000, "queue length")),
            mac=s.get("mac", str, None, wire.mac_to_bytes),
            addresses=tuple(_address_list(s)), kind=kind,
        )
        s.done()
        interfaces.append(li)

    switches: list[Switch] = []
    for s in tables("switch"):
        # a pass-through node need not host the vNet: the name is an accounting label
        vnet = s.get("vnet", str, check=_name)
        in_link = link_ref(s, "in_link")
        in_vli = s.get("in_vli", int, check=_vli)
        out_link = link_ref(s, "out_link")
        out_vli = s.get("out_vli", int, check=_vli)
        if in_link == out_link and links[in_link].kind == "p2p" and in_vli == out_vli:
            raise s.err("out_vli", "switching a virtual link back onto itself makes a loop")
        claim(used_in, s, "in_vli", in_link, in_vli, "input")
        claim(used_out, s, "out_vli", out_link, out_vli, "output")
        sw = Switch(vnet, in_link, in_vli, out_link, out_vli, _rate(s, "rate"),
                    s.get("queue", int, 256, _range(1, 1_000_000, "queue length")))
        s.done()
        switches.append(sw)

    drops: list[tuple[str, int]] = []
    for s in tables("drop"):
        lid = link_ref(s, "substrate_link")
        vli = s.get("vli", int, check=_vli)
        claim(used_in, s, "vli", lid, vli, "input")
        s.done()
        drops.append((lid, vli))

    tm = vbm = None
    if "tm" in data:
        top.used.add("tm")
        s = _Section(file, "tm", data["tm"])
        tm = TMSection(
            idle_interval=s.get("idle_interval", (int, float), 10.0, _frange(0.1, 86400, "interval")),
            tick=s.get("tick", (int, float), 0.25, _frange(0.01, 10, "tick")),
            hello_interval=s.get("hello_interval", (int, float), 1.0, _frange(0.05, 60, "interval")),
            report_interval=s.get("report_interval", (int, float), 5.0,
                                  _frange(0.1, 3600, "interval")),
            vbm_link=s.get("vbm_link", str, None, _known(links, "substrate link")),
            dynamic_vli_base=s.get("dynamic_vli_base", int, 1024, _vli),
            start_at=s.get("start_at", str, "min", _choice(("min", "max"))),
            kernel_shaping=s.get("kernel_shaping", bool, False),
        )
        s.done()
    if "vbm" in data:
        top.used.add("vbm")
        s = _Section(file, "vbm", data["vbm"])
        link = s.get("link", str, check=_known(links, "substrate link"))
        capacity = s.get("capacity", (int, str), None, parse_rate)
        rebuild = s.get("rebuild_time", (int, float), 12.0, _frange(0, 3600, "rebuild time"))
        s.used.add("share")
        items = s.data.get("share", [])
        if not isinstance(items, list):
            raise s.err("share", "must be an array of tables ([[vbm.share]])")
        shares, total, seen = [], 0.0, set()
        for i, item in enumerate(items):
            sub = _Section(file, f"vbm.share[{i}]", item)
            vid = sub.get("vnet", int, check=_range(1, 0xFFFF, "vNet id"))
            if vid in seen:
                raise sub.err("vnet", f"vNet id {vid} already has a share")
            seen.add(vid)
            share = sub.get("share", (int, float), check=_frange(0.000001, 1, "share"))
            total += share
            if total > 1 + 1e-9:
                raise sub.err("share", f"shares of the LAN would sum to {total:.3f} (> 1): "
                              f"vNet {vid} is refused")
            sub.done()
            shares.append(VBMShare(vid, float(share)))
        s.done()
        vbm = VBMSection(link, capacity, float(rebuild), tuple(shares))
    top.done()
    return NodeConfig(file, node, tuple(links.values()), tuple(vnets.values()),
                      tuple(interfaces), tuple(switches), tuple(drops), tm, vbm)


def _frange(lo, hi, what):
    def check(v):
        if not lo <= v <= hi:
            raise ValueError(f"{what} {v} out of range {lo}..{hi}")
        return float(v)
    return check


def _known(table, what):
    def check(v):
        if v not in table:
            raise ValueError(f"unknown {what} {v!r} (known: {', '.join(sorted(table)) or 'none'})")
        return v
    return check


def _address_list(s: _Section):
    value = s.get("addresses", list, [])
    for i, a in enumerate(value):
        if not isinstance(a, str):
            raise s.err(f"addresses[{i}]", f"must be a string, not {a!r}")
        try:
            yield _address(a)
        except ValueError as e:
            raise s.err(f"addresses[{i}]", str(e)) from None


def _choice(options):
    def check(v):
        if v not in options:
            raise ValueError(f"{v!r} is not one of {', '.join(options)}")
        return v
    return check
