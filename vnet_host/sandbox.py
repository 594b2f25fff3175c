"""Protocol instances started by ``vnet-hostd``: sandboxed processes, one vNet each.

An instance is a command run

* inside its vNet's network namespace only (``nsenter --net``): it sees that vNet's logical
  interfaces and nothing of other vNets or of the host's legacy interfaces;
* as an unprivileged user (``setpriv``: uid/gid, no supplementary groups, ``no_new_privs``),
  optionally keeping CAP_NET_ADMIN/CAP_NET_RAW/CAP_NET_BIND_SERVICE as ambient capabilities
  (a routing daemon sets routes in its namespace; the capabilities are of no use elsewhere,
  since entering another namespace needs CAP_SYS_ADMIN);
* in a session of its own, niced, with resource limits: RLIMIT_CPU (the kernel sends SIGXCPU)
  and RLIMIT_AS (a backstop) from rlimits, because this machine has no cgroup v2 controllers
  (``/sys/fs/cgroup/cgroup.controllers`` absent: cgroup v1 only).  A watchdog samples CPU
  time and resident memory of every process of the session (``/proc``) and stops the
  instance — SIGKILL to the whole session — as soon as one exceeds its limit.

A stopped instance is unloaded: its processes are gone, it is removed from the table, the
event is logged and counted by reason (``cpu``, ``memory``, ``exited``, ``stopped``).
This module uses no event loop; the daemon calls ``poll()`` periodically.
"""
from __future__ import annotations

import logging
import os
import pwd
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

log = logging.getLogger("vnet_host.sandbox")

CAPS = ("net_admin", "net_raw", "net_bind_service")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


class SandboxError(RuntimeError):
    pass


@dataclass
class Instance:
    name: str
    vnet: str
    namespace: str
    argv: list
    user: str
    uid: int
    cpu_seconds: int
    memory: int
    caps: tuple
    workdir: str
    proc: subprocess.Popen | None = None
    started: float = field(default_factory=time.time)
    cpu_used: float = 0.0
    rss: int = 0
    peak_vm: int = 0
    stopping: str | None = None          # reason, once we decided to stop it
    kill_at: float | None = None

    def status(self) -> dict:
        return {"name": self.name, "vnet": self.vnet, "namespace": self.namespace,
                "pid": self.proc.pid if self.proc else None, "user": self.user,
                "argv": self.argv, "cpu_seconds_used": round(self.cpu_used, 2),
                "cpu_seconds_limit": self.cpu_seconds, "rss_bytes": self.rss,
                "memory_limit": self.memory, "caps": list(self.caps), "workdir": self.workdir,
                "uptime_seconds": round(time.time() - self.started, 1)}


