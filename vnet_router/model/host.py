"""The host profile of the config (``vnet-hostd``): a router config plus a ``[host]`` table.

A host config is a router config (``config.py``, ``docs/configuration.md``) plus a ``[host]``
table (:class:`HostSection`, ``docs/host.md``), with one restriction: no ``[[switch]]`` (an
end-system does not pass virtual links through).  The daemon's run-time changes (``vnetctl vnet
add``, ``join``, ``vlink add`` ...) live in a state file (``vnet_host/state.py``); the
configuration in effect is the file plus that state, validated by the very same schema
(:func:`effective`), so a run-time change is checked exactly like a file would be and every
error names the key.  The schema lives here, beside the router's, so that the lab
(``vnet_router.lab``) can validate host nodes without depending on ``vnet_host``; what only the
daemon needs (users, groups, who may do what) is ``vnet_host/config.py``.
"""
from __future__ import annotations

import copy

from vnet_router.model import config as rconfig
from vnet_router.model.config import NodeConfig, SizeBytes
from vnet_router.model.schema import (ConfigError, Schema, Str, int_range, key, number_range,
                                      pairs, parsed, validate)
from vnet_router.model.toml import read_toml

DEFAULT_SOCKET = "/run/vnet/vnet-hostd.sock"


class Limits(Schema):
    """``[host.limits]``: resource limits of a protocol instance (its cgroup)."""

    cpu_seconds: int_range(1, 86400, "CPU seconds") = key(
        "CPU time (user + system) of all its processes, children included; over it, the "
        "instance is stopped", 60)
    memory: SizeBytes = key("bytes charged to its cgroup (resident, page cache, its /tmp); "
                            "over it the kernel OOM-kills and the instance is stopped",
                            256 << 20, shown='`"256MiB"`')
    cpu_rate: number_range(0.01, 64, "CPUs") = key(
        "CPUs it may use at once (CFS quota per 100 ms), e.g. 0.5", 1.0)
    pids: int_range(1, 65536, "processes") = key(
        "processes and threads at once (`pids.max`: fork fails beyond)", 64)


def _principal(v):
    if not isinstance(v, str):
        raise ValueError(f"must be a user name, uid or @group, not {v!r}")
    return v


Principal = parsed(_principal, "user, uid or @group", str)


class HostSection(Schema):
    """``[host]``."""

    state_dir: Str = key("`state.json` (run-time state), `tables.json` (exported tables, "
                         "0644), `instances/NAME/` (working dir + `output.log` of each "
                         "instance)", "/var/lib/vnet-hostd")
    admin_group: Str = key("besides root, members may change state", "vnet")
    namespace_prefix: Str = key("a vNet added at run time gets namespace PREFIX+name", "vnet-")
    instance_user: Str = key("default user of protocol instances", "nobody")
    limits: Limits = key("default instance limits (`[host.limits]`, below)", Limits(),
                         shown="see below")
    allow: pairs(Str, tuple[Principal, ...], "table of lists") = key(
        "per vNet, who may open library endpoints: `{ blue = [\"alice\", \"@staff\"] }` "
        "with user names, uids, `@group` (root always may)", (), shown="`{}`")


class HostConfig(Schema):
    """The host section, the file's raw tables and the effective node configuration."""

    host: HostSection
    base: dict                  # the file's tables without [host]
    node: NodeConfig


def load(path: str, state: dict | None = None) -> HostConfig:
    return parse(read_toml(path), path, state)


def parse(data: dict, path: str = "<string>", state: dict | None = None) -> HostConfig:
    data = dict(data)
    host = validate(HostSection, data.pop("host", {}), path, ("host",))
    if data.get("switch"):
        raise ConfigError(path, "switch[0]", "an end-system does not pass virtual links "
                          "through ([[switch]] is for vnet-router)")
    data.setdefault("node", {})
    if isinstance(data["node"], dict):
        data["node"] = dict(data["node"])
        data["node"].setdefault("control_socket", DEFAULT_SOCKET)
    node = effective(data, path, state or {})
    return HostConfig(host=host, base=data, node=node)


def effective(base: dict, path: str, state: dict) -> NodeConfig:
    """The file's tables plus the run-time vNets and interfaces of ``state``, validated."""
    data = copy.deepcopy(base)
    vnets = [{k: v for k, v in x.items() if k != "allow"} for x in state.get("vnets", [])]
    data["vnet"] = list(data.get("vnet", [])) + vnets
    data["interface"] = list(data.get("interface", [])) + list(state.get("interfaces", []))
    return rconfig.parse(data, path)
