"""Key files of the control plane's authentication (``key_file`` of a substrate link).

A key file is text, one key per line, ``ID SECRET``: a key id (1..4294967295) and the secret
in hex (at least 16 bytes = 32 hex digits); blank lines and ``#`` comments are ignored.  The
first key signs what the node sends; every key in the file is accepted, so a key is rotated
without downtime: add the new key as the second line on every node (reload), move it first on
each node (reload), then remove the old one.  The file must not be readable or writable by
group or others (``chmod 600``): checked when the configuration is loaded, so ``--check`` and
a reload refuse a file with a loose mode, and a missing file is named with the command that
makes one.

Writing (``vnet-router keygen``, ``node/keygen.py``; the lab's key, ``lab/lab.py``):
:func:`write_key_file` makes a new file of one fresh key, :func:`add_key` appends a fresh key
(the next id) to an existing one, :func:`write_seed_file` makes a VBM signing key.  A file is
written whole under a temporary name, mode 0600 from its creation, and renamed into place.

A configuration a client sent (``vnetctl reload FILE``: the daemon reads no file on a
client's behalf) comes with the key files it names as that client read them; while it is
validated (:func:`supplied`) a key file is taken from what was sent, never opened.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import secrets
import stat
from pathlib import Path

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


def _read_private(path: str, make: str = "vnet-router keygen") -> str:
    files = _SUPPLIED.get()
    if files is not None:
        return _sent(files, path)
    try:
        st = os.stat(path)
        with open(path) as f:
            text = f.read()
    except FileNotFoundError as e:
        raise KeyFileError(f"{path}: {e.strerror} (make one with `{make} {path}`, then copy "
                           f"it to the other nodes)") from None
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
    """The VBM's Ed25519 signing key: a file holding the 32-byte seed in hex (64 digits,
    ``vnet-router keygen --signing`` or ``openssl rand -hex 32``), mode 0600.  ``vnet-router
    --check`` prints its public key."""
    words = [w for line in _read_private(path, "vnet-router keygen --signing").splitlines()
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


# -- writing ----------------------------------------------------------------------------------

SECRET_BYTES = 32


def _write_private(path: str | Path, text: str, *, force: bool) -> Path:
    """Write ``text`` to ``path``, mode 0600 from the start: a temporary file beside it, then
    renamed over it, keeping the owner of the file it replaces (the daemon's user must still
    read it).  Without ``force`` an existing ``path`` is KeyFileError, untouched."""
    path = Path(path)
    exists = KeyFileError(f"{path}: exists; not overwritten (--force replaces it, and every "
                          f"node with the old key then refuses this node's messages)")
    if not force and os.path.lexists(path):
        raise exists
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        old = os.stat(path) if os.path.exists(path) else None
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(f.fileno(), old.st_uid, old.st_gid)
                except PermissionError:
                    pass                # not root: the file becomes the caller's
            f.write(text)
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)      # fails if someone made it meanwhile: never replaced
            except FileExistsError:
                os.unlink(tmp)
                raise exists from None
            os.unlink(tmp)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise KeyFileError(f"{path}: {e.strerror}") from None
    return path


def write_key_file(path: str | Path, *, force: bool = False, key_id: int = 1) -> Keyring:
    """A new key file at ``path`` holding one fresh key (``key_id``); its keyring."""
    secret = secrets.token_bytes(SECRET_BYTES)
    _write_private(path, f"# vnet control-plane keys (docs/security.md): ID SECRET, one a "
                         f"line; the first signs\n{key_id} {secret.hex()}\n", force=force)
    return load_keyring(str(path))


def add_key(path: str | Path) -> int:
    """Append a fresh key to the key file ``path`` (rotation, step 1: accepted, not yet
    signing); its id, one above the highest there."""
    ring = load_keyring(str(path))
    kid = max(i for i, _ in ring.keys) + 1
    if kid > 0xFFFFFFFF:
        raise KeyFileError(f"{path}: no key id left above {kid - 1}")
    text = _read_private(str(path))
    if text and not text.endswith("\n"):
        text += "\n"
    _write_private(path, f"{text}{kid} {secrets.token_hex(SECRET_BYTES)}\n", force=True)
    return kid


def write_seed_file(path: str | Path, *, force: bool = False) -> bytes:
    """A new VBM signing key (an Ed25519 seed) at ``path``; the seed."""
    seed = secrets.token_bytes(32)
    _write_private(path, f"# the VBM's Ed25519 signing key (docs/security.md)\n{seed.hex()}\n",
                   force=force)
    return seed
