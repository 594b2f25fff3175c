"""Structured logs: one logfmt line per event on stderr (the journal under systemd).

    ts=2026-11-26T05:32:42.829Z level=info logger=vnet_router.ports msg="vnet blue: ..."

Under systemd (JOURNAL_STREAM is set) the timestamp is left to the journal.  Nothing in the
project logs per packet.
"""
from __future__ import annotations

import logging
import os
import sys
import time


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\n\t\\'):
        return value
    return '"' + (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                  .replace("\t", "\\t")) + '"'


class LogfmtFormatter(logging.Formatter):
    def __init__(self, timestamps: bool = True):
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        if self.timestamps:
            t = time.gmtime(record.created)
            parts.append(f"ts={time.strftime('%Y-%m-%dT%H:%M:%S', t)}."
                         f"{int(record.msecs):03d}Z")
        parts += [f"level={record.levelname.lower()}", f"logger={record.name}",
                  f"msg={_quote(record.getMessage())}"]
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def setup(level: str, stream=None):
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter(timestamps="JOURNAL_STREAM" not in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
