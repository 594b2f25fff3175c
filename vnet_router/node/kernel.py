"""Kernel-resident protocol instances: a vNet's protocol (e.g. its virtual router) as an eBPF
program at TC ingress of the vNet's logical interfaces, checked by the kernel's verifier.

``vnetctl instance start NAME --vnet V --kernel PROGRAM --interface I [--interface ...]
[--route NET=I ...]`` (both daemons) builds PROGRAM (a shipped name such as ``vnp_router``,
``vnet_router/bpf/NAME.bpf.c``, whose object was built with the package, or the path of a C
source, compiled here with clang), loads it once (the verifier runs here: a refused program
comes back with its log and nothing is attached), fills its read-only tables and attaches the
one program to every listed interface (so the interfaces share its maps).  ``instance stop
NAME`` detaches it and removes the clsact qdisc when the instance added it, so the interfaces
are as they were; the program and its maps go when the last descriptor closes.  Logical
interfaces are the daemon's TAPs: a TAP that goes (vNet removed, daemon killed) takes the
attachment with it.

The program's view of the substrate (the paper's read-only tables) is two maps the daemon
fills, which the program must declare with ``BPF_F_RDONLY_PROG`` (the verifier then refuses
any store into them; a program that declares them writable is refused here):

* ``vnet_ports``: ifindex (u32) -> {mtu u32, mac[6], pad u16}: the instance's interfaces;
* ``vnet_routes``: NET (u32) -> ifindex (u32): ``--route`` entries.

Its ``counters`` map (array or per-CPU array of u64) is read into ``vnetctl instance list``
and ``show``, by index, named by the source's ``// vnet-counters: NAME ...`` line (the
interface of the programs users write; the project's own programs take their counter names
from ``model/names.py``); other maps are listed with their entries (hex).  This module
decides what is loaded where; ``ops/ebpf.py`` does the loading.
"""
from __future__ import annotations

import logging
import os
import re
import struct
import time
from dataclasses import dataclass, field

from vnet_router.ops import ebpf

log = logging.getLogger("vnet_router.kernel")

PROGRAM_DIR = str(ebpf.BPF_DIR)
HANDLE = PRIORITY = 0x564E          # our TC filter (the project's marker, as HTB's 564e:)
TABLES = ("vnet_ports", "vnet_routes")
_PORT = struct.Struct("<I6sH")
_U32 = struct.Struct("<I")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DUMP_MAX = 64                       # entries of a map shown by `instance list`


class KernelError(RuntimeError):
    pass


@dataclass
class KernelInstance:
    name: str
    vnet: str
    namespace: str
    source: str
    program: ebpf.Program
    interfaces: dict                    # name -> ebpf.Attachment
    routes: dict                        # NET -> interface name
    counter_names: tuple
    started: float = field(default_factory=time.time)

    def counters(self) -> dict:
        if "counters" not in self.program.maps:
            return {}
        return self.program.counters(self.counter_names, limit=DUMP_MAX)

    def tables(self) -> dict:
        out = {}
        for name, m in self.program.maps.items():
            if name == "counters":
                continue
            keys = self.program.keys(name, DUMP_MAX)
            entries = []
            for k in keys:
                v = self.program.lookup(name, k)
                if v is not None:
                    entries.append([k.hex(), v[0].hex()])
            out[name] = {"type": ebpf.MAP_TYPES.get(m.type, str(m.type)),
                         "read_only_for_program": m.read_only_for_program,
                         "max_entries": m.max_entries, "entries": entries}
        return out

    def status(self) -> dict:
        return {"name": self.name, "vnet": self.vnet, "namespace": self.namespace,
                "kind": "kernel", "program": self.program.prog_name, "source": self.source,
                "interfaces": {n: {"ifindex": a.ifindex, "tc": f"ingress pref {a.priority} "
                                   f"handle {a.handle:#x}", "clsact_added": a.created_qdisc}
                               for n, a in self.interfaces.items()},
                "routes": {str(k): v for k, v in self.routes.items()},
                "counters": self.counters(), "maps": self.tables(),
                "uptime_seconds": round(time.time() - self.started, 1)}


