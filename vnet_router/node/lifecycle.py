"""A running substrate node: tables, ports, datapath, control socket, metrics, reload.

``daemon.py`` parses the command line and validates the first configuration; ``Node`` does the
rest.  System set-up (namespaces, TAPs: ``ports``) happens before the event loop starts and is
removed after it ends; a reload does its netlink work in a worker thread, then swaps tables,
TAPs and sockets in one step of the loop (``Datapath.reconfigure``), then removes what the new
configuration dropped.  An invalid new configuration changes nothing.

With ``[tm]`` or ``[vbm]`` the node also runs a control plane (``control.plane.ControlPlane``:
the control protocol on VLI 0, the Traffic Manager, the VBM), started once the datapath is
open and closed before it; it adds the ``alloc``, ``vlink_add`` and ``vlink_del`` commands.

Parts get what they call through their constructors: the datapath its callbacks and its VLI 0
dispatcher (``datapath.dispatch``), with which the control plane and then, as the fallback,
the path-MTU service register; the plane makes the path-MTU service, which sends through the
plane.  ``run`` closes every part through one ``AsyncExitStack``, in the reverse order of
their start.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import signal
import time

from vnet_router.model import config as config_mod
from vnet_router.model.schema import ConfigError
from vnet_router.datapath import select as datapaths
from vnet_router.datapath.dispatch import ControlDispatch
from vnet_router.ops import sdnotify
from vnet_router.node import commands
from vnet_router.node.api import CommandError, ControlServer, Limits, WithFds
from vnet_router.node.kernel import KernelError, KernelInstances
from vnet_router.node.answered import Answered
from vnet_router.node.owned import StateFile, next_incarnation
from vnet_router.node.ports import EnvironmentError_, Ports, SocketEnd, read_facts
from vnet_router.ops import netlink
from vnet_router.node import runtime
from vnet_router.node.changes import fixed_part, name_of, table_diff
from vnet_router.node.status import status
from vnet_router.node.underlay import UnderlayWatch
from vnet_router.model.tables import Tables, interface_mtu
from vnet_router.control.pmtu import PathMtu, node_id

log = logging.getLogger("vnet_router")

# keys a reload cannot change (they are bound when the daemon starts)
_FIXED = ("control_socket", "state_file", "ethertype", "metrics")


class Node:
    DAEMON = commands.ROUTER         # its name in the command registry

    def __init__(self, cfg: config_mod.NodeConfig, facts, unblock=frozenset(),
                 state: StateFile | None = None, previous: dict | None = None):
        self.cfg = cfg
        self.config_file = cfg.path      # what a plain reload reads (``reload --adopt``)
        # what the node owns on the system, for the next start after a crash (owned.py);
        # ``previous``: what a run that did not stop cleanly left there
        self.statefile, self.previous = state, previous or {}
        self.incarnation = next_incarnation(self.previous.get("incarnation"))
        self._unblock = unblock          # signals main() held back during set-up
        self.facts = facts
        # UDP links whose local address or route is missing wait for it, down (underlay.py)
        self.underlay = UnderlayWatch(bring_up=self._underlay_up)
        self.tables = Tables(cfg, facts, self.underlay.hold(cfg, self.underlay.plan(cfg)))
        self.ports = Ports(cfg, on_owned=(lambda ns: state.save(namespaces=ns))
                           if state is not None else None)
        self.dp = None           # the datapath chosen by datapaths.choose()
        self.cp = None           # the control plane (control.plane.ControlPlane), with [tm]/[vbm]
        self.kernel = KernelInstances()     # eBPF protocol instances (node/kernel.py)
        self.pmtu = None         # path MTU notices (control.pmtu.PathMtu), on every node
        self.control: ControlServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = time.time()
        self.loaded_at = time.time()
        self.reloads = {"ok": 0, "refused": 0}
        # run-time changes of one value since the file was last applied (runtime.py)
        self.runtime_changes: list[str] = []
        self.requests: dict[tuple[str, str], int] = {}
        self._reload_lock: asyncio.Lock | None = None
        self._metrics = None
        self._mtu_pending: set = set()   # TAP MTU changes under way (worker threads)

    # -- life cycle ----------------------------------------------------------------------------

    def setup_system(self):
        """Namespaces and TAPs; runs before the event loop.  First what a previous run that
        was killed left: its namespaces adopted or removed, its HTB qdiscs removed."""
        if self.statefile is not None:
            prev = self.previous
            if prev:
                log.warning("%s: the previous run (pid %s) did not stop cleanly; taking over "
                            "what it left: namespaces %s, HTB qdiscs on %s", self.statefile.path,
                            prev.get("pid", "?"), ", ".join(prev.get("namespaces", []))
                            or "none", ", ".join(prev.get("qdiscs", [])) or "none")
            self.statefile.save(incarnation=self.incarnation,
                                namespaces=prev.get("namespaces", []),
                                qdiscs=prev.get("qdiscs", []))
            self.ports.adopt_namespaces(self.cfg, prev.get("namespaces", []))
            left = [q for q in prev.get("qdiscs", []) if not self._remove_qdisc(q)]
            self.statefile.save(qdiscs=left)
        self.ports.setup(self.tables.compile())

    @staticmethod
    def _remove_qdisc(ifname: str) -> bool:
        try:
            if netlink.htb_remove(ifname):
                log.info("removed the HTB qdisc a previous run left on %s", ifname)
            return True
        except Exception as e:
            log.error("cannot remove the HTB qdisc a previous run left on %s: %s", ifname, e)
            return False

    def teardown_system(self):
        self.ports.teardown()
        if self.statefile is not None:
            left = self.ports.created_ns or self.statefile.record.get("qdiscs")
            if left:
                log.warning("%s: kept for the next start: %s is still there",
                            self.statefile.path, ", ".join(left))
            self.statefile.release(clean=not left)

    async def run(self) -> int:
        self.loop = loop = asyncio.get_running_loop()
        self._reload_lock = asyncio.Lock()
        stop = asyncio.Event()
        status = 0

        def datapath_failed(msg):
            nonlocal status
            log.error("datapath: %s; stopping with exit status 1", msg)
            status = 1
            stop.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self._sighup()))
        if self._unblock:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self._unblock)
        cfg = self.cfg
        # every part is closed in the reverse order it was started: the metrics server, the
        # control socket, kernel instances, path MTU notices, the control plane, the datapath
        # and its TAP capture
        async with contextlib.AsyncExitStack() as parts:
            self.underlay.start(loop)         # links down since __init__: retried from now
            parts.callback(self.underlay.close)
            vli0 = ControlDispatch()     # VLI 0: the control plane (if any), then path MTU
            self.dp = datapaths.choose(cfg.node.datapath)(
                self.tables, loop, tap_capture=cfg.node.tap_capture, on_control=vli0,
                on_port_closed=self._endpoint_closed, on_fatal=datapath_failed)
            parts.callback(self._close_datapath)
            for li in cfg.interfaces:
                self.dp.add_port(li.vnet, li.name, self.ports.tap_for(cfg, li).fd)
            path_mtu = functools.partial(
                PathMtu, self.tables, self.dp, loop, node=node_id(cfg, self.facts),
                incarnation=self.incarnation, on_interface=self._path_mtu)
            # VLI 0 frames reach their handlers (registered below, before the first await) only
            # in the loop: a neighbour's notice may be there at its first turn
            self.dp.open()
            if cfg.tm is not None or cfg.vbm is not None:
                from vnet_router.control.plane import ControlPlane
                answered = None
                if self.answered_path() is not None:    # requests answered, across restarts
                    answered = Answered(self.answered_path())
                    answered.load(cfg.tm_settings.replay_window)
                    parts.callback(answered.close)
                self.cp = ControlPlane(
                    cfg, self.tables, self.dp, self.ports, loop, incarnation=self.incarnation,
                    on_owned=(lambda q: self.statefile.save(qdiscs=q)) if self.statefile
                    else None, path_mtu=path_mtu, answered=answered)
                self.pmtu = self.cp.pmtu         # sends through the plane, hears PATH_MTU from it
                parts.push_async_callback(self.cp.close)
                self.cp.start()
                parts.callback(vli0.register(self.cp.on_control))
            else:
                self.pmtu = path_mtu()
                if cfg.node.path_mtu_interval:   # it takes PATH_MTU notices: say if unkeyed
                    self.pmtu.guard.warn_unauthenticated()
            parts.callback(self.pmtu.close)
            self.pmtu.start()
            parts.callback(vli0.register(self.pmtu.on_control, fallback=True))
            await self._path_mtu_known(stop)
            parts.callback(self.kernel.stop_all)
            handlers = {name: self._counted(name, fn) if name != "ping" else fn
                        for name, fn in self.handlers().items()}
            self.control = self.make_control(cfg.node.control_socket, handlers)
            parts.push_async_callback(self.control.close)
            await self.control.start()
            await self.started_serving()
            if cfg.node.metrics:
                from vnet_router.ops import metrics
                self._metrics = metrics.serve(*cfg.node.metrics, self._status_from_thread)
                parts.callback(self._close_metrics)
            log.info("node %s ready: %d substrate links, %d vNets, %d logical interfaces, "
                     "%d switched virtual links", cfg.node.name, len(cfg.substrate_links),
                     len(cfg.vnets), len(cfg.interfaces), len(cfg.switches))
            sdnotify.notify("READY=1", f"STATUS=forwarding, generation {self.tables.generation}")
            await stop.wait()
            log.info("stopping")
            sdnotify.notify("STOPPING=1")
            return status

    def _underlay_up(self, link_id: str) -> bool:
        """UDP link ``link_id`` found its address and route (``UnderlayWatch``): its sockets
        open and the tables without it down go in, in this step of the loop.  False (it stays
        down, retried): a reload is running, or opening failed after all."""
        if self.dp is None or (self._reload_lock is not None and self._reload_lock.locked()):
            return False
        self.tables.underlay_down = frozenset(self.underlay.down)
        try:
            self.dp.reconfigure({}, [])
        except OSError as e:
            self.tables.underlay_down |= {link_id}
            log.debug("substrate link %s: opening its sockets failed: %s", link_id, e)
            return False
        return True

    def answered_path(self) -> str | None:
        """Where the control requests this node answered are kept across restarts
        (``node/answered.py``): beside the state file."""
        return self.statefile.path + ".answered" if self.statefile is not None else None

    def _close_datapath(self):
        """The datapath, then the TAP capture its engine walked."""
        self.dp.close()
        if self.dp.capture is not None:
            self.dp.capture.close(list(self.dp.ports.values()))

    def _close_metrics(self):
        server = self._metrics[0]
        server.shutdown()
        server.server_close()

    # -- control -------------------------------------------------------------------------------

    def handlers(self) -> dict:
        """Handlers of the control commands, by name in the registry (``commands.py``: what
        each command is); a subclass adds its own."""
        h = {"show": self.status, "reload": self.reload, "ping": lambda: "pong",
             "endpoint": self.endpoint, "instance_start": self.instance_start,
             "instance_stop": self.kernel_stop, "instances": self.instances}
        if self.cp is not None:
            h.update(alloc=self.cp.allocations, vlink_add=self.cp.vlink_add,
                     vlink_del=self.cp.vlink_del)
        if self.DAEMON == commands.ROUTER:         # run-time changes of one value (runtime.py)
            h["vlink_rate"] = functools.partial(runtime.vlink_rate, self)
            if self.cp is not None and self.cp.vbm is not None:
                h["vbm_share"] = functools.partial(runtime.vbm_share, self)
        return h

    def make_control(self, path: str, handlers: dict) -> ControlServer:
        return ControlServer(path, handlers, daemon=self.DAEMON, limits=Limits.of(self.cfg.node))

    async def started_serving(self):
        """Hook: runs once the control socket listens."""

    def endpoint_allowed(self, vnet: str, peer) -> str | None:
        """None if ``peer`` may open endpoints of ``vnet``, else why not (router: the control
        socket's file permissions already restrict who connects)."""
        return None

    def endpoint(self, vnet: str, interface: str, peer=None):
        """Hand the application end of library endpoint ``vnet``/``interface`` to the caller."""
        if not isinstance(vnet, str) or not isinstance(interface, str):
            raise CommandError("endpoint: 'vnet' and 'interface' must be strings")
        if vnet not in {v.name for v in self.cfg.vnets}:
            raise CommandError(f"endpoint: unknown vNet {vnet!r}")
        li = next((li for li in self.cfg.interfaces
                   if (li.vnet, li.name) == (vnet, interface)), None)
        if li is None or li.kind != "socket":
            names = [li.name for li in self.cfg.interfaces
                     if li.vnet == vnet and li.kind == "socket"]
            raise CommandError(f"endpoint: vNet {vnet} has no library endpoint {interface!r} "
                               f"(it has: {', '.join(names) or 'none'})")
        why = self.endpoint_allowed(vnet, peer)
        if why:
            raise CommandError(f"endpoint: permission denied: {why}")
        end: SocketEnd = self.ports.tap_for(self.cfg, li)
        if end.app is None:
            raise CommandError(f"endpoint: {vnet}/{interface} is busy (held by pid {end.holder})")
        app = end.take_app(peer.pid if peer else None)
        log.info("endpoint %s/%s handed to pid %s uid %s", vnet, interface,
                 peer.pid if peer else "?", peer.uid if peer else "?")
        snap = self.tables.compile()
        mtu = interface_mtu(snap.links[li.substrate_link], li,
                            snap.path_mtu.get((li.substrate_link, li.out_vli)))
        return WithFds({"vnet": vnet, "interface": interface, "mtu": mtu,
                        "substrate_link": li.substrate_link, "in_vli": li.in_vli,
                        "out_vli": li.out_vli}, [app])

    def _endpoint_closed(self, port):
        """The application of a library endpoint went away: a fresh socket pair takes the
        port's place (in the datapath, one step of the loop) for the next application."""
        key = next((k for k, t in self.ports.taps.items() if t.fd == port.fd), None)
        if key is None:
            return
        old = self.ports.taps[key]
        log.info("endpoint %s/%s released by pid %s", port.vnet, port.name,
                 getattr(old, "holder", None))
        new = SocketEnd()
        self.ports.taps[key] = new
        self.dp.reconfigure({(port.vnet, port.name): new.fd}, [(port.vnet, port.name)])
        old.close()

    def _path_mtu(self, li, reported: int | None):
        """A path MTU notice changed what logical interface ``li`` may send: its TAP follows
        (netlink, in a worker thread: pyroute2 cannot run in the event loop)."""
        mtu = interface_mtu(self.dp.snap.links[li.substrate_link], li, reported)

        def done(fut):
            self._mtu_pending.discard(fut)
            if fut.exception() is not None:
                log.error("vnet %s: setting the MTU of %s to %d failed: %s", li.vnet, li.name,
                          mtu, fut.exception())
        fut = self.loop.run_in_executor(None, self.ports.set_mtu, self.cfg, li, mtu)
        self._mtu_pending.add(fut)
        fut.add_done_callback(done)

    async def _path_mtu_known(self, stop: asyncio.Event):
        """Before the node says it is ready (issue 26: no black hole at start): wait, at most
        ``pmtu.start_wait``, until the path MTU of every output virtual link is reported and
        the TAPs have it, so what waits for the node (systemd's units after it, the lab's
        commands, an operator) never sends a frame its path cannot carry.  A neighbour that
        is not running yet leaves its links at their own MTU (lowered when it reports).  A
        stop signal (``stop`` set) ends the wait: nothing will use the TAPs."""
        t0 = time.monotonic()
        waiting = asyncio.ensure_future(self.pmtu.wait_known(self.pmtu.start_wait))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        stopped = not waiting.done()
        if stopped:
            waiting.cancel()
            await asyncio.wait({waiting})
        if self._mtu_pending:
            await asyncio.gather(*list(self._mtu_pending), return_exceptions=True)
        if stopped:
            log.info("path MTU: a stop came during the start's wait: not waiting on")
            return
        unknown = waiting.result()
        if unknown:
            log.warning("path MTU: no notice within %.1f s for %s; their logical interfaces "
                        "keep their own link's MTU until the neighbour reports",
                        time.monotonic() - t0, ", ".join(f"{lid}:{vli}"
                                                         for lid, vli in sorted(unknown)))
        elif self.pmtu.interval:
            log.info("path MTU: known for every output virtual link after %.2f s",
                     time.monotonic() - t0)

    # -- kernel instances (node/kernel.py) -------------------------------------------------------

    async def instance_start(self, name, vnet, argv=(), kernel=None, interfaces=(), routes=(),
                             peer=None, **user_space):
        """vnet-router runs kernel instances only; vnet-hostd adds user-space ones."""
        if kernel is None:
            raise CommandError(f"instance start {name}: {self.DAEMON} runs kernel instances "
                               f"only (--kernel PROGRAM); user-space instances need vnet-hostd")
        if user_space.get("files"):
            raise CommandError(f"instance start {name}: --file is for a command instance of "
                               f"vnet-hostd, not a kernel instance; nothing created")
        return await self.kernel_start(name, vnet, kernel, interfaces, routes, argv)

    async def kernel_start(self, name, vnet, program, interfaces, routes, argv=(),
                           user_names=()) -> dict:
        if argv:
            raise CommandError(f"instance start {name}: a kernel instance takes no command "
                               f"(nothing after --)")
        if vnet not in {v.name for v in self.cfg.vnets}:
            raise CommandError(f"instance start {name}: unknown vNet {vnet!r}")
        ifaces = {li.name: li.kind for li in self.cfg.interfaces if li.vnet == vnet}
        try:
            interfaces, table = self.kernel.check(name, vnet, list(interfaces), list(routes),
                                                  ifaces, user_names)
            inst = await asyncio.get_running_loop().run_in_executor(
                None, self.kernel.start, name, vnet, self.cfg.vnet(vnet).namespace, program,
                interfaces, table)
        except KernelError as e:
            log.error("instance start %s refused: %s", name, e)
            raise CommandError(f"instance start {name}: {e}") from None
        return inst.status()

    def kernel_stop(self, name):
        try:
            return self.kernel.stop(name)
        except KernelError as e:
            raise CommandError(f"instance stop: {e}") from None

    def instances(self) -> dict:
        return {"kernel": self.kernel.status(), "kernel_stopped": dict(self.kernel.stopped)}

    # -- status --------------------------------------------------------------------------------

    def status(self, learned: bool = False) -> dict:
        """``show``; ``learned``: with every learned MAC of the multiaccess interfaces."""
        st = status(self.cfg, self.tables, self.dp, self.started, self.cp, learned=learned,
                    underlay=self.underlay.status)
        # the id its control messages carry, 8 hex digits as in every view and metric
        nid = self.pmtu.node if self.pmtu is not None else node_id(self.cfg, self.facts)
        st["node_id"] = f"{nid:08x}"
        st["config_state"] = {"loaded_at": self.loaded_at, "reloads": dict(self.reloads),
                              "file": self.config_file,
                              "runtime_changes": list(self.runtime_changes)}
        st["kernel_instances"] = self.kernel.status()
        st["path_mtu"] = self.pmtu.status() if self.pmtu is not None else None
        if self.control is not None:
            st["control_socket"] = self.control.stats()
        return st

    def _status_from_thread(self) -> dict:
        """For the metrics thread: compute the status inside the event loop (no torn reads)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def work():
            try:
                st = self.status()
                st["_control_requests"] = dict(self.requests)
                fut.set_result(st)
            except BaseException as e:      # pragma: no cover - reported to the scraper
                fut.set_exception(e)
        self.loop.call_soon_threadsafe(work)
        return fut.result(timeout=5)

    def _counted(self, name, fn):
        def wrapped(**kw):
            try:
                result = fn(**kw)
            except Exception:
                self._count(name, "error")
                raise
            if asyncio.iscoroutine(result):
                return self._await_counted(name, result)
            self._count(name, "ok")
            return result
        return wrapped

    async def _await_counted(self, name, coro):
        try:
            result = await coro
        except Exception:
            self._count(name, "error")
            raise
        self._count(name, "ok")
        return result

    def _count(self, name, outcome):
        self.requests[(name, outcome)] = self.requests.get((name, outcome), 0) + 1

    # -- reload --------------------------------------------------------------------------------

    async def _sighup(self):
        try:
            await self.reload()
        except CommandError as e:
            log.error("reload refused: %s", e)

    async def reload(self, path: str | None = None, text: str | None = None,
                     files: dict | None = None, adopt: bool = False, peer=None) -> dict:
        """Plain (SIGHUP, ``vnetctl reload``): re-read the file in use.  With ``text``
        (``vnetctl reload FILE``): the configuration the client read from ``path``, with the
        key files it names (``files``) -- the daemon opens none of them; ``adopt``: ``path``
        becomes the file in use (root or the daemon's own user only).  Validate fully, then
        apply only the difference.  Raises CommandError (and changes nothing) if the new
        configuration is not usable."""
        async with self._reload_lock:
            try:
                if path is None and text is None:
                    return await self._reload(self.config_file)
                new = self._sent_config(path, text, files, adopt, peer)
                result = await self.apply(new, path)
            except CommandError as e:
                self.reloads["refused"] += 1
                log.error("reload refused, still running generation %d: %s",
                          self.tables.generation, e)
                raise
            if adopt:
                self.config_file = path
                log.info("%s is now the configuration file in use", path)
            return {**result, "from": path, "file": self.config_file}

    def _sent_config(self, path, text, files, adopt, peer) -> config_mod.NodeConfig:
        if not isinstance(text, str) or not isinstance(path, str):
            raise CommandError("reload FILE: want the file's path and the text the client "
                               "read (vnetctl reload FILE); the daemon reads no file on a "
                               "client's behalf")
        if not isinstance(files or {}, dict) or not isinstance(adopt, bool):
            raise CommandError("reload FILE: files must be an object, adopt a boolean")
        if adopt and (peer is None or peer.uid not in (0, os.geteuid())):
            raise CommandError(f"reload --adopt: only root or the daemon's own user may "
                               f"change the file the daemon reads (uid "
                               f"{peer.uid if peer else '?'}); without --adopt FILE is "
                               f"applied once")
        try:
            return config_mod.loads_sent(text, path, files or {})
        except ConfigError as e:
            raise CommandError(str(e)) from None

    async def _reload(self, path: str) -> dict:
        try:
            new = self.load_config(path)
        except ConfigError as e:
            raise CommandError(str(e)) from None
        return {**await self.apply(new, path), "from": path, "file": self.config_file}

    def load_config(self, path: str) -> config_mod.NodeConfig:
        return config_mod.load(path)

    async def apply(self, new: config_mod.NodeConfig, path: str) -> dict:
        """Apply ``new`` (validated) in two phases: prepare (worker thread), swap (one loop
        step), commit (worker thread).  Raises CommandError and changes nothing on failure.
        Callers hold the reload lock."""
        loop = asyncio.get_running_loop()
        old = self.cfg
        for key in _FIXED:
            if getattr(new.node, key) != getattr(old.node, key):
                raise CommandError(f"{path}: node.{key}: cannot change while running "
                                   f"(restart the daemon)")
        for key in ("tm", "vbm"):            # [vbm]'s shares may change (the VBM's set_shares)
            if fixed_part(getattr(new, key)) != fixed_part(getattr(old, key)):
                raise CommandError(f"{path}: [{key}]: cannot change while running "
                                   f"(restart the daemon)")
        self._check_dynamic(new, path)
        sdnotify.notify("RELOADING=1", sdnotify.monotonic_usec())
        try:
            owned = set(self.ports.taps)
            try:
                facts = await loop.run_in_executor(None, read_facts, new, owned)
            except EnvironmentError_ as e:
                raise CommandError(str(e)) from None
            down = self.underlay.plan(new)     # UDP links new or changed, probed
            trial = Tables(new, facts, down).compile()
            try:
                change = await loop.run_in_executor(None, self.ports.prepare, new, trial)
            except Exception as e:
                raise CommandError(f"{path}: cannot apply: {e}") from None
            try:
                self.dp.open_sockets(trial)
            except OSError as e:
                await loop.run_in_executor(None, self.ports.abort, change)
                raise CommandError(f"{path}: cannot open substrate sockets: {e}") from None
            # -- the swap: one synchronous step of the loop --
            old_keys = {(li.vnet, li.name): Ports.key(old, li) for li in old.interfaces}
            add = {(li.vnet, li.name): change.new_taps[Ports.key(new, li)].fd
                   for li in new.interfaces if Ports.key(new, li) in change.new_taps}
            remove = [vk for vk, pk in old_keys.items() if pk in change.drop_taps or vk in add]
            self.tables.update(new, facts, self.underlay.hold(new, down))
            self.dp.reconfigure(add, remove)
            self.cfg, self.facts, self.loaded_at = new, facts, time.time()
            self.runtime_changes = []
            if self.control is not None:       # the control socket's limits apply at once
                self.control.limits = Limits.of(new.node)
            if self.cp is not None:
                self.cp.reconfigured(new)
            self.reloads["ok"] += 1
            # -- afterwards: remove what the new configuration dropped --
            await loop.run_in_executor(None, self.ports.commit, change)
        finally:
            sdnotify.notify("READY=1", f"STATUS=forwarding, generation {self.tables.generation}")
        summary = change.summary + table_diff(old, new)
        log.info("reloaded %s: generation %d, %d changes", path, self.tables.generation,
                 len(summary))
        for line in table_diff(old, new):
            log.info("%s", line)
        return {"generation": self.tables.generation, "changes": summary}


    def _check_dynamic(self, new: config_mod.NodeConfig, path: str):
        """Run-time logical interfaces (control protocol) survive a reload: refuse one that
        removes their vNet or substrate link, or takes their name or VLIs."""
        links = {s.id for s in new.substrate_links}
        vnets = {v.name: v for v in new.vnets}
        for d in self.tables.dynamic:
            what = f"run-time virtual link {d.vnet}/{d.name}"
            if d.vnet not in vnets or vnets[d.vnet].namespace != self.cfg.vnet(d.vnet).namespace:
                raise CommandError(f"{path}: {what} needs vNet {d.vnet} as it is "
                                   f"(`vnetctl vlink del` it first)")
            if d.substrate_link not in links:
                raise CommandError(f"{path}: {what} needs substrate link {d.substrate_link} "
                                   f"(`vnetctl vlink del` it first)")
            for li in new.interfaces:
                if (li.vnet, li.name) == (d.vnet, d.name):
                    raise CommandError(f"{path}: interface {li.name} of vNet {li.vnet}: the "
                                       f"name is taken by a {what}")
                if li.substrate_link == d.substrate_link and \
                        (li.in_vli == d.in_vli or li.out_vli == d.out_vli):
                    raise CommandError(f"{path}: interface {li.vnet}/{li.name}: VLI "
                                       f"in use by a {what} on {d.substrate_link}")
            for sw in new.switches:
                if (sw.in_link, sw.in_vli) == (d.substrate_link, d.in_vli) or \
                        (sw.out_link, sw.out_vli) == (d.substrate_link, d.out_vli):
                    raise CommandError(f"{path}: switch {name_of(sw)}: VLI in use by a {what}")
