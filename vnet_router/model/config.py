"""The router's TOML configuration: its schema, whose models are the frozen objects the node uses.

``load(path)`` reads and validates the whole file before anything touches the system; every
problem raises :class:`ConfigError` naming the file, the key and what is wrong.  Each table of
the file is a :class:`~vnet_router.model.schema.Schema` model below (``[node]`` is
:class:`NodeSection`, ``[[interface]]`` :class:`LogicalInterface` ...); rules across tables (VLI
uniqueness, references to substrate links and vNets) are :class:`NodeConfig`'s.  The daemon
builds its tables (``tables.py``) from the returned :class:`NodeConfig`; the host profile
(``host.py``) adds a ``[host]`` table.  ``docs/configuration.md``'s key tables are generated
from the descriptions here (``docgen.py``).
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal, NamedTuple, Annotated

from vnet_router.wire import substrate as wire
from vnet_router.model.schema import (Bool, Invalid, Schema, Shown, Str, derived, int_range,
                                      key, number_range, prepare, rules, tables, validate)
from vnet_router.model.toml import parse_toml, read_toml
from vnet_router.model.units import parse_rate
from vnet_router.model.keys import (KeyFileError, load_keyring, load_seed, parse_public,
                                     supplied)
from vnet_router.model.types import (  # noqa: F401  (valid_ifname, Cidr: used from here too)
    VLI, Cidr, HostPort, IfName, Mac, Name, Queue, RateBps, SizeBytes, VNetId, valid_ifname)

# -- the tables -------------------------------------------------------------------------------

class Rate(Schema):
    """A virtual link's rate in bit/s: min <= current <= max; ``None`` max = unlimited.

    In a file: one rate (``"20Mbit"``: min = max) or a table ``{ min, max, burst }``."""

    min: RateBps = key("lowest rate the Traffic Manager may set (`min < max`: a managed "
                       "range)", 0)
    max: RateBps | None = key("highest rate; the link runs at it without `[tm]`", None,
                              shown="required in a table")
    burst: SizeBytes | None = key("token bucket depth", None, shown="from rate and MTU")
    cur: int | None = derived(None, "set by the Traffic Manager; None = run at max")

    @prepare
    def _one_rate(cls, data):
        if isinstance(data, (dict, Rate)):
            return data
        if isinstance(data, bool) or not isinstance(data, (int, float, str)):
            raise ValueError('must be a rate like "20Mbit" or a table { min, max, burst }, '
                             f"not {type(data).__name__} {data!r}")
        bps = parse_rate(data)
        return {"min": bps, "max": bps}

    @classmethod
    def from_file(cls, data, file):
        if "max" not in data:
            raise Invalid("max", "missing (required): a rate table without max would be "
                          "unlimited; give max (and min for a range), or one rate like "
                          '"20Mbit"')
        return data

    @rules
    def _range(self):
        if self.max is not None and self.min > self.max:
            raise Invalid("min", f"min rate {self.min} bit/s is above max rate {self.max} bit/s")

    @property
    def current(self) -> int | None:
        return self.max if self.cur is None else self.cur

    @property
    def managed(self) -> bool:
        """A range the Traffic Manager moves the current rate in."""
        return self.max is not None and self.min < self.max


UNLIMITED = Rate()
RateSpec = Annotated[Rate, Shown('rate, or `{ min, max, burst }`')]


class NodeSection(Schema):
    """``[node]`` (optional)."""

    name: Name = key("node name shown by `vnetctl show`", "vnet")
    control_socket: Str = key("Unix control socket (`vnetctl -s`)", "/run/vnet/vnet-router.sock")
    state_file: Str | None = key(
        "what the running node owns on the system (its namespaces, HTB qdiscs, its last "
        "incarnation), so a start after a crash adopts or removes it (see operations.md); "
        "locked while the node runs; beside it `STATE.answered`, the control requests "
        "answered, kept across restarts (security.md)", None,
        shown="the control socket's path, `.sock` replaced by `.state`")
    ethertype: int_range(0x0600, 0xFFFF, "EtherType", "integer 0x0600..0xFFFF") = key(
        "EtherType of substrate frames", wire.ETHERTYPE_SUBSTRATE, shown="`0x88B5`")
    datapath: Literal["auto", "reference", "fast", "kernel"] = key(
        "`auto` (the Cython fast path if built, else the reference, with a warning), "
        "`reference`, `fast` (an error if not built), `kernel` (the fast path with the "
        "substrate's switches forwarded by an eBPF program at TC ingress). `fast`, `auto` and "
        "`kernel` classify every substrate frame in that program before the engine's queues "
        "(what the tables refuse and what input rates police dropped, each vNet to a ring of "
        "its own); if BPF cannot load, one line and the fast path reads every frame itself; "
        "see architecture.md. The environment variable `VNET_DATAPATH` overrides it", "auto")
    tap_capture: Literal["auto", "off"] = key(
        "frames the vNets send into TAP logical interfaces: `auto` copies them into the "
        "compiled engine's capture ring at the TAP's TC egress (an eBPF program, in the "
        "sender's context; the vNet's own TCP segments still go by the TAP's queue) where "
        "BPF loads, else (one log line) and with `off` the engine reads each TAP with "
        "`read()` (see architecture.md); the environment variable `VNET_TAP_CAPTURE` "
        "overrides it",
        "auto")
    log_level: Literal["debug", "info", "warning", "error"] = key("log level", "info")
    metrics: HostPort | None = key("address to serve Prometheus metrics on "
                                   "(see operations.md)", None, shown="off")
    control_max_connections: int_range(2, 100000, "connection count") = key(
        "most connections the control socket serves at once (beyond: refused with an error "
        "reply, counted; see operations.md)", 128)
    control_max_per_uid: int_range(1, 100000, "connection count") = key(
        "most connections of one uid other than root", 16)
    control_root_reserve: int_range(1, 100000, "connection count") = key(
        "of `control_max_connections`, how many only root may use; when all are in use a "
        "root connection closes the longest-idle one of another user", 8)
    control_idle_timeout: number_range(0.1, 86400, "seconds") = key(
        "seconds a control connection may wait without sending a request", 60.0)
    control_request_timeout: number_range(0.1, 3600, "seconds") = key(
        "seconds from the first byte of a request to its end (half a request, then nothing: "
        "closed)", 10.0)
    path_mtu_interval: number_range(0, 3600, "seconds") = key(
        "seconds between the path MTU notices (PATH_MTU on VLI 0) this node sends upstream on "
        "each substrate link for its input virtual links; the MTU of a logical interface is "
        "lowered to what its neighbour reports (a pass-through node reports the smallest "
        "along the path), an entry not heard for 3.5 intervals expires; a starting node asks "
        "its neighbours and is ready once every virtual link it sends on has its path MTU "
        "(at most min(interval, 3) + 0.25 s); `0`: off (neither sent nor taken, no wait)", 2.0)

    @property
    def state_path(self) -> str:
        if self.state_file:
            return self.state_file
        base = self.control_socket
        return (base[:-5] if base.endswith(".sock") else base) + ".state"

    @rules
    def _control_limits(self):
        if self.control_root_reserve >= self.control_max_connections:
            raise Invalid("control_root_reserve", f"{self.control_root_reserve} leaves no "
                          f"connection for other users (control_max_connections is "
                          f"{self.control_max_connections})")

    @prepare
    def _gone(cls, data):
        if isinstance(data, dict) and "udp_port" in data:
            raise Invalid("udp_port", "not a key any more (it had no effect): a udp substrate "
                          'link sets its ports in local and remote ("IP:PORT")')
        return data


_LINK_KEYS = {"p2p": (("interface", "peer_mac", "vlan"), ("priority",)),
              "multiaccess": (("interface",), ()),
              "udp": (("local", "remote"), ())}


def _load_key(table, name: str, loader, derived_name: str):
    """Complete ``derived_name`` from key ``name`` (a key file or a key) with ``loader``."""
    if getattr(table, name) is not None:
        try:
            table._complete(**{derived_name: loader(getattr(table, name))})
        except KeyFileError as e:
            raise Invalid(name, str(e)) from None


class SubstrateLink(Schema):
    """``[[substrate_link]]``: a static link to neighbour nodes."""

    id: Name = key("unique name, used by virtual links")
    kind: Literal["p2p", "multiaccess", "udp"] = key(
        "`p2p` (Ethernet, VLAN-tagged, one peer), `multiaccess` (Ethernet, untagged, the LAN), "
        "`udp` (IP tunnel)")
    interface: IfName | None = key("p2p, multiaccess (required): the Ethernet interface "
                                   "(must exist at start)", None, shown="")
    peer_mac: Mac | None = key("p2p (required): MAC of the peer; frames from any other MAC "
                               "on this VLAN are dropped (`bad_peer`)", None, shown="")
    vlan: int_range(1, 4094, "VLAN id") | None = key(
        "p2p (required): VLAN id written in the 802.1Q tag", None, shown="")
    priority: int_range(0, 7, "priority (PCP)") = key("p2p: 802.1p PCP", 0)
    local: HostPort | None = key("udp (required): this end of the tunnel", None, shown="")
    remote: HostPort | None = key("udp (required): the other end of the tunnel", None,
                                  shown="")
    capacity: RateBps | None = key("link capacity; reported to the VBM (HELLO, AGG_REQUEST): "
                                   "the LAN's bandwidth is its slowest link", None,
                                   shown="none")
    mtu: int_range(128, 65535, "MTU") | None = key(
        "substrate MTU", None,
        shown="the interface's (udp: the route's towards remote, read at start and reload; "
              "1500 with no route then)")
    key_file: Str | None = key(
        "file of the keys authenticating control messages on this link (`vnet-router keygen "
        "FILE` writes one, mode 0600; security.md, operations.md); every node on the link "
        "needs the same key.  Without it they are not authenticated (a warning at start, "
        "the `vnet_control_links_unauthenticated` metric)", None, shown="none")
    keyring: Any = derived(None, "the keys read from key_file")

    @rules
    def _keys(self):
        _load_key(self, "key_file", load_keyring, "keyring")

    @rules
    def _kind(self):
        required, optional = _LINK_KEYS[self.kind]
        for name in required:
            if getattr(self, name) is None:
                raise Invalid(name, "missing (required)")
        others = {n for k, (r, o) in _LINK_KEYS.items() for n in r + o} - set(required + optional)
        for name in sorted(others & self.model_fields_set):
            if getattr(self, name) is not None:
                raise Invalid(name, f"unknown key (for a {self.kind} link)")
        if self.kind == "udp" and ipaddress.ip_address(self.local[0]).version != \
                ipaddress.ip_address(self.remote[0]).version:
            raise Invalid("remote", "local and remote must both be IPv4 or both IPv6")


class Members(Schema):
    """``[vnet.members]``: end-systems join the vNet at run time (``vnetctl join`` on a host:
    JOIN over the substrate).  The node hosts the vNet's virtual router -- a Linux bridge in
    the vNet's namespace, made at start -- and attaches each member's virtual link pair to
    it; LEAVE, or the member's HELLOs stopping, removes it on both sides."""

    bridge: IfName = key("the virtual router: a bridge in the vNet's namespace", "vr0")
    addresses: tuple[Cidr, ...] = key("the bridge's addresses (this node's in the vNet)", ())
    min_rate: RateBps = key("each member's virtual links: the rate reserved at join (the "
                            "Traffic Manager and the VBM account for it)", 1_000_000,
                            shown='`"1Mbit"`')
    max_rate: RateBps = key("each member's virtual links: the most the Traffic Manager may "
                            "give", 100_000_000, shown='`"100Mbit"`')
    max_members: int_range(1, 4000, "count") = key(
        "most members at once (beyond: JOIN refused, counted `limit_members`)", 64)

    @rules
    def _rates(self):
        if self.min_rate > self.max_rate:
            raise Invalid("min_rate", f"{self.min_rate} bit/s above max_rate")


