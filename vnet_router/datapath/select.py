"""Build a datapath: the core composed with the compiled engine when it is built, else with
the pure-Python reference engine.

``DatapathPy(tables, loop, clock)`` and ``DatapathC(...)`` build one of each (both can exist
in one process: the differential tests run them side by side).  ``choose(configured)`` returns
the builder the node runs, in this order: the environment variable ``VNET_DATAPATH``
(``reference`` | ``fast`` | ``auto``), then ``[node].datapath`` from the configuration.
``auto`` takes the compiled engine if it imports and falls back to the reference with a
warning saying why; ``fast`` insists (an error if the extension is missing); ``reference``
never loads the extension; ``kernel`` is the compiled engine composed with the kernel tier
(an eBPF program, ``ktier.py``; the engine class is still handed in by the node).
"""
from __future__ import annotations

import importlib
import logging
import os
import time

from vnet_router.datapath.core import Datapath
from vnet_router.datapath.reference import PyEngine

log = logging.getLogger(__name__)

ENV = "VNET_DATAPATH"
CHOICES = ("auto", "reference", "fast", "kernel")


class DatapathUnavailable(RuntimeError):
    pass


def fast_module():
    """The compiled engine's module; raises ImportError if it is not built."""
    return importlib.import_module("vnet_router.datapath._fastpath")


def DatapathPy(tables, loop=None, clock=time.monotonic) -> Datapath:
    """A datapath on the reference engine (pure Python)."""
    return Datapath(tables, PyEngine, loop, clock)


def DatapathC(tables, loop=None, clock=time.monotonic) -> Datapath:
    """A datapath on the compiled engine; ImportError if it is not built."""
    return Datapath(tables, fast_module().CEngine, loop, clock)


def choose(configured: str = "auto", kernel_engine=None):
    """The builder of the datapath to run: ``env`` > ``configured``.  ``kernel_engine``: the
    engine class of the kernel tier (``datapath = "kernel"``)."""
    mode = os.environ.get(ENV, "").strip().lower() or configured
    if mode not in CHOICES:
        raise DatapathUnavailable(f"{ENV}={mode!r}: want one of {', '.join(CHOICES)}")
    if mode == "reference":
        log.info("datapath: reference (pure Python), as selected")
        return DatapathPy
    try:
        fast_module()
    except ImportError as e:
        if mode in ("fast", "kernel"):
            raise DatapathUnavailable(f"{mode} datapath requested but the compiled engine is "
                                      f"not built: {e}") from None
        log.warning("datapath: fast path not available (%s); using the reference datapath "
                    "(pure Python)", e)
        return DatapathPy
    if mode == "kernel":
        if kernel_engine is None:
            raise DatapathUnavailable("kernel datapath: no kernel tier in this program")
        return lambda tables, loop=None, clock=time.monotonic: Datapath(
            tables, kernel_engine, loop, clock)
    return DatapathC