def resolve(program: str) -> str:
    """A shipped program's name (``vnp_router``) or the path of a C source -> its path."""
    if not isinstance(program, str) or not program:
        raise KernelError("--kernel needs a program: a shipped name (" + ", ".join(shipped())
                          + ") or the path of a .c source")
    if "/" not in program and not program.endswith(".c"):
        path = os.path.join(PROGRAM_DIR, f"{program}.bpf.c")
        if not os.path.exists(path):
            raise KernelError(f"no shipped kernel program {program!r} (shipped: "
                              f"{', '.join(shipped()) or 'none'}; or give the path of a .c)")
        return path
    if not os.path.isabs(program):
        raise KernelError(f"kernel program {program!r}: give an absolute path")
    if not os.path.isfile(program):
        raise KernelError(f"kernel program {program}: no such file")
    return program


def shipped() -> list[str]:
    try:
        return sorted(f[:-len(".bpf.c")] for f in os.listdir(PROGRAM_DIR)
                      if f.endswith(".bpf.c"))
    except OSError:
        return []


def counter_names(path: str) -> tuple:
    """The names of a user's program's counters: its ``// vnet-counters: NAME ...`` line."""
    with open(path, errors="replace") as f:
        for line in f:
            m = re.match(r"\s*//\s*vnet-counters:\s*(.*)$", line)
            if m:
                return tuple(m.group(1).split())
    return ()


