"""Protocol instances started by ``vnet-hostd``: contained processes, one vNet each.

An instance is a command the daemon runs as

    nsenter --net=/run/netns/NS -- bwrap MOUNT-VIEW --seccomp FD -- setpriv DROP -- COMMAND

after it has put the child (before ``exec``) into a cgroup of its own (``cgroup.py``):

* network: only its vNet's namespace (``nsenter --net``): that vNet's logical interfaces and
  ``lo``, nothing of other vNets nor the host's interfaces;
* processes: a cgroup with CPU rate, memory and process-count limits; every descendant is in
  it, ``setsid`` or not; CPU time and memory are the group's, children included.  A PID
  namespace (bubblewrap's init reaps, and its end kills what is left);
* files (``bwrap``): the system read-only, a fresh ``/proc``, a minimal ``/dev``, private
  writable ``/tmp``, ``/var/tmp`` and ``/dev/shm`` (tmpfs, charged to the memory limit), the
  other instances' directories hidden behind an empty read-only directory, and its own
  working directory ``STATE_DIR/instances/NAME`` the one writable place it shares with the
  host (``output.log``, a routing daemon's control socket, the files ``instance start
  --file`` put there before the command starts: :meth:`Sandbox._put_files`);
* system calls: the seccomp filter of ``seccomp.py``;
* privileges (``setpriv``): an unprivileged uid/gid, no supplementary groups,
  ``no_new_privs``, optionally CAP_NET_ADMIN/NET_RAW/NET_BIND_SERVICE (useful only in its
  own namespace).

The daemon's watchdog calls :meth:`Sandbox.poll` every 0.2 s: it reads each group's usage,
kills the whole group as soon as the CPU time exceeds the instance's CPU seconds or the
kernel OOM-killed one of its processes (memory limit), and unloads an instance whose main
process ended (what it left behind is killed with it).  Unloading = every process killed,
cgroup removed, event logged and counted by reason (``cpu``, ``memory``, ``exited``,
``stopped``).  Instance names are checked (:func:`check_name`) before anything is created.
"""
from __future__ import annotations

import json
import logging
import os
import pwd
import re
import resource
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field

from vnet_host import seccomp
from vnet_host.cgroup import CgroupError, Group, Limits, Tree, Usage, sweep

log = logging.getLogger("vnet_host.sandbox")

CAPS = ("net_admin", "net_raw", "net_bind_service")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
KILL_WAIT = 0.2             # seconds one watchdog round waits for a group to empty
FILE_TMP = ".vnet-file."    # a --file being written (then renamed to its name)
RECORD = ".cgroups"          # in the base dir: the daemon's cgroup directories (no name clash:
                             # a name cannot start with ".")


class SandboxError(RuntimeError):
    pass


def check_dest(dst) -> str:
    """``dst`` if it names a file inside an instance's directory (relative, no ``..``, ``.`` or
    empty parts, not the daemon's ``output.log``), else SandboxError naming it."""
    if not isinstance(dst, str) or not dst:
        raise SandboxError("--file: an empty destination")
    if dst.startswith("/"):
        raise SandboxError(f"--file destination {dst!r}: an absolute path; give a path "
                           f"relative to the instance's directory")
    parts = dst.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\0" in dst:
        raise SandboxError(f"--file destination {dst!r}: not inside the instance's directory "
                           f"(no '..', '.' or empty parts)")
    if len(dst) > 255 or len(parts) > 8:
        raise SandboxError(f"--file destination {dst[:64]!r}...: longer than 255 characters "
                           f"or 8 parts")
    if dst == "output.log" or parts[-1].startswith(FILE_TMP):
        raise SandboxError(f"--file destination {dst!r}: the daemon's own file")
    return dst


