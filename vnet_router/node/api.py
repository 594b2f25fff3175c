"""Control socket of a daemon: newline-delimited JSON over a Unix stream socket.

Request:  ``{"cmd": "show"}``        Response: ``{"ok": true, "result": {...}}``
                                              or ``{"ok": false, "error": "..."}``

The server side (``ControlServer``) runs in the daemon's event loop and dispatches to the
handlers the daemon registers by command name; what each command is (which daemons serve it,
whether it changes state, takes the caller's credentials, returns descriptors) is declared in
the registry, ``commands.py``.  The server refuses a command its daemon does not serve, with
the reason.  ``request()`` is the blocking client ``vnetctl`` and the lab use.  Malformed
requests get an error reply; the server keeps serving.

Access: the server reads the peer's credentials (SO_PEERCRED) per connection; an optional
``policy(cmd, peer)`` may refuse the commands the registry marks ``privileged`` (state
changes), and a command marked ``peer`` gets the credentials as ``peer=``.  A command marked
``fds`` may return :class:`WithFds`: the reply then carries descriptors (SCM_RIGHTS), which is
how a daemon hands a bound endpoint to an application (``request_fds()`` is the client).

Limits (:class:`Limits`, from ``[node]`` ``control_*``): a total connection cap, a per-uid cap
for every uid but root, and a reserve of the total kept for root; when even that is used up a
root connection closes the longest-idle connection of another user.  A connection closes
after ``idle_timeout`` seconds without a request and after ``request_timeout`` seconds
inside one (half a request, then nothing); a request longer than ``MAX_REQUEST`` bytes or
nested deeper than ``MAX_DEPTH`` gets an error reply.  Every refusal is counted by reason
(``stats()``: ``show --json`` ``control_socket``, the ``vnet_control_socket_refused`` metric)
and logged at most once per ``LOG_INTERVAL`` per reason, with the number held back.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import re
import socket
import struct
import time
from dataclasses import dataclass, field

from vnet_router.node import commands

log = logging.getLogger(__name__)
MAX_REQUEST = 64 * 1024        # bytes of one request line
MAX_DEPTH = 32                 # nesting of [ and { in one request
LOG_INTERVAL = 60.0            # seconds: a refusal reason is logged at most once per interval
#: reasons a connection or request is refused or closed (counters always present)
REASONS = ("connections", "per_uid", "evicted", "idle_timeout", "request_timeout",
           "too_long", "too_deep")


@dataclass(frozen=True)
class Limits:
    """Connection limits of a control socket (``[node]`` ``control_*`` keys)."""

    max_connections: int = 128     # all connections
    max_per_uid: int = 16          # connections of one uid other than root
    root_reserve: int = 8          # of max_connections, only for root
    idle_timeout: float = 60.0     # seconds without a request
    request_timeout: float = 10.0  # seconds from a request's first byte to its newline

    @classmethod
    def of(cls, node) -> "Limits":
        """From a ``NodeSection``."""
        return cls(node.control_max_connections, node.control_max_per_uid,
                   node.control_root_reserve, node.control_idle_timeout,
                   node.control_request_timeout)


_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def too_deep(line: bytes, limit: int = MAX_DEPTH) -> bool:
    """True if the JSON text ``line`` nests ``[``/``{`` deeper than ``limit`` (brackets inside
    strings do not count).  Checked before parsing: the parser recurses."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    depth = 0
    for m in _TOKENS.finditer(line):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif c in (b"]", b"}"):
            depth -= 1
    return False


class ControlError(RuntimeError):
    """Client side: the daemon could not be reached or refused the command."""


class CommandError(RuntimeError):
    """Server side: a handler refuses a command; the message goes back to the client."""


@dataclass(frozen=True)
class Peer:
    """Credentials of the process at the other end of a control connection."""

    pid: int
    uid: int
    gid: int

    def groups(self) -> set[int]:
        """Primary and supplementary groups (from /proc; empty if the process is gone)."""
        out = {self.gid}
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("Groups:"):
                        out |= {int(g) for g in line.split()[1:]}
        except OSError:
            pass
        return out


@dataclass
class WithFds:
    """A handler's result plus descriptors to pass with the reply (closed after sending)."""

    result: object
    fds: list = field(default_factory=list)


_CRED = struct.Struct("3i")


def request(path: str, cmd: str, /, timeout: float = 5.0, **args) -> dict:
    """Send one command and return its result; raises ControlError on failure.  (``path`` and
    ``cmd`` are positional only: a command may have arguments of those names.)"""
    result, fds = request_fds(path, cmd, timeout, **args)
    for fd in fds:                       # a reply that should carry none: do not leak them
        os.close(fd)
    return result


def request_fds(path: str, cmd: str, /, timeout: float = 10.0, **args) -> tuple[dict, list[int]]:
    """Send one command; (result, descriptors the reply carried).  Raises ControlError."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    fds: list[int] = []
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError, PermissionError) as e:
            raise ControlError(f"cannot reach daemon at {path}: {e.strerror}") from None
        try:
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass        # refused at once (connection limits): its error reply is still there
        buf = b""
        while not buf.endswith(b"\n"):
            data, anc, _flags, _addr = s.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
            for level, typ, payload in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    n = len(payload) - len(payload) % 4
                    fds += list(struct.unpack(f"{n // 4}i", payload[:n]))
            if not data:
                break
            buf += data
    finally:
        s.close()
    if not buf:
        raise ControlError(f"daemon at {path} closed the connection without a reply")
    reply = json.loads(buf)
    if not reply.get("ok"):
        for fd in fds:
            os.close(fd)
        raise ControlError(reply.get("error", "unknown error"))
    return reply["result"], fds


class ControlServer:
    """Serves ``handlers[cmd](**args) -> json-able`` on a Unix socket for ``daemon`` (a name
    in the registry): every handler must be a command the registry says it serves."""

    def __init__(self, path: str, handlers: dict, *, daemon: str = commands.ROUTER,
                 mode: int = 0o660, policy=None, limits: Limits | None = None):
        stray = set(handlers) - set(commands.served(daemon))
        if stray:
            raise ValueError(f"{daemon} registers handlers for {', '.join(sorted(stray))}, "
                             f"which the command registry does not give it")
        self.path, self.handlers, self.mode, self.daemon = path, handlers, mode, daemon
        self.policy = policy            # policy(cmd, peer) -> None or an error message
        self.limits = limits or Limits()  # may be replaced while serving (reload)
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict = {}           # writer -> _Conn, the connections being served
        self.refused = dict.fromkeys(REASONS, 0)
        self._logged: dict[str, tuple[float, int]] = {}   # reason -> (last logged, held back)

    async def start(self):
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._server = await asyncio.start_unix_server(self._serve, path=self.path,
                                                       limit=MAX_REQUEST)
        os.chmod(self.path, self.mode)
        log.info("control socket listening on %s", self.path)

    async def close(self):
        if self._server is not None:
            self._server.close()
            for conn in list(self._conns.values()):    # their handlers end at once, quietly
                conn.writer.transport.abort()
            await self._server.wait_closed()
            self._server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def stats(self) -> dict:
        """Connections now (by uid), limits and refusals by reason: ``show``'s
        ``control_socket``."""
        by_uid: dict[str, int] = {}
        for c in self._conns.values():
            k = str(c.uid) if c.uid is not None else "?"
            by_uid[k] = by_uid.get(k, 0) + 1
        lim = self.limits
        return {"connections": len(self._conns), "by_uid": by_uid,
                "limits": {"max_connections": lim.max_connections,
                           "max_per_uid": lim.max_per_uid, "root_reserve": lim.root_reserve,
                           "idle_timeout": lim.idle_timeout,
                           "request_timeout": lim.request_timeout,
                           "max_request_bytes": MAX_REQUEST, "max_depth": MAX_DEPTH},
                "refused": dict(self.refused)}

    def _refuse(self, reason: str, peer, detail: str):
        """Count a refusal; log it unless this reason was logged less than LOG_INTERVAL ago
        (then the next log line says how many were held back)."""
        self.refused[reason] += 1
        now = time.monotonic()
        last, held = self._logged.get(reason, (None, 0))
        if last is not None and now - last < LOG_INTERVAL:
            self._logged[reason] = (last, held + 1)
            return
        self._logged[reason] = (now, 0)
        more = f" (and {held} more of this kind in the last {now - last:.0f} s)" if held else ""
        log.warning("control: %s: uid %s pid %s%s", detail, peer.uid if peer else "?",
                    peer.pid if peer else "?", more)

    def _admit(self, peer) -> str | None:
        """None if the connection may be served, else the refusal reason (``REASONS``)."""
        lim, conns = self.limits, self._conns
        if peer is not None and peer.uid == 0:
            if len(conns) < lim.max_connections:
                return None
            idle = [c for c in conns.values() if c.uid != 0 and c.idle]
            if not idle:
                return "connections"
            victim = min(idle, key=lambda c: c.since)
            self._refuse("evicted", victim.peer, "closed the longest-idle connection of "
                         "another user to serve root")
            del conns[victim.writer]
            victim.writer.transport.abort()
            return None
        uid = peer.uid if peer is not None else None
        if len(conns) >= lim.max_connections - lim.root_reserve:
            return "connections"
        if sum(1 for c in conns.values() if c.uid == uid) >= lim.max_per_uid:
            return "per_uid"
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        peer = _peer(writer)
        why = self._admit(peer)
        if why is not None:
            lim = self.limits
            text = {"connections": f"too many control connections (limit "
                                   f"{lim.max_connections}, {lim.root_reserve} kept for root)",
                    "per_uid": f"too many control connections of uid "
                               f"{peer.uid if peer else '?'} (limit {lim.max_per_uid})"}[why]
            self._refuse(why, peer, f"refused a connection: {text}")
            try:
                writer.write(json.dumps({"ok": False, "error": text}).encode() + b"\n")
            except Exception:
                pass
            writer.close()       # the transport sends what fits, then closes
            return
        conn = self._conns[writer] = _Conn(peer, writer)
        try:
            await self._requests(reader, writer, conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:      # the loop is stopping: no traceback per connection
            pass
        finally:
            if self._conns.get(writer) is conn:
                del self._conns[writer]
            writer.close()

    async def _requests(self, reader, writer, conn: "_Conn"):
        peer, buf = conn.peer, b""
        while True:
            # one request: wait idle_timeout for its first byte, then request_timeout for the
            # rest; the limits are read each time (a reload may change them)
            deadline = None
            while b"\n" not in buf:
                lim = self.limits
                if buf and deadline is None:
                    deadline = time.monotonic() + lim.request_timeout
                    conn.idle = False
                wait = lim.idle_timeout if deadline is None else deadline - time.monotonic()
                try:
                    chunk = await asyncio.wait_for(reader.read(MAX_REQUEST + 1), max(wait, 0))
                except (TimeoutError, asyncio.TimeoutError):
                    if deadline is None:
                        self._refuse("idle_timeout", peer, f"closed a connection idle for "
                                     f"{lim.idle_timeout:g} s")
                        return
                    self._refuse("request_timeout", peer, f"closed a connection: request "
                                 f"not complete after {lim.request_timeout:g} s")
                    await self._reply(writer, {"ok": False, "error": "request timed out "
                                               f"(not complete after {lim.request_timeout:g} "
                                               f"s)"})
                    return
                if not chunk:
                    if buf:                  # client went away mid-request
                        log.info("control: truncated request (%d bytes) from pid %s; ignored",
                                 len(buf), peer.pid if peer else "?")
                    return
                buf += chunk
                if b"\n" not in buf and len(buf) > MAX_REQUEST:
                    break
            conn.idle = False
            line, nl, rest = buf.partition(b"\n")
            if len(line) > MAX_REQUEST:
                self._refuse("too_long", peer, f"refused a request longer than {MAX_REQUEST} "
                             f"bytes")
                await self._reply(writer, {"ok": False, "error": f"request too long (more "
                                           f"than {MAX_REQUEST} bytes)"})
                return
            buf = rest
            if too_deep(line):
                self._refuse("too_deep", peer, f"refused a request nested deeper than "
                             f"{MAX_DEPTH}")
                reply = {"ok": False, "error": f"malformed request: nested deeper than "
                                               f"{MAX_DEPTH} levels"}
            else:
                reply = await self._dispatch(line + nl, peer)
            if isinstance(reply, WithFds):
                await self._reply_fds(writer, reply)
            else:
                await self._reply(writer, reply)
            conn.idle, conn.since = True, time.monotonic()

    @staticmethod
    async def _reply(writer, obj):
        writer.write(json.dumps(obj).encode() + b"\n")
        await writer.drain()

    @staticmethod
    async def _reply_fds(writer, reply: WithFds):
        """Send the reply with SCM_RIGHTS on a duplicate of the connection's descriptor (the
        transport's own buffer is empty: every earlier reply was drained)."""
        data = json.dumps({"ok": True, "result": reply.result}).encode() + b"\n"
        fds = [f if isinstance(f, int) else f.fileno() for f in reply.fds]
        sock = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
        try:
            sock.setblocking(True)
            sock.settimeout(5)
            sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                          struct.pack(f"{len(fds)}i", *fds))])
            if sent < len(data):
                sock.sendall(data[sent:])
        finally:
            sock.close()
            for f in reply.fds:
                os.close(f) if isinstance(f, int) else f.close()

    async def _dispatch(self, line: bytes, peer: "Peer | None" = None):
        try:
            msg = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "malformed request: not JSON"}
        except RecursionError:          # too_deep() let it through: still an error reply
            return {"ok": False, "error": "malformed request: nested too deeply"}
        if not isinstance(msg, dict) or not isinstance(msg.get("cmd"), str):
            return {"ok": False, "error": "malformed request: want an object with a 'cmd' string"}
        args = {k: v for k, v in msg.items() if k != "cmd"}
        name = msg["cmd"]
        handler = self.handlers.get(name)
        if handler is None:
            return {"ok": False, "error": commands.unavailable(self.daemon, name, self.handlers)}
        cmd = commands.BY_NAME[name]
        if cmd.privileged and self.policy is not None:
            refused = self.policy(name, peer)
            if refused:
                log.warning("control: refused %s from uid %s pid %s: %s", name,
                            peer.uid if peer else "?", peer.pid if peer else "?", refused)
                return {"ok": False, "error": refused}
        if cmd.peer:
            args["peer"] = peer
        try:
            result = handler(**args)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, WithFds):
                if cmd.fds:
                    return result
                for f in result.fds:
                    os.close(f) if isinstance(f, int) else f.close()
                raise RuntimeError("descriptors in the reply of a command that returns none")
            return {"ok": True, "result": result}
        except TypeError as e:
            return {"ok": False, "error": f"bad arguments for {name!r}: {e}"}
        except (CommandError, ValueError, LookupError, TimeoutError) as e:
            # CommandError: refused; ValueError/LookupError/TimeoutError: the control plane's
            # answer to a bad argument or a neighbour that did not reply (vlink add/del)
            return {"ok": False, "error": str(e)}
        except Exception as e:     # a handler bug must not take the daemon down
            log.exception("control command %s failed", name)
            return {"ok": False, "error": f"{name} failed: {e}"}


class _Conn:
    """A connection being served: whose, and whether (since when) it waits for a request."""

    __slots__ = ("peer", "uid", "writer", "idle", "since")

    def __init__(self, peer, writer):
        self.peer, self.writer = peer, writer
        self.uid = peer.uid if peer is not None else None
        self.idle, self.since = True, time.monotonic()


def _peer(writer) -> Peer | None:
    try:
        raw = writer.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         _CRED.size)
        return Peer(*_CRED.unpack(raw))
    except (OSError, AttributeError):
        return None
