"""Wire codecs of the substrate header (DESIGN section 2).

Only this module knows byte layouts.  It imports nothing of ours; the tables and the
datapath call ``unpack_eth`` / ``pack_eth`` and the UDP tunnel pair.  Decoders work on a
``memoryview`` plus an offset and raise :class:`DecodeError` (a ``ValueError``) for every
malformed input; the datapath turns that into a counted drop.

Ethernet encapsulation (p2p and multiaccess substrate links)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                  destination MAC (6 bytes)                    |
    +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                               |                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
    |                    source MAC (6 bytes)                       |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  [TPID 0x8100]                | [PCP |D|     VID (12)     ]   |  p2p only
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     EtherType 0x88B5          |           VLI (16)            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           LEN (16)            |   payload (LEN bytes) ... pad |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

UDP tunnel substrate links (UDP payload)::

    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           VLI (16)            |   payload ...                 |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

ETHERTYPE_SUBSTRATE = 0x88B5      # IEEE 802 local experimental 1
TPID_8021Q = 0x8100
TPID_8021AD = 0x88A8
VLI_CONTROL = 0                   # substrate control channel of a substrate link
VLI_RESERVED = 0xFFFF
UDP_PORT_DEFAULT = 4799
BROADCAST_MAC = b"\xff" * 6

ETH_HLEN = 14
VLAN_HLEN = 4
SUBSTRATE_HLEN = 4                # VLI + LEN
UDP_SUBSTRATE_HLEN = 2            # VLI

_ETH = struct.Struct("!6s6sH")            # dst, src, ethertype/TPID
_TAG = struct.Struct("!HH")               # TCI, inner ethertype
_SUB = struct.Struct("!HH")               # VLI, LEN
_VLI = struct.Struct("!H")


class DecodeError(ValueError):
    """Malformed substrate frame.  ``reason`` is the drop-counter name the datapath uses."""

    def __init__(self, reason: str, message: str, offset: int = 0, length: int = 0):
        super().__init__(f"{message} (offset {offset}, length {length})")
        self.reason = reason
        self.offset = offset
        self.length = length


def mac_to_bytes(text: str) -> bytes:
    """'02:00:00:00:00:01' -> 6 bytes; raises ValueError naming the bad text."""
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"bad MAC address {text!r} (want six hex pairs like 02:00:00:00:00:01)")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {text!r} (not hexadecimal)") from None


def mac_to_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass(frozen=True, slots=True)
class VlanTag:
    vid: int
    pcp: int = 0
    dei: int = 0

    @property
    def tci(self) -> int:
        return (self.pcp << 13) | (self.dei << 12) | self.vid

    @classmethod
    def from_tci(cls, tci: int) -> "VlanTag":
        return cls(vid=tci & 0x0FFF, pcp=tci >> 13, dei=(tci >> 12) & 1)


@dataclass(frozen=True, slots=True)
class EthFrame:
    """A decoded substrate Ethernet frame.  ``payload`` excludes the padding."""

    dst: bytes
    src: bytes
    vli: int
    payload: bytes
    vlan: VlanTag | None = None
    ethertype: int = ETHERTYPE_SUBSTRATE

    def pack(self) -> bytes:
        return pack_eth(self.dst, self.src, self.vli, self.payload, self.vlan, self.ethertype)

    @classmethod
    def unpack(cls, data: bytes | memoryview, ethertype: int = ETHERTYPE_SUBSTRATE,
               vlan: VlanTag | None = None) -> "EthFrame":
        """Decode a whole frame.  ``vlan`` is the out-of-band tag (PACKET_AUXDATA), if any."""
        view = memoryview(data)
        dst, src, inline_vlan, off = parse_l2(view, ethertype)
        vli, start, length = parse_substrate(view, off)
        return cls(bytes(dst), bytes(src), vli, bytes(view[start:start + length]),
                   inline_vlan or vlan, ethertype)


def parse_l2(view: memoryview, ethertype: int = ETHERTYPE_SUBSTRATE):
    """Ethernet + optional one 802.1Q tag.  Returns (dst, src, VlanTag|None, offset of VLI)."""
    n = len(view)
    if n < ETH_HLEN:
        raise DecodeError("short", "frame shorter than an Ethernet header", 0, n)
    dst, src, etype = _ETH.unpack_from(view, 0)
    off = ETH_HLEN
    tag = None
    if etype == TPID_8021Q or etype == TPID_8021AD:
        if n < ETH_HLEN + VLAN_HLEN:
            raise DecodeError("short", "frame shorter than its VLAN tag", ETH_HLEN, n)
        tci, etype = _TAG.unpack_from(view, ETH_HLEN)
        tag = VlanTag.from_tci(tci)
        off += VLAN_HLEN
    if etype != ethertype:
        raise DecodeError("not_substrate", f"EtherType 0x{etype:04x} is not substrate", off - 2, n)
    return dst, src, tag, off


def parse_substrate(view: memoryview, off: int):
    """VLI + LEN at ``off``.  Returns (vli, payload offset, payload length)."""
    n = len(view)
    if n < off + SUBSTRATE_HLEN:
        raise DecodeError("short", "frame shorter than the substrate header", off, n)
    vli, length = _SUB.unpack_from(view, off)
    start = off + SUBSTRATE_HLEN
    if start + length > n:
        raise DecodeError("bad_len", f"LEN {length} beyond the {n - start} bytes that arrived",
                          off + 2, n)
    return vli, start, length


def pack_eth_header(dst: bytes, src: bytes, vlan: VlanTag | None = None,
                    ethertype: int = ETHERTYPE_SUBSTRATE) -> bytes:
    """The fixed part of an encapsulation, precomputed per output virtual link."""
    if vlan is None:
        return _ETH.pack(dst, src, ethertype)
    return _ETH.pack(dst, src, TPID_8021Q) + _TAG.pack(vlan.tci, ethertype)


def pack_substrate(vli: int, payload_len: int) -> bytes:
    return _SUB.pack(vli, payload_len)


def pack_eth(dst: bytes, src: bytes, vli: int, payload: bytes, vlan: VlanTag | None = None,
             ethertype: int = ETHERTYPE_SUBSTRATE) -> bytes:
    if len(dst) != 6 or len(src) != 6:
        raise ValueError("MAC addresses must be 6 bytes")
    if not 0 <= vli <= 0xFFFF:
        raise ValueError(f"VLI {vli} out of range 0..65535")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit LEN")
    return pack_eth_header(dst, src, vlan, ethertype) + _SUB.pack(vli, len(payload)) + payload


@dataclass(frozen=True, slots=True)
class UdpFrame:
    """UDP tunnel payload: VLI + payload."""

    vli: int
    payload: bytes

    def pack(self) -> bytes:
        return pack_udp(self.vli, self.payload)

    @classmethod
    def unpack(cls, data: bytes | memoryview) -> "UdpFrame":
        view = memoryview(data)
        vli = parse_udp(view)
        return cls(vli, bytes(view[UDP_SUBSTRATE_HLEN:]))


def parse_udp(view: memoryview) -> int:
    if len(view) < UDP_SUBSTRATE_HLEN:
        raise DecodeError("short", "UDP datagram shorter than the VLI", 0, len(view))
    return _VLI.unpack_from(view, 0)[0]


def pack_udp(vli: int, payload: bytes) -> bytes:
    if not 0 <= vli <= 0xFFFF:
        raise ValueError(f"VLI {vli} out of range 0..65535")
    return _VLI.pack(vli) + payload
