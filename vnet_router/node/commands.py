"""The command registry: every request of the control socket and the ``vnetctl`` sub-commands
that send it, declared once.

A :class:`Command` is one request on the wire (``{"cmd": NAME, ...}``, see ``api.py``): the
daemons that serve it, whether it changes state (``privileged``: on ``vnet-hostd`` only root or
the admin group may send it; ``vnet-router``'s socket is closed to others by its file mode),
whether the handler gets the caller's credentials (``peer``) and whether the reply carries
descriptors (``fds``).  Its :class:`Cli` entries are the ``vnetctl`` sub-commands that send it:
path, arguments (argparse flags and options, help, the request key each fills), how the
result is printed.

How work is split: a daemon registers one handler per command name (``Node.handlers()``,
``HostNode.handlers()``) and ``api.ControlServer`` refuses, with a message naming the reason,
a command that is not in the registry, belongs to the other daemon, or is not available in
this daemon's configuration (:func:`unavailable`).  ``cli/vnetctl.py`` builds its argparse
tree from :data:`COMMANDS` and its requests with :func:`request_args`; the printers named by
``Cli.output`` live there.  Standard library only: ``vnetctl --help`` must stay quick.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
from dataclasses import dataclass
from typing import Callable

from vnet_router.model.units import parse_rate

ROUTER, HOST = "vnet-router", "vnet-hostd"
BOTH = frozenset((ROUTER, HOST))
ROUTER_ONLY, HOST_ONLY = frozenset((ROUTER,)), frozenset((HOST,))
_CP = "the control plane ([tm] or [vbm] in the configuration)"


class UsageError(ValueError):
    """A sub-command's arguments do not make a request (vnetctl: exit status 2)."""


@dataclass(frozen=True)
class Arg:
    """One argument of a sub-command: its argparse flags and options, and the request key it
    fills (None: only for vnetctl itself, e.g. ``--json``)."""

    flags: tuple[str, ...]
    key: str | None
    options: tuple[tuple[str, object], ...]     # add_argument keywords (help, type, ...)
    omit_none: bool = False                     # not sent when not given
    convert: Callable | None = None             # value on the command line -> on the wire

    @property
    def dest(self) -> str:
        """The attribute argparse stores the value in."""
        return _dest(self.flags, dict(self.options))


def _dest(flags, options) -> str:
    name = next((f for f in flags if f.startswith("--")), flags[0])
    return options.get("dest", name.lstrip("-").replace("-", "_"))


def arg(*flags: str, key: str | None = "", omit_none: bool = False,
        convert: Callable | None = None, **options) -> Arg:
    """``arg("--in-vli", type=int, help=...)``: the key defaults to argparse's dest."""
    return Arg(flags, _dest(flags, options) if key == "" else key, tuple(options.items()),
               omit_none, convert)


@dataclass(frozen=True)
class Cli:
    """A ``vnetctl`` sub-command that sends its :class:`Command`."""

    path: tuple[str, ...]          # ("vlink", "add")
    output: str                    # how vnetctl prints the result (a printer there)
    args: tuple[Arg, ...] = ()
    help: str | None = None        # default: the command's
    usage: str | None = None
    timeout: float = 5.0           # seconds to wait for the reply
    rest: str | None = None        # request key taking the words after "--"
    rest_unless: str | None = None  # an option whose value makes the words after "--" optional
    build: Callable | None = None  # namespace -> request args, for forms args alone cannot say


@dataclass(frozen=True)
class Command:
    """One request of the control socket."""

    name: str
    help: str
    daemons: frozenset[str]
    privileged: bool = True        # changes state
    peer: bool = False             # the handler gets the caller's credentials as peer=
    fds: bool = False              # the reply carries descriptors (SCM_RIGHTS)
    needs: str | None = None       # what a daemon that serves it may lack at run time
    cli: tuple[Cli, ...] = ()

    @property
    def spoken(self) -> str:
        """The name as people write it: ``vnet add`` for ``vnet_add``."""
        return self.name.replace("_", " ")


RELOAD_MAX = 60 * 1024      # bytes of a reload request (api.MAX_REQUEST: 64 KiB a request)


