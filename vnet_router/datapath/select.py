"""Build a datapath: the core composed with the compiled engine when it is built, else with
the pure-Python reference engine.

``DatapathPy(tables, loop, clock)`` and ``DatapathC(...)`` build one of each (both can exist
in one process: the differential tests run them side by side).  ``choose(configured)`` returns
the builder the node runs, in this order: the environment variable ``VNET_DATAPATH``
(``reference`` | ``fast`` | ``auto``), then ``[node].datapath`` from the configuration.
``auto`` takes the compiled engine if it imports and falls back to the reference with a
warning saying why; ``fast`` insists (an error if the extension is missing); ``reference``
never loads the extension.
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
CHOICES = ("auto", "reference", "fast")


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


def choose(configured: str = "auto"):
    """The builder of the datapath to run: ``env`` > ``configured``."""
    mode = os.environ.get(ENV, "").strip().lower() or configured
    if mode not in CHOICES:
        raise DatapathUnavailable(f"{ENV}={mode!r}: want one of {', '.join(CHOICES)}")
    if mode == "reference":
        log.info("datapath: reference (pure Python), as selected")
        return DatapathPy
    try:
        fast_module()
    except ImportError as e:
        if mode == "fast":
            raise DatapathUnavailable(f"fast datapath requested but not built: {e}") from None
        log.warning("datapath: fast path not available (%s); using the reference datapath "
                    "(pure Python)", e)
        return DatapathPy
    return DatapathC
