"""Datapath selection: the fast path is built and chosen by default, the reference on request,
and a missing extension is a visible fallback, never a silent one."""
import logging
import sys

import pytest

from vnet_router.datapath import reference as datapath
from vnet_router.datapath import select as datapaths


def test_fast_path_is_built():
    """Fails when the compiled extension did not build or load (the suite would otherwise
    test only the reference and the daemon would quietly run at a fraction of the speed)."""
    mod = datapaths.fast_module()
    assert mod.__file__.endswith(".so"), mod.__file__
    assert mod.Datapath.name == "fast"
    assert issubclass(mod.Datapath, datapath.Datapath)
    assert mod.TapPort is datapath.TapPort


def test_auto_picks_fast(monkeypatch):
    monkeypatch.delenv(datapaths.ENV, raising=False)
    assert datapaths.choose("auto").Datapath.name == "fast"
    assert datapaths.choose("fast").Datapath.name == "fast"
    assert datapaths.choose("reference") is datapath


def test_environment_forces_reference(monkeypatch):
    monkeypatch.setenv(datapaths.ENV, "reference")
    assert datapaths.choose("fast") is datapath
    monkeypatch.setenv(datapaths.ENV, "bogus")
    with pytest.raises(datapaths.DatapathUnavailable, match="VNET_DATAPATH"):
        datapaths.choose("auto")


def test_missing_extension_falls_back_loudly(monkeypatch, caplog):
    monkeypatch.delenv(datapaths.ENV, raising=False)
    monkeypatch.setitem(sys.modules, "vnet_router.datapath._fastpath", None)     # import fails
    with caplog.at_level(logging.WARNING, logger="vnet_router.datapath.select"):
        assert datapaths.choose("auto") is datapath
    assert "using the reference datapath" in caplog.text
    with pytest.raises(datapaths.DatapathUnavailable, match="not built"):
        datapaths.choose("fast")