class VNet(Schema):
    """``[[vnet]]``."""

    name: Name = key("vNet name")
    id: VNetId = key("numeric id, unique")
    namespace: Name | None = key(
        "network namespace holding the vNet's logical interfaces on this node (created at "
        "start if absent and removed at exit if the daemon created it)", None,
        shown="`vnet-NAME`")
    members: Members | None = key("`[vnet.members]`: hosts may join this vNet at run time "
                                  "(below; needs `[tm]`)", None, shown="none")

    @rules
    def _namespace(self):
        if self.namespace is None:
            self._complete(namespace=f"vnet-{self.name}")


class LogicalInterface(Schema):
    """``[[interface]]``: a logical interface = input virtual link + output virtual link.

    ``kind`` "tap": a TAP in the vNet's namespace (payload = the vNet's Ethernet frame);
    "socket": a library endpoint (payload = the vNet packet as the protocol wrote it), handed
    to an application by the daemon over its control socket (``vnet_host.lib``)."""

    vnet: Str = key("the vNet")
    name: IfName = key("TAP name inside the vNet's namespace")
    substrate_link: Str = key("the substrate link carrying both virtual links")
    in_vli: VLI = key("VLI of the input virtual link (frames delivered to this TAP)")
    out_vli: VLI = key("VLI written on frames the TAP sends", shown="`in_vli`")
    rate: RateSpec = key(
        'output shaping: `"20Mbit"` or `{ min = "1Mbit", max = "20Mbit", burst = "30KB" }`; '
        "without `[tm]` the link runs at `max`; with `[tm]` a range (`min < max`) on a p2p "
        "link is managed by the Traffic Manager: it starts at `min` (see `[tm].start_at`) and "
        "moves between `min` and `max` with demand", UNLIMITED, shown="unlimited")
    in_rate: RateSpec = key(
        "input policing, same forms; with `[tm]` a range is the input side the Traffic "
        "Manager grants increases on (set it like the peer's `rate`)", UNLIMITED,
        shown="unlimited")
    queue: Queue = key("frames the output shaper may hold; when full the TAP is not read "
                       "until it drains", 256)
    mtu: int_range(68, 65535, "MTU") | None = key(
        "MTU of the logical interface (TAP: of its IP packets, the frame is 14 bytes more; "
        "socket: the largest packet); never above what the substrate link carries",
        None, shown="the substrate link's, lowered to the path MTU its neighbour reports")
    mac: Mac | None = key("MAC of the TAP; by default derived from the node, vNet and interface "
                          "names (stable across restarts)", None, shown="derived")
    addresses: tuple[Cidr, ...] = key(
        "IP addresses (`\"10.0.0.1/24\"`, `\"fd00::1/64\"`) to give the TAP (for the Linux IP "
        "stack as the vNet protocol)", ())
    kind: Literal["tap", "socket"] = key(
        "`\"tap\"`: a TAP in the vNet's namespace; `\"socket\"`: a library endpoint (no TAP, no "
        "MAC, no addresses) that an application opens with `vnet_host.lib.open_endpoint` — "
        "see `docs/host.md`", "tap")
    learned_max: int_range(1, 1 << 20, "learned MAC limit") = key(
        "multiaccess links only: most inner MACs this interface learns (inner source MAC → "
        "outer MAC); when full, a new MAC is not learned (frames to it go to the broadcast "
        "address, as to any unknown MAC) and is counted as `overflow`", 4096)
    learned_ageing: number_range(1, 86400, "ageing time") = key(
        "multiaccess links only: seconds without a frame from a learned MAC after which it is "
        "forgotten (the Linux bridge's `ageing_time`)", 300.0)

    @prepare
    def _out_vli(cls, data):
        if isinstance(data, dict) and "out_vli" not in data and "in_vli" in data:
            return {**data, "out_vli": data["in_vli"]}
        return data

    @rules
    def _socket(self):
        if self.kind == "socket":
            for name in ("addresses", "mac"):
                if name in self.model_fields_set:
                    raise Invalid(name, "a socket interface has no MAC or IP addresses (the "
                                  "protocol on the library does its own addressing)")


