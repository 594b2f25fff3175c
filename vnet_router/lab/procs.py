"""A lab node's routes and commands: before the daemons, after them, and in the background.

``Lab`` (``lab.py``) builds the namespaces and links and runs the daemons; this module does the
rest of what a topology asks of a node, in this order:

1. before any daemon starts, per node in file order: its ``routes`` (``ip route add`` in the
   node's namespace, after its addresses and sysctls), then its ``[[node.commands]]`` with
   ``when = "before"``;
2. once every daemon is ready: the other commands, in file order.

The schema of both (``Route``, ``Command``) is here too; ``topology.Node`` uses it.

A command runs in the foreground (the lab waits; a failure stops the lab, naming the command
and its error) unless ``background = true``: then it is started in a session of its own, its
output goes to ``WORKDIR/NODE.NAME.log`` (``NAME``: the command's ``name``, else
``cmd<index>``), and it joins the lab's cgroup (``cgroup.py``) before it execs, so everything
it forks belongs to the lab.  One that exits on its own is reported (a progress line, a last
line in its log) and the lab stays up.  ``stop()`` sends SIGTERM to every process of the group
and ``close()`` -- after the lab's spawner thread ended, so no command can still be starting --
SIGKILLs what is left and removes the group.  Without any cgroup hierarchy the commands' own
process groups are signalled instead (a process that left its group then survives; the lab
says so when it starts the first command).
"""
from __future__ import annotations

import ipaddress
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vnet_router.lab.cgroup import LabCgroup
from vnet_router.lab.owners import LabError, _child_setup
from vnet_router.model.schema import Bool, Schema, Str, derived, key, parsed, pattern


# -- the schema: a node's routes and [[node.commands]] (topology.py's Node uses them) --------

CommandName = pattern(r"[A-Za-z0-9_]{1,24}", "bad command name {v} (at most 24 of letters, "
                      "digits, '_')", "name")


def _route(v):
    if not isinstance(v, str):
        raise ValueError(f"must be a string, not {v!r}")
    words = v.split()
    if len(words) < 3 or words[1] not in ("via", "dev"):
        raise ValueError(f"bad route {v!r} (want 'DEST via GATEWAY' or 'DEST dev IFNAME', "
                         f"then any `ip route` options)")
    if words[0] != "default":
        try:
            ipaddress.ip_network(words[0], strict=False)
        except ValueError:
            raise ValueError(f"bad route {v!r}: {words[0]!r} is not a prefix") from None
    return " ".join(words)


Route = parsed(_route, "route", str)


def _argv(v):
    if isinstance(v, str):
        try:
            argv = tuple(shlex.split(v))
        except ValueError as e:
            raise ValueError(f"cannot split {v!r}: {e}") from None
    elif isinstance(v, (list, tuple)) and all(isinstance(a, str) for a in v):
        argv = tuple(v)
    else:
        raise ValueError("must be a string or a list of strings")
    if not argv:
        raise ValueError("empty command")
    return argv


class Command(Schema):
    """``[[node.commands]]``: a command run after all daemons are ready (or before them)."""

    argv: parsed(_argv, "string or list of strings", tuple[str, ...]) = key(
        "a string, split like a shell does, or a list", alias="run")
    vnet: Str | None = key("run in that vNet's namespace of this node", None,
                           shown="the node's namespace")
    when: Literal["after", "before"] = key(
        "`\"after\"` all daemons are ready; `\"before\"`: once the node's addresses, sysctls "
        "and routes are set, before any daemon starts (not with `vnet`)", "after")
    background: Bool = key(
        "start it and go on: output to `WORKDIR/NODE.NAME.log`, stopped with everything it "
        "started (the lab's cgroup) at teardown; an early exit is reported, the lab stays up",
        False)
    name: CommandName | None = key("names its log (`WORKDIR/NODE.NAME.log`)", None,
                                   shown="`cmd<index>`")
    key: str = derived("", "where it was defined, for error messages")

    def __str__(self):
        return shlex.join(self.argv)


# -- running ---------------------------------------------------------------------------------

@dataclass
class Background:
    """One background command of a running lab."""

    node: str
    name: str
    command: Command
    ns: str
    log: Path
    proc: subprocess.Popen
    status: int | None = None          # exit status once it ended
    stopped: bool = False              # ended by the lab's teardown, not on its own

    def __str__(self):
        return f"{self.node}.{self.name}"


