"""AF_PACKET sockets for substrate interfaces, with the kernel details of DESIGN section 2.

Receive sockets bind ETH_P_ALL (only those see the VLAN tag), carry a classic BPF filter that
passes only substrate frames (EtherType 0x88B5, tagged or not) that this host did not send, so
legacy traffic never reaches user space, and report the stripped tag through PACKET_AUXDATA.
Send sockets use protocol 0 so they never receive copies of their own frames.
"""
from __future__ import annotations

import ctypes
import fcntl
import mmap
import socket
import struct

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
TP_STATUS_VLAN_VALID = 1 << 4
PACKET_OUTGOING = 4
PACKET_IGNORE_OUTGOING = 23

_AUX = struct.Struct("=IIIHHHH")     # tpacket_auxdata
AUX_SPACE = socket.CMSG_SPACE(_AUX.size)

# classic BPF opcodes
_LD_H_ABS, _LD_W_ABS, _JEQ_K, _RET_K = 0x28, 0x20, 0x15, 0x06
_SKF_AD_OFF, _SKF_AD_PKTTYPE = -0x1000, 4


def _insn(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def substrate_filter(ethertype: int) -> list[bytes]:
    """Accept EtherType ``ethertype`` at offset 12 (tag stripped by the kernel or absent) or at
    16 behind an inline 802.1Q/802.1ad tag; reject frames this host sent (PACKET_OUTGOING).
    Accepted frames are taken whole."""
    return [
        _insn(_LD_W_ABS, 0, 0, _SKF_AD_OFF + _SKF_AD_PKTTYPE),   # 0: A = pkttype
        _insn(_JEQ_K, 6, 0, PACKET_OUTGOING),                     # 1: outgoing -> reject
        _insn(_LD_H_ABS, 0, 0, 12),                               # 2: A = ethertype
        _insn(_JEQ_K, 5, 0, ethertype),                           # 3: substrate -> accept
        _insn(_JEQ_K, 1, 0, 0x8100),                              # 4: inline tag -> 6
        _insn(_JEQ_K, 0, 2, 0x88A8),                              # 5: inline S-tag -> 6 else reject
        _insn(_LD_H_ABS, 0, 0, 16),                               # 6: A = inner ethertype
        _insn(_JEQ_K, 1, 0, ethertype),                           # 7: substrate -> accept
        _insn(_RET_K, 0, 0, 0),                                   # 8: reject
        _insn(_RET_K, 0, 0, 0x40000),                             # 9: accept, whole
    ]


def attach_filter(sock: socket.socket, insns: list[bytes]) -> None:
    prog = b"".join(insns)
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HL", len(insns), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def ignore_outgoing(sock: socket.socket) -> None:
    """Ask the kernel not to hand this socket the frames this host sends (Linux >= 4.20).

    The filter already rejects them, but only after the kernel cloned each sent frame for the
    socket; with the option set, a send on a substrate interface skips the socket entirely.
    Older kernels refuse the option and the filter does the job."""
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass


def _bufsize(sock, opt_force, opt, size):
    try:
        sock.setsockopt(socket.SOL_SOCKET, opt_force, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, opt, size)


def open_rx(ifname: str, ethertype: int, rcvbuf: int = 4 << 20) -> socket.socket:
    """Non-blocking receive socket for substrate frames on ``ifname``."""
    # Protocol 0 first: no frame can be queued before the filter is in place.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        attach_filter(sock, substrate_filter(ethertype))
        ignore_outgoing(sock)
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        _bufsize(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, rcvbuf)
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_tx(ifname: str, sndbuf: int = 4 << 20) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        _bufsize(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, sndbuf)
        sock.bind((ifname, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def socket_drops(sock: socket.socket) -> int:
    """Frames the kernel dropped on ``sock`` (receive buffer or ring full) since the last call:
    PACKET_STATISTICS, which the read resets."""
    return _STATS.unpack(sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size))[1]


def aux_vlan_tci(ancdata) -> int | None:
    """The stripped VLAN TCI from recvmsg ancillary data, or None if the frame had no tag."""
    for level, ctype, data in ancdata:
        if level == SOL_PACKET and ctype == PACKET_AUXDATA and len(data) >= _AUX.size:
            status, _len, _snap, _mac, _net, tci, _tpid = _AUX.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                return tci
            return None
    return None


# -- TPACKET_V2 receive ring (the compiled engine) ---------------------------------------------

PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
TPACKET_V2 = 1
SIOCGIFMTU = 0x8921
_REQ = struct.Struct("=IIII")       # tpacket_req: block_size, block_nr, frame_size, frame_nr
_STATS = struct.Struct("=II")       # tpacket_stats: tp_packets, tp_drops
FRAME_DATA = 66                     # tp_mac of a V2 frame: ALIGN16(52 + 16) - 14


def frame_size_for(mtu: int) -> int:
    """Ring slot for frames of interface MTU ``mtu`` (+ Ethernet header, an inline tag and the
    V2 frame header): the smallest power of two >= 2048 that holds them whole."""
    need, size = FRAME_DATA + 14 + 4 + mtu, 2048
    while size < need:
        size <<= 1
    return size


def interface_mtu(sock: socket.socket, ifname: str) -> int:
    req = fcntl.ioctl(sock.fileno(), SIOCGIFMTU, struct.pack("16si", ifname.encode(), 0))
    return struct.unpack_from("16si", req)[1]


class RxRing:
    """A TPACKET_V2 receive ring on ``ifname``.

    The socket binds ETH_P_ALL with the substrate filter (so it sees the VLAN tag, in the frame
    header) and maps ``frame_nr`` fixed slots sized from the interface MTU.  The kernel
    publishes each frame on its own: it copies the frame, then (after a write barrier) sets the
    slot's ``tp_status`` to TP_STATUS_USER and wakes the reader.  So a reader that sees
    TP_STATUS_USER sees the whole frame and its header, frame by frame, with no wait for a
    block to retire.  Frames the kernel found no free slot for are counted by the socket:
    ``dropped()`` reads (and resets) PACKET_STATISTICS.
    """

    def __init__(self, ifname: str, ethertype: int, frames: int = 4096,
                 classified: bool = False):
        self.ifname = ifname
        self.sock = self.map = None
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self.sock = sock
            if not classified:
                attach_filter(sock, substrate_filter(ethertype))
            ignore_outgoing(sock)
            self.frame_size = frame_size_for(interface_mtu(sock, ifname))
            self.block_size = max(1 << 16, self.frame_size)
            per_block = self.block_size // self.frame_size
            self.block_nr = max(1, frames // per_block)
            self.frame_nr = per_block * self.block_nr
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, _REQ.pack(
                self.block_size, self.block_nr, self.frame_size, self.frame_nr))
            self.map = mmap.mmap(sock.fileno(), self.block_size * self.block_nr,
                                 mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            sock.bind((ifname, ethertype if classified else ETH_P_ALL))
            sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def dropped(self) -> int:
        """Frames the kernel dropped for want of a free slot since the last call."""
        return 0 if self.sock is None else socket_drops(self.sock)

    def close(self):
        if self.sock is not None:
            self.sock.close()
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:        # a view is still exported; freed with it
                pass
        self.sock = self.map = None


PACKET_FANOUT = 18
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_EBPF = 7
PACKET_FANOUT_FLAG_UNIQUEID = 0x2000


def fanout_rings(ifname: str, ethertype: int, selector_fd: int, frames: list[int]) \
        -> list[RxRing]:
    """Rings on ``ifname`` (``frames[i]`` slots of 2 KiB for ring i: fewer, larger ones for a
    larger MTU, so a ring's memory does not grow with it) in one PACKET_FANOUT group whose eBPF program
    ``selector_fd`` picks the ring of each frame (``bpf/substrate.bpf.c``: the queue the
    classifier wrote into the mark; the kernel takes it modulo ``count``).  They are bound to
    the substrate EtherType, so they are served after TC ingress, where the classifier ran,
    and keep no filter of their own.  A full ring drops its own frames only (its socket counts
    them).  The group id is the kernel's (PACKET_FANOUT_FLAG_UNIQUEID): no other process's
    group can be joined by mistake."""
    rings: list[RxRing] = []
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as probe:
        scale = frame_size_for(interface_mtu(probe, ifname)) // 2048
    try:
        for i, n in enumerate(frames):
            r = RxRing(ifname, ethertype, max(64, n // scale), classified=True)
            rings.append(r)
            if i == 0:
                r.sock.setsockopt(SOL_PACKET, PACKET_FANOUT,
                                  (PACKET_FANOUT_EBPF | PACKET_FANOUT_FLAG_UNIQUEID) << 16)
                group = r.sock.getsockopt(SOL_PACKET, PACKET_FANOUT) & 0xFFFF
                r.sock.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA,
                                  struct.pack("i", selector_fd))
            else:
                r.sock.setsockopt(SOL_PACKET, PACKET_FANOUT, group | PACKET_FANOUT_EBPF << 16)
    except BaseException:
        for r in rings:
            r.close()
        raise
    return rings
