"""The daemons' event loop: uvloop (the only module that imports it).

Both daemons run their node with :func:`run`; the datapath and the control plane only ever see
an ``asyncio`` loop, so replacing uvloop touches this file alone.
"""
from __future__ import annotations

import uvloop


def run(coro):
    """Run ``coro`` to completion on a new uvloop event loop and return its result."""
    return uvloop.run(coro)