class KernelInstances:
    """The table of a node's kernel instances."""

    def __init__(self):
        self.instances: dict[str, KernelInstance] = {}
        self._starting: set[str] = set()
        self.stopped = {"stopped": 0, "refused": 0}

    def check(self, name, vnet: str, interfaces, routes, ifaces: dict, user_names=()):
        """Refuse a start that cannot work before anything is built; ``ifaces``: the vNet's
        logical interfaces, name -> kind.  Returns (interfaces, routes) normalised."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise KernelError(f"bad instance name {name!r} (letters, digits, '_', '.', '-'; "
                              f"no path separators; at most 64 characters)")
        if name in self.instances or name in self._starting or name in user_names:
            raise KernelError(f"instance {name!r} already runs")
        if not interfaces:
            raise KernelError("a kernel instance needs --interface (a logical interface of "
                              f"vNet {vnet}: {', '.join(sorted(ifaces)) or 'none'})")
        interfaces = list(dict.fromkeys(interfaces))
        for i in interfaces:
            if i not in ifaces:
                raise KernelError(f"vNet {vnet} has no logical interface {i!r} (it has: "
                                  f"{', '.join(sorted(ifaces)) or 'none'})")
            if ifaces[i] != "tap":
                raise KernelError(f"{vnet}/{i} is a library endpoint (kind {ifaces[i]}), not "
                                  f"a network device: a kernel instance attaches to TAPs")
            for other in self.instances.values():
                if other.vnet == vnet and i in other.interfaces:
                    raise KernelError(f"{vnet}/{i} already runs kernel instance {other.name}")
        table = {}
        for r in routes or ():
            net, _, port = str(r).partition("=")
            if not net.isdigit() or int(net) > 0xFFFF or port not in interfaces:
                raise KernelError(f"bad route {r!r}: want NET=INTERFACE, NET 0..65535, "
                                  f"INTERFACE one of {', '.join(interfaces)}")
            table[int(net)] = port
        return interfaces, table

    def start(self, name: str, vnet: str, namespace: str, program: str, interfaces: list,
              routes: dict) -> KernelInstance:
        """Build, verify, fill the tables, attach (blocking: the caller runs it in a worker
        thread).  Raises KernelError, having attached nothing."""
        self._starting.add(name)
        try:
            try:
                path = resolve(program)
                if os.path.dirname(path) == PROGRAM_DIR:         # shipped: built with the package
                    prog = ebpf.Program(ebpf.shipped_object(path), name)
                else:
                    prog = ebpf.Program(ebpf.compile_c(path), name)
            except (ebpf.BpfError, OSError) as e:
                self.stopped["refused"] += 1
                raise KernelError(str(e)) from None
            try:
                for t in TABLES:
                    m = prog.maps.get(t)
                    if m is not None and not m.read_only_for_program:
                        raise KernelError(f"{name}: map {t} is a table of the substrate: the "
                                          f"program must declare it read-only "
                                          f"(map_flags BPF_F_RDONLY_PROG)")
                attached = ebpf.in_namespace(namespace,
                                             lambda: _attach(prog, interfaces, routes))
            except (KernelError, ebpf.BpfError, OSError) as e:
                prog.close()
                self.stopped["refused"] += 1
                raise KernelError(str(e)) from None
            inst = KernelInstance(name, vnet, namespace, path, prog, attached, routes,
                                  counter_names(path))
            self.instances[name] = inst
            log.info("kernel instance %s started: vnet %s, program %s (%s), verified, attached "
                     "at TC ingress of %s", name, vnet, prog.prog_name, path,
                     ", ".join(f"{n} (ifindex {a.ifindex})" for n, a in attached.items()))
            return inst
        finally:
            self._starting.discard(name)

    def stop(self, name: str, reason: str = "stopped") -> dict:
        inst = self.instances.pop(name, None)
        if inst is None:
            raise KernelError(f"no kernel instance {name!r}")
        final = inst.counters()
        try:
            ebpf.in_namespace(inst.namespace, lambda: _detach(inst.interfaces.values()))
        except (ebpf.BpfError, OSError) as e:
            log.warning("kernel instance %s: detaching: %s (the interfaces may be gone)",
                        name, e)
        finally:
            inst.program.close()
        self.stopped[reason] = self.stopped.get(reason, 0) + 1
        log.info("kernel instance %s (vnet %s) %s: detached from %s, unloaded; counters %s",
                 name, inst.vnet, reason, ", ".join(inst.interfaces), final)
        return {"stopping": name, "kind": "kernel", "counters": final}

    def stop_vnet(self, vnet: str):
        for name in [n for n, i in self.instances.items() if i.vnet == vnet]:
            self.stop(name)

    def stop_all(self):
        for name in list(self.instances):
            self.stop(name)

    def status(self) -> list[dict]:
        # list(): start() adds from a worker thread while the loop may be reading
        return [i.status() for i in list(self.instances.values())]


def _attach(prog: ebpf.Program, interfaces: list, routes: dict) -> dict:
    """In the vNet's namespace: fill the read-only tables, attach to every interface; on
    failure detach what was attached."""
    facts = {}
    for name in interfaces:
        try:
            facts[name] = ebpf.iface_facts(name)
        except OSError as e:
            raise KernelError(f"logical interface {name}: {e}") from None
    fill_tables(prog, facts, routes)
    done: dict = {}
    try:
        for name, (ifindex, _, _) in facts.items():
            created = ebpf.tc_attach(prog.fd, ifindex, HANDLE, PRIORITY)
            done[name] = ebpf.Attachment(name, ifindex, HANDLE, PRIORITY, created)
    except ebpf.BpfError as e:
        _detach(done.values())
        raise KernelError(f"{name}: {e}") from None
    return done


def fill_tables(prog: ebpf.Program, facts: dict, routes: dict):
    """The read-only tables: ``facts`` interface -> (ifindex, MAC, MTU); ``routes`` NET ->
    interface."""
    if "vnet_ports" in prog.maps:
        for ifindex, mac, mtu in facts.values():
            prog.update("vnet_ports", _U32.pack(ifindex), _PORT.pack(mtu, mac, 0))
    if "vnet_routes" in prog.maps:
        for net, port in routes.items():
            prog.update("vnet_routes", _U32.pack(net), _U32.pack(facts[port][0]))


def _detach(attachments):
    for a in attachments:
        ebpf.tc_detach(a.ifindex, a.handle, a.priority, a.created_qdisc)
