"""Probe frames with an 802.1Q tag of a chosen PCP, sent and received on raw sockets, for the
calibration test of lab switch ports (``test_switch_ports.py``).  Run inside a namespace::

    python3 pcp_probe.py send IFNAME DST_MAC PCP PPS SECONDS [SIZE]   # PCP -1: untagged
    python3 pcp_probe.py recv IFNAME SECONDS

A probe frame: Ethernet, an 802.1Q tag (VLAN 100, the PCP), EtherType 0x88b5 (local
experimental), then the flow (its PCP + 1, 0 untagged), a sequence number and the sender's
CLOCK_REALTIME in ns (one clock for every namespace of the machine), padded to SIZE bytes.
``send`` sends them at PPS on average for SECONDS, at random (exponential) gaps -- a
periodic sender could lock onto the phase of a flood's bursts and always find the queue
full, or never -- and prints ``{"sent": N}``.  ``recv`` prints ``ready`` once its socket is
bound, then counts the probes it receives for SECONDS and prints as JSON, per flow, the frames
received and their one-way delays in ms (median, 90th percentile, max), up to the kernel's
receive time (SO_TIMESTAMPNS: a receiver that falls behind adds nothing).  The receiver's socket is bound to EtherType 0x88b5, so other traffic (a flood) is not
copied to it.
"""
import json
import random
import socket
import struct
import sys
import time

ETHERTYPE = 0x88B5
VLAN = 100
PROBE = struct.Struct("!BIQ")           # flow, sequence, send time (ns)
SO_TIMESTAMPNS = 35                     # the kernel's receive time of each frame


def send(ifname, dst_mac, pcp, pps, seconds, size=1000):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    src = s.getsockname()[4]
    dst = bytes.fromhex(dst_mac.replace(":", ""))
    head = dst + src + (struct.pack("!HH", 0x8100, (pcp << 13) | VLAN) if pcp >= 0 else b"")
    head += struct.pack("!H", ETHERTYPE)
    pad = bytes(max(0, size - len(head) - PROBE.size))
    flow = pcp + 1
    rand = random.Random(pcp)
    start = due = time.monotonic()
    n = 0
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        if due > now:
            time.sleep(min(due - now, 0.002))
            continue
        try:
            s.send(head + PROBE.pack(flow, n, time.time_ns()) + pad)
        except (BlockingIOError, OSError):
            pass                        # a full queue at the sender: counted as lost
        n += 1
        due += rand.expovariate(pps)    # Poisson: the probes see the queue as it is on average
    print(json.dumps({"sent": n}), flush=True)


def recv(ifname, seconds):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
    s.bind((ifname, ETHERTYPE))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.settimeout(0.2)
    print("ready", flush=True)
    delays: dict[int, list[float]] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            frame, anc, _flags, _addr = s.recvmsg(2048, 64)
        except socket.timeout:
            continue
        now = next((int.from_bytes(d[:8], "little") * 10**9 + int.from_bytes(d[8:16], "little")
                    for level, kind, d in anc
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), time.time_ns())
        off = 14                        # the kernel took the tag off (veth: into metadata)
        if struct.unpack_from("!H", frame, 12)[0] == 0x8100:
            off = 18
        flow, _seq, sent = PROBE.unpack_from(frame, off)
        delays.setdefault(flow, []).append((now - sent) / 1e6)
    out = {}
    for flow, d in delays.items():
        d.sort()
        out[str(flow - 1)] = {"received": len(d), "median_ms": d[len(d) // 2],
                              "p90_ms": d[int(len(d) * 0.9)], "max_ms": d[-1]}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]),
             float(sys.argv[6]), *(int(a) for a in sys.argv[7:8]))
    else:
        recv(sys.argv[2], float(sys.argv[3]))
