"""The BPF engines (``datapath/ktier.py``): the kernel tier chosen by ``datapath = "kernel"``,
the classifier alone by ``fast`` / ``auto``; a classifier that cannot load is one line with the
compiled engine reading every frame."""
import asyncio
import logging

import pytest

from vnet_router.datapath import select as datapaths
from vnet_router.datapath.core import Datapath
from vnet_router.datapath import classifier
from vnet_router.datapath.ktier import FastEngine, KernelEngine
from vnet_router.ops import ebpf
from test_datapaths import ENGINE_METHODS, _tables


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_kernel_engine_implements_the_interface():
    missing = [n for n in ENGINE_METHODS if not callable(getattr(KernelEngine, n, None))]
    assert not missing, missing


def test_choose_kernel(monkeypatch, loop):
    monkeypatch.delenv(datapaths.ENV, raising=False)
    assert datapaths.choose("kernel") is datapaths.DatapathKernel
    monkeypatch.setattr(ebpf, "available", lambda compiler=True: "libbpf is missing (test)")
    dp = datapaths.choose("kernel")(_tables(), loop)
    assert type(dp) is Datapath and isinstance(dp.engine, KernelEngine)
    dp.close()


def _errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_no_bpf_is_one_error_line_and_the_fast_path(monkeypatch, loop, caplog):
    monkeypatch.setattr(ebpf, "available",
                        lambda compiler=True: "libbpf is missing (libbpf.so.1: none)")
    with caplog.at_level(logging.INFO):
        dp = Datapath(_tables(), KernelEngine, loop)
        dp.install(dp.tables.compile())
        assert dp.name == "fast" and dp.engine.tier is None
        assert dp.engine.capabilities == datapaths.fast_module().CEngine.capabilities
        assert dp.tier_of(("p", 100, "in")) == "engine"
        assert dp.stats()["kernel_frames"] == 0
        dp.close()
    errors = _errors(caplog)
    assert errors == ["datapath: the kernel tier cannot run (libbpf is missing (libbpf.so.1: "
                      "none)); the compiled engine forwards everything"], errors


def test_a_program_the_verifier_refuses_is_one_error_line(monkeypatch, loop, caplog, tmp_path):
    bad = tmp_path / "bad.bpf.c"
    bad.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                   'SEC("tc") int f(struct __sk_buff *skb)\n'
                   '{ return *(int *)(long)(skb->data + 100); }\n'
                   'char LICENSE[] SEC("license") = "MIT";\n')
    monkeypatch.setattr(classifier, "SOURCE", str(bad))
    with caplog.at_level(logging.INFO):
        dp = Datapath(_tables(), KernelEngine, loop)
        assert dp.name == "fast"
        dp.close()
    errors = _errors(caplog)
    assert len(errors) == 1 and "kernel tier cannot run" in errors[0], errors
    assert "\n" not in errors[0] and "refused program f" in errors[0], errors


def test_a_tier_that_stops_is_seen_through_the_engine(loop, caplog):
    """At run time (an attach or a map write fails) the engine goes on alone: its label and
    capabilities say so, read through the core; nothing writes into the core."""
    why = ebpf.available(compiler=False)
    if why is not None:
        pytest.skip(why)
    dp = Datapath(_tables(), KernelEngine, loop)
    try:
        assert dp.name == "kernel" and dp.engine.capabilities.kernel_tier
        with caplog.at_level(logging.INFO):
            dp.engine._fail(ebpf.BpfError("attach refused (test)"))
        assert dp.name == "fast" and not dp.engine.capabilities.kernel_tier
        assert dp.engine.capabilities.walks_capture and dp.engine.capabilities.reads_udp
        assert "name" not in vars(dp)
        assert "the classifier stops (attach refused (test))" in _errors(caplog)[0]
    finally:
        dp.close()


def test_fast_and_auto_classify(monkeypatch, loop, caplog):
    """``fast`` runs the classifier; without BPF it is one warning line and the compiled
    engine alone, labelled ``fast`` either way (``classified`` says which)."""
    monkeypatch.delenv(datapaths.ENV, raising=False)
    assert datapaths.choose("fast") is datapaths.DatapathFast
    assert datapaths.choose("auto") is datapaths.DatapathFast
    monkeypatch.setattr(ebpf, "available", lambda compiler=True: "libbpf is missing (test)")
    with caplog.at_level(logging.INFO):
        dp = datapaths.DatapathFast(_tables(), loop)
        dp.install(dp.tables.compile())
        assert isinstance(dp.engine, FastEngine) and dp.engine.tier is None
        assert dp.name == "fast" and dp.stats()["classified"] == 0
        assert dp.engine.inner.fanout is None
        dp.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["datapath: no classification in the kernel (libbpf is missing "
                        "(test)); the compiled engine reads every frame from one ring per "
                        "interface"], warnings