class Switch(Schema):
    """``[[switch]]``: pass-through, (in_link, in_vli) -> (out_link, out_vli), a VLI swap."""

    vnet: Name = key("name of the vNet the traffic belongs to (a label for counters; the node "
                     "need not host it, no `[[vnet]]` needed)")
    in_link: Str = key("substrate link of the input virtual link")
    in_vli: VLI = key("VLI of the input virtual link")
    out_link: Str = key("substrate link the frame is re-encapsulated onto")
    out_vli: VLI = key("VLI of the output virtual link")
    rate: RateSpec = key("output shaping as for interfaces", UNLIMITED, shown="unlimited")
    queue: Queue = key("as for interfaces", 256)


class Drop(NamedTuple):
    """``[[drop]]``: frames on this input virtual link are dropped and counted (``vli_drop``)."""

    substrate_link: Annotated[Str, key("the substrate link")]
    vli: Annotated[VLI, key("VLI of the input virtual link")]


class TMSection(Schema):
    """``[tm]``: the Traffic Manager and the control protocol (present = enabled)."""

    idle_interval: number_range(0.1, 86400, "interval") = key(
        "seconds: an output virtual link that sent nothing this long falls to its `min`", 10.0)
    tick: number_range(0.01, 10, "tick") = key(
        "seconds between looks at demand, retries and idle links", 0.25)
    hello_interval: number_range(0.05, 60, "interval") = key(
        "seconds between HELLOs on each substrate link", 1.0)
    report_interval: number_range(0.1, 3600, "interval") = key(
        "seconds between reports of each vNet aggregate to the VBM (a restarted VBM rebuilds "
        "from them)", 5.0)
    vbm_link: Str | None = key(
        "substrate link on which the LAN's VBM is heard (its HELLO says role VBM); none = no "
        "VBM serves this node: input rates are bounded only by each virtual link's `max`", None)
    dynamic_vli_base: VLI = key(
        "this node allocates the input VLIs of run-time virtual links from here up: the first "
        "free one from an offset of its own (its node id mod 8192), wrapping around to here, "
        "so nodes on a LAN rarely choose the same for one upstream", 1024)
    start_at: Literal["min", "max"] = key("where managed static links start", "min")
    kernel_shaping: Bool = key(
        "shape managed output virtual links of Ethernet substrate links, and the rated "
        "outputs of switches (at their configured rate), with Linux HTB (a root "
        "`htb 564e:` qdisc per interface, `default 0` so legacy traffic passes unshaped, one "
        "class per virtual link selected by the send socket's SO_PRIORITY) instead of the "
        "user-space token bucket; an interface with someone else's root qdisc keeps the "
        "user-space shaper. `vnetctl show` says `shaper: kernel`. The qdisc is removed at "
        "exit", False)
    replay_window: number_range(1, 3600, "seconds") = key(
        "seconds a request's reply is remembered (a retry gets it again, never a second "
        "execution) and the most an authenticated message's send time may differ from ours "
        "(older: refused as `stale`; keep clocks within it, e.g. NTP)", 30.0)
    max_dynamic_per_peer: int_range(0, 4000, "count") = key(
        "most run-time virtual links one neighbour may have set up with this node (beyond: "
        "VLINK_SETUP refused, counted `limit_peer`)", 16)
    max_dynamic_per_vnet: int_range(0, 4000, "count") = key(
        "most run-time virtual links of one vNet on this node (beyond: refused, counted "
        "`limit_vnet`)", 64)
    neighbour_timeout: number_range(0.5, 3600, "seconds") = key(
        "a neighbour not heard (HELLO) for this long is gone: the run-time virtual links with "
        "it are removed (members of a vNet leave); at least two `hello_interval`s (the "
        "neighbours' too)", 5.0)
    vbm_public_key: Str | None = key(
        "the VBM's Ed25519 public key (64 hex digits, printed by the VBM's `vnet-router "
        "--check`): then only a HELLO with role VBM and an AGG_ASSIGN signed by it are taken "
        "(else refused, `vbm_unsigned` / `bad_signature`), so a node holding the LAN key "
        "cannot pose as the VBM (security.md)", None, shown="none")
    vbm_public: Any = derived(None, "vbm_public_key as bytes")

    @rules
    def _vbm_public(self):
        _load_key(self, "vbm_public_key", parse_public, "vbm_public")
        if self.neighbour_timeout < 2 * self.hello_interval:
            raise Invalid("neighbour_timeout", f"{self.neighbour_timeout:g} s is less than two "
                          f"hello_intervals ({self.hello_interval:g} s): neighbours would be "
                          f"taken for gone between their HELLOs")


