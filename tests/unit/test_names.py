"""The shared names are written once (``vnet_router/model/names.py``): the Cython and C files
generated from them are what the generator writes now, the compiled engine and the model read
the same table, and numbers stay stable."""
import pytest

from vnet_router.model import namegen, names, tables


@pytest.mark.parametrize("rel", sorted(namegen.FILES))
def test_generated_file_is_what_the_table_generates(rel):
    on_disk = (namegen.ROOT / rel).read_text()
    assert on_disk == namegen.FILES[rel](), \
        f"{rel} is stale or edited by hand: run python3 -m vnet_router.model.namegen"
    assert "do not edit" in on_disk.splitlines()[0]


def test_check_reports_a_stale_file_and_a_write_repairs_it(tmp_path, monkeypatch, capsys):
    for rel, render in namegen.FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(render())
    pxi = tmp_path / namegen.PXI
    pxi.write_text(pxi.read_text().replace("R_TOO_BIG = 15", "R_TOO_BIG = 14"))
    monkeypatch.setattr(namegen, "ROOT", tmp_path)
    assert namegen.stale() == [namegen.PXI]
    assert namegen.main(["--check"]) == 1
    assert "R_TOO_BIG = 14" in pxi.read_text()                 # --check writes nothing
    assert f"{namegen.PXI}: out of date" in capsys.readouterr().out
    assert namegen.main([]) == 0
    assert namegen.stale() == [] and namegen.main(["--check"]) == 0


def test_numbers_are_stable():
    # appended only: a number once given is never given to another name
    assert names.DROP_REASONS[:16] == (
        "short", "bad_len", "unknown_vlan", "bad_peer", "no_link", "unknown_vli", "control",
        "oversize", "policed", "queue_full", "vli_drop", "tap_error", "send_error", "ring_full",
        "control_queue", "too_big")
    assert names.IGNORE_REASONS[:1] == ("not_member",)
    assert names.LINK_KIND_NAMES[:3] == ("p2p", "multiaccess", "udp")
    assert names.CAPTURE_COUNTERS.ordered()[:3] == ("taken", "ring_full", "passed")
    assert names.VLINK_COUNTERS.ordered()[:4] == ("packets", "bytes", "policed", "too_big")
    assert names.LINK_COUNTERS.ordered()[:4] == ("rx_packets", "rx_bytes", "tx_packets",
                                                  "tx_bytes")


def test_a_table_out_of_order_is_refused():
    with pytest.raises(ValueError, match="expected 1"):
        names._numbered("t", "t", "T_", "T_N", names.Name(0, "a", ""), names.Name(2, "b", ""))
    with pytest.raises(ValueError, match="repeats"):
        names._numbered("t", "t", "T_", "T_N", names.Name(0, "a", ""), names.Name(1, "a", ""))


def test_the_model_and_the_compiled_engine_read_the_table():
    assert tables.DROP_REASONS is names.DROP_REASONS
    assert tables.IGNORE_REASONS is names.IGNORE_REASONS
    # the kernel tier's drops are counted under these names
    assert {"policed", "too_big"} <= set(names.VLINK_COUNTERS.ordered()) & set(names.DROP_REASONS)
    assert "ring_full" in names.CAPTURE_COUNTERS.ordered() and "ring_full" in names.DROP_REASONS
    try:
        from vnet_router.datapath import _fastpath
    except ImportError:
        pytest.skip("the compiled engine is not built (test_datapaths says so)")
    assert _fastpath.DROP_REASON_NAMES == names.DROP_REASONS
    assert _fastpath.LINK_KIND_NAMES == names.LINK_KIND_NAMES


def test_the_cython_names_hold_the_contract_of_the_compiled_engine():
    """What the engine's units use: one ``cdef enum:`` with R_<REASON> = its number for every
    drop reason, N_REASONS, K_P2P/K_MULTI/K_UDP, and DROP_REASON_NAMES by number."""
    pxi = namegen.pxi()
    enum = pxi.split("cdef enum:\n", 1)[1].split("\n\n", 1)[0]
    for i, reason in enumerate(names.DROP_REASONS):
        assert f"    R_{reason.upper()} = {i} " in enum
    assert f"    N_REASONS = {len(names.DROP_REASONS)}\n" in enum
    for const, i in (("K_P2P", 0), ("K_MULTI", 1), ("K_UDP", 2)):
        assert f"    {const} = {i} " in enum
    assert pxi.count("cdef enum:") == 1 and "\nDROP_REASON_NAMES = (\n" in pxi
