"""Key files of the control plane's authentication (``key_file`` of a substrate link).

A key file is text, one key per line, ``ID SECRET``: a key id (1..4294967295) and the secret
in hex (at least 16 bytes = 32 hex digits); blank lines and ``#`` comments are ignored.  The
first key signs what the node sends; every key in the file is accepted, so a key is rotated
without downtime: add the new key as the second line on every node (reload), move it first on
each node (reload), then remove the old one.  The file must not be readable or writable by
group or others (``chmod 600``): checked when the configuration is loaded, so ``--check`` and
a reload refuse a file with a loose mode.

A configuration a client sent (``vnetctl reload FILE``: the daemon reads no file on a
client's behalf) comes with the key files it names as that client read them; while it is
validated (:func:`supplied`) a key file is taken from what was sent, never opened.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import stat

from vnet_router.wire.auth import Keyring

MIN_SECRET = 16


class KeyFileError(ValueError):
    pass


_SUPPLIED: contextvars.ContextVar = contextvars.ContextVar("supplied_key_files",
                                                           default=None)


@contextlib.contextmanager
def supplied(files: dict):
    """Within: key files come from ``files`` (path -> ``{"text", "mode"}`` as the client's
    ``stat`` and read gave them); one not there is an error, none is opened."""
    token = _SUPPLIED.set(files)
    try:
        yield
    finally:
        _SUPPLIED.reset(token)


def _read_private(path: str) -> str:
    files = _SUPPLIED.get()
    if files is not None:
        return _sent(files, path)
    try:
        st = os.stat(path)
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise KeyFileError(f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets group or others "
                           f"read it; a key file must be 0600 (chmod 600 {path})")
    return text


def _sent(files: dict, path: str) -> str:
    f = files.get(path)
    if not isinstance(f, dict) or not isinstance(f.get("text"), str) \
            or not isinstance(f.get("mode"), int):
        raise KeyFileError(f"{path}: not sent with the configuration (vnetctl reload FILE "
                           f"reads the key files FILE names and sends them; the daemon opens "
                           f"no file for a client)")
    if not stat.S_ISREG(f["mode"]):
        raise KeyFileError(f"{path}: not a regular file")
    if f["mode"] & 0o077:
        raise KeyFileError(f"{path}: mode {stat.S_IMODE(f['mode']):04o} lets group or others "
                           f"read it; a key file must be 0600 (chmod 600 {path})")
    return f["text"]


def load_seed(path: str) -> bytes:
    """The VBM's Ed25519 signing key: a file holding the 32-byte seed in hex (64 digits, e.g.
    ``openssl rand -hex 32``), mode 0600.  ``vnet-router --check`` prints its public key."""
    words = [w for line in _read_private(path).splitlines()
             for w in line.split("#", 1)[0].split()]
    try:
        seed = bytes.fromhex(words[0]) if len(words) == 1 else b""
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise KeyFileError(f"{path}: want one Ed25519 seed, 64 hex digits")
    return seed


def parse_public(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise KeyFileError(f"want an Ed25519 public key, 64 hex digits (the VBM's "
                           f"`vnet-router --check` prints it), not {text!r}")
    return raw


def load_keyring(path: str) -> Keyring:
    text = _read_private(path)
    keys, first = {}, None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise KeyFileError(f"{path}: line {n}: want `ID SECRET` (a number, then hex)")
        kid = int(parts[0])
        if not 1 <= kid <= 0xFFFFFFFF:
            raise KeyFileError(f"{path}: line {n}: key id {kid} out of range 1..4294967295")
        try:
            secret = bytes.fromhex(parts[1])
        except ValueError:
            raise KeyFileError(f"{path}: line {n}: secret is not hex") from None
        if len(secret) < MIN_SECRET:
            raise KeyFileError(f"{path}: line {n}: secret of {len(secret)} bytes; at least "
                               f"{MIN_SECRET} (e.g. `openssl rand -hex 32`)")
        if kid in keys:
            raise KeyFileError(f"{path}: line {n}: key id {kid} twice")
        keys[kid] = secret
        first = kid if first is None else first
    if first is None:
        raise KeyFileError(f"{path}: no key in the file")
    return Keyring(first, keys)