TM_DEFAULTS = TMSection()       # ``[tm]`` with every key at its default (NodeConfig.tm_settings)


class VBMShare(Schema):
    """``[[vbm.share]]``: a vNet's guaranteed share of the LAN."""

    vnet: VNetId = key("the vNet id (a LAN-wide number)")
    share: number_range(0.000001, 1, "share") = key("fraction of the LAN")


class VBMSection(Schema):
    """``[vbm]``: this node runs the LAN's vNet Bandwidth Manager on substrate link ``link``."""

    link: Str = key("the substrate link (the LAN, usually `multiaccess`) the VBM serves")
    capacity: RateBps | None = key(
        "LAN bandwidth; when set, the VBM trusts it alone (capacities in nodes' reports are "
        "ignored)", None, shown="the smallest `capacity` the nodes report")
    node_ttl: number_range(1, 86400, "seconds") = key(
        "a node's allocations are forgotten when it has not reported for this long", 60.0)
    max_nodes: int_range(1, 100000, "count") = key(
        "most nodes the VBM keeps allocations for (beyond: a new node's request is refused, "
        "counted `table_full`)", 1024)
    rebuild_time: number_range(0, 3600, "rebuild time") = key(
        "seconds after start during which the VBM only learns the nodes' allocations (no "
        "increases); keep it above the nodes' `report_interval`", 12.0)
    shares: tables(VBMShare) = key("`[[vbm.share]]`: the vNets' shares of the LAN (below)", (),
                                   alias="share")
    signing_key_file: Str | None = key(
        "file holding the VBM's Ed25519 signing key (a 32-byte seed in hex, mode 0600; "
        "`vnet-router keygen --signing FILE` writes one); it signs its HELLOs and AGG_ASSIGNs, "
        "and nodes configured with its public key (`[tm] vbm_public_key`) take only those",
        None, shown="none")
    signing_seed: Any = derived(None, "the seed read from signing_key_file")

    @rules
    def _signing(self):
        _load_key(self, "signing_key_file", load_seed, "signing_seed")

    @rules
    def _shares(self):
        total, seen = 0.0, set()
        for i, s in enumerate(self.shares):
            if s.vnet in seen:
                raise Invalid(("share", i, "vnet"), f"vNet id {s.vnet} already has a share")
            seen.add(s.vnet)
            total += s.share
            if total > 1 + 1e-9:
                raise Invalid(("share", i, "share"), f"shares of the LAN would sum to "
                              f"{total:.3f} (> 1): vNet {s.vnet} is refused")