def _reload(ns) -> dict:
    """``reload [FILE] [--adopt]``: FILE and the key files it names are read here, as the user
    who runs vnetctl, and sent: the daemon reads no file on a client's behalf."""
    if ns.file is None:
        if ns.adopt:
            raise UsageError("reload: --adopt needs FILE")
        return {}
    path = os.path.abspath(ns.file)
    kw = {"path": path, "text": _read_sent(path, "reload")}
    files = {}
    for key_file in _key_files(kw["text"]):
        try:
            st = os.stat(key_file)
            files[key_file] = {"text": _read_sent(key_file, f"reload: key file of {path}"),
                               "mode": st.st_mode}
        except OSError as e:
            raise UsageError(f"reload: {key_file} (a key file {path} names): "
                             f"{e.strerror}") from None
    if files:
        kw["files"] = files
    if ns.adopt:
        kw["adopt"] = True
    size = len(json.dumps(kw))
    if size > RELOAD_MAX:
        raise UsageError(f"reload: {path} and its key files make a request of {size} bytes; "
                         f"at most {RELOAD_MAX} are sent (put the file where the daemon "
                         f"reads its configuration and run a plain reload)")
    return kw


def _read_sent(path: str, what: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(RELOAD_MAX + 1)
    except OSError as e:
        raise UsageError(f"{what}: {path}: {e.strerror}") from None
    if len(data) > RELOAD_MAX:
        raise UsageError(f"{what}: {path}: larger than {RELOAD_MAX} bytes, the most sent")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what}: {path}: not UTF-8 text") from None


def _key_files(text: str) -> list[str]:
    """The key files a router configuration names (``[[substrate_link]] key_file``, ``[vbm]
    signing_key_file``); none if it is not TOML (the daemon says where it is not)."""
    import tomllib                  # not model.toml: vnetctl runs without pydantic
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return []
    links = data.get("substrate_link")
    vbm = data.get("vbm")
    found = [t.get("key_file") for t in links if isinstance(t, dict)] \
        if isinstance(links, list) else []
    found.append(vbm.get("signing_key_file") if isinstance(vbm, dict) else None)
    return list(dict.fromkeys(f for f in found if isinstance(f, str)))


def _vlink_add(ns) -> dict:
    """``vlink add [LINK] VNET NAME``: VLIs given (``--in-vli``, vnet-hostd) or negotiated with
    the neighbour on LINK (``--max``, vnet-router's control plane); mixed forms are refused."""
    words, link = list(ns.words), ns.link
    if len(words) == 3:
        if link is not None and link != words[0]:
            raise UsageError(f"vlink add: substrate link given twice ({words[0]}, --link {link})")
        link = words.pop(0)
    if len(words) != 2 or link is None:
        raise UsageError("vlink add: usage: vlink add [LINK] VNET NAME (LINK positionally or "
                         "as --link)")
    vnet, name = words
    if ns.in_vli is not None:
        for opt in ("min", "max", "peer"):
            if getattr(ns, opt) is not None:
                raise UsageError(f"vlink add: --{opt} negotiates the VLIs; it does not go with "
                                 f"--in-vli")
        kw = {"vnet": vnet, "name": name, "substrate_link": link, "in_vli": ns.in_vli,
              "out_vli": ns.out_vli, "addresses": ns.address, "kind": ns.kind or "tap"}
        if ns.rate:
            kw["rate"] = ns.rate
        return kw
    if ns.max is None:
        raise UsageError("vlink add: give --in-vli (VLIs given, vnet-hostd) or --max (VLIs "
                         "negotiated with the neighbour, vnet-router with [tm])")
    for opt in ("out_vli", "kind", "rate"):
        if getattr(ns, opt) is not None:
            raise UsageError(f"vlink add: --{opt.replace('_', '-')} needs --in-vli")
    return {"link": link, "vnet": vnet, "name": name, "min": ns.min or "0", "max": ns.max,
            "addresses": ns.address, "peer": ns.peer}


def _vlink_rate(ns) -> dict:
    """``vlink rate VNET NAME``: ``--rate R`` or ``--min``/``--max`` (at least one)."""
    if ns.rate is not None and (ns.min is not None or ns.max is not None):
        raise UsageError("vlink rate: give --rate (one fixed rate) or --min/--max, not both")
    if ns.rate is None and ns.min is None and ns.max is None:
        raise UsageError("vlink rate: give --max (and --min), or --rate")
    kw = {"vnet": ns.vnet, "name": ns.name, "direction": "in" if ns.input else "out"}
    if ns.rate is not None:
        kw["min"] = kw["max"] = ns.rate
    else:
        kw.update({k: getattr(ns, k) for k in ("min", "max") if getattr(ns, k) is not None})
    return kw


