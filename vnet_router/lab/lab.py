"""Build a topology of network namespaces, veth pairs and bridges, and run vnet-router on it.

``Lab`` is a context manager::

    with Lab("etc/lab/demo.toml") as lab:
        print(lab.ping("h1", "10.0.0.2", vnet="blue"))

Building: one namespace per switch and node (``PREFIX + name``), a Linux bridge in each switch
namespace, veth pairs for the links (created directly in their namespaces through
``vnet_router.ops.netlink``, so no name ever appears in the host's namespace), sysctls, legacy
addresses, each node's routes and ``when = "before"`` commands (``procs.py``, which also runs
the later and the background commands); then (``[lab] keys``, the default) a fresh key file
``lab.key`` is written to the work dir, mode 0600, which every substrate link without a
``key_file`` of its own uses, so the control messages are authenticated; then each node's
router config (``topology.render_router``) is written to the work dir and
``vnet_router.node.daemon`` is started in the node's namespace with ``nsenter --net`` (not
``ip netns exec``: in its private mount namespace the daemon would have to mount every vNet
namespace in the host's as well, see ``ops/netlink.py``), ready once its control socket
answers ``show``; then the post-start commands run.

Stopping (always: normal exit, exception, Ctrl-C, SIGTERM): SIGTERM to the background
commands (their whole cgroup) and the daemons, SIGKILL after a timeout, then every namespace
whose name starts with the lab's prefix is removed — the ones the lab made and any vNet
namespace a daemon left behind (recorded in ``leftovers``).
Nothing happens at import; signal handlers are installed by ``start`` and restored by ``stop``.
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vnet_router.model import config as rconfig
from vnet_router.model import keys
from vnet_router.model.toml import dump_toml
from vnet_router.node import api as control
from vnet_router.ops import netlink
from vnet_router.lab import campus, cgroup, mgmt, switching, topology as topo_mod
from vnet_router.lab.procs import Commands
from vnet_router.lab.owners import (  # noqa: F401  (the lab's API: cli, tests)
    OWNERS_DIR, PREFIX_RE, _STALE, LabError, _Spawner, _child_setup, _remove_workdir,
    _read_owner, _owner_alive, _start_time, forget_stale_owners, processes_in,
    stale_namespaces, stale_owners)
from vnet_router.lab.topology import Topology

_counter = itertools.count()
_PKG_ROOT = str(Path(__file__).resolve().parents[2])


def check_prefix(prefix: str) -> str:
    """An explicit lab prefix, or LabError."""
    if not PREFIX_RE.match(prefix) or _STALE.match(prefix):
        raise LabError(f"bad lab prefix {prefix!r}: want a letter, then up to 15 letters, "
                       f"digits or '_', then '-' (e.g. 'labA-'); 'vl<digits>-' is reserved "
                       f"for the default prefixes")
    return prefix


def default_prefix() -> str:
    """'vl<pid>-' for a process's first lab, 'vl<pid>x<n>-' for the next ones."""
    n = next(_counter)
    return f"vl{os.getpid()}-" if n == 0 else f"vl{os.getpid()}x{n}-"


@dataclass(frozen=True)
class PingResult:
    transmitted: int
    received: int
    loss: float                    # percent
    rtt_min: float | None          # ms
    rtt_avg: float | None
    rtt_max: float | None
    output: str

    @property
    def ok(self) -> bool:
        return self.received > 0

    def __str__(self):
        s = f"{self.received}/{self.transmitted} replies"
        if self.rtt_avg is not None:
            s += f", rtt {self.rtt_avg:.2f} ms"
        return s


_PING_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_PING_LOSS = re.compile(r"([\d.]+)% packet loss")
_PING_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/[\d.]+ ms")


def parse_ping(output: str) -> PingResult:
    counts, loss, rtt = (_PING_COUNTS.search(output), _PING_LOSS.search(output),
                         _PING_RTT.search(output))
    tx, rx = (int(counts.group(1)), int(counts.group(2))) if counts else (0, 0)
    rtts = tuple(float(x) for x in rtt.groups()) if rtt else (None, None, None)
    return PingResult(tx, rx, float(loss.group(1)) if loss else 100.0, *rtts, output)