class NodeConfig(Schema):
    """A whole router configuration file."""

    path: str = derived("<string>", "the file it was read from")
    node: NodeSection = key("`[node]`", NodeSection())
    substrate_links: tables(SubstrateLink) = key("`[[substrate_link]]`", (),
                                                 alias="substrate_link")
    vnets: tables(VNet) = key("`[[vnet]]`", (), alias="vnet")
    interfaces: tables(LogicalInterface) = key("`[[interface]]`", (), alias="interface")
    switches: tables(Switch) = key("`[[switch]]`", (), alias="switch")
    drops: tables(Drop) = key("`[[drop]]`: (link, vli) explicitly dropped", (), alias="drop")
    tm: TMSection | None = key("`[tm]`", None)
    vbm: VBMSection | None = key("`[vbm]`", None)

    @classmethod
    def from_file(cls, data, file):
        return {**data, "path": file}

    def link(self, link_id: str) -> SubstrateLink:
        return next(s for s in self.substrate_links if s.id == link_id)

    def vnet(self, name: str) -> VNet:
        return next(v for v in self.vnets if name == v.name)

    @property
    def tm_settings(self) -> TMSection:
        """``[tm]`` as the node runs it: the file's, else every key at its default (a control
        plane that runs for ``[vbm]`` alone; the replay window of path MTU notices)."""
        return self.tm if self.tm is not None else TM_DEFAULTS

    @rules
    def _across_tables(self):
        links = _check_links(self.substrate_links)
        _check_vnets(self.vnets)
        _VLIs(links, {v.name for v in self.vnets}).check(self)
        if self.tm is not None and self.tm.vbm_link is not None:
            _known(links, self.tm.vbm_link, ("tm", "vbm_link"), "substrate link")
        if self.vbm is not None:
            _known(links, self.vbm.link, ("vbm", "link"), "substrate link")


