"""Codecs of the substrate control messages (version 1).

Every control message is the payload of a substrate frame on VLI 0 (so the substrate header's
LEN already delimits it; trailing bytes are an error).  It starts with a fixed header::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  version (1)  |     type      |        flags (0)              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        sender node id                         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          sender incarnation (changes when the sender restarts)|
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |   sequence number (requests: new; replies: the request's)     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  body (layout per type, below) ...                            |

Rates are unsigned 64-bit bit/s; ``RATE_UNLIMITED`` (all ones) means no maximum.  Names are a
length byte plus at most 32 ASCII bytes of ``[A-Za-z0-9_-]``.  Bodies (big endian)::

    HELLO              role:8 capacity:64 name
    VLINK_SETUP        vnet:16 reverse_vli:16 min:64 max:64 name
    VLINK_SETUP_REPLY  status:8 vli:16
    VLINK_TEARDOWN     vli:16 reverse_vli:16
    ACK                status:8
    JOIN               vnet:16 name
    LEAVE              vnet:16
    RATE_REQUEST       vli:16 rate:64
    RATE_REPLY         status:8 vli:16 rate:64
    RATE_NOTIFY        vli:16 rate:64
    AGG_REQUEST        vnet:16 current:64 want:64 minimum:64 capacity:64
    AGG_ASSIGN         status:8 vnet:16 rate:64
    PATH_MTU           count:8 then count x (vli:16 mtu:16)   (no reply: soft state, resent)

``decode`` raises :class:`ControlDecodeError` (a ``wire.DecodeError``, reason ``control``)
for every malformed input and nothing else.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, fields
from enum import IntEnum

from vnet_router.wire import substrate as wire
from vnet_router.wire.auth import AUTH, SIGNED

VERSION = 1
RATE_UNLIMITED = (1 << 64) - 1
MAX_NAME = 32
_NAME_OK = re.compile(rb"^[A-Za-z0-9_\-]*$")

HEADER = struct.Struct("!BBHIII")          # version, type, flags, node, incarnation, seq
HEADER_LEN = HEADER.size


class ControlDecodeError(wire.DecodeError):
    def __init__(self, message: str, offset: int = 0, length: int = 0):
        super().__init__("control", message, offset, length)


class MsgType(IntEnum):
    HELLO = 1
    VLINK_SETUP = 2
    VLINK_SETUP_REPLY = 3
    VLINK_TEARDOWN = 4
    ACK = 5
    JOIN = 6
    LEAVE = 7
    RATE_REQUEST = 8
    RATE_REPLY = 9
    RATE_NOTIFY = 10
    AGG_REQUEST = 11
    AGG_ASSIGN = 12
    PATH_MTU = 13


class Status(IntEnum):
    OK = 0
    DENIED = 1              # increase refused (no room)
    PARTIAL = 2             # granted less than asked
    UNKNOWN_VLINK = 3
    ABOVE_MAX = 4
    BAD_SEQ = 5
    NO_VLI = 6              # no free VLI / no such logical interface name allowed
    UNKNOWN_VNET = 7
    BAD_REQUEST = 8


class Role(IntEnum):
    NODE = 0
    VBM = 1


# field kinds: struct code, or "name" for the length-prefixed name
_KIND = {"u8": "B", "u16": "H", "u64": "Q", "status": "B", "role": "B"}
# "mtus": count:8, then count x (vli:16, mtu:16): a tuple of (vli, mtu) pairs
_MTU_ENTRY = struct.Struct("!HH")
MAX_MTU_ENTRIES = 255


@dataclass(frozen=True)
class Message:
    """Base: header fields every message carries.  Subclasses add their body fields."""

    node: int = 0
    incarnation: int = 0
    seq: int = 0

    TYPE = None                    # MsgType, set by subclasses
    BODY = ()                      # ((field name, kind), ...)
    IS_REQUEST = False
    IS_REPLY = False

    def pack(self) -> bytes:
        out = [HEADER.pack(VERSION, self.TYPE, 0, self.node, self.incarnation, self.seq)]
        for name, kind in self.BODY:
            value = getattr(self, name)
            if kind == "name":
                b = value.encode("ascii")
                if len(b) > MAX_NAME or not _NAME_OK.match(b):
                    raise ValueError(f"bad name {value!r}")
                out.append(bytes([len(b)]) + b)
            elif kind == "mtus":
                if len(value) > MAX_MTU_ENTRIES:
                    raise ValueError(f"{len(value)} entries (at most {MAX_MTU_ENTRIES})")
                out.append(bytes([len(value)]) + b"".join(_MTU_ENTRY.pack(v, u)
                                                          for v, u in value))
            else:
                out.append(struct.pack("!" + _KIND[kind], int(value)))
        return b"".join(out)

    def header(self) -> tuple:
        return self.node, self.incarnation, self.seq


def _msg(type_, body, request=False, reply=False):
    def wrap(cls):
        cls.TYPE, cls.BODY, cls.IS_REQUEST, cls.IS_REPLY = type_, body, request, reply
        return cls
    return wrap


@_msg(MsgType.HELLO, (("role", "role"), ("capacity", "u64"), ("name", "name")))
@dataclass(frozen=True)
class Hello(Message):
    role: Role = Role.NODE
    capacity: int = 0              # bit/s of the sender's substrate link (0 = unknown)
    name: str = ""


@_msg(MsgType.VLINK_SETUP, (("vnet", "u16"), ("reverse_vli", "u16"), ("min", "u64"),
                            ("max", "u64"), ("name", "name")), request=True)
@dataclass(frozen=True)
class VlinkSetup(Message):
    """Upstream asks downstream to create a virtual link it will send on; the downstream node
    allocates the VLI of its input.  ``reverse_vli`` != 0: the upstream already allocated its
    own input VLI for the opposite direction (a logical interface = a pair)."""

    vnet: int = 0
    reverse_vli: int = 0
    min: int = 0
    max: int = RATE_UNLIMITED
    name: str = ""


@_msg(MsgType.VLINK_SETUP_REPLY, (("status", "status"), ("vli", "u16")), reply=True)
@dataclass(frozen=True)
class VlinkSetupReply(Message):
    status: Status = Status.OK
    vli: int = 0


@_msg(MsgType.VLINK_TEARDOWN, (("vli", "u16"), ("reverse_vli", "u16")), request=True)
@dataclass(frozen=True)
class VlinkTeardown(Message):
    vli: int = 0
    reverse_vli: int = 0


@_msg(MsgType.ACK, (("status", "status"),), reply=True)
@dataclass(frozen=True)
class Ack(Message):
    status: Status = Status.OK


@_msg(MsgType.JOIN, (("vnet", "u16"), ("name", "name")), request=True)
@dataclass(frozen=True)
class Join(Message):
    vnet: int = 0
    name: str = ""


@_msg(MsgType.LEAVE, (("vnet", "u16"),), request=True)
@dataclass(frozen=True)
class Leave(Message):
    vnet: int = 0


@_msg(MsgType.RATE_REQUEST, (("vli", "u16"), ("rate", "u64")), request=True)
@dataclass(frozen=True)
class RateRequest(Message):
    vli: int = 0
    rate: int = 0


@_msg(MsgType.RATE_REPLY, (("status", "status"), ("vli", "u16"), ("rate", "u64")), reply=True)
@dataclass(frozen=True)
class RateReply(Message):
    status: Status = Status.OK
    vli: int = 0
    rate: int = 0


@_msg(MsgType.RATE_NOTIFY, (("vli", "u16"), ("rate", "u64")), request=True)
@dataclass(frozen=True)
class RateNotify(Message):
    """Downstream tells upstream a virtual link's rate changed (aggregate change)."""

    vli: int = 0
    rate: int = 0