class Lab:
    """A running topology.  ``start()``/``stop()``, or use it as a context manager."""

    def __init__(self, topology: Topology | str | Path, *, prefix: str | None = None,
                 workdir: str | Path | None = None, keep_workdir: bool = False,
                 progress=None, daemon_cmd: list[str] | None = None,
                 ready_timeout: float = 10.0, stop_timeout: float = 5.0,
                 management: str | None = None):
        self.topo = topology if isinstance(topology, Topology) else topo_mod.load(topology)
        self.management = mgmt.network(self.topo, management)   # [lab] management, or this
        self.prefix = check_prefix(prefix) if prefix else default_prefix()
        self._workdir_arg = Path(workdir) if workdir else None
        self.workdir: Path | None = None
        self.keep_workdir = keep_workdir
        self.progress = progress or (lambda msg: None)
        self.daemon_cmd = daemon_cmd or [sys.executable, "-m", "vnet_router.node.daemon"]
        self.ready_timeout, self.stop_timeout = ready_timeout, stop_timeout
        self.configs: dict[str, rconfig.NodeConfig] = {}
        self.key_file: Path | None = None             # the lab's key ([lab] keys), once written
        self.daemons: dict[str, subprocess.Popen] = {}
        self.daemon_exit: dict[str, int] = {}          # node -> exit status, after stop
        self.leftovers: list[str] = []                 # vNet namespaces daemons left behind
        self.cleanup_errors: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self.commands = Commands(self)                 # routes, commands, background ones
        self._created: list[str] = []
        self._old_handlers: dict[int, object] = {}
        self._spawner: _Spawner | None = None
        self._owner_file: Path | None = None
        self._preexisting: set[str] = set()
        self._started = self._stopped = False

    # -- names ------------------------------------------------------------------------------

    def ns(self, name: str) -> str:
        """Namespace of a node or switch."""
        return self.prefix + name

    def vnet_ns(self, node: str, vnet: str) -> str:
        """Namespace of ``vnet`` on ``node`` (from the node's rendered router config)."""
        if node not in self.configs:
            raise LabError(f"node {node} runs no router (or the lab is not started)")
        try:
            return self.configs[node].vnet(vnet).namespace
        except StopIteration:
            if self.topo.node(node).daemon == "host":      # joined at run time
                return f"{self.prefix}{node}-{vnet}"
            raise LabError(f"node {node} has no vNet {vnet!r}") from None

    def namespaces(self) -> list[str]:
        """Every existing namespace of this lab (nodes, switches, vNets)."""
        return [n for n in netlink.netns_list() if n.startswith(self.prefix)]

    def mac(self, node: str, ifname: str) -> str:
        return self.topo.mac(node, ifname)

    def socket(self, node: str) -> str:
        return self.configs[node].node.control_socket

    def log_path(self, node: str) -> Path:
        return self.workdir / f"{node}.log"

    def log_tail(self, node: str, lines: int = 15) -> str:
        try:
            text = self.log_path(node).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.rstrip("\n").splitlines()[-lines:])

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> "Lab":
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self) -> "Lab":
        if self._started:
            raise LabError("a Lab can be started once")
        self._started = True
        self._install_signals()
        atexit.register(self.stop)
        try:
            self._claim_prefix()
            self._spawner = _Spawner(self.prefix)
            self._prepare_workdir()
            if not self._workdir_arg and not self.keep_workdir:   # clean removes it for us
                self._owner_file.write_text(f"{os.getpid()} {_start_time(os.getpid())} "
                                            f"{self.workdir}\n")
            self._build()
            self.commands.before_daemons()
            self._write_key()
            self._start_daemons()
            self.commands.after_daemons()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop daemons and processes, remove every namespace of the lab.  Idempotent."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        masked = self._mask_signals()
        try:
            self.commands.stop(self.stop_timeout)
            self._stop_processes()
            self._stop_daemons()
            if self._spawner is not None:
                self._spawner.close()
            self.commands.close()          # none can still be starting: kill what is left
            if self._owner_file is not None:        # else another lab owns the prefix
                self._remove_namespaces()
                self._release_prefix()
            if self.workdir is not None and not self.keep_workdir and not self._workdir_arg:
                shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            self._restore_signals(masked)

    # -- building ---------------------------------------------------------------------------

    def _claim_prefix(self):
        """Record this process as the prefix's owner (OWNERS_DIR/PREFIX), or LabError if a
        running lab owns it.  Namespaces left by a dead owner of the prefix (a lab killed
        with SIGKILL) are removed; any other namespace already there is never touched."""
        OWNERS_DIR.mkdir(parents=True, exist_ok=True)
        path = OWNERS_DIR / self.prefix
        me = f"{os.getpid()} {_start_time(os.getpid())}\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _read_owner(path)
            if owner is not None and _owner_alive(*owner):
                raise LabError(f"lab prefix {self.prefix!r} is in use by a running lab "
                               f"(pid {owner[0]})") from None
            _remove_workdir(path)
            path.write_text(me)
            stale = self.namespaces()
            if stale:
                self.progress(f"removing namespaces of a lab with prefix {self.prefix!r} that "
                              f"died (pid {owner[0] if owner else '?'}): {', '.join(stale)}")
                for ns in stale:
                    netlink.netns_remove(ns)
        else:
            with os.fdopen(fd, "w") as f:
                f.write(me)
        self._owner_file = path
        for n in cgroup.sweep(only=self.prefix).values():   # a dead lab's background commands
            self.progress(f"killed {n} processes left by a lab with prefix {self.prefix!r}")
        self._preexisting = set(self.namespaces())      # not ours: never removed

    def _release_prefix(self):
        if self._owner_file is not None and \
                not [ns for ns in self.namespaces() if ns not in self._preexisting]:
            try:
                self._owner_file.unlink()
            except FileNotFoundError:
                pass

    def _prepare_workdir(self):
        if self._workdir_arg:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
            self.workdir = self._workdir_arg.resolve()
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"vnet-lab-{self.prefix}"))
        self.progress(f"work dir {self.workdir}")

    def _build(self):
        t = self.topo
        names = [sw.name for sw in t.switches] + [n.name for n in t.nodes]
        for name in names:
            ns = self.ns(name)
            if netlink.netns_exists(ns):
                raise LabError(f"namespace {ns} already exists (another lab with prefix "
                               f"{self.prefix!r}?  `vnet-lab clean` removes stale ones)")
            netlink.netns_create(ns)
            self._created.append(ns)
        self.progress(f"namespaces: {', '.join(self.ns(n) for n in names)}")

        for sw in t.switches:
            self._sysctl(self.ns(sw.name), "net.ipv6.conf.all.disable_ipv6", "1")
            self._sysctl(self.ns(sw.name), "net.ipv6.conf.default.disable_ipv6", "1")
            netlink.bridge_create(sw.name, self.ns(sw.name))
        for link in t.links:
            netlink.veth_create_between(link.a.ifname, self.ns(link.a.owner),
                                        link.b.ifname, self.ns(link.b.owner),
                                        mac=link.a.mac, peer_mac=link.b.mac, mtu=link.mtu)
            for end in (link.a, link.b) if link.b.switch is not None else ():
                if end.switch is not None:      # a switch port (both ends: a trunk)
                    netlink.bridge_attach(end.ifname, end.switch, self.ns(end.switch))
        switching.build(t, self.ns, self.progress, LabError)
        mgmt.build(self)
        if t.switches:
            ends = [e for link in t.links for e in (link.a, link.b)]
            self.progress("switches: " + ", ".join(
                f"{sw.name} [{', '.join(e.ifname for e in ends if e.switch == sw.name)}]"
                for sw in t.switches))
        if t.links:
            self.progress(f"links: {len(t.links)} veth pairs")

        for node in t.nodes:
            for key, value in node.sysctl:
                self._sysctl(self.ns(node.name), key, value)
            for ifname, cidrs in node.addresses:
                for cidr in cidrs:
                    netlink.addr_add(ifname, cidr, self.ns(node.name))
            if node.addresses:
                self.progress(f"legacy addresses {node.name}: " + ", ".join(
                    f"{ifname} {' '.join(c)}" for ifname, c in node.addresses))

    def _sysctl(self, ns: str, key: str, value: str):
        r = self.run_in(ns, ["sysctl", "-q", "-w", f"{key}={value}"])
        if r.returncode != 0:
            raise LabError(f"sysctl {key}={value} in {ns} failed: {r.stderr.strip()}")

    def _write_key(self):
        """The lab's key (``[lab] keys``): a fresh one per start, in the work dir."""
        if not self.topo.lab.keys:
            self.progress("keys off ([lab] keys = false): control messages are not "
                          "authenticated")
            return
        path = self.workdir / "lab.key"
        try:
            keys.write_key_file(path, force=True)
        except keys.KeyFileError as e:
            raise LabError(f"cannot write the lab's key: {e}") from None
        self.key_file = path
        self.progress(f"lab key {path} (mode 0600): every substrate link without a key_file "
                      f"of its own authenticates its control messages with it")

    def _start_daemons(self):
        for node in self.topo.nodes:
            if not node.has_router:
                continue
            rendered = topo_mod.render_router(
                self.topo, node.name, self.prefix, str(self.workdir),
                str(self.key_file) if self.key_file else None)
            rendered = campus.render(self.topo, node.name, mgmt.render(self, node.name, rendered))
            path = self.workdir / f"{node.name}.toml"
            path.write_text(dump_toml(rendered))
            self.configs[node.name] = cfg = topo_mod.parse_node_config(
                rendered, str(path), node.daemon)
            for v in cfg.vnets:
                if not v.namespace.startswith(self.prefix):
                    raise LabError(f"{path}: vNet {v.name} namespace {v.namespace!r} does not "
                                   f"start with the lab prefix {self.prefix!r}")
            self._spawn_daemon(node.name)
        for name, proc in self.daemons.items():
            self._wait_ready(name, proc)

    def _spawn_daemon(self, node: str):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PKG_ROOT, env.get("PYTHONPATH")) if p)
        path = self.workdir / f"{node}.toml"
        cmd = self.daemon_cmd if self.topo.node(node).daemon == "router" else \
            [sys.executable, "-m", "vnet_host.daemon"]
        argv = ["nsenter", f"--net={netlink.NETNS_DIR}/{self.ns(node)}", *cmd, "-c", str(path)]
        with open(self.log_path(node), "ab") as log:
            # SIGTERM (the daemons then remove their vNets) when the lab dies, even by SIGKILL
            self.daemons[node] = self._popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True)   # Ctrl-C goes to the lab, not to them
        self.progress(f"daemon {node}: started (pid {self.daemons[node].pid}, "
                      f"config {path.name}, log {node}.log)")

    def kill_daemon(self, node: str, sig: int = signal.SIGKILL) -> int:
        """Stop a node's daemon abruptly (failure tests); returns its exit status."""
        p = self.daemons[node]
        if p.poll() is None:
            p.send_signal(sig)
        return p.wait(timeout=self.stop_timeout)

    def restart_daemon(self, node: str) -> None:
        """Start a node's daemon again (after ``kill_daemon``) and wait until it is ready."""
        if self.daemons[node].poll() is None:
            raise LabError(f"daemon of node {node} still runs")
        self._spawn_daemon(node)
        self._wait_ready(node, self.daemons[node])

    def _wait_ready(self, node: str, proc: subprocess.Popen):
        sock = self.socket(node)
        t0 = time.monotonic()
        last = ""
        while True:
            rc = proc.poll()
            if rc is not None:
                raise LabError(f"daemon of node {node} exited with status {rc} before it was "
                               f"ready; last lines of {self.log_path(node)}:\n"
                               f"{self.log_tail(node)}")
            try:
                control.request(sock, "show", timeout=1.0)
                break
            except (control.ControlError, OSError, ValueError) as e:
                last = str(e)
            if time.monotonic() - t0 > self.ready_timeout:
                raise LabError(f"daemon of node {node} not ready after {self.ready_timeout:.0f} s "
                               f"({last}); last lines of {self.log_path(node)}:\n"
                               f"{self.log_tail(node)}")
            time.sleep(0.1)
        vnets = ", ".join(f"{v.name} in {v.namespace}" for v in self.configs[node].vnets)
        self.progress(f"daemon {node}: ready in {time.monotonic() - t0:.1f} s"
                      + (f" (vNets: {vnets})" if vnets else ""))

    # -- using a running lab ----------------------------------------------------------------

    def run_in(self, ns: str, argv, *, check: bool = False, timeout: float | None = 60, **kw):
        """Run ``argv`` in namespace ``ns`` (``ip netns exec``); returns CompletedProcess."""
        if isinstance(argv, str):
            argv = shlex.split(argv)
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        r = subprocess.run(["ip", "netns", "exec", ns, *argv], timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise LabError(f"`{shlex.join(argv)}` in {ns} failed (status {r.returncode}): "
                           f"{(r.stderr or '').strip()}")
        return r

    def _where(self, node: str, vnet: str | None) -> str:
        if node not in {n.name for n in self.topo.nodes} | {s.name for s in self.topo.switches}:
            raise LabError(f"no node or switch {node!r} in the topology")
        return self.vnet_ns(node, vnet) if vnet else self.ns(node)

    def exec(self, node: str, argv, vnet: str | None = None, **kw):
        """Run a command in a node's namespace, or in one of its vNet namespaces."""
        return self.run_in(self._where(node, vnet), argv, **kw)

    def popen(self, node: str, argv, vnet: str | None = None, **kw) -> subprocess.Popen:
        """Start a background command there; ``stop()`` ends it if it still runs."""
        if isinstance(argv, str):
            argv = shlex.split(argv)
        kw.setdefault("start_new_session", True)
        p = self._popen(["ip", "netns", "exec", self._where(node, vnet), *argv], **kw)
        self._procs.append(p)
        return p

    def _popen(self, argv, **kw) -> subprocess.Popen:
        """Popen on the spawner thread, with the death signal set (see ``_child_setup``)."""
        if self._spawner is None:
            raise LabError("the lab is not started")
        parent = os.getpid()
        return self._spawner.call(lambda: subprocess.Popen(
            argv, preexec_fn=lambda: _child_setup(parent, signal.SIGTERM), **kw))

    def ping(self, node: str, dst: str, vnet: str | None = None, *, count: int = 3,
             interval: float = 0.2, wait: float = 1.0) -> PingResult:
        r = self.exec(node, ["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                             "-W", str(wait), dst], vnet=vnet,
                      timeout=count * (interval + wait) + 10)
        return parse_ping(r.stdout + r.stderr)

    def throughput(self, node: str, server: str, dst: str, vnet: str | None = None, *,
                   server_vnet: str | None = None, seconds: float = 2.0,
                   extra: tuple[str, ...] = ()) -> float:
        """Received bit/s of an iperf3 run from ``node`` to a one-shot server on ``server``.

        ``dst`` is the server's address; ``server_vnet`` defaults to ``vnet``.  Needs iperf3.
        """
        if shutil.which("iperf3") is None:
            raise LabError("iperf3 is not installed")
        srv = self.popen(server, ["iperf3", "-s", "-1", "-B", dst], vnet=server_vnet or vnet,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(20):                     # until the server listens
                r = self.exec(node, ["iperf3", "-c", dst, "-t", str(seconds), "-J", *extra],
                              vnet=vnet, timeout=seconds + 30)
                if "unable to connect" not in r.stdout or srv.poll() is not None:
                    break
                time.sleep(0.1)
        finally:
            if srv.poll() is None:
                _end(srv, 2.0)
        try:
            end = json.loads(r.stdout)["end"]
            return float((end.get("sum_received") or end["sum"])["bits_per_second"])
        except (ValueError, KeyError, TypeError):
            raise LabError(f"iperf3 {node} -> {dst} failed: "
                           f"{(r.stdout + r.stderr).strip()[-300:]}") from None

    def switch_stats(self, switch: str) -> dict[str, dict]:
        """port -> its egress counters (``lab/switching.py``: ``port_stats``)."""
        return switching.switch_stats(self.topo, self.ns, switch)

    def control(self, node: str, cmd: str = "show", **args) -> dict:
        return control.request(self.socket(node), cmd, **args)

    def alive(self) -> dict[str, int | None]:
        """node -> None while its daemon runs, else its exit status."""
        return {n: p.poll() for n, p in self.daemons.items()}

    # -- stopping ---------------------------------------------------------------------------

    def _stop_processes(self):
        for p in self._procs:
            if p.poll() is None:
                _end(p, self.stop_timeout)

    def _stop_daemons(self):
        for p in self.daemons.values():
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.stop_timeout
        for node, p in self.daemons.items():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.cleanup_errors.append(f"daemon {node} ignored SIGTERM for "
                                           f"{self.stop_timeout:.0f} s; killed")
                p.kill()
                p.wait()
            self.daemon_exit[node] = p.returncode
            if p.returncode != 0:
                self.progress(f"daemon {node}: exited with status {p.returncode}")

    def _remove_namespaces(self):
        mine = set(self._created)
        for ns in self.namespaces():
            if ns not in mine and ns not in self._preexisting:
                self.leftovers.append(ns)
        if self.leftovers:
            self.progress(f"removing namespaces the daemons left behind: "
                          f"{', '.join(self.leftovers)}")
        for ns in self.leftovers + self._created[::-1]:
            try:
                netlink.netns_remove(ns)
            except OSError as e:
                self.cleanup_errors.append(f"cannot remove namespace {ns}: {e}")
        still = [ns for ns in self.namespaces() if ns not in self._preexisting]
        if still:
            self.cleanup_errors.append(f"namespaces still present: {', '.join(still)}")
        for e in self.cleanup_errors:
            self.progress(f"cleanup: {e}")
        self.progress(f"removed {len(self._created) + len(self.leftovers)} namespaces")

    # -- signals ----------------------------------------------------------------------------

    def _install_signals(self):
        """SIGTERM/SIGHUP raise SystemExit while the lab runs, so cleanup happens."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) == signal.SIG_DFL:
                self._old_handlers[sig] = signal.signal(sig, _raise_exit)

    def _mask_signals(self):
        """Ignore Ctrl-C and SIGTERM while cleaning up, so cleanup is not cut short."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, signal.SIG_IGN)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def _restore_signals(self, masked):
        for sig, handler in masked.items():
            signal.signal(sig, handler)
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


def _end(p: subprocess.Popen, timeout: float):
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        p.terminate()
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            p.kill()
        p.wait()
