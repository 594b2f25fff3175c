"""Authentication of control messages: an HMAC trailer, the AUTH flag, freshness.

A node with a key on a substrate link seals every control message it sends there and accepts
only sealed messages that verify.  A sealed message has flag ``AUTH`` (0x0001) set in its
header and ends with a trailer::

    key id:32 | sent at (ms since the epoch):64 | mac:128

``mac`` is HMAC-SHA256 truncated to 128 bits (as RFC 4868 does for IPsec) over::

    sender MAC (6 bytes; zeros on a udp link) | message with its trailer's key id and time

so a message captured on the LAN cannot be replayed from another station's MAC (the peer of a
multiaccess link is its MAC), and one captured more than ``max_age`` seconds ago is refused as
``stale`` (the dedup and sequence window catch replays inside that time).  Keys have ids so
that two can be accepted while they are rotated (``Keyring``).  The standard library does it.

A shared key proves membership of a link, not a role.  What only the VBM may say (HELLO with
role VBM, AGG_ASSIGN) it also signs with Ed25519 (``cryptography``, the well-kept binding of
OpenSSL): flag ``SIGNED`` (0x0002) and a 64-byte signature after the body, over the message
with that flag set -- inside the HMAC trailer, so a message is signed, then sealed.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

AUTH = 0x0001
SIGNED = 0x0002
SIG_LEN = 64
FLAGS_AT = 2                      # offset of the 16-bit flags in the control header
TRAILER = struct.Struct("!IQ")    # key id, sent at (ms)
MAC_LEN = 16
TRAILER_LEN = TRAILER.size + MAC_LEN
HEADER_LEN = 16
NO_MAC = bytes(6)

# why a message was refused (counted per reason)
REASONS = ("unauthenticated", "unknown_key", "bad_mac", "stale", "truncated",
           "bad_signature", "vbm_unsigned")


class AuthError(ValueError):
    """A control message refused before decoding; ``auth_reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.auth_reason, self.message = reason, message


@dataclass(frozen=True)
class Keyring:
    """Keys of one substrate link: ``send`` signs, every key in ``keys`` (a tuple of
    (key id, secret) pairs, so the keyring is hashable like the rest of a configuration) is
    accepted."""

    send: int
    keys: tuple = ()

    def __post_init__(self):
        if isinstance(self.keys, dict):
            object.__setattr__(self, "keys", tuple(sorted(self.keys.items())))
        if self.get(self.send) is None:
            raise ValueError(f"signing key id {self.send} is not among the keys")

    def get(self, key_id: int) -> bytes | None:
        return next((k for i, k in self.keys if i == key_id), None)

    def __repr__(self):                       # never the secrets (logs, tracebacks)
        return f"Keyring(send={self.send}, ids={[i for i, _ in self.keys]})"


def _mac(key: bytes, src: bytes | None, data) -> bytes:
    return hmac.new(key, (src or NO_MAC) + bytes(data), hashlib.sha256).digest()[:MAC_LEN]


def seal(packed: bytes, ring: Keyring, src: bytes | None, now: float) -> bytes:
    """``packed`` (a control message, flags 0) with the AUTH flag and its trailer."""
    if len(packed) < HEADER_LEN:
        raise ValueError("not a control message")
    flags = struct.unpack_from("!H", packed, FLAGS_AT)[0] | AUTH
    body = (packed[:FLAGS_AT] + struct.pack("!H", flags) + packed[FLAGS_AT + 2:]
            + TRAILER.pack(ring.send, int(now * 1000)))
    return body + _mac(ring.get(ring.send), src, body)


