"""Pick the datapath: the Cython fast path when it is built, else the pure-Python reference.

Both modules expose the same names (``Datapath``, ``TapPort``).  The choice, in order:
the environment variable ``VNET_DATAPATH`` (``reference`` | ``fast`` | ``auto``), then
``[node].datapath`` from the configuration.  ``auto`` takes the fast path if it imports and
falls back to the reference with a warning saying why; ``fast`` insists (an error if the
extension is missing); ``reference`` never loads the extension.
"""
from __future__ import annotations

import importlib
import logging
import os

log = logging.getLogger(__name__)

ENV = "VNET_DATAPATH"
CHOICES = ("auto", "reference", "fast")


class DatapathUnavailable(RuntimeError):
    pass


def fast_module():
    """The compiled fast path module; raises ImportError if it is not built."""
    return importlib.import_module("vnet_router.datapath._fastpath")


def choose(configured: str = "auto"):
    """The datapath module to run: ``env`` > ``configured``."""
    mode = os.environ.get(ENV, "").strip().lower() or configured
    if mode not in CHOICES:
        raise DatapathUnavailable(f"{ENV}={mode!r}: want one of {', '.join(CHOICES)}")
    if mode == "reference":
        from vnet_router.datapath import reference as datapath
        log.info("datapath: reference (pure Python), as selected")
        return datapath
    try:
        return fast_module()
    except ImportError as e:
        if mode == "fast":
            raise DatapathUnavailable(f"fast datapath requested but not built: {e}") from None
        log.warning("datapath: fast path not available (%s); using the reference datapath "
                    "(pure Python)", e)
        from vnet_router.datapath import reference as datapath
        return datapath
