"""A TCP forwarder from an inherited listening socket to an address (``mgmt.py``).

    python3 -m vnet_router.lab.forward FD HOST:PORT

``vnet-lab`` opens the listening socket in the host's namespace (a loopback port) and starts
this in the lab's management namespace, so each accepted connection is relayed to
``HOST:PORT`` there (Prometheus's web UI).  Runs until SIGTERM (the lab's teardown).
"""
from __future__ import annotations

import asyncio
import socket
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, OSError):
            pass


async def serve(listener: socket.socket, host: str, port: int):
    async def one(reader, writer):
        try:
            up_r, up_w = await asyncio.open_connection(host, port)
        except OSError as e:
            print(f"forward: cannot connect to {host}:{port}: {e}", file=sys.stderr, flush=True)
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))

    server = await asyncio.start_server(one, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python3 -m vnet_router.lab.forward FD HOST:PORT", file=sys.stderr)
        return 2
    host, _, port = argv[1].rpartition(":")
    listener = socket.socket(fileno=int(argv[0]))
    try:
        asyncio.run(serve(listener, host, int(port)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