def check_name(name) -> str:
    """``name`` if it is a valid instance name, else SandboxError naming it."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise SandboxError(f"bad instance name {name!r}: 1-64 letters, digits, '.', '_', '-', "
                           f"starting with a letter or digit, no '/' and no '..'")
    return name


@dataclass
class Instance:
    name: str
    vnet: str
    namespace: str
    argv: list
    user: str
    uid: int
    limits: Limits
    cpu_seconds: int
    caps: tuple
    workdir: str
    group: Group
    proc: subprocess.Popen | None = None
    started: float = field(default_factory=time.time)
    used: Usage = field(default_factory=lambda: Usage(0.0, 0, 0, 0, 0))
    stopping: str | None = None          # reason, once we decided to stop it
    kill_at: float | None = None
    stop_asked: float | None = None      # monotonic time of the stop decision

    def status(self) -> dict:
        u = self.used
        return {"name": self.name, "vnet": self.vnet, "namespace": self.namespace,
                "pid": self.proc.pid if self.proc else None, "user": self.user,
                "argv": self.argv, "cpu_seconds_used": round(u.cpu_seconds, 2),
                "cpu_seconds_limit": self.cpu_seconds, "cpu_rate": self.limits.cpu_rate,
                "memory_bytes": u.memory, "memory_peak_bytes": u.memory_peak,
                "memory_limit": self.limits.memory, "processes": u.processes,
                "pids_limit": self.limits.pids, "caps": list(self.caps),
                "workdir": self.workdir, "cgroup": self.group.paths,
                "uptime_seconds": round(time.time() - self.started, 1)}


class Sandbox:
    """The table of running instances, their cgroups and the watchdog's checks."""

    def __init__(self, base_dir: str, grace: float = 0.5):
        self.base_dir = base_dir
        self.grace = grace
        self.instances: dict[str, Instance] = {}
        self.stopped: dict[str, int] = {"cpu": 0, "memory": 0, "exited": 0, "stopped": 0}
        self.events: list[dict] = []     # the last few stops, for `show`
        self._tree: Tree | None = None
        self._sweep()

    # -- the daemon's cgroups --------------------------------------------------------------------

    def _record_path(self) -> str:
        return os.path.join(self.base_dir, RECORD)

    def _sweep(self):
        """Remove the cgroups an earlier daemon with this state dir left (kill -9)."""
        try:
            with open(self._record_path()) as f:
                paths = json.load(f)
        except (OSError, ValueError):
            return
        n = sweep(p for p in paths if p.startswith("/sys/fs/cgroup/"))
        log.info("removed the cgroups of an earlier daemon (%s)%s", ", ".join(paths),
                 f", killing {n} left-over processes" if n else "")
        os.unlink(self._record_path())

    def tree(self) -> Tree:
        if self._tree is None:
            if shutil.which("bwrap") is None:
                raise SandboxError("bubblewrap (bwrap) is not installed (Debian package "
                                   "bubblewrap): instances cannot be contained")
            try:
                self._tree = Tree.discover()
            except (CgroupError, OSError) as e:
                raise SandboxError(str(e)) from None
            os.makedirs(self.base_dir, mode=0o755, exist_ok=True)
            with open(self._record_path(), "w") as f:
                json.dump(self._tree.paths(), f)
            log.info("instance cgroups (%s): %s", self._tree.kind, ", ".join(self._tree.paths()))
        return self._tree

    # -- start -----------------------------------------------------------------------------------

    def start(self, name: str, vnet: str, namespace: str, argv: list, user: str,
              cpu_seconds: int, memory: int, caps=(), pids: int = 64,
              cpu_rate: float = 1.0, files=()) -> Instance:
        """Start ``argv``; ``files``: (destination, content) put into its directory first."""
        check_name(name)
        files = [(check_dest(dst), bytes(data)) for dst, data in files]
        if len({dst for dst, _ in files}) < len(files):
            raise SandboxError("--file: the same destination twice")
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
        lim = Limits(float(cpu_rate), int(memory), int(pids))
        if not (0 < lim.cpu_rate <= os.cpu_count() and lim.memory >= 4 << 20 and lim.pids >= 1):
            raise SandboxError(f"bad limits: cpu rate {cpu_rate} (0..{os.cpu_count()}], "
                               f"memory {memory} (>= 4MiB), pids {pids} (>= 1)")
        tree = self.tree()
        workdir, out = self._workdir(name, pw)
        try:
            self._put_files(workdir, pw, files)
        except BaseException:
            os.close(out)
            raise
        if files:
            log.info("instance %s: put %s into %s", name,
                     ", ".join(f"{dst} ({len(data)} bytes)" for dst, data in files), workdir)
        try:
            group = tree.create(name, lim)
        except FileExistsError:
            os.close(out)
            raise SandboxError(f"cgroup of {name!r} still exists (its processes are being "
                               f"killed); try again") from None
        except OSError as e:
            os.close(out)
            raise SandboxError(f"cannot create the cgroup of {name!r}: {e}") from None
        try:
            proc = self._spawn(name, vnet, namespace, argv, pw, caps, workdir, out, group)
        except BaseException:
            group.kill()
            group.remove()
            raise
        inst = Instance(name, vnet, namespace, list(argv), pw.pw_name, pw.pw_uid, lim,
                        cpu_seconds, tuple(caps), workdir, group, proc)
        self.instances[name] = inst
        log.info("instance %s started: vnet %s, pid %d, user %s, cpu %ds at most %.2g CPUs, "
                 "memory %d bytes, %d processes, caps %s: %s", name, vnet, proc.pid,
                 pw.pw_name, cpu_seconds, lim.cpu_rate, lim.memory, lim.pids,
                 ",".join(caps) or "-", " ".join(argv))
        return inst

    def _workdir(self, name: str, pw) -> tuple[str, int]:
        """``base_dir/NAME`` (NAME checked), a real directory owned by the instance's user,
        and its ``output.log`` opened for appending -- never through a link the instance
        may have left there (it owns the directory; the daemon is root)."""
        os.makedirs(self.base_dir, mode=0o755, exist_ok=True)
        os.chmod(self.base_dir, 0o755)
        workdir = os.path.join(self.base_dir, name)
        try:
            os.mkdir(workdir, 0o700)
        except FileExistsError:
            pass
        fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise SandboxError(f"{workdir} is not a directory")
            os.fchown(fd, pw.pw_uid, pw.pw_gid)
            os.fchmod(fd, 0o700)
            try:
                out = os.open("output.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                              | os.O_CLOEXEC | os.O_NONBLOCK, 0o644, dir_fd=fd)
            except OSError as e:
                raise SandboxError(f"{workdir}/output.log: {e.strerror}") from None
            st = os.fstat(out)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                os.close(out)
                raise SandboxError(f"{workdir}/output.log is not a file of its own")
        finally:
            os.close(fd)
        return workdir, out

    @staticmethod
    def _put_files(workdir: str, pw, files) -> None:
        """Write each (destination, content) below ``workdir``, owned by the instance's user,
        mode 0600.  The instance owns the directory and may have left links there: every part
        is opened with O_NOFOLLOW relative to its parent (a link is refused, never followed),
        missing directories are made, and the content is written to a new file that is then
        renamed over the destination (which replaces a link instead of writing through it)."""
        top = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            for dst, data in files:
                parts = dst.split("/")
                fd = os.dup(top)
                try:
                    for part in parts[:-1]:
                        try:
                            os.mkdir(part, 0o700, dir_fd=fd)
                            made = True
                        except FileExistsError:
                            made = False
                        sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                      dir_fd=fd)
                        os.close(fd)
                        fd = sub
                        if made:
                            os.fchown(fd, pw.pw_uid, pw.pw_gid)
                    tmp = f"{FILE_TMP}{parts[-1]}"
                    try:
                        os.unlink(tmp, dir_fd=fd)
                    except FileNotFoundError:
                        pass
                    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, 0o600, dir_fd=fd)
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(out, view):]
                        os.fchown(out, pw.pw_uid, pw.pw_gid)
                    finally:
                        os.close(out)
                    try:
                        os.rename(tmp, parts[-1], src_dir_fd=fd, dst_dir_fd=fd)
                    except OSError:
                        os.unlink(tmp, dir_fd=fd)
                        raise
                except OSError as e:
                    raise SandboxError(f"--file {dst}: {e.strerror} (in {workdir})") from None
                finally:
                    os.close(fd)
        finally:
            os.close(top)

    def _spawn(self, name, vnet, namespace, argv, pw, caps, workdir, out, group):
        capset = ",".join(f"+{c}" for c in caps)
        keep = f"-all{',' + capset if caps else ''}"
        priv = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                "--no-new-privs", f"--inh-caps={keep}", f"--ambient-caps={keep}",
                f"--bounding-set={keep}"]
        filt = seccomp.filter_fd(packet="net_raw" in caps)
        bwrap = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                 "--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/var/tmp",
                 "--perms", "1777", "--tmpfs", "/dev/shm",
                 "--perms", "0555", "--tmpfs", self.base_dir,
                 "--bind", workdir, workdir, "--remount-ro", self.base_dir,
                 "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
                 "--new-session", "--die-with-parent", "--chdir", workdir,
                 "--cap-add", "CAP_SETUID,CAP_SETGID,CAP_SETPCAP" +
                 "".join(f",CAP_{c.upper()}" for c in caps),
                 "--seccomp", str(filt)]
        full = ["nsenter", f"--net=/run/netns/{namespace}", "--", *bwrap, "--", *priv, "--",
                *argv]
        attach = group.attach_fds()

        def child():                       # after fork, before exec: keep it to system calls
            os.setsid()
            for fd in attach:
                os.write(fd, b"0")
            os.nice(10)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": workdir, "VNET": vnet, "VNET_INSTANCE": name, "LANG": "C.UTF-8",
               "TMPDIR": "/tmp"}
        try:
            return subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                    preexec_fn=child, close_fds=True, pass_fds=(filt,))
        except OSError as e:
            raise SandboxError(f"cannot start {argv[0]}: {e}") from None
        finally:
            for fd in attach + [filt, out]:
                os.close(fd)

    # -- stop ------------------------------------------------------------------------------------

    def stop(self, name: str, reason: str = "stopped"):
        inst = self.instances.get(name)
        if inst is None:
            raise SandboxError(f"no instance {name!r} (running: "
                               f"{', '.join(sorted(self.instances)) or 'none'})")
        self._begin_stop(inst, reason)

    def stop_vnet(self, vnet: str):
        for inst in list(self.instances.values()):
            if inst.vnet == vnet:
                self._begin_stop(inst, "stopped", kill=True)
        self.poll()

    def stop_all(self, timeout: float = 3.0):
        """Stop every instance (TERM, then KILL after the grace time) and remove the
        daemon's cgroup directories."""
        for inst in list(self.instances.values()):
            self._begin_stop(inst, "stopped")
        deadline = time.monotonic() + timeout
        while self.instances and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.05)
        if self._tree is not None and not self.instances and self._tree.remove():
            os.unlink(self._record_path())      # else the next daemon sweeps what is left

    def _begin_stop(self, inst: Instance, reason: str, kill: bool = False):
        """TERM the group now, KILL it after the grace time (at once if ``kill``)."""
        if inst.stopping is None:
            inst.stopping, inst.stop_asked = reason, time.monotonic()
            inst.kill_at = inst.stop_asked + (0 if kill else self.grace)
        if kill:
            inst.kill_at = time.monotonic()
            inst.group.kill(KILL_WAIT)
        else:                                   # TERM what the instance runs, not bwrap:
            inst.group.signal(signal.SIGTERM, _supervisors(inst))  # its end kills them all

    def poll(self) -> list[dict]:
        """Read usage, enforce limits, kill and unload; returns this round's stop events."""
        events = []
        now = time.monotonic()
        for inst in list(self.instances.values()):
            try:
                inst.used = inst.group.usage()
            except OSError:
                pass                            # the group is being removed
            if inst.stopping is None:
                if inst.used.cpu_seconds > inst.cpu_seconds:
                    self._begin_stop(inst, "cpu", kill=True)
                elif inst.used.oom_kills:
                    self._begin_stop(inst, "memory", kill=True)
            elif inst.kill_at is not None and now >= inst.kill_at:
                inst.group.kill(KILL_WAIT)
            rc = inst.proc.poll()
            if rc is None:
                continue
            # the main process ended: the instance ends, with whatever it left behind
            if inst.group.pids() and not inst.group.kill(KILL_WAIT):
                continue                        # not empty yet: next round
            if not inst.group.remove():
                continue
            events.append(self._unloaded(inst, rc))
        self.events = (self.events + events)[-20:]
        return events

    def _unloaded(self, inst: Instance, rc: int) -> dict:
        reason = inst.stopping or ("memory" if inst.used.oom_kills else "exited")
        u = inst.used
        ev = {"instance": inst.name, "vnet": inst.vnet, "reason": reason, "status": rc,
              "cpu_seconds_used": round(u.cpu_seconds, 2), "memory_peak_bytes": u.memory_peak,
              "oom_kills": u.oom_kills, "at": time.time()}
        if inst.stop_asked is not None:
            ev["stop_seconds"] = round(time.monotonic() - inst.stop_asked, 3)
        self.stopped[reason] = self.stopped.get(reason, 0) + 1
        del self.instances[inst.name]
        log_fn = log.info if reason in ("exited", "stopped") else log.warning
        log_fn("instance %s (vnet %s) %s: status %s, cpu %.2fs, memory peak %d bytes; unloaded",
               inst.name, inst.vnet, {"cpu": "exceeded its CPU limit",
                                      "memory": "exceeded its memory limit",
                                      "exited": "exited", "stopped": "stopped"}[reason],
               rc, u.cpu_seconds, u.memory_peak)
        return ev



def _supervisors(inst: Instance) -> set[int]:
    """bubblewrap's two processes: ours (the main pid) and the init of the instance's PID
    namespace; once the command ends they end, and the kernel kills what is left in the
    namespace."""
    out = {inst.proc.pid}
    for pid in inst.group.pids():
        try:
            with open(f"/proc/{pid}/status") as f:
                nspid = next((l.split()[1:] for l in f if l.startswith("NSpid:")), [])
        except OSError:
            continue
        if nspid[-1:] == ["1"]:
            out.add(pid)
    return out
