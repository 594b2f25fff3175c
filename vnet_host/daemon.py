"""``vnet-hostd``: the end-system substrate and its privileged control daemon.

It is the substrate router's ``Node`` (same wire, tables, datapath, ports and two-phase
reload) with a host profile (``vnet_router.model.host``: no pass-through) and run-time commands
on its control socket:

* ``vnet_add`` / ``vnet_del``, ``join`` / ``leave``, ``vlink_add`` / ``vlink_del``: every
  change builds the state it would lead to, validates the resulting configuration with the
  config parser, applies it through ``Node.apply`` (prepare namespaces and TAPs in a worker
  thread -> swap the datapath in one loop step -> commit), and only then saves the state;
  a refused change leaves both system and state as they were;
* ``endpoint``: hands a library endpoint to an application (``vnet_host.lib``), if the vNet
  allows that user;
* ``instance_start`` / ``instance_stop`` / ``instances``: contained protocol instances
  (``sandbox.py``: cgroup, private mount view, seccomp).

Access: the control socket is world-connectable (mode 0666); the commands the registry
(``vnet_router.node.commands``) does not mark privileged -- ``show``, ``ping``, ``tables``,
``instances`` and ``endpoint`` (checked per vNet) -- are open to anyone, every other command
needs root or the ``[host].admin_group`` (peer credentials, SO_PEERCRED).

State (``state.py``): a restart restores the vNets and interfaces of the file plus the state,
and removes namespaces it created earlier but no longer wants.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import logging
import os
import signal
import sys

from vnet_router.model import host as hconfig
from vnet_router.model.schema import ConfigError
from vnet_router.model.units import parse_size
from vnet_router.model.tables import interface_mtu
from vnet_router.ops import logs, loop
from vnet_router.ops import netlink
from vnet_router.node import commands
from vnet_router.node.api import CommandError, ControlServer, Limits
from vnet_router.node.lifecycle import Node
from vnet_router.node.ports import EnvironmentError_, read_facts

from vnet_host.config import allowed, resolve_gid
from vnet_host.sandbox import Sandbox, SandboxError, check_dest, check_name
from vnet_host.state import State, StateError

log = logging.getLogger("vnet_host")

WATCHDOG_INTERVAL = 0.2


class HostNode(Node):
    DAEMON = commands.HOST

    def __init__(self, hcfg: hconfig.HostConfig, facts, state: State, data: dict):
        super().__init__(hcfg.node, facts)
        self.hcfg, self.store, self.state = hcfg, state, data
        self.sandbox = Sandbox(os.path.join(hcfg.host.state_dir, "instances"))
        self._watchdog: asyncio.Task | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def setup_system(self):
        """Remove namespaces owned earlier but no longer wanted, adopt the ones still wanted
        (left by a crash), then create what is missing."""
        wanted = {v.namespace for v in self.cfg.vnets}
        for ns in self.state["owned"]:
            if ns not in wanted and netlink.netns_exists(ns):
                netlink.netns_remove(ns)
                log.info("removed namespace %s (owned before, no longer wanted)", ns)
        existed = {ns for ns in wanted if netlink.netns_exists(ns)}
        super().setup_system()
        for ns in existed & set(self.state["owned"]):
            self.ports.created_ns.append(ns)
            log.info("adopted namespace %s (owned before the restart)", ns)
        self._save()

    def teardown_system(self):
        self.sandbox.stop_all()
        super().teardown_system()
        self.state["owned"] = list(self.ports.created_ns)
        try:
            self.store.save(self.state)
        except OSError as e:
            log.error("cannot save state: %s", e)

    def answered_path(self) -> str:
        return os.path.join(self.hcfg.host.state_dir, "answered")

    async def started_serving(self):
        os.chmod(self.cfg.node.control_socket, 0o666)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self):
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            try:
                self.sandbox.poll()
            except Exception:           # pragma: no cover - must not stop the watchdog
                log.exception("watchdog")

    # -- control -------------------------------------------------------------------------------

    def handlers(self) -> dict:
        h = super().handlers()
        h.pop("reload")                 # the file is re-read by every state change anyway
        h.update({"vnet_add": self.vnet_add, "vnet_del": self.vnet_del, "join": self.join,
                  "leave": self.leave, "vlink_add": self.vlink_add, "vlink_del": self.vlink_del,
                  "instance_start": self.instance_start, "instance_stop": self.instance_stop,
                  "instances": self.instances, "tables": self.tables_view,
                  "reload": self.reload_state})
        return h

    def make_control(self, path, handlers) -> ControlServer:
        return ControlServer(path, handlers, daemon=self.DAEMON, mode=0o666,
                             policy=self._policy, limits=Limits.of(self.cfg.node))

    def _policy(self, cmd: str, peer) -> str | None:
        """For the commands the registry marks privileged (state changes)."""
        if peer is None:
            return f"permission denied: {cmd} changes substrate state (caller unknown)"
        if peer.uid == 0:
            return None
        gid = resolve_gid(self.hcfg.host.admin_group)
        if gid is not None and gid in peer.groups():
            return None
        return (f"permission denied: {cmd.replace('_', ' ')} changes substrate state; it needs "
                f"root or group {self.hcfg.host.admin_group!r} (caller uid {peer.uid})")

    def endpoint_allowed(self, vnet: str, peer) -> str | None:
        if peer is not None and peer.uid == 0:
            return None
        principals = dict(self.hcfg.host.allow).get(vnet, ())
        for v in self.state["vnets"]:
            if v["name"] == vnet:
                principals = tuple(principals) + tuple(v.get("allow", ()))
        if peer is not None and allowed(principals, peer.uid, peer.groups()):
            return None
        return (f"uid {peer.uid if peer else '?'} may not open endpoints of vNet {vnet} "
                f"(allowed: {', '.join(principals) or 'root only'})")

    def status(self, learned: bool = False) -> dict:
        st = super().status(learned)
        st["profile"] = "host"
        st["instances"] = [i.status() for i in self.sandbox.instances.values()]
        st["instances_stopped"] = dict(self.sandbox.stopped)
        st["instance_events"] = list(self.sandbox.events)
        st["runtime"] = {"vnets": [v["name"] for v in self.state["vnets"]],
                         "interfaces": [f"{i['vnet']}/{i['name']}"
                                        for i in self.state["interfaces"]]}
        return st

    def tables_view(self) -> dict:
        """The read-only tables exported to applications (also in STATE_DIR/tables.json)."""
        cfg = self.cfg
        snap = self.tables.compile()
        return {"node": cfg.node.name, "generation": snap.generation,
                "vnets": [{"name": v.name, "id": v.id, "namespace": v.namespace}
                          for v in cfg.vnets],
                "interfaces": [{"vnet": li.vnet, "name": li.name, "kind": li.kind,
                                "substrate_link": li.substrate_link, "in_vli": li.in_vli,
                                "out_vli": li.out_vli, "addresses": list(li.addresses),
                                "mtu": interface_mtu(snap.links[li.substrate_link], li,
                                                     snap.path_mtu.get((li.substrate_link,
                                                                        li.out_vli)))}
                               for li in cfg.interfaces]}

    # -- run-time changes ----------------------------------------------------------------------

    async def _change(self, what: str, new_state: dict) -> dict:
        """Validate and apply the configuration ``new_state`` leads to, then keep it."""
        async with self._reload_lock:
            try:
                new = hconfig.effective(self.hcfg.base, self.cfg.path, new_state)
            except ConfigError as e:
                raise CommandError(f"{what}: {e.key}: {e.problem}") from None
            result = await self.apply(new, self.cfg.path)
            new_state["owned"] = list(self.ports.created_ns)
            self.state = new_state
            self._save()
            log.info("%s: done (generation %d)", what, self.tables.generation)
            return result

    def _save(self):
        self.state["owned"] = sorted(set(self.ports.created_ns))
        try:
            self.store.save(self.state)
            self.store.export_tables(self.tables_view())
        except OSError as e:
            log.error("cannot save state in %s: %s", self.store.dir, e)

    def _copy(self) -> dict:
        return {"vnets": [dict(v) for v in self.state["vnets"]],
                "interfaces": [dict(i) for i in self.state["interfaces"]],
                "owned": list(self.state["owned"])}

    def _vnet_entry(self, name, id, namespace=None, allow=()) -> dict:
        if not isinstance(allow, list) and not isinstance(allow, tuple):
            raise CommandError("vnet add: 'allow' must be a list of users / @groups")
        return {"name": name, "id": id,
                "namespace": namespace or f"{self.hcfg.host.namespace_prefix}{name}",
                "allow": list(allow)}

    async def vnet_add(self, name, id, namespace=None, allow=()):
        if any(v.name == name for v in self.cfg.vnets):
            raise CommandError(f"vnet add: vNet {name!r} is already installed")
        st = self._copy()
        st["vnets"].append(self._vnet_entry(name, id, namespace, allow))
        return await self._change(f"vnet add {name}", st)

    async def vnet_del(self, name):
        if not any(v["name"] == name for v in self.state["vnets"]):
            raise CommandError(self._not_runtime("vnet del", name))
        self.sandbox.stop_vnet(name)
        self.kernel.stop_vnet(name)
        st = self._copy()
        st["vnets"] = [v for v in st["vnets"] if v["name"] != name]
        st["interfaces"] = [i for i in st["interfaces"] if i["vnet"] != name]
        return await self._change(f"vnet del {name}", st)

    async def vlink_add(self, vnet, name, substrate_link, in_vli, out_vli=None, addresses=(),
                        kind="tap", rate=None, in_rate=None, mac=None):
        if vnet not in {v.name for v in self.cfg.vnets}:
            raise CommandError(f"vlink add: unknown vNet {vnet!r} (installed: "
                               f"{', '.join(v.name for v in self.cfg.vnets) or 'none'})")
        st = self._copy()
        st["interfaces"].append(_iface(vnet, name, substrate_link, in_vli, out_vli, addresses,
                                       kind, rate, in_rate, mac))
        return await self._change(f"vlink add {vnet}/{name}", st)

    async def vlink_del(self, vnet, name):
        st = self._copy()
        keep = [i for i in st["interfaces"] if (i["vnet"], i["name"]) != (vnet, name)]
        if len(keep) == len(st["interfaces"]):
            raise CommandError(f"vlink del: no run-time logical interface {vnet}/{name}")
        st["interfaces"] = keep
        return await self._change(f"vlink del {vnet}/{name}", st)

    async def join(self, vnet, id, substrate_link, in_vli=None, out_vli=None, name=None,
                   addresses=(), kind="tap", allow=(), rate=None, in_rate=None, mac=None,
                   router=None):
        """Install ``vnet`` (if needed) and attach one logical interface, in one change;
        without ``in_vli`` the router on ``substrate_link`` sets it up (JOIN)."""
        if in_vli is None:
            return await self._join_router(vnet, id, substrate_link, name or f"{vnet[:12]}0",
                                           addresses, allow, router)
        st = self._copy()
        if not any(v.name == vnet for v in self.cfg.vnets):
            st["vnets"].append(self._vnet_entry(vnet, id, None, allow))
        st["interfaces"].append(_iface(vnet, name or f"{vnet[:12]}0", substrate_link, in_vli,
                                       out_vli, addresses, kind, rate, in_rate, mac))
        return await self._change(f"join {vnet}", st)

    async def _join_router(self, vnet, id, link, name, addresses, allow, router):
        if self.cp is None:
            raise CommandError("join without --in-vli asks the router over the substrate (JOIN): "
                               "the host's configuration needs [tm] for that")
        have = next((v for v in self.cfg.vnets if v.name == vnet), None)
        if have is not None and have.id != id:
            raise CommandError(f"join: vNet {vnet!r} is installed with id {have.id}, not {id}")
        if have is None:
            await self.vnet_add(vnet, id, allow=allow)
        try:
            view = await self.cp.members.join(link, vnet, name, router)
        except (LookupError, ValueError, TimeoutError) as e:
            for d in [d for d in self.cp.dynamic.values() if d.vnet == vnet]:
                self.cp.uninstall(d)           # the router's set-up that it then refused
            if have is None:
                await self.vnet_del(vnet)
            raise CommandError(f"join {vnet}: {e}") from None
        ns = self.cfg.vnet(vnet).namespace
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: [netlink.addr_add(name, a, ns) for a in addresses])
        return {"generation": self.tables.generation,
                "changes": [f"joined vNet {vnet}: {name} to {view['peer']} on {link} (in VLI "
                            f"{view['in_vli']}, out VLI {view['out_vli']}, {view['min']}.."
                            f"{view['max']} bit/s)"] + [f"{name}: address {a}"
                                                       for a in addresses]}

    async def leave(self, vnet):
        if self.cp is not None and self.cp.members.members(vnet):
            done = await self.cp.members.leave(vnet)
            changes = [f"left vNet {vnet}: removed {', '.join(done['left'])} (the router "
                       f"{'acknowledged' if done['router_acked'] else 'did not answer'})"]
            if any(v["name"] == vnet for v in self.state["vnets"]):
                changes += (await self.vnet_del(vnet))["changes"]
            return {"generation": self.tables.generation, "changes": changes}
        if any(v["name"] == vnet for v in self.state["vnets"]):
            return await self.vnet_del(vnet)
        st = self._copy()
        st["interfaces"] = [i for i in st["interfaces"] if i["vnet"] != vnet]
        if len(st["interfaces"]) == len(self.state["interfaces"]):
            raise CommandError(self._not_runtime("leave", vnet))
        return await self._change(f"leave {vnet}", st)

    def _not_runtime(self, what, name) -> str:
        if any(v.name == name for v in self.cfg.vnets):
            return (f"{what}: vNet {name!r} comes from the configuration file "
                    f"{self.cfg.path}; remove it there")
        return f"{what}: unknown vNet {name!r}"

    def load_config(self, path: str):
        return hconfig.load(path, self.state).node

    async def _sighup(self):
        try:
            await self.reload_state()
        except CommandError as e:
            log.error("reload refused: %s", e)

    async def reload_state(self, peer=None, path=None, text=None, files=None, adopt=False):
        """Re-read the configuration file (with the current state) and apply it."""
        if path is not None or text is not None:
            raise CommandError("reload FILE is a command of vnet-router; vnet-hostd re-reads "
                               "its own file (plain reload)")
        async with self._reload_lock:
            try:
                hcfg = hconfig.load(self.cfg.path, self.state)
            except ConfigError as e:
                raise CommandError(str(e)) from None
            result = await self.apply(hcfg.node, self.cfg.path)
            self.hcfg = hcfg
            self._save()
            return result

    # -- instances -----------------------------------------------------------------------------

    def instance_start(self, name, vnet, argv=(), user=None, cpu_seconds=None, memory=None,
                       caps=(), kernel=None, interfaces=(), routes=(), peer=None, pids=None,
                       cpu_rate=None, files=None):
        try:
            check_name(name)
            put = _instance_files(files)
        except SandboxError as e:
            raise CommandError(f"instance start: {e}; nothing created") from None
        if kernel is not None and put:
            raise CommandError("instance start: --file is for a command instance, not a kernel "
                               "instance; nothing created")
        if kernel is not None:          # an eBPF program (vnet_router/node/kernel.py)
            return self.kernel_start(name, vnet, kernel, interfaces, routes, argv,
                                     user_names=set(self.sandbox.instances))
        if name in self.kernel.instances:
            raise CommandError(f"instance start: {name!r} already runs (a kernel instance)")
        if vnet not in {v.name for v in self.cfg.vnets}:
            raise CommandError(f"instance start: unknown vNet {vnet!r}")
        lim = self.hcfg.host.limits
        try:
            mem = memory if memory is None or isinstance(memory, int) else \
                parse_size(memory)
            inst = self.sandbox.start(name, vnet, self.cfg.vnet(vnet).namespace, list(argv),
                                      user or self.hcfg.host.instance_user,
                                      int(cpu_seconds or lim.cpu_seconds), mem or lim.memory,
                                      tuple(caps), int(pids or lim.pids),
                                      float(cpu_rate or lim.cpu_rate), put)
        except (SandboxError, ValueError, OSError) as e:
            raise CommandError(f"instance start {name}: {e}") from None
        return inst.status()

    def instance_stop(self, name):
        if name in self.kernel.instances:
            return self.kernel_stop(name)
        try:
            self.sandbox.stop(name)
        except SandboxError as e:
            raise CommandError(f"instance stop: {e}") from None
        return {"stopping": name}

    def instances(self):
        return {"running": [i.status() for i in self.sandbox.instances.values()],
                "stopped": dict(self.sandbox.stopped), "events": list(self.sandbox.events),
                "kernel": self.kernel.status(), "kernel_stopped": dict(self.kernel.stopped)}


def _instance_files(files) -> list[tuple[str, bytes]]:
    """``instance start --file`` as sent by vnetctl (``[{"path": DST, "data": BASE64}]``):
    (destination, content) pairs, each checked (SandboxError naming the bad one)."""
    out = []
    for f in files or ():
        if not (isinstance(f, dict) and isinstance(f.get("path"), str)
                and isinstance(f.get("data"), str)):
            raise SandboxError("--file: each file is {\"path\": DST, \"data\": BASE64}")
        dst = check_dest(f["path"])
        if len(f["data"]) > (commands.FILE_MAX + 2) // 3 * 4:
            raise SandboxError(f"--file {dst}: larger than {commands.FILE_MAX // 1024} KiB")
        try:
            data = base64.b64decode(f["data"], validate=True)
        except (binascii.Error, ValueError):
            raise SandboxError(f"--file {dst}: the content is not base64") from None
        if len(data) > commands.FILE_MAX:
            raise SandboxError(f"--file {dst}: larger than {commands.FILE_MAX // 1024} KiB")
        out.append((dst, data))
    return out


def _iface(vnet, name, link, in_vli, out_vli, addresses, kind, rate, in_rate, mac) -> dict:
    d = {"vnet": vnet, "name": name, "substrate_link": link, "in_vli": in_vli,
         "out_vli": in_vli if out_vli is None else out_vli, "kind": kind}
    if addresses:
        d["addresses"] = list(addresses)
    for k, v in (("rate", rate), ("in_rate", in_rate), ("mac", mac)):
        if v is not None:
            d[k] = v
    return d


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="vnet-hostd", description="End-system substrate and "
                                "control daemon (see docs/host.md).")
    p.add_argument("-c", "--config", required=True, help="TOML configuration file")
    p.add_argument("--check", action="store_true", help="validate and exit")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    return p.parse_args(argv)


_MAIN_PID = os.getpid()


def _terminate(signum, frame):
    if os.getpid() == _MAIN_PID:
        raise KeyboardInterrupt
    os._exit(0)


def main(argv=None) -> int:
    global _MAIN_PID
    args = parse_args(argv)
    _MAIN_PID = os.getpid()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        first = hconfig.load(args.config)
        store = State(first.host.state_dir)
        data = store.load()
        try:
            hcfg = hconfig.load(args.config, data)
        except ConfigError as e:
            print(f"vnet-hostd: state in {store.path} does not fit the configuration any "
                  f"more ({e}); starting from the configuration file alone", file=sys.stderr)
            data = {"vnets": [], "interfaces": [], "owned": data.get("owned", [])}
            hcfg = first
        facts = read_facts(hcfg.node)
    except (ConfigError, EnvironmentError_, StateError) as e:
        print(f"vnet-hostd: {e}", file=sys.stderr)
        return 2
    logs.setup(args.log_level or hcfg.node.node.log_level)
    if args.check:
        print(f"{args.config}: OK (host profile; {len(hcfg.node.vnets)} vNets with the state)")
        return 0
    node = HostNode(hcfg, facts, store, data)
    try:
        node.setup_system()
        return loop.run(node.run())
    except KeyboardInterrupt:
        return 0
    except Exception:
        log.exception("vnet-hostd failed")
        return 1
    finally:
        node.teardown_system()


if __name__ == "__main__":
    sys.exit(main())
