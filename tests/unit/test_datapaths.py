"""Datapath construction: the core composed with one engine through ``core.Engine``; the
compiled engine is built and chosen by default, the reference on request, and a missing
extension is a visible fallback, never a silent one."""
import asyncio
import inspect
import logging
import sys

import pytest

from vnet_router.datapath import select as datapaths
from vnet_router.datapath.core import Datapath, Engine
from vnet_router.datapath.reference import PyEngine
from vnet_router.datapath.select import DatapathC, DatapathPy
from vnet_router.model.config import loads
from vnet_router.model.tables import IfaceFacts, Tables

CFG = '''
[[substrate_link]]
id = "p"
kind = "p2p"
interface = "eth0"
peer_mac = "02:00:00:00:00:01"
vlan = 10
'''
ENGINE_METHODS = sorted(n for n, f in inspect.getmembers(Engine, inspect.isfunction)
                        if not n.startswith("_"))


def _tables():
    return Tables(loads(CFG), {"eth0": IfaceFacts(2, b"\x02" * 6, 1500)})


def test_fast_path_is_built():
    """Fails when the compiled extension did not build or load (the suite would otherwise
    test only the reference and the daemon would quietly run at a fraction of the speed)."""
    mod = datapaths.fast_module()
    assert mod.__file__.endswith(".so"), mod.__file__
    assert mod.CEngine.name == "fast"


@pytest.mark.parametrize("engine", [PyEngine, "CEngine"], ids=["py", "c"])
def test_engines_implement_the_interface_and_nothing_inherits(engine):
    """Composition: each engine has every method of ``core.Engine`` and is no subclass of the
    core (the old fast path overrode eleven private methods of the reference)."""
    if engine == "CEngine":
        engine = datapaths.fast_module().CEngine
    missing = [n for n in ENGINE_METHODS if not callable(getattr(engine, n, None))]
    assert not missing, missing
    assert Datapath not in engine.__mro__
    assert ENGINE_METHODS == ["close", "flush", "flush_tx", "install", "on_tap",
                              "process_eth", "process_udp", "retune", "set_peers", "start",
                              "stats", "sync_counters", "sync_substrate", "tier_of"]


def test_the_tap_capture_goes_only_to_an_engine_that_walks_its_ring(monkeypatch):
    """Chosen by capability, not by name: the reference reads TAPs with read(), so no capture
    is started for it, and the core refuses one."""
    from vnet_router.datapath import tapcap
    started = []
    monkeypatch.setattr(tapcap.TapCapture, "start", classmethod(
        lambda cls, mode: started.append(mode)))
    assert not PyEngine.capabilities.walks_capture
    assert datapaths.fast_module().CEngine.capabilities.walks_capture
    loop = asyncio.new_event_loop()
    try:
        py = DatapathPy(_tables(), loop, tap_capture="auto")
        c = DatapathC(_tables(), loop, tap_capture="auto")
        assert started == ["auto"] and py.capture is None
        for dp in (py, c):
            dp.close()
        with pytest.raises(ValueError, match="PyEngine does not walk"):
            Datapath(_tables(), PyEngine, loop, capture=object())
    finally:
        loop.close()


def test_both_datapaths_exist_side_by_side():
    loop = asyncio.new_event_loop()
    try:
        py, c = DatapathPy(_tables(), loop), DatapathC(_tables(), loop)
        assert type(py) is type(c) is Datapath
        assert (py.name, c.name) == ("reference", "fast")
        assert isinstance(py.engine, PyEngine)
        assert type(c.engine) is datapaths.fast_module().CEngine
        assert py.engine.dp is py and c.engine.dp is c
        for dp in (py, c):
            dp.install(dp.tables.compile())
            dp.close()
    finally:
        loop.close()


def test_auto_picks_fast(monkeypatch):
    monkeypatch.delenv(datapaths.ENV, raising=False)
    assert datapaths.choose("auto") is datapaths.DatapathFast     # the classifier in front
    assert datapaths.choose("fast") is datapaths.DatapathFast
    assert datapaths.choose("reference") is DatapathPy


def test_environment_forces_reference(monkeypatch):
    monkeypatch.setenv(datapaths.ENV, "reference")
    assert datapaths.choose("fast") is DatapathPy
    monkeypatch.setenv(datapaths.ENV, "bogus")
    with pytest.raises(datapaths.DatapathUnavailable, match="VNET_DATAPATH"):
        datapaths.choose("auto")


def test_missing_extension_falls_back_loudly(monkeypatch, caplog):
    monkeypatch.delenv(datapaths.ENV, raising=False)
    monkeypatch.setitem(sys.modules, "vnet_router.datapath._fastpath", None)     # import fails
    with caplog.at_level(logging.WARNING, logger="vnet_router.datapath.select"):
        assert datapaths.choose("auto") is DatapathPy
    assert "using the reference datapath" in caplog.text
    with pytest.raises(datapaths.DatapathUnavailable, match="not built"):
        datapaths.choose("fast")
    with pytest.raises(ImportError):
        DatapathC(_tables())
