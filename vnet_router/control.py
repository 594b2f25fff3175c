"""Control socket of a daemon: newline-delimited JSON over a Unix stream socket.

Request:  ``{"cmd": "show"}``        Response: ``{"ok": true, "result": {...}}``
                                              or ``{"ok": false, "error": "..."}``

The server side (``ControlServer``) runs in the daemon's event loop and dispatches to
handlers the daemon registers; ``request()`` is the blocking client ``vnetctl`` and the lab
use.  Malformed requests get an error reply; the server keeps serving.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket

log = logging.getLogger(__name__)
MAX_REQUEST = 64 * 1024


class ControlError(RuntimeError):
    pass


def request(path: str, cmd: str, timeout: float = 5.0, **args) -> dict:
    """Send one command and return its result; raises ControlError on failure."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise ControlError(f"cannot reach daemon at {path}: {e.strerror}") from None
        s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    if not buf:
        raise ControlError(f"daemon at {path} closed the connection without a reply")
    reply = json.loads(buf)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "unknown error"))
    return reply["result"]


class ControlServer:
    """Serves ``handlers[cmd](**args) -> json-able`` on a Unix socket."""

    def __init__(self, path: str, handlers: dict, mode: int = 0o660):
        self.path, self.handlers, self.mode = path, handlers, mode
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
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._reply(writer, {"ok": False, "error": "request too long"})
                    return
                if not line:
                    return
                reply = self._dispatch(line)
                if asyncio.isfuture(reply) or asyncio.iscoroutine(reply):
                    reply = await self._finish(reply)
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
    async def _finish(pending) -> dict:
        """A handler returned a coroutine (work that waits on the network): await it."""
        try:
            return {"ok": True, "result": await pending}
        except (ValueError, LookupError, TimeoutError) as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:     # a handler bug must not take the daemon down
            log.exception("control command failed")
            return {"ok": False, "error": f"failed: {e}"}

    def _dispatch(self, line: bytes):
        try:
            msg = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "malformed request: not JSON"}
        if not isinstance(msg, dict) or not isinstance(msg.get("cmd"), str):
            return {"ok": False, "error": "malformed request: want an object with a 'cmd' string"}
        args = {k: v for k, v in msg.items() if k != "cmd"}
        handler = self.handlers.get(msg["cmd"])
        if handler is None:
            return {"ok": False, "error": f"unknown command {msg['cmd']!r} "
                                          f"(known: {', '.join(sorted(self.handlers))})"}
        try:
            result = handler(**args)
            if asyncio.iscoroutine(result):
                return result
            return {"ok": True, "result": result}
        except (ValueError, LookupError) as e:
            return {"ok": False, "error": str(e)}
        except TypeError as e:
            return {"ok": False, "error": f"bad arguments for {msg['cmd']!r}: {e}"}
        except Exception as e:     # a handler bug must not take the daemon down
            log.exception("control command %s failed", msg["cmd"])
            return {"ok": False, "error": f"{msg['cmd']} failed: {e}"}