@_msg(MsgType.AGG_REQUEST, (("vnet", "u16"), ("current", "u64"), ("want", "u64"),
                            ("minimum", "u64"), ("capacity", "u64")), request=True)
@dataclass(frozen=True)
class AggRequest(Message):
    """TM -> VBM: my aggregate for ``vnet`` is ``current``; I want ``want`` (a report when
    equal; a give-back when lower); ``minimum`` = Σ minima of my input virtual links."""

    vnet: int = 0
    current: int = 0
    want: int = 0
    minimum: int = 0
    capacity: int = 0


@_msg(MsgType.AGG_ASSIGN, (("status", "status"), ("vnet", "u16"), ("rate", "u64")), reply=True)
@dataclass(frozen=True)
class AggAssign(Message):
    status: Status = Status.OK
    vnet: int = 0
    rate: int = 0


@_msg(MsgType.PATH_MTU, (("entries", "mtus"),))
@dataclass(frozen=True)
class PathMtu(Message):
    """Downstream -> upstream, for input virtual links of the substrate link it is sent on:
    ``entries`` = ((vli, mtu), ...), ``mtu`` the largest payload (substrate payload: the inner
    frame of a TAP) the virtual link carries from here to where it is delivered -- for a
    switched link the smaller of its output substrate link's and what the next node reported.
    Sent every ``[node].path_mtu_interval`` and at once when a value changes; no reply (an
    entry not heard again for 3.5 intervals expires).  The upstream gives it to the logical
    interface sending on that VLI (its MTU) or passes it on (pass-through)."""

    entries: tuple = ()