def _known(table, name, where: tuple, what: str):
    if name not in table:
        raise Invalid(where, f"unknown {what} {name!r} (known: "
                      f"{', '.join(sorted(table)) or 'none'})")


def _check_links(items) -> dict[str, SubstrateLink]:
    links: dict[str, SubstrateLink] = {}
    multiaccess_on: dict[str, str] = {}
    p2p_peers: dict[tuple, str] = {}
    for i, s in enumerate(items):
        if s.id in links:
            raise Invalid(("substrate_link", i, "id"), f"duplicate substrate link id {s.id!r}")
        if s.kind == "p2p":
            peer = (s.interface, s.vlan, s.peer_mac)
            if peer in p2p_peers:
                raise Invalid(("substrate_link", i, "peer_mac"),
                              f"substrate link {p2p_peers[peer]!r} already uses peer "
                              f"{wire.mac_to_str(s.peer_mac)} on {s.interface} VLAN {s.vlan}")
            p2p_peers[peer] = s.id
        elif s.kind == "multiaccess":
            if s.interface in multiaccess_on:
                raise Invalid(("substrate_link", i, "interface"),
                              f"{s.interface} already carries multiaccess substrate link "
                              f"{multiaccess_on[s.interface]!r} (one per interface)")
            multiaccess_on[s.interface] = s.id
        links[s.id] = s
    return links