class Commands:
    """The commands and routes of one lab (``lab.commands``)."""

    def __init__(self, lab):
        self.lab = lab
        self.background: list[Background] = []
        self.cgroup: LabCgroup | None = None
        self._no_cgroup = False

    # -- running ---------------------------------------------------------------------------

    def before_daemons(self):
        lab = self.lab
        for node in lab.topo.nodes:
            ns = lab.ns(node.name)
            for route in node.routes:
                r = lab.run_in(ns, ["ip", "route", "add", *route.split()])
                if r.returncode != 0:
                    raise LabError(f"{lab.topo.path}: node {node.name}: route {route!r} in "
                                    f"{ns} failed: {r.stderr.strip()}")
            if node.routes:
                lab.progress(f"routes {node.name}: {', '.join(node.routes)}")
            self._run(node, "before")

    def after_daemons(self):
        for node in self.lab.topo.nodes:
            self._run(node, "after")

    def _run(self, node, when: str):
        lab = self.lab
        for j, cmd in enumerate(node.commands):
            if cmd.when != when:
                continue
            ns = lab.vnet_ns(node.name, cmd.vnet) if cmd.vnet else lab.ns(node.name)
            where = f"{node.name}/{cmd.vnet}" if cmd.vnet else node.name
            if cmd.background:
                self._start(node.name, cmd.name or f"cmd{j}", cmd, ns)
                continue
            r = lab.run_in(ns, list(cmd.argv))
            if r.returncode != 0:
                raise LabError(f"{lab.topo.path}: {cmd.key}: `{cmd}` in {ns} failed "
                                f"(status {r.returncode}): {r.stderr.strip()}")
            lab.progress(f"command {where}: {cmd}")

    def _start(self, node: str, name: str, cmd: Command, ns: str):
        lab = self.lab
        if self.cgroup is None and not self._no_cgroup:
            self.cgroup = LabCgroup.of(lab.prefix)        # known before it exists: stop()
            why = "no cgroup hierarchy is mounted"         # removes even a half-made one
            try:
                if self.cgroup is not None:
                    self.cgroup.make()
            except OSError as e:
                self.cgroup, why = None, f"cannot make cgroup {e.filename}: {e.strerror}"
            if self.cgroup is None:
                self._no_cgroup = True
                lab.progress(f"{why}: background commands are stopped by process group (a "
                             f"child that leaves it outlives the lab)")
        log = lab.workdir / f"{node}.{name}.log"
        with open(log, "ab") as out:
            out.write(f"[vnet-lab] {time.strftime('%H:%M:%S')} start in {ns}: {cmd}\n"
                      .encode())
            out.flush()
            fds = self.cgroup.attach_fds() if self.cgroup else []
            try:
                proc = _spawn(lab, ["ip", "netns", "exec", ns, *cmd.argv], out, fds)
            finally:
                for fd in fds:
                    os.close(fd)
        bg = Background(node, name, cmd, ns, log, proc)
        self.background.append(bg)
        lab.progress(f"background {bg}: started (pid {proc.pid}, log {log.name}): {cmd}")

    # -- watching --------------------------------------------------------------------------

    def exited(self) -> list[Background]:
        """Background commands that ended on their own since the last call; each is reported
        (progress line, last line of its log)."""
        out = []
        for bg in self.background:
            if bg.status is None and bg.proc.poll() is not None:
                bg.status = bg.proc.returncode
                self._note(bg, f"exited with status {bg.status}")
                out.append(bg)
        return out

    def _note(self, bg: Background, what: str):
        try:
            with open(bg.log, "a") as f:
                f.write(f"[vnet-lab] {time.strftime('%H:%M:%S')} {what}\n")
        except OSError:
            pass
        self.lab.progress(f"background {bg}: {what} (log {bg.log.name})")

    def running(self) -> list[Background]:
        return [bg for bg in self.background if bg.proc.poll() is None]

    # -- stopping --------------------------------------------------------------------------

    def stop(self, timeout: float):
        """SIGTERM to every background command and all they started; wait up to ``timeout``."""
        self.exited()
        live = self.running()
        if self.cgroup is not None:
            self.cgroup.signal(signal.SIGTERM)
        for bg in live:
            try:
                os.killpg(bg.proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.monotonic() + timeout
        for bg in live:
            try:
                bg.proc.wait(max(0.05, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if self.cgroup is not None:
            self.cgroup.wait_empty(max(0.0, end - time.monotonic()))
        for bg in live:
            bg.stopped = True

    def close(self):
        """After the spawner ended: SIGKILL whatever is left, remove the cgroup, record each
        command's status.  Problems go to ``lab.cleanup_errors``: the teardown goes on."""
        try:
            self._close()
        except OSError as e:
            self.lab.cleanup_errors.append(f"background commands: {e}")

    def _close(self):
        if self.cgroup is not None:
            left = len(self.cgroup.pids())
            if not self.cgroup.kill():
                self.lab.cleanup_errors.append(
                    f"processes of background commands still running: {self.cgroup.pids()}")
            elif left:
                self.lab.progress(f"background commands: killed {left} processes that "
                                  f"ignored SIGTERM")
            if not self.cgroup.remove():
                self.lab.cleanup_errors.append(f"cannot remove cgroup {self.cgroup.members}")
        for bg in self.background:
            if bg.proc.poll() is None:            # no cgroup: its process group
                try:
                    os.killpg(bg.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                bg.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                continue
            if bg.status is None:
                bg.status = bg.proc.returncode
                self._note(bg, f"stopped (status {bg.status})" if bg.stopped else
                           f"exited with status {bg.status}")


def _spawn(lab, argv, out, fds) -> subprocess.Popen:
    """Popen on the lab's spawner thread: death signal, then the cgroup, then exec."""
    parent = os.getpid()

    def setup():
        _child_setup(parent, signal.SIGTERM)
        for fd in fds:
            os.write(fd, b"0")

    if lab._spawner is None:
        raise LabError("the lab is not started")
    return lab._spawner.call(lambda: subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=setup))
