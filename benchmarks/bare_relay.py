"""The latency yardstick: the least a user-space forwarder can do here -- a bare Python relay,
one thread per direction blocked in recv(), the VLI swap as a byte splice, one send() per
frame, no tables, no counters.  argv: in_if out_if, then per direction the VLI in, and the
output header (dst MAC, src MAC, VLAN, VLI out) as hex.

``python3 benchmarks/bare_relay.py IN_IF OUT_IF VLI_IN HDR VLI_IN HDR``, run by ``run.py``."""
import socket, sys, threading
from vnet_router.datapath import packet_io
a, b = sys.argv[1], sys.argv[2]
def relay(src, dst, vli_in, hdr):
    rx = packet_io.open_rx(src, 0x88B5)
    rx.setblocking(True)
    tx = packet_io.open_tx(dst)
    tx.setblocking(True)
    want = int(vli_in).to_bytes(2, "big")
    hdr = bytes.fromhex(hdr)
    buf = bytearray(65600)
    view = memoryview(buf)
    while True:
        n = rx.recv_into(buf)
        if n >= 18 and view[14:16] == want:
            tx.send(hdr + view[16:n])
threading.Thread(target=relay, args=(b, a, sys.argv[5], sys.argv[6]), daemon=True).start()
relay(a, b, sys.argv[3], sys.argv[4])
