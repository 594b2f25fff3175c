"""Build a datapath: the core composed with the compiled engine when it is built, else with
the pure-Python reference engine; or the compiled engine with the kernel tier.

``DatapathPy(tables, loop, clock)``, ``DatapathC(...)`` and ``DatapathKernel(...)`` build one
of each (they can exist in one process: the differential tests run them side by side).
``choose(configured)`` returns the builder the node runs, in this order: the environment
variable ``VNET_DATAPATH`` (``reference`` | ``fast`` | ``kernel`` | ``auto``), then
``[node].datapath`` from the configuration.  ``auto`` takes the compiled engine if it imports
and falls back to the reference with a warning saying why; ``fast`` insists (an error if the
extension is missing); ``reference`` never loads the extension; ``kernel`` is the compiled
engine with the kernel tier (``ktier.KernelEngine``, an eBPF program; it needs the extension
too).

A builder given ``tap_capture`` (``[node] tap_capture``) starts the TAP capture
(``tapcap.TapCapture``) when its engine class walks the capture ring
(``Capabilities.walks_capture``) and hands it to the core's constructor; the caller closes it
(``capture.close(ports)``) after the datapath.
"""
from __future__ import annotations

import importlib
import logging
import os
import time

from vnet_router.datapath.core import Datapath
from vnet_router.datapath.reference import PyEngine
from vnet_router.datapath.tapcap import TapCapture

log = logging.getLogger(__name__)

ENV = "VNET_DATAPATH"
CHOICES = ("auto", "reference", "fast", "kernel")


class DatapathUnavailable(RuntimeError):
    pass


def fast_module():
    """The compiled engine's module; raises ImportError if it is not built."""
    return importlib.import_module("vnet_router.datapath._fastpath")


def DatapathPy(tables, loop=None, clock=time.monotonic, tap_capture: str | None = None,
               **callbacks) -> Datapath:
    """A datapath on the reference engine (pure Python)."""
    return _build(tables, PyEngine, loop, clock, tap_capture, callbacks)


def DatapathC(tables, loop=None, clock=time.monotonic, tap_capture: str | None = None,
              **callbacks) -> Datapath:
    """A datapath on the compiled engine; ImportError if it is not built."""
    return _build(tables, fast_module().CEngine, loop, clock, tap_capture, callbacks)


def DatapathFast(tables, loop=None, clock=time.monotonic, tap_capture: str | None = None,
                 **callbacks) -> Datapath:
    """The compiled engine behind the classifier (``ktier.FastEngine``): what ``fast`` and
    ``auto`` run.  If BPF cannot run here, one warning and the compiled engine alone."""
    from vnet_router.datapath.ktier import FastEngine       # imports the extension
    return _build(tables, FastEngine, loop, clock, tap_capture, callbacks)


def DatapathKernel(tables, loop=None, clock=time.monotonic, tap_capture: str | None = None,
                   **callbacks) -> Datapath:
    """A datapath on the compiled engine with the kernel tier; ImportError if the compiled
    engine is not built.  If the tier cannot run here, one error line and the compiled engine
    alone (``ktier.py``)."""
    from vnet_router.datapath.ktier import KernelEngine     # imports the extension
    return _build(tables, KernelEngine, loop, clock, tap_capture, callbacks)


def _build(tables, engine, loop, clock, tap_capture: str | None, callbacks: dict) -> Datapath:
    capture = None
    if tap_capture is not None and engine.capabilities.walks_capture:
        capture = TapCapture.start(tap_capture)
    try:
        return Datapath(tables, engine, loop, clock, capture=capture, **callbacks)
    except BaseException:
        if capture is not None:
            capture.close(())
        raise


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
        if mode in ("fast", "kernel"):
            raise DatapathUnavailable(f"{mode} datapath requested but the compiled engine is "
                                      f"not built: {e}") from None
        log.warning("datapath: fast path not available (%s); using the reference datapath "
                    "(pure Python)", e)
        return DatapathPy
    return DatapathKernel if mode == "kernel" else DatapathFast
