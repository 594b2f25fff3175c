"""Run-time changes of one thing (``vnetctl vlink rate``, ``vnetctl vbm share``): applied at
once, reported as run-time only, and undone by a plain reload, which reads the file again.

x and y share a p2p link "p" (vNet blue's a0, a managed range 2..10Mbit) and a switched LAN
on which y runs the VBM (blue's share 0.5) and x hears it.
"""
import json

import pytest

import topo as t
from harness import eventually, vnetctl

pytestmark = pytest.mark.root

M = 1_000_000
TM = {"tick": 0.2, "hello_interval": 0.5, "report_interval": 1, "vbm_link": "lan"}
RANGE = {"min": "2Mbit", "max": "10Mbit"}


def _node(name, peer, octet, vbm=None):
    router = {"tm": TM}
    if vbm:
        router["vbm"] = vbm
    return t.node(name, t.multiaccess("lan", "e0", capacity="1Gbit"),
                  t.p2p("p", "e1", f"{peer}:e1"), t.vnet("blue", 1), t.vnet("red", 2),
                  t.iface("blue", "a0", "p", 10, rate=RANGE, in_rate=RANGE,
                          addresses=[f"10.0.1.{octet}/24"]),
                  settings={"name": name}, router=router)


TOPO = t.topology(
    t.switch_node("sw"), t.link("x:e0", "sw"), t.link("y:e0", "sw"), t.link("x:e1", "y:e1"),
    _node("x", "y", 1),
    _node("y", "x", 2, vbm={"link": "lan", "capacity": "100Mbit", "rebuild_time": 1,
                            "share": [{"vnet": 1, "share": 0.5}, {"vnet": 2, "share": 0.25}]}))


def _out_rate(lab, node):
    """(min, max) of blue/a0's output virtual link as ``show --json`` has it."""
    v = next(v for v in lab.control(node)["virtual_links"]
             if v["owner"] == "blue/a0" and v["direction"] == "out")
    return v["rate"]["min"], v["rate"]["max"]


def _tm_output(lab, node):
    o = next(o for o in lab.control(node, "alloc")["outputs"] if o["vnet"] == "blue")
    return o["min"], o["max"]


def _ctl(lab, node, *args):
    r = vnetctl(lab, node, *args)
    assert r.returncode == 0, r.stdout + r.stderr + lab.log_tail(node)
    return r.stdout


def test_vlink_rate_is_applied_and_a_plain_reload_restores_the_file(make_lab):
    lab = make_lab(TOPO)
    assert _out_rate(lab, "x") == (2 * M, 10 * M)
    eventually(lambda: _tm_output(lab, "x") == (2 * M, 10 * M), 10,
               "x's Traffic Manager to manage blue/a0")
    gen = lab.control("x")["generation"]

    out = _ctl(lab, "x", "vlink", "rate", "blue", "a0", "--min", "5Mbit", "--max", "20Mbit")
    print(out)
    assert "blue/a0 output (rate): 2Mbit..10Mbit -> 5Mbit..20Mbit" in out
    assert "run-time only" in out and str(lab.workdir / "x.toml") in out
    # applied: the datapath's virtual link, the Traffic Manager's bounds, the metrics' view
    assert _out_rate(lab, "x") == (5 * M, 20 * M)
    assert _tm_output(lab, "x") == (5 * M, 20 * M)
    st = lab.control("x")
    assert st["generation"] == gen + 1
    assert st["config_state"]["runtime_changes"] == [
        "vlink rate blue/a0 out: 2Mbit..10Mbit -> 5Mbit..20Mbit"]
    assert "run-time changes not in" in _ctl(lab, "x", "show")
    # the file was not touched
    assert 'max = "10Mbit"' in (lab.workdir / "x.toml").read_text()

    # the input side (policing), with --json for machines
    r = json.loads(_ctl(lab, "x", "vlink", "rate", "blue", "a0", "--in", "--rate", "30Mbit",
                        "--json"))
    assert r["rate"] == {"min": 30 * M, "max": 30 * M} and r["runtime_only"] is True
    v = next(v for v in lab.control("x")["virtual_links"]
             if v["owner"] == "blue/a0" and v["direction"] == "in")
    assert (v["rate"]["min"], v["rate"]["max"]) == (30 * M, 30 * M)

    # a plain reload reads the file again: the run-time values are gone, and it says so
    out = _ctl(lab, "x", "reload")
    assert "interface changed: blue/a0" in out, out
    assert _out_rate(lab, "x") == (2 * M, 10 * M)
    assert lab.control("x")["config_state"]["runtime_changes"] == []
    eventually(lambda: _tm_output(lab, "x") == (2 * M, 10 * M), 10,
               "the Traffic Manager to take the file's bounds again")

    # refusals name what is wrong and change nothing
    gen = lab.control("x")["generation"]
    for args, words in ((("blue", "nope", "--max", "1Mbit"), "no logical interface blue/nope"),
                        (("blue", "a0", "--min", "30Mbit", "--max", "20Mbit"), "above max")):
        r = vnetctl(lab, "x", "vlink", "rate", *args)
        assert r.returncode == 1 and words in r.stderr, r.stderr
    r = vnetctl(lab, "x", "vlink", "rate", "blue", "a0", "--max", "10Mbps")
    assert r.returncode == 2 and "ambiguous rate" in r.stderr, r.stderr
    assert lab.control("x")["generation"] == gen
    assert _out_rate(lab, "x") == (2 * M, 10 * M)


def test_vbm_share_is_applied_and_a_plain_reload_restores_the_file(make_lab):
    lab = make_lab(TOPO)
    eventually(lambda: lab.control("y", "alloc")["vbm"]["state"] == "ACTIVE", 15,
               "the VBM to finish rebuilding")

    def share(vid):
        return lab.control("y", "alloc")["vbm"]["vnets"][str(vid)]["share"]

    out = _ctl(lab, "y", "vbm", "share", "blue", "0.3")
    assert "vNet 1: share of the LAN 0.5 -> 0.3 (pool 30Mbit)" in out, out
    assert "run-time only" in out
    assert share(1) == 0.3
    # over the LAN: refused, nothing changed
    r = vnetctl(lab, "y", "vbm", "share", "2", "0.8")
    assert r.returncode == 1 and "sum to 1.100" in r.stderr, r.stderr
    assert (share(1), share(2)) == (0.3, 0.25)
    # a node without a VBM has no such verb
    r = vnetctl(lab, "x", "vbm", "share", "1", "0.3")
    assert r.returncode == 1 and "needs [vbm]" in r.stderr, r.stderr

    assert lab.control("y")["config_state"]["runtime_changes"] == ["vbm share vNet 1: 0.5 -> 0.3"]

    out = _ctl(lab, "y", "reload")
    assert "vbm share changed: vNet 1 0.3 -> 0.5" in out, out
    assert share(1) == 0.5
    assert lab.control("y")["config_state"]["runtime_changes"] == []