def _program(text: str) -> str:
    """--kernel: a shipped program's name as typed, a path made absolute (the daemon reads it)."""
    return os.path.abspath(text) if "/" in text or text.endswith(".c") else text


def _rate(text: str) -> str:
    """A rate option, checked here so that vnetctl refuses e.g. "10Mbps" (bits or bytes?)
    before sending; it is sent as typed and the daemon parses it again."""
    try:
        parse_rate(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


# instance start --file: the most one file carries.  The files travel in the request, base64
# (read by vnetctl with its user's rights: the daemon opens nothing on the client's behalf), and
# a request is at most 64 KiB (api.MAX_REQUEST).
FILE_MAX = 32 * 1024


def _file(text: str) -> dict:
    """--file SRC[:DST]: SRC read here, at most FILE_MAX bytes; DST (default: SRC's file name)
    is checked by the daemon (relative, inside the instance's directory)."""
    src, sep, dst = text.partition(":")
    if not src:
        raise argparse.ArgumentTypeError(f"{text!r}: no source file (SRC[:DST])")
    try:
        with open(src, "rb") as f:
            data = f.read(FILE_MAX + 1)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{src}: {e.strerror}") from None
    if len(data) > FILE_MAX:
        raise argparse.ArgumentTypeError(f"{src}: larger than {FILE_MAX // 1024} KiB, the most "
                                         f"one --file carries")
    return {"path": dst if sep else os.path.basename(src),
            "data": base64.b64encode(data).decode("ascii")}


JSON = arg("--json", key=None, action="store_true", help="machine-readable output")
_ALLOW = arg("--allow", action="append", default=[],
             help="user, uid or @group that may open endpoints of the vNet (repeat)")
_ADDRESS = arg("--address", key="addresses", action="append", default=[],
               help="address of the local logical interface (repeat)")

# sub-command groups of vnetctl (``vnetctl vnet add``): their help
GROUPS = {
    "vnet": "install (add) or remove (del) a vNet",
    "vlink": "add or delete a virtual link pair / logical interface at run time",
    "instance": "sandboxed protocol instances",
    "vbm": "the LAN's vNet Bandwidth Manager (on the node that runs it)",
}

COMMANDS: tuple[Command, ...] = (
    Command("show", "tables and counters of the node", BOTH, privileged=False, cli=(
        Cli(("show",), "show", (
            JSON,
            arg("--learned", action="store_true",
                help="list the learned MACs of each logical interface on a multiaccess link "
                "(inner MAC, outer MAC, seconds since seen); without it only their count"))),
        Cli(("top",), "top", help="live rates of every virtual link, refreshed", args=(
            arg("-i", "--interval", key=None, type=float, default=1.0,
                help="seconds between samples"),
            arg("-n", "--count", key=None, type=int, help="stop after this many refreshes"),
            arg("--json", key=None, action="store_true",
                help="one JSON object per sample and line (for machines)"))),
    )),
    Command("alloc", "rate allocations (Traffic Manager, VBM), members, neighbours", BOTH,
            privileged=False,
            needs=_CP, cli=(Cli(("alloc",), "alloc", (JSON,)),)),
    Command("reload", "validate the configuration file in use (or FILE) and apply only what "
            "changed; an invalid file changes nothing", BOTH, peer=True, cli=(
                Cli(("reload",), "reload", timeout=60, build=_reload, args=(
                    arg("file", key=None, nargs="?",
                        help="configuration to apply (vnet-router): read by vnetctl, as the "
                        "user who runs it, and sent with the key files it names (at most "
                        f"{RELOAD_MAX // 1024} KiB in all); applied once: a later plain "
                        "reload reads the file in use again (default: that file)"),
                    arg("--adopt", key=None, action="store_true",
                        help="FILE becomes the file in use, read by later plain reloads and "
                        "SIGHUP (root or the daemon's user only)"))),
            )),
    Command("ping", "is the daemon serving? (answers pong)", BOTH, privileged=False,
            cli=(Cli(("ping",), "text"),)),
    Command("endpoint", "hand a library endpoint to the calling application (vnet_host.lib)",
            BOTH, privileged=False, peer=True, fds=True),
    Command("tables", "the read-only tables exported to applications", HOST_ONLY,
            privileged=False, cli=(Cli(("tables",), "tables", (JSON,)),)),
    Command("vnet_add", "install a vNet", HOST_ONLY, cli=(
        Cli(("vnet", "add"), "changes", timeout=60, args=(
            arg("name"), arg("--id", type=int, required=True, help="vNet id"),
            arg("--namespace", help="network namespace (default: the host's prefix + NAME)"),
            _ALLOW)),)),
    Command("vnet_del", "remove a vNet installed at run time", HOST_ONLY, cli=(
        Cli(("vnet", "del"), "changes", (arg("name"),), timeout=60),)),
    Command("join", "install a vNet if needed and attach a logical interface: with --in-vli "
            "the VLIs are given; without, the router on --link sets the link up (JOIN over "
            "the substrate; needs [tm])", HOST_ONLY, cli=(
                Cli(("join",), "changes", timeout=60, args=(
                    arg("vnet"), arg("--id", type=int, required=True, help="vNet id"),
                    arg("--name", help="logical interface name (default VNET0)"),
                    arg("--link", key="substrate_link", required=True,
                        help="substrate link id"),
                    arg("--in-vli", type=int, help="input VLI (omit: ask the router)"),
                    arg("--peer", key="router", omit_none=True, help="without --in-vli on a "
                        "multiaccess link: the router's node name (default: the one neighbour "
                        "heard)"),
                    arg("--out-vli", type=int, help="output VLI (default: the input's)"),
                    _ADDRESS,
                    arg("--kind", choices=("tap", "socket"), default="tap",
                        help="tap (default) or socket (library endpoint)"),
                    arg("--rate", omit_none=True, type=_rate, help="output rate, e.g. 10Mbit"),
                    _ALLOW)),)),
    Command("leave", "detach from a vNet and remove it", HOST_ONLY, cli=(
        Cli(("leave",), "changes", (arg("vnet"),), timeout=60),)),
    Command("vlink_add", "add a run-time virtual link [LINK] VNET NAME: with --in-vli the "
            "VLIs are given (vnet-hostd), with --max they are negotiated with the neighbour on "
            "LINK (vnet-router's control plane)", BOTH, needs=_CP, cli=(
                Cli(("vlink", "add"), "vlink", timeout=60, build=_vlink_add,
                    usage="vnetctl vlink add [LINK] VNET NAME (--in-vli N [--out-vli N] "
                    "[--kind K] [--rate R] | --max R [--min R] [--peer NODE]) [--link LINK] "
                    "[--address CIDR ...] [--json]", args=(
                        arg("words", nargs="+", metavar="ARG", help="[LINK] VNET NAME"),
                        arg("--link", help="substrate link id (or the first positional "
                            "argument)"),
                        arg("--in-vli", type=int, help="given VLIs: input VLI (vnet-hostd)"),
                        arg("--out-vli", type=int,
                            help="given VLIs: output VLI (default: the input's)"),
                        _ADDRESS,
                        arg("--kind", choices=("tap", "socket"),
                            help="given VLIs: tap (default) or socket (library endpoint)"),
                        arg("--rate", type=_rate, help="given VLIs: output rate, e.g. 10Mbit"),
                        arg("--min", type=_rate, help="negotiated: minimum rate (default 0)"),
                        arg("--max", type=_rate, help="negotiated: maximum rate, e.g. 50Mbit"),
                        arg("--peer", help="negotiated: neighbour node name (multiaccess "
                            "links)"),
                        JSON)),)),
    Command("vlink_del", "remove a run-time virtual link (negotiated ones on both ends)", BOTH,
            needs=_CP, cli=(
                Cli(("vlink", "del"), "vlink", (arg("vnet"), arg("name"), JSON), timeout=60),)),
    Command("vlink_rate", "change the rate of a configured logical interface's output virtual "
            "link (--in: its input) at run time; undone by a plain reload unless the "
            "configuration file is edited too", ROUTER_ONLY, cli=(
                Cli(("vlink", "rate"), "runtime", timeout=60, build=_vlink_rate,
                    usage="vnetctl vlink rate VNET NAME (--min R --max R | --rate R) [--in] "
                    "[--json]", args=(
                        arg("vnet"), arg("name", help="logical interface name"),
                        arg("--min", type=_rate, help="lowest rate (default: the current "
                            "minimum, lowered to --max)"),
                        arg("--max", type=_rate, help="highest rate, e.g. 20Mbit"),
                        arg("--rate", type=_rate, help="one fixed rate (min = max)"),
                        arg("--in", dest="input", action="store_true",
                            help="the input virtual link (in_rate: policing) instead of the "
                            "output (rate: shaping)"),
                        JSON)),)),
    Command("vbm_share", "change a vNet's share of the LAN on the VBM at run time; undone by "
            "a plain reload unless the configuration file is edited too", ROUTER_ONLY,
            needs="[vbm] in the configuration", cli=(
                Cli(("vbm", "share"), "runtime", args=(
                    arg("vnet", help="vNet id (or the name of a vNet this node configures)"),
                    arg("share", type=float, help="fraction of the LAN, e.g. 0.3"),
                    JSON)),)),
    Command("instance_start", "start NAME in a vNet: ... start NAME --vnet V [--file SRC[:DST]] -- "
            "CMD ARGS "
            "(vnet-hostd), or a kernel instance: ... start NAME --vnet V --kernel PROGRAM "
            "--interface I ... (an eBPF program at TC ingress, docs/host.md)",
            BOTH, peer=True, cli=(
                Cli(("instance", "start"), "instance_start", rest="argv", rest_unless="kernel",
                    timeout=60, args=(
                    arg("name"), arg("--vnet", required=True, help="vNet to run it in"),
                    arg("--user", help="user to run it as (default: the host's)"),
                    arg("--cpu", key="cpu_seconds", type=int, help="CPU seconds"),
                    arg("--memory", help="e.g. 64MB"),
                    arg("--pids", type=int, omit_none=True, help="processes + threads at once"),
                    arg("--cpu-rate", key="cpu_rate", type=float, omit_none=True,
                        help="CPUs at once, e.g. 0.5"),
                    arg("--cap", key="caps", action="append", default=[],
                        help="net_admin, net_raw or net_bind_service (repeat)"),
                    arg("--file", key="files", action="append", omit_none=True, type=_file,
                        metavar="SRC[:DST]", help="put file SRC (read by vnetctl, at most "
                        f"{FILE_MAX // 1024} KiB) into the instance's directory as DST, a "
                        "relative path (default: SRC's name) (repeat)"),
                    arg("--kernel", omit_none=True, convert=_program,
                        help="kernel instance: an eBPF program (shipped name, e.g. vnp_router, "
                        "or a .c source) verified and attached at TC ingress"),
                    arg("--interface", key="interfaces", action="append", omit_none=True,
                        help="kernel instance: logical interface to attach to (repeat)"),
                    arg("--route", key="routes", action="append", omit_none=True,
                        help="kernel instance: NET=INTERFACE into its read-only route table "
                        "(repeat)"))),)),
    Command("instance_stop", "stop an instance (a kernel instance is detached and unloaded)",
            BOTH, cli=(Cli(("instance", "stop"), "instance_stop", (arg("name"),)),)),
    Command("instances", "running and stopped instances, with kernel instances' counters",
            BOTH, privileged=False,
            cli=(Cli(("instance", "list"), "instances", (JSON,)),)),
)

BY_NAME = {c.name: c for c in COMMANDS}


def served(daemon: str) -> dict[str, Command]:
    """The commands ``daemon`` serves, by name."""
    return {c.name: c for c in COMMANDS if daemon in c.daemons}


def unavailable(daemon: str, name: str, handlers) -> str:
    """Why ``daemon``, with ``handlers`` registered, cannot serve command ``name``."""
    cmd = BY_NAME.get(name)
    if cmd is None:
        return f"unknown command {name!r} (known: {', '.join(sorted(handlers))})"
    if daemon not in cmd.daemons:
        return f"{cmd.spoken} is a command of {' and '.join(sorted(cmd.daemons))}, not of {daemon}"
    return f"{cmd.spoken} is not available on this {daemon}" + \
        (f": it needs {cmd.needs}" if cmd.needs else "")


def request_args(cli: Cli, ns, rest: list[str]) -> dict:
    """The request arguments of sub-command ``cli`` from argparse's namespace and the words
    after ``--``; raises UsageError."""
    words = " ".join(cli.path)
    if cli.rest is None and rest:
        raise UsageError(f"{words} takes nothing after --")
    if cli.rest is not None and not rest and not (cli.rest_unless and
                                                  getattr(ns, cli.rest_unless, None)):
        raise UsageError(f"{words} needs a command after --")
    if cli.build is not None:
        kw = cli.build(ns)
    else:
        kw = {}
        for a in cli.args:
            value = getattr(ns, a.dest)
            if a.key is None or (value is None and a.omit_none):
                continue
            kw[a.key] = a.convert(value) if a.convert is not None and value is not None \
                else value
    if cli.rest is not None:
        kw[cli.rest] = list(rest)
    return kw