def _check_vnets(items):
    names: set[str] = set()
    ids: dict[int, str] = {}
    namespaces: dict[str, str] = {}
    for i, v in enumerate(items):
        if v.name in names:
            raise Invalid(("vnet", i, "name"), f"duplicate vNet {v.name!r}")
        if v.id in ids:
            raise Invalid(("vnet", i, "id"), f"vNet id {v.id} already used by vNet {ids[v.id]!r}")
        if v.namespace in namespaces:
            raise Invalid(("vnet", i, "namespace"), f"namespace {v.namespace!r} already used "
                          f"by vNet {namespaces[v.namespace]!r}")
        names.add(v.name)
        ids[v.id], namespaces[v.namespace] = v.name, v.name


class _VLIs:
    """(substrate link, VLI, direction) is unique across interfaces, switches and drops."""

    def __init__(self, links: dict[str, SubstrateLink], vnets: set[str]):
        self.links, self.vnets = links, vnets
        self.used = {"input": {}, "output": {}}

    def claim(self, where: tuple, link_id: str, vli: int, direction: str):
        table = self.used[direction]
        if (link_id, vli) in table:
            raise Invalid(where, f"duplicate VLI {vli} on substrate link {link_id!r} "
                          f"({direction}; already used by {table[(link_id, vli)]})")
        table[(link_id, vli)] = f"{where[0]}[{where[1]}]"

    def check(self, cfg: NodeConfig):
        names: set[tuple[str, str]] = set()
        for i, li in enumerate(cfg.interfaces):
            at = ("interface", i)
            _known(self.vnets, li.vnet, at + ("vnet",), "vNet")
            if (li.vnet, li.name) in names:
                raise Invalid(at + ("name",), f"interface {li.name!r} already defined in "
                              f"vNet {li.vnet!r}")
            names.add((li.vnet, li.name))
            _known(self.links, li.substrate_link, at + ("substrate_link",), "substrate link")
            kind = self.links[li.substrate_link].kind
            for name in ("learned_max", "learned_ageing"):
                if kind != "multiaccess" and name in li.model_fields_set:
                    raise Invalid(at + (name,), f"unknown key (for an interface on a {kind} "
                                  f"substrate link: only multiaccess links learn MACs)")
            self.claim(at + ("in_vli",), li.substrate_link, li.in_vli, "input")
            self.claim(at + ("out_vli",), li.substrate_link, li.out_vli, "output")
        for i, sw in enumerate(cfg.switches):
            at = ("switch", i)
            _known(self.links, sw.in_link, at + ("in_link",), "substrate link")
            _known(self.links, sw.out_link, at + ("out_link",), "substrate link")
            if sw.in_link == sw.out_link and self.links[sw.in_link].kind == "p2p" \
                    and sw.in_vli == sw.out_vli:
                raise Invalid(at + ("out_vli",), "switching a virtual link back onto itself "
                              "makes a loop")
            self.claim(at + ("in_vli",), sw.in_link, sw.in_vli, "input")
            self.claim(at + ("out_vli",), sw.out_link, sw.out_vli, "output")
        for i, (link_id, vli) in enumerate(cfg.drops):
            at = ("drop", i)
            _known(self.links, link_id, at + ("substrate_link",), "substrate link")
            self.claim(at + ("vli",), link_id, vli, "input")


# -- reading ----------------------------------------------------------------------------------

def parse(data: dict, file: str = "<string>") -> NodeConfig:
    return validate(NodeConfig, data, file)


def load(path: str | Path) -> NodeConfig:
    return parse(read_toml(path), str(path))


def loads(text: str, path: str = "<string>") -> NodeConfig:
    return parse(parse_toml(text, path), path)


def loads_sent(text: str, path: str, files: dict) -> NodeConfig:
    """A configuration a client read and sent (``vnetctl reload FILE``), with the key files it
    names as that client read them (``keys.supplied``): no file is opened."""
    with supplied(files):
        return loads(text, path)