class Sandbox:
    """The table of running instances and their watchdog."""

    def __init__(self, base_dir: str, grace: float = 2.0):
        self.base_dir = base_dir
        self.grace = grace
        self.instances: dict[str, Instance] = {}
        self.stopped: dict[str, int] = {"cpu": 0, "memory": 0, "exited": 0, "stopped": 0}
        self.events: list[dict] = []     # the last few stops, for `show`

    def start(self, name: str, vnet: str, namespace: str, argv: list, user: str,
              cpu_seconds: int, memory: int, caps=()) -> Instance:
        if name in self.instances:
            raise SandboxError(f"instance {name!r} already runs (pid "
                               f"{self.instances[name].proc.pid})")
        if not argv or not all(isinstance(a, str) for a in argv):
            raise SandboxError("instance needs a command (a list of strings)")
        bad = [c for c in caps if c not in CAPS]
        if bad:
            raise SandboxError(f"capability {bad[0]!r} not allowed (allowed: {', '.join(CAPS)})")
        try:
            pw = pwd.getpwnam(user) if not str(user).isdigit() else pwd.getpwuid(int(user))
        except KeyError:
            raise SandboxError(f"no user {user!r}") from None
        if pw.pw_uid == 0:
            raise SandboxError("protocol instances do not run as root")
        workdir = os.path.join(self.base_dir, name)
        os.makedirs(workdir, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
        os.chmod(workdir, 0o700)
        capset = ",".join(f"+{c}" for c in caps)
        priv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                "--no-new-privs", f"--inh-caps=-all{',' + capset if caps else ''}",
                f"--ambient-caps=-all{',' + capset if caps else ''}",
                f"--bounding-set=-all{',' + capset if caps else ''}"]
        full = ["nsenter", f"--net=/run/netns/{namespace}", "--", *priv, "--", *argv]
        as_limit = 2 * memory + (256 << 20)

        def limits():
            os.setsid()
            os.nice(10)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 2))
            resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": workdir, "VNET": vnet, "VNET_INSTANCE": name, "LANG": "C.UTF-8"}
        with open(os.path.join(workdir, "output.log"), "ab") as out:
            try:
                proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                        preexec_fn=limits, close_fds=True)
            except OSError as e:
                raise SandboxError(f"cannot start {argv[0]}: {e}") from None
        inst = Instance(name, vnet, namespace, list(argv), pw.pw_name, pw.pw_uid, cpu_seconds,
                        memory, tuple(caps), workdir, proc)
        self.instances[name] = inst
        log.info("instance %s started: vnet %s, pid %d, user %s, cpu %ds, memory %d bytes, "
                 "caps %s: %s", name, vnet, proc.pid, pw.pw_name, cpu_seconds, memory,
                 ",".join(caps) or "-", " ".join(argv))
        return inst

    def stop(self, name: str, reason: str = "stopped"):
        inst = self.instances.get(name)
        if inst is None:
            raise SandboxError(f"no instance {name!r} (running: "
                               f"{', '.join(sorted(self.instances)) or 'none'})")
        self._begin_stop(inst, reason, signal.SIGTERM)

    def stop_vnet(self, vnet: str):
        for inst in list(self.instances.values()):
            if inst.vnet == vnet:
                self._begin_stop(inst, "stopped", signal.SIGKILL)
        self.poll()

    def stop_all(self, timeout: float = 3.0):
        for inst in list(self.instances.values()):
            self._begin_stop(inst, "stopped", signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.instances and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.05)
        for inst in list(self.instances.values()):
            self._kill(inst)
        self.poll()

    def _begin_stop(self, inst: Instance, reason: str, sig):
        if inst.stopping is None:
            inst.stopping = reason
            inst.kill_at = time.monotonic() + self.grace
        self._signal(inst, sig)

    def _signal(self, inst: Instance, sig):
        for pid in [inst.proc.pid] + session_pids(inst.proc.pid):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _kill(self, inst: Instance):
        self._signal(inst, signal.SIGKILL)

    def poll(self) -> list[dict]:
        """Sample, enforce limits, reap; returns the stop events of this round."""
        events = []
        now = time.monotonic()
        for inst in list(self.instances.values()):
            rc = inst.proc.poll()
            if rc is None:
                pids = [inst.proc.pid] + session_pids(inst.proc.pid)
                cpu, rss, vm = usage(pids)
                inst.cpu_used, inst.rss = max(inst.cpu_used, cpu), rss
                inst.peak_vm = max(inst.peak_vm, vm)
                if inst.stopping is None:
                    if cpu > inst.cpu_seconds:
                        self._begin_stop(inst, "cpu", signal.SIGKILL)
                    elif rss > inst.memory:
                        self._begin_stop(inst, "memory", signal.SIGKILL)
                elif inst.kill_at is not None and now >= inst.kill_at:
                    self._kill(inst)
                continue
            # the main process ended: take the rest of its session with it
            self._kill(inst)
            reason = inst.stopping or self._why(inst, rc)
            ev = {"instance": inst.name, "vnet": inst.vnet, "reason": reason,
                  "status": rc, "cpu_seconds_used": round(inst.cpu_used, 2),
                  "rss_bytes": inst.rss, "at": time.time()}
            self.stopped[reason] = self.stopped.get(reason, 0) + 1
            del self.instances[inst.name]
            log_fn = log.info if reason in ("exited", "stopped") else log.warning
            log_fn("instance %s (vnet %s) %s: status %s, cpu %.2fs, rss %d bytes; unloaded",
                   inst.name, inst.vnet, {"cpu": "exceeded its CPU limit",
                                          "memory": "exceeded its memory limit",
                                          "exited": "exited", "stopped": "stopped"}[reason],
                   rc, inst.cpu_used, inst.rss)
            events.append(ev)
        self.events = (self.events + events)[-20:]
        return events

    @staticmethod
    def _why(inst: Instance, rc: int) -> str:
        if rc in (-signal.SIGXCPU, -signal.SIGKILL) and inst.cpu_used >= inst.cpu_seconds - 0.5:
            return "cpu"
        if rc != 0 and inst.peak_vm > inst.memory:
            return "memory"           # RLIMIT_AS made its allocations fail
        return "exited"

    def remove_workdir(self, name: str):
        shutil.rmtree(os.path.join(self.base_dir, name), ignore_errors=True)


def session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` other than its leader."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == sid:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:          # field 6 (session), counted after ")"
            out.append(int(entry))
    return out


def usage(pids) -> tuple[float, int, int]:
    """Total CPU seconds, resident bytes and virtual bytes of ``pids``."""
    cpu, rss, vm = 0.0, 0, 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / _TICK       # utime, stime
        vm += int(fields[20])
        rss += int(fields[21]) * _PAGE
    return cpu, rss, vm
