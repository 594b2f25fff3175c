"""VNP virtual router: a protocol instance on the library, e.g. on the substrate router.

``python3 -m vnet_host.vnp.router -s SOCKET --port VNET:IFACE [--port ...] [--route NET=IFACE]``

Forwarding (``Fib``): a host route learned from a HELLO (source address -> the port it came
in on) wins over a static network route (``--route 2=p2``: every address ``2.x``); TTL is
decremented and a packet whose TTL runs out is dropped; so is one with no route, one that
does not parse, or one that would go back out of the port it came in on.  Every outcome is
counted; ``SIGUSR1`` (and the end) prints the counters as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import selectors
import signal
import sys
import time

from vnet_host import lib
from vnet_host.vnp.wire import BROADCAST, HELLO, Packet, VnpError, addr_str


class Fib:
    """Host routes (learned) and network routes (static): address -> port name."""

    def __init__(self, clock=time.monotonic, hold: float = 30.0):
        self.hosts: dict[int, tuple[str, float]] = {}
        self.nets: dict[int, str] = {}
        self.clock, self.hold = clock, hold

    def learn(self, address: int, port: str):
        self.hosts[address] = (port, self.clock())

    def lookup(self, dst: int) -> str | None:
        h = self.hosts.get(dst)
        if h is not None and self.clock() - h[1] <= self.hold:
            return h[0]
        return self.nets.get(dst >> 16)


class Router:
    def __init__(self, ports: dict, fib: Fib | None = None):
        self.ports = ports                    # name -> Endpoint
        self.fib = fib or Fib()
        self.counters = {"forwarded": 0, "hello": 0, "no_route": 0, "ttl_expired": 0,
                         "malformed": 0, "same_port": 0, "send_error": 0}

    def handle(self, inport: str, data: bytes) -> tuple[str, bytes] | None:
        """One received packet -> (out port, packet) to send, or None (counted)."""
        try:
            p = Packet.unpack(data)
        except VnpError:
            self.counters["malformed"] += 1
            return None
        if p.type == HELLO:
            self.fib.learn(p.src, inport)
            self.counters["hello"] += 1
            return None
        if p.dst == BROADCAST:
            return None
        out = self.fib.lookup(p.dst)
        if out is None:
            self.counters["no_route"] += 1
            return None
        if out == inport:
            self.counters["same_port"] += 1
            return None
        if p.ttl <= 1:
            self.counters["ttl_expired"] += 1
            return None
        p.ttl -= 1
        self.counters["forwarded"] += 1
        return out, p.pack()

    def run(self, stop=lambda: False):
        sel = selectors.DefaultSelector()
        for name, ep in self.ports.items():
            sel.register(ep, selectors.EVENT_READ, name)
        while not stop():
            for key, _ in sel.select(0.5):
                data = key.fileobj.recv()
                if not data:
                    return
                verdict = self.handle(key.data, data)
                if verdict is not None:
                    try:
                        self.ports[verdict[0]].send(verdict[1])
                    except OSError:
                        self.counters["send_error"] += 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vnp-router", description="VNP virtual router")
    p.add_argument("-s", "--socket", default=lib.DEFAULT_SOCKET, help="daemon control socket")
    p.add_argument("--port", action="append", required=True, help="VNET:INTERFACE (repeat)")
    p.add_argument("--route", action="append", default=[], help="NET=PORT static route")
    args = p.parse_args(argv)
    ports = {}
    for spec in args.port:
        vnet, _, iface = spec.partition(":")
        ports[iface] = lib.open_endpoint(vnet, iface, args.socket)
    router = Router(ports)
    for r in args.route:
        net, _, port = r.partition("=")
        router.fib.nets[int(net)] = port
    done = []
    report = lambda *_: print(json.dumps(router.counters), flush=True)  # noqa: E731
    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGTERM, lambda *_: done.append(1))
    print(f"vnp-router: ports {', '.join(f'{n} ({e.vnet}, mtu {e.mtu})' for n, e in ports.items())}",
          flush=True)
    try:
        router.run(lambda: bool(done))
    except KeyboardInterrupt:
        pass
    report()
    print("hosts: " + ", ".join(f"{addr_str(a)}@{p}" for a, (p, _) in router.fib.hosts.items()),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
