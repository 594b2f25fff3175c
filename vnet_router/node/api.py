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
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
import struct
from dataclasses import dataclass, field

from vnet_router.node import commands

log = logging.getLogger(__name__)
MAX_REQUEST = 64 * 1024


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
        s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
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
                 mode: int = 0o660, policy=None):
        stray = set(handlers) - set(commands.served(daemon))
        if stray:
            raise ValueError(f"{daemon} registers handlers for {', '.join(sorted(stray))}, "
                             f"which the command registry does not give it")
        self.path, self.handlers, self.mode, self.daemon = path, handlers, mode, daemon
        self.policy = policy            # policy(cmd, peer) -> None or an error message
        self._server: asyncio.AbstractServer | None = None

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
            await self._server.wait_closed()
            self._server = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            peer = _peer(writer)
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._reply(writer, {"ok": False, "error": "request too long"})
                    return
                if not line:
                    return
                if not line.endswith(b"\n"):       # client went away mid-request
                    log.info("control: truncated request (%d bytes) from pid %s; ignored",
                             len(line), peer.pid if peer else "?")
                    return
                reply = await self._dispatch(line, peer)
                if isinstance(reply, WithFds):
                    await self._reply_fds(writer, reply)
                else:
                    await self._reply(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

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


def _peer(writer) -> Peer | None:
    try:
        raw = writer.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         _CRED.size)
        return Peer(*_CRED.unpack(raw))
    except (OSError, AttributeError):
        return None