def unseal(data, ring: Keyring | None, src: bytes | None, now: float,
           max_age: float) -> bytes:
    """The message without its trailer and with the AUTH flag cleared, ready for
    ``control.decode``.  Without a keyring (no key on this link) a sealed message is accepted
    unverified and an unsealed one as it is.  Raises :class:`AuthError` (``.auth_reason`` one
    of ``REASONS``)."""
    data = bytes(data)
    sealed = _versioned(data) and struct.unpack_from("!H", data, FLAGS_AT)[0] & AUTH
    if not sealed:
        if ring is not None:
            raise AuthError("unauthenticated", "control message without authentication on a "
                                               "link with a key")
        return data
    if len(data) < HEADER_LEN + TRAILER_LEN:
        raise AuthError("truncated", "authenticated control message shorter than its trailer")
    end = len(data) - TRAILER_LEN
    plain = data[:FLAGS_AT] + struct.pack(
        "!H", struct.unpack_from("!H", data, FLAGS_AT)[0] & ~AUTH) + data[FLAGS_AT + 2:end]
    if ring is None:
        return plain
    key_id, sent_ms = TRAILER.unpack_from(data, end)
    key = ring.get(key_id)
    if key is None:
        raise AuthError("unknown_key", f"key id {key_id} is not configured")
    if not hmac.compare_digest(_mac(key, src, data[:-MAC_LEN]), data[-MAC_LEN:]):
        raise AuthError("bad_mac", "authentication code does not verify")
    # after the HMAC, though cheaper: ``stale`` says an authentic message came late (a
    # replay, a clock astray), never a forgery
    age = now - sent_ms / 1000
    if abs(age) > max_age:
        raise AuthError("stale", f"sent {age:+.1f} s ago (accepted: within {max_age:g} s)")
    return plain


def _versioned(data) -> bool:
    """A control header of the version whose flags this module reads (else the decoder
    refuses the message as malformed)."""
    return len(data) >= HEADER_LEN and data[0] == 1


def _flags(data) -> int:
    return struct.unpack_from("!H", data, FLAGS_AT)[0]


def _with_flags(data: bytes, flags: int) -> bytes:
    return data[:FLAGS_AT] + struct.pack("!H", flags) + data[FLAGS_AT + 2:]


def signing_key(seed: bytes):
    """The Ed25519 private key of a 32-byte seed."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_bytes(private) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return private.public_key().public_bytes(serialization.Encoding.Raw,
                                             serialization.PublicFormat.Raw)


def verify_key(raw: bytes):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    return Ed25519PublicKey.from_public_bytes(raw)


def sign(packed: bytes, private) -> bytes:
    """``packed`` (flags without AUTH) with flag SIGNED and its Ed25519 signature."""
    data = _with_flags(packed, _flags(packed) | SIGNED)
    return data + private.sign(data)


def unsign(data: bytes, public) -> tuple[bytes, bool]:
    """(the message without signature and SIGNED flag, whether it carried a valid one).
    Raises AuthError ``bad_signature`` if it carries one that does not verify with
    ``public``; without ``public`` a signature is stripped unchecked (and not valid)."""
    plain, body, sig = split_signature(data)
    return plain, verify_signature(body, sig, public)


def split_signature(data: bytes) -> tuple[bytes, bytes | None, bytes | None]:
    """(the message without signature and SIGNED flag, what is signed, the signature), the
    last two None if unsigned; nothing verified yet (``verify_signature``: the expensive
    part, so a receiver decodes the message first)."""
    if not _versioned(data) or not _flags(data) & SIGNED:
        return data, None, None
    if len(data) < HEADER_LEN + SIG_LEN:
        raise AuthError("truncated", "signed control message shorter than its signature")
    body, sig = data[:-SIG_LEN], data[-SIG_LEN:]
    return _with_flags(body, _flags(body) & ~SIGNED), body, sig


def verify_signature(body: bytes | None, sig: bytes | None, public) -> bool:
    """Whether ``body`` carries a valid signature ``sig`` (None: unsigned) of ``public``;
    raises AuthError ``bad_signature`` if it does not verify.  Without ``public`` a signature
    is not checked (and not valid)."""
    if sig is None or public is None:
        return False
    from cryptography.exceptions import InvalidSignature
    try:
        public.verify(sig, body)
    except InvalidSignature:
        raise AuthError("bad_signature", "the VBM signature does not verify") from None
    return True
