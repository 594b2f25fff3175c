"""Configuration of ``vnet-hostd``: the substrate router's config format with a host profile.

A host config is a ``vnet_router`` config (``docs/configuration.md``) plus a ``[host]`` table,
with one restriction: no ``[[switch]]`` (an end-system does not pass virtual links through).
The daemon's run-time changes (``vnetctl vnet add``, ``join``, ``vlink add`` ...) live in a
state file (``state.py``); the configuration in effect is the file plus that state, parsed by
the very same validator (``vnet_router.config.parse``), so a run-time change is checked exactly
like a file would be and every error names the key.  This module never touches the system.
"""
from __future__ import annotations

import copy
import grp
import pwd
from dataclasses import dataclass, field

from vnet_router.model import config as rconfig
from vnet_router.model.config import ConfigError, NodeConfig, read_toml
from vnet_router.model.units import parse_size

DEFAULT_SOCKET = "/run/vnet/vnet-hostd.sock"


@dataclass(frozen=True)
class Limits:
    """Resource limits of a protocol instance."""

    cpu_seconds: int = 60           # CPU time (user + system)
    memory: int = 256 << 20         # bytes: resident set, and 2x that of address space


@dataclass(frozen=True)
class HostSection:
    state_dir: str = "/var/lib/vnet-hostd"
    admin_group: str = "vnet"              # besides root, members may change state
    namespace_prefix: str = "vnet-"        # run-time vNets get namespace PREFIX + name
    instance_user: str = "nobody"          # protocol instances run as this user by default
    limits: Limits = Limits()
    allow: tuple[tuple[str, tuple[str, ...]], ...] = ()   # vnet -> users/"@group" of endpoints


@dataclass(frozen=True)
class HostConfig:
    """The host section, the file's raw tables and the effective node configuration."""

    host: HostSection
    base: dict = field(hash=False)          # the file's tables without [host]
    node: NodeConfig = field(hash=False)


def load(path: str, state: dict | None = None) -> HostConfig:
    return parse(read_toml(path), path, state)


def parse(data: dict, path: str = "<string>", state: dict | None = None) -> HostConfig:
    data = dict(data)
    host = _host(data.pop("host", {}), path)
    if data.get("switch"):
        raise ConfigError(path, "switch[0]", "an end-system does not pass virtual links "
                          "through ([[switch]] is for vnet-router)")
    data.setdefault("node", {})
    if isinstance(data["node"], dict):
        data["node"] = dict(data["node"])
        data["node"].setdefault("control_socket", DEFAULT_SOCKET)
    node = effective(data, path, state or {})
    return HostConfig(host, data, node)


def effective(base: dict, path: str, state: dict) -> NodeConfig:
    """The file's tables plus the run-time vNets and interfaces of ``state``, validated."""
    data = copy.deepcopy(base)
    vnets = [{k: v for k, v in x.items() if k != "allow"} for x in state.get("vnets", [])]
    data["vnet"] = list(data.get("vnet", [])) + vnets
    data["interface"] = list(data.get("interface", [])) + list(state.get("interfaces", []))
    return rconfig.parse(data, path)


def _host(raw, path) -> HostSection:
    s = rconfig._Section(path, "host", raw)
    limits = Limits()
    if "limits" in s.data:
        s.used.add("limits")
        ls = rconfig._Section(path, "host.limits", s.data["limits"])
        limits = Limits(ls.get("cpu_seconds", int, limits.cpu_seconds,
                               rconfig._range(1, 86400, "CPU seconds")),
                        ls.get("memory", (int, str), limits.memory, parse_size))
        ls.done()
    allow = []
    if "allow" in s.data:
        s.used.add("allow")
        a = rconfig._Section(path, "host.allow", s.data["allow"])
        for vnet in list(a.data):
            who = a.get(vnet, list)
            for i, w in enumerate(who):
                if not isinstance(w, str):
                    raise a.err(f"{vnet}[{i}]", f"must be a user name, uid or @group, not {w!r}")
            allow.append((vnet, tuple(who)))
        a.done()
    h = HostSection(
        state_dir=s.get("state_dir", str, HostSection.state_dir),
        admin_group=s.get("admin_group", str, HostSection.admin_group),
        namespace_prefix=s.get("namespace_prefix", str, HostSection.namespace_prefix),
        instance_user=s.get("instance_user", str, HostSection.instance_user),
        limits=limits, allow=tuple(allow))
    s.done()
    return h


def resolve_uid(user: str | int) -> int:
    """A user name or numeric uid -> uid (ValueError if unknown)."""
    if isinstance(user, int) or str(user).isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ValueError(f"no user {user!r}") from None


def resolve_gid(group: str | int) -> int | None:
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def allowed(principals, uid: int, groups: set[int]) -> bool:
    """Does a caller (uid, groups) match one of ``principals`` (user, uid or @group)?"""
    for p in principals:
        if p.startswith("@"):
            gid = resolve_gid(p[1:])
            if gid is not None and gid in groups:
                return True
        else:
            try:
                if resolve_uid(p) == uid:
                    return True
            except ValueError:
                continue
    return False
