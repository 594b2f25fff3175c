"""A legacy host's flood: paced raw Ethernet frames, for labs and the demo.

``python3 -m vnet_router.lab.flood IFACE --rate 200Mbit`` sends full-size IPv4/UDP frames out
of IFACE at RATE (Ethernet bytes, header included, as a switch port's ``port_rate`` counts
them) until it is stopped, then prints what it sent.  The default destination MAC belongs to
no one (``02:ff:00:00:00:01``), so a learning switch floods every frame to all its ports: the
worst a legacy host does to a LAN.  ``--dst MAC`` aims the flood at one station instead.

Frames leave evenly spaced (at most ``BURST`` every ``TICK``), as from a host's NIC, not in
bursts that a port's queue would take apart from the other traffic.  It needs nothing but a
raw packet socket (CAP_NET_RAW), and runs as a lab node's command (``[[node.commands]]``) or
from the demo.  Frames the kernel refuses for lack of buffer
(ENOBUFS) are counted, not retried: the rate is what was offered, not what arrived.
"""
from __future__ import annotations

import argparse
import errno
import signal
import socket
import struct
import sys
import time

from vnet_router.model.units import parse_rate

NOBODY = "02:ff:00:00:00:01"       # locally administered, never a lab MAC: flooded everywhere
FRAME = 1514                       # Ethernet header + 1500 bytes of IPv4
TICK = 0.0001                      # pacing step, seconds
BURST = 8                          # frames at most per step: behind schedule, catch up smoothly


def frame(dst: str, src: str, size: int = FRAME) -> bytes:
    """One IPv4/UDP frame of ``size`` bytes, 192.0.2.1:9 -> 192.0.2.2:9 (TEST-NET-1)."""
    ip_len = size - 14
    udp = struct.pack("!HHHH", 9, 9, ip_len - 20, 0)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, 0, 0x4000, 64, 17, 0,
                      bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]))
    csum = sum(struct.unpack("!10H", hdr))
    csum = (csum & 0xFFFF) + (csum >> 16)
    hdr = hdr[:10] + struct.pack("!H", ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF) + hdr[12:]
    return (bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
            + b"\x08\x00" + hdr + udp + bytes(ip_len - 28))


def _mac(ifname: str) -> str:
    with open(f"/sys/class/net/{ifname}/address") as f:
        return f.read().strip()


def flood(ifname: str, rate: int, *, dst: str = NOBODY, size: int = FRAME,
          seconds: float | None = None, stop=lambda: False) -> dict:
    """Send ``size``-byte frames out of ``ifname`` at ``rate`` bit/s for ``seconds`` (None:
    until ``stop()``).  Returns ``{"sent", "refused", "seconds"}`` (frames, ENOBUFS)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    s.setblocking(False)
    data = frame(dst, _mac(ifname), size)
    per_s = rate / (8 * size)
    sent = refused = 0
    t0 = time.monotonic()
    try:
        while not stop():
            now = time.monotonic()
            if seconds is not None and now - t0 >= seconds:
                break
            due = int((now - t0) * per_s) - sent - refused
            for _ in range(min(due, BURST)):
                try:
                    s.send(data)
                    sent += 1
                except OSError as e:
                    if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                        raise
                    refused += 1
            time.sleep(TICK)
    finally:
        s.close()
    return {"sent": sent, "refused": refused, "seconds": time.monotonic() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python3 -m vnet_router.lab.flood",
        description="Flood IFACE with full-size IPv4/UDP frames at a fixed rate (a legacy "
                    "host misbehaving on a lab LAN).  Stops on SIGINT/SIGTERM or after "
                    "--seconds and prints what it sent.")
    ap.add_argument("iface", help="interface to send on (in the namespace it runs in)")
    ap.add_argument("--rate", default="200Mbit",
                    help="offered rate, Ethernet bytes counted (default 200Mbit)")
    ap.add_argument("--dst", default=NOBODY,
                    help=f"destination MAC (default {NOBODY}: no one's, so switches flood it)")
    ap.add_argument("--size", type=int, default=FRAME, help=f"frame size, 60-{FRAME}")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long")
    a = ap.parse_args(argv)
    try:
        rate = parse_rate(a.rate)
    except ValueError as e:
        ap.error(f"--rate {a.rate!r}: {e}")
    if not 60 <= a.size <= FRAME:
        ap.error(f"--size {a.size}: must be 60-{FRAME}")
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(1))
    try:
        r = flood(a.iface, rate, dst=a.dst, size=a.size, seconds=a.seconds,
                  stop=lambda: bool(stopping))
    except OSError as e:
        print(f"flood: {a.iface}: {e}", file=sys.stderr)
        return 1
    print(f"flood: {a.iface}: sent {r['sent']} frames of {a.size} bytes in {r['seconds']:.1f} s "
          f"({r['sent'] * a.size * 8 / max(r['seconds'], 1e-9) / 1e6:.1f} Mbit/s), "
          f"{r['refused']} refused (ENOBUFS)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