MESSAGES = {cls.TYPE: cls for cls in (Hello, VlinkSetup, VlinkSetupReply, VlinkTeardown, Ack,
                                      Join, Leave, RateRequest, RateReply, RateNotify,
                                      AggRequest, AggAssign, PathMtu)}
MAX_TYPE = max(MESSAGES)
KNOWN_FLAGS = AUTH | SIGNED     # the only flags a message has on the wire (``auth``)


def plausible(data) -> bool:
    """Whether ``data`` (a VLI 0 payload) starts like a control message: at least a header,
    version 1, a known type, no flag but AUTH and SIGNED.  What fails here every receiver would
    refuse (``decode`` after ``auth.unseal``), so the datapath drops it (the ``control`` drop)
    before it costs the control plane anything: in the kernel's classifier
    (``bpf/substrate.bpf.c``), the compiled engine and ``Datapath.offer_control`` alike.  It
    reads four bytes and no more, so the kernel can do the same."""
    return (len(data) >= HEADER_LEN and data[0] == VERSION and 1 <= data[1] <= MAX_TYPE
            and not (data[2] << 8 | data[3]) & ~KNOWN_FLAGS)


def decode(data: bytes | memoryview, off: int = 0) -> Message:
    """Decode one control message occupying ``data[off:]`` exactly."""
    view = memoryview(data)
    n = len(view)
    if n - off < HEADER_LEN:
        raise ControlDecodeError("control message shorter than its header", off, n)
    version, mtype, flags, node, inc, seq = HEADER.unpack_from(view, off)
    if version != VERSION:
        raise ControlDecodeError(f"control protocol version {version} (want {VERSION})", off, n)
    cls = MESSAGES.get(mtype)
    if cls is None:
        raise ControlDecodeError(f"unknown control message type {mtype}", off + 1, n)
    if flags:
        raise ControlDecodeError(f"flags 0x{flags:04x} set", off + 2, n)
    pos = off + HEADER_LEN
    values = {}
    for name, kind in cls.BODY:
        if kind == "name":
            if pos >= n:
                raise ControlDecodeError(f"{cls.__name__}.{name} missing", pos, n)
            ln = view[pos]
            if ln > MAX_NAME or pos + 1 + ln > n:
                raise ControlDecodeError(f"{cls.__name__}.{name} length {ln} bad", pos, n)
            raw = bytes(view[pos + 1:pos + 1 + ln])
            if not _NAME_OK.match(raw):
                raise ControlDecodeError(f"{cls.__name__}.{name} not a name", pos, n)
            values[name] = raw.decode("ascii")
            pos += 1 + ln
            continue
        if kind == "mtus":
            count = view[pos] if pos < n else -1
            if count < 0 or pos + 1 + _MTU_ENTRY.size * count > n:
                raise ControlDecodeError(f"{cls.__name__}.{name} truncated", pos, n)
            values[name] = tuple(_MTU_ENTRY.unpack_from(view, pos + 1 + _MTU_ENTRY.size * k)
                                 for k in range(count))
            pos += 1 + _MTU_ENTRY.size * count
            continue
        code = _KIND[kind]
        size = struct.calcsize("!" + code)
        if pos + size > n:
            raise ControlDecodeError(f"{cls.__name__}.{name} truncated", pos, n)
        (v,) = struct.unpack_from("!" + code, view, pos)
        pos += size
        if kind == "status":
            try:
                v = Status(v)
            except ValueError:
                raise ControlDecodeError(f"unknown status {v}", pos - size, n) from None
        elif kind == "role":
            try:
                v = Role(v)
            except ValueError:
                raise ControlDecodeError(f"unknown role {v}", pos - size, n) from None
        values[name] = v
    if pos != n:
        raise ControlDecodeError(f"{n - pos} trailing bytes after {cls.__name__}", pos, n)
    return cls(node=node, incarnation=inc, seq=seq, **values)


def body_fields(cls) -> list[str]:
    return [f.name for f in fields(cls) if f.name not in ("node", "incarnation", "seq")]
