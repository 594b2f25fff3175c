"""The yardstick of the substrate -> TAP row: a bare Python recv + os.write loop into a TAP
(``python3 benchmarks/bare_tap.py IN_IF TAP_NAME``, run by ``run.py`` with PYTHONPATH at the
tree)."""
import os, socket, sys
from vnet_router.datapath import packet_io
from vnet_router.ops.tap import Tap
s = packet_io.open_rx(sys.argv[1], 0x88B5)
s.setblocking(True)
tap = Tap()
os.set_blocking(tap.fd, True)
os.system(f"ip link set dev {tap.tmpname} name {sys.argv[2]}")
os.system(f"ip link set dev {sys.argv[2]} up")
buf = bytearray(65600)
view = memoryview(buf)
fd = tap.fd
recv_into = s.recv_into
write = os.write
while True:
    n = recv_into(buf)
    try:
        write(fd, view[18:n])
    except OSError:
        pass
