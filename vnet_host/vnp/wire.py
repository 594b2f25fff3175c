"""VNP header codec (one header, symmetric pack/unpack).

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-------+-------+---------------+-------------------------------+
    |  VER  | TYPE  |      TTL      |      LENGTH (payload bytes)   |
    +-------+-------+---------------+-------------------------------+
    |                 DESTINATION (NET:16 | HOST:16)                |
    +---------------------------------------------------------------+
    |                   SOURCE (NET:16 | HOST:16)                   |
    +---------------------------------------------------------------+
    |                    payload (LENGTH bytes) ...

VER = 1.  TYPE: HELLO (a node announces SOURCE on its link; DESTINATION = BROADCAST),
DATA.  Addresses: ``"NET.HOST"``; a network is ``"NET.0/16"``-like ``NET``.

VNP over Ethernet (``frame``/``unframe``): on a vNet whose virtual router runs in the kernel
(``vnet_router/bpf/vnp_router.bpf.c``, attached to TAP logical interfaces) a VNP packet travels
in an Ethernet frame of EtherType 0x88B6 (IEEE 802 local experimental 2)::

    dst MAC | src MAC | 0x88B6 | VNP header | payload

A node's MAC is ``mac_of(address)`` (02:56 + the address); it sends to the broadcast MAC (VNP
has no address resolution), the router writes the learned MAC of the next hop.
"""
from __future__ import annotations

import struct

VERSION = 1
HELLO, DATA = 1, 2
TYPES = {HELLO: "hello", DATA: "data"}
BROADCAST = 0xFFFFFFFF
DEFAULT_TTL = 16

_HDR = struct.Struct("!BBHII")
HEADER_LEN = _HDR.size

ETHERTYPE = 0x88B6
ETH_BROADCAST = b"\xff" * 6
_ETH = struct.Struct("!6s6sH")


class VnpError(ValueError):
    def __init__(self, msg: str, offset: int = 0, length: int = 0):
        super().__init__(f"{msg} (offset {offset}, length {length})")
        self.offset, self.length = offset, length


def addr(text: str) -> int:
    """'NET.HOST' -> 32-bit address."""
    try:
        net, host = text.split(".")
        n, h = int(net), int(host)
    except ValueError:
        raise ValueError(f"bad VNP address {text!r} (want NET.HOST, e.g. 1.7)") from None
    if not (0 <= n <= 0xFFFF and 0 <= h <= 0xFFFF):
        raise ValueError(f"bad VNP address {text!r} (NET and HOST are 0..65535)")
    return n << 16 | h


def mac_of(address: int) -> bytes:
    """The Ethernet address of VNP node ``address`` (locally administered)."""
    return b"\x02\x56" + address.to_bytes(4, "big")


def frame(packet: bytes, src_mac: bytes, dst_mac: bytes = ETH_BROADCAST) -> bytes:
    """VNP over Ethernet: ``packet`` in an Ethernet frame of EtherType 0x88B6."""
    return _ETH.pack(dst_mac, src_mac, ETHERTYPE) + packet


def unframe(data) -> tuple[bytes, bytes, memoryview]:
    """(dst MAC, src MAC, VNP packet) of a VNP-over-Ethernet frame; VnpError if it is not."""
    view = memoryview(data)
    if len(view) < _ETH.size:
        raise VnpError("short Ethernet frame", 0, len(view))
    dst, src, etype = _ETH.unpack_from(view)
    if etype != ETHERTYPE:
        raise VnpError(f"EtherType {etype:#06x} is not VNP", 12, len(view))
    return dst, src, view[_ETH.size:]


def addr_str(a: int) -> str:
    return "*" if a == BROADCAST else f"{a >> 16}.{a & 0xFFFF}"


class Packet:
    __slots__ = ("type", "ttl", "dst", "src", "payload")

    def __init__(self, type: int, dst: int, src: int, payload: bytes = b"",
                 ttl: int = DEFAULT_TTL):
        self.type, self.ttl, self.dst, self.src, self.payload = type, ttl, dst, src, payload

    def pack(self) -> bytes:
        return _HDR.pack(VERSION << 4 | self.type, self.ttl, len(self.payload), self.dst,
                         self.src) + self.payload

    @classmethod
    def unpack(cls, data, offset: int = 0) -> "Packet":
        view = memoryview(data)
        n = len(view) - offset
        if n < HEADER_LEN:
            raise VnpError("short VNP packet", offset, n)
        vt, ttl, length, dst, src = _HDR.unpack_from(view, offset)
        if vt >> 4 != VERSION:
            raise VnpError(f"unknown VNP version {vt >> 4}", offset, n)
        if vt & 0xF not in TYPES:
            raise VnpError(f"unknown VNP type {vt & 0xF}", offset, n)
        if HEADER_LEN + length > n:
            raise VnpError(f"VNP length {length} beyond the {n - HEADER_LEN} bytes that came",
                           offset, n)
        start = offset + HEADER_LEN
        return cls(vt & 0xF, dst, src, bytes(view[start:start + length]), ttl)

    def __eq__(self, other):
        return isinstance(other, Packet) and all(getattr(self, k) == getattr(other, k)
                                                 for k in self.__slots__)

    def __repr__(self):
        return (f"<VNP {TYPES.get(self.type, self.type)} {addr_str(self.src)} -> "
                f"{addr_str(self.dst)} ttl {self.ttl} {len(self.payload)} bytes>")
