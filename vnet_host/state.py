"""Run-time state of ``vnet-hostd``, kept in ``STATE_DIR/state.json`` across restarts.

``vnets``: vNets installed at run time (``{name, id, namespace, allow}``); ``interfaces``:
logical interfaces added at run time (tables in the ``[[interface]]`` format); ``owned``:
every namespace the daemon created (so a restart after a crash removes those it no longer
wants, and never one it did not make).  Writes are atomic (temporary file + rename).  The
tables applications may read (``tables.json``, mode 0644) are exported here as well.
"""
from __future__ import annotations

import json
import os
import tempfile

EMPTY = {"vnets": [], "interfaces": [], "owned": []}


class StateError(RuntimeError):
    pass


class State:
    def __init__(self, state_dir: str):
        self.dir = state_dir
        self.path = os.path.join(state_dir, "state.json")
        self.tables_path = os.path.join(state_dir, "tables.json")

    def load(self) -> dict:
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return json.loads(json.dumps(EMPTY))
        except (OSError, ValueError) as e:
            raise StateError(f"{self.path}: unreadable state: {e}") from None
        if not isinstance(data, dict):
            raise StateError(f"{self.path}: state must be a JSON object")
        for key, default in EMPTY.items():
            data.setdefault(key, list(default))
            if not isinstance(data[key], list):
                raise StateError(f"{self.path}: {key}: must be a list")
        return data

    def save(self, data: dict):
        _atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True), 0o600)

    def export_tables(self, tables: dict):
        _atomic_write(self.tables_path, json.dumps(tables, indent=1, sort_keys=True), 0o644)


def _atomic_write(path: str, text: str, mode: int):
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
