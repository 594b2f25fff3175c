"""VNP application: echo server, echo client and a line chat, on one library endpoint.

``python3 -m vnet_host.vnp.app -s SOCKET --vnet V --interface I --address 1.1 echo-server``
``... --address 1.1 echo 2.1 MESSAGE [--count N]``   prints each reply, exits 0 when all came
``... --address 1.1 chat 2.1``                       stdin lines out, received lines printed
``--ethernet``: VNP over Ethernet (``wire.frame``), for a vNet whose router runs in the kernel
on TAP logical interfaces (``vnetctl instance start ... --kernel vnp_router``).

Every node sends HELLO (its address) when it starts and every second, so the virtual router
learns where it is; a client repeats a request that got no reply within a second.
"""
from __future__ import annotations

import argparse
import select
import sys
import time

from vnet_host import lib
from vnet_host.vnp.wire import (BROADCAST, DATA, ETH_BROADCAST, HELLO, Packet, VnpError, addr,
                                addr_str, frame, mac_of, unframe)


class Node:
    def __init__(self, ep: lib.Endpoint, address: int, clock=time.monotonic,
                 ethernet: bool = False):
        self.ep, self.address, self.clock = ep, address, clock
        self.mac = mac_of(address) if ethernet else None
        self.last_hello = -1e9

    def _send(self, packet: bytes):
        self.ep.send(packet if self.mac is None else frame(packet, self.mac))

    def decode(self, data) -> Packet:
        """A received message -> VNP packet (VnpError: not VNP, or a frame for another MAC)."""
        if self.mac is not None:
            dst, _, data = unframe(data)
            if dst not in (self.mac, ETH_BROADCAST):
                raise VnpError("Ethernet frame for another node", 0, len(data))
        return Packet.unpack(data)

    def hello(self, force=False):
        if force or self.clock() - self.last_hello >= 1.0:
            self._send(Packet(HELLO, BROADCAST, self.address).pack())
            self.last_hello = self.clock()

    def send(self, dst: int, payload: bytes):
        self._send(Packet(DATA, dst, self.address, payload).pack())

    def receive(self, timeout: float) -> Packet | None:
        r, _, _ = select.select([self.ep], [], [], timeout)
        if not r:
            return None
        data = self.ep.recv()
        if not data:
            raise EOFError("daemon closed the endpoint")
        try:
            p = self.decode(data)
        except VnpError:
            return None
        return p if p.type == DATA and p.dst == self.address else None


def echo_server(node: Node, deadline: float | None):
    while deadline is None or time.monotonic() < deadline:
        node.hello()
        p = node.receive(0.5)
        if p is not None:
            node.send(p.src, p.payload)
            print(f"echo {addr_str(p.src)}: {p.payload.decode(errors='replace')}", flush=True)


def echo_client(node: Node, dst: int, message: str, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    seq = 0
    while got < count and time.monotonic() < deadline:
        node.hello()
        payload = f"{message} #{seq}".encode()
        node.send(dst, payload)
        t1 = time.monotonic() + 1.0
        while time.monotonic() < t1:
            p = node.receive(max(0.0, t1 - time.monotonic()))
            if p is not None and p.src == dst and p.payload == payload:
                got += 1
                seq += 1
                print(f"reply from {addr_str(p.src)}: {p.payload.decode()}", flush=True)
                break
    print(f"{got}/{count} replies", flush=True)
    return 0 if got == count else 1


def chat(node: Node, dst: int):
    node.hello(force=True)
    while True:
        node.hello()
        r, _, _ = select.select([node.ep, sys.stdin], [], [], 0.5)
        if sys.stdin in r:
            line = sys.stdin.readline()
            if not line:
                return 0
            node.send(dst, line.rstrip("\n").encode())
        if node.ep in r:
            data = node.ep.recv()
            try:
                p = node.decode(data)
            except VnpError:
                continue
            if p.type == DATA and p.dst == node.address:
                print(f"<{addr_str(p.src)}> {p.payload.decode(errors='replace')}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vnp-app", description="VNP echo / chat application")
    p.add_argument("-s", "--socket", default=lib.DEFAULT_SOCKET)
    p.add_argument("--vnet", required=True)
    p.add_argument("--interface", required=True)
    p.add_argument("--address", required=True, help="this node's VNP address NET.HOST")
    p.add_argument("--ethernet", action="store_true",
                   help="VNP over Ethernet (EtherType 0x88B6): the vNet's router runs in the "
                   "kernel on TAP interfaces")
    sub = p.add_subparsers(dest="cmd", required=True)
    es = sub.add_parser("echo-server")
    es.add_argument("--seconds", type=float)
    ec = sub.add_parser("echo")
    ec.add_argument("dst")
    ec.add_argument("message")
    ec.add_argument("--count", type=int, default=3)
    ec.add_argument("--timeout", type=float, default=20.0)
    ch = sub.add_parser("chat")
    ch.add_argument("dst")
    args = p.parse_args(argv)
    try:
        ep = lib.open_endpoint(args.vnet, args.interface, args.socket)
    except lib.EndpointError as e:
        print(f"vnp-app: {e}", file=sys.stderr)
        return 1
    node = Node(ep, addr(args.address), ethernet=args.ethernet)
    print(f"vnp-app: {addr_str(node.address)} on {ep}", flush=True)
    try:
        if args.cmd == "echo-server":
            echo_server(node, time.monotonic() + args.seconds if args.seconds else None)
            return 0
        if args.cmd == "echo":
            return echo_client(node, addr(args.dst), args.message, args.count, args.timeout)
        return chat(node, addr(args.dst))
    except KeyboardInterrupt:
        return 0
    finally:
        ep.close()


if __name__ == "__main__":
    sys.exit(main())
