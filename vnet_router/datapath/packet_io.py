"""AF_PACKET sockets for substrate interfaces, with the kernel details of DESIGN section 2.

Receive sockets bind ETH_P_ALL (only those see the VLAN tag), carry a classic BPF filter that
passes only substrate frames (EtherType 0x88B5, tagged or not) that this host did not send, so
legacy traffic never reaches user space, and report the stripped tag through PACKET_AUXDATA.
Send sockets use protocol 0 so they never receive copies of their own frames.
"""
from __future__ import annotations

import ctypes
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


def substrate_filter(ethertype: int, snaplen: int = 0x40000) -> list[bytes]:
    """Accept EtherType ``ethertype`` at offset 12 (tag stripped by the kernel or absent) or at
    16 behind an inline 802.1Q/802.1ad tag; reject frames this host sent (PACKET_OUTGOING).
    Accepted frames are cut to ``snaplen`` bytes (the whole frame by default)."""
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
        _insn(_RET_K, 0, 0, snaplen),                             # 9: accept
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


def aux_vlan_tci(ancdata) -> int | None:
    """The stripped VLAN TCI from recvmsg ancillary data, or None if the frame had no tag."""
    for level, ctype, data in ancdata:
        if level == SOL_PACKET and ctype == PACKET_AUXDATA and len(data) >= _AUX.size:
            status, _len, _snap, _mac, _net, tci, _tpid = _AUX.unpack_from(data)
            if status & TP_STATUS_VLAN_VALID:
                return tci
            return None
    return None


# -- TPACKET_V3 receive ring (the fast datapath) ----------------------------------------------

PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V3 = 2
_REQ3 = struct.Struct("=IIIIIII")   # tpacket_req3


class RxRing:
    """A TPACKET_V3 receive ring on ``ifname`` plus its *doorbell*.

    The ring socket binds ETH_P_ALL with the substrate filter (so it sees the VLAN tag, in the
    ring header) and maps ``block_nr`` blocks of ``block_size`` bytes.  The kernel hands a block
    to user space only when it is full or its retire timer fires (>= 1 ms): on its own a V3 ring
    holds a lone frame back for up to that long.  The doorbell is a second socket with the same
    filter cut to 1 byte and the smallest receive buffer: it makes the fd readable as soon as a
    substrate frame arrives, and the datapath then also reads the frames the kernel has finished
    writing into the block it is still filling (each frame header has TP_STATUS_USER once its
    copy is complete).  It is bound before the ring socket, so the kernel (which delivers to the
    most recently bound socket first) has always written a frame into the ring before it rings.
    """

    def __init__(self, ifname: str, ethertype: int, block_size: int = 1 << 16,
                 block_nr: int = 64, retire_ms: int = 1, frame_size: int = 2048):
        self.ifname, self.block_size, self.block_nr = ifname, block_size, block_nr
        self.sock = self.doorbell = self.map = None
        try:
            bell = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self.doorbell = bell
            self._bell_filter = substrate_filter(ethertype, snaplen=1)
            self.bell_on = True
            self.bell_switches = 0
            attach_filter(bell, self._bell_filter)
            ignore_outgoing(bell)
            bell.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
            bell.bind((ifname, ETH_P_ALL))
            bell.setblocking(False)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self.sock = sock
            attach_filter(sock, substrate_filter(ethertype))
            ignore_outgoing(sock)
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, _REQ3.pack(
                block_size, block_nr, frame_size, block_size // frame_size * block_nr,
                retire_ms, 0, 0))
            self.map = mmap.mmap(sock.fileno(), block_size * block_nr, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
            sock.bind((ifname, ETH_P_ALL))
            sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def set_doorbell(self, on: bool):
        """Ring on every substrate frame (low load) or never (high load: blocks come full)."""
        attach_filter(self.doorbell, self._bell_filter if on else [_insn(_RET_K, 0, 0, 0)])
        self.bell_on = on
        self.bell_switches += 1

    def close(self):
        for s in (self.sock, self.doorbell):
            if s is not None:
                s.close()
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:        # a view is still exported; freed with it
                pass
        self.sock = self.doorbell = self.map = None
