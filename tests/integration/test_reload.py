"""Live reconfiguration: a reload adds a virtual link and re-rates another while a ping flood
runs over a third -- which loses nothing; a broken file changes nothing and names the key."""
import subprocess
import sys
import time

import pytest

from vnet_router.node.api import ControlError

import topo as t

pytestmark = pytest.mark.root


def _node(name, peer, octet, a_in, a_out, c_in, c_out):
    return t.node(
        name, t.p2p("p", "e0", f"{peer}:e0"), t.vnet("blue", 1), t.vnet("red", 2),
        t.iface("blue", "a0", "p", a_in, a_out, addresses=[f"10.0.1.{octet}/24"]),
        t.iface("red", "c0", "p", c_in, c_out, rate="10Mbit",
                addresses=[f"10.0.3.{octet}/24"]))


TOPO = (t.link("x:e0", "y:e0") + _node("x", "y", 1, 11, 10, 31, 30)
        + _node("y", "x", 2, 10, 11, 30, 31))

GREEN = """
[[vnet]]
name = "green"
id = 3
namespace = "{ns}"

[[interface]]
vnet = "green"
name = "b0"
substrate_link = "{link}"
in_vli = {b_in}
out_vli = {b_out}
addresses = ["10.0.2.{octet}/24"]
"""


def _new_config(lab, node, octet, b_in, b_out):
    text = (lab.workdir / f"{node}.toml").read_text()
    text = text.replace('"10Mbit"', '"30Mbit"').replace("10000000", "30000000")
    assert "30" in text
    ns = lab.prefix + f"{node}-green"
    return text + GREEN.format(ns=ns, link="p", b_in=b_in, b_out=b_out, octet=octet)


def _reload(lab, node, text):
    (lab.workdir / f"{node}.toml").write_text(text)
    r = subprocess.run([sys.executable, "-m", "vnet_router.cli.vnetctl", "-s", lab.socket(node),
                        "reload"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _vlink(st, vnet, direction):
    return next(v for v in st["virtual_links"] if v["vnet"] == vnet and v["direction"] == direction)


def test_reload_adds_and_rerates_without_loss(make_lab):
    lab = make_lab(TOPO)
    assert lab.ping("x", "10.0.1.2", vnet="blue", count=2).received == 2
    gen = {n: lab.control(n)["generation"] for n in ("x", "y")}
    # 1,000 pings at 500/s: about two seconds, so both reloads happen in the middle of it
    flood = lab.popen("x", ["ping", "-q", "-c", "1000", "-i", "0.002", "-W", "1", "10.0.1.2"],
                      vnet="blue", stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    results = {}
    for node, octet, b_in, b_out in (("x", 1, 21, 20), ("y", 2, 20, 21)):
        results[node] = _reload(lab, node, _new_config(lab, node, octet, b_in, b_out))
    assert flood.poll() is None, "the ping flood ended before the reloads were done"
    out, _ = flood.communicate(timeout=60)
    assert flood.returncode == 0 and "1000 packets transmitted, 1000 received" in out, out
    for node in ("x", "y"):
        assert "logical interface b0" in results[node] and "interface changed: red/c0" in \
            results[node], results[node]
        st = lab.control(node)
        assert st["generation"] > gen[node]
        assert _vlink(st, "red", "out")["rate"]["max"] == 30_000_000
        assert _vlink(st, "blue", "in")["packets"] >= 1000       # counters survived the swap
    # the new virtual link B works end to end
    r = lab.run_in(lab.prefix + "x-green", ["ping", "-c", "3", "-i", "0.2", "10.0.2.2"])
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout


def test_broken_reload_changes_nothing(make_lab):
    lab = make_lab(TOPO)
    before = lab.control("x")
    path = lab.workdir / "x.toml"
    good = path.read_text()
    path.write_text(good.replace("vlan = 10", "vlan = 4095"))
    r = subprocess.run([sys.executable, "-m", "vnet_router.cli.vnetctl", "-s", lab.socket("x"), "reload"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "substrate_link[0].vlan" in r.stderr and "4095" in r.stderr, r.stderr
    # a file naming an interface the node lacks: refused too, nothing created
    path.write_text(good.replace('interface = "e0"', 'interface = "e9"'))
    with pytest.raises(ControlError, match=r"substrate_link\[0\].interface"):
        lab.control("x", "reload")
    path.write_text(good + GREEN.format(ns=lab.prefix + "x-green", link="p", b_in=21, b_out=20,
                                        octet=1)
                    + '\n[[interface]]\nvnet = "green"\nname = "b0"\nsubstrate_link = "p"\n'
                      'in_vli = 22\n')
    with pytest.raises(ControlError, match=r"interface\[3\].name"):
        lab.control("x", "reload")
    assert not [n for n in lab.namespaces() if n.endswith("x-green")]
    after = lab.control("x")
    assert after["generation"] == before["generation"]
    assert [v["rate"] for v in after["virtual_links"]] == [v["rate"] for v in before["virtual_links"]]
    assert after["config_state"]["reloads"] == {"ok": 0, "refused": 3}
    assert lab.ping("x", "10.0.1.2", vnet="blue", count=2).received == 2
    # SIGHUP reloads too (file fixed meanwhile)
    path.write_text(good.replace('"10Mbit"', '"40Mbit"').replace("10000000", "40000000"))
    lab.daemons["x"].send_signal(1)
    for _ in range(50):
        if lab.control("x")["config_state"]["reloads"]["ok"] == 1:
            break
        time.sleep(0.1)
    st = lab.control("x")
    assert st["config_state"]["reloads"]["ok"] == 1
    assert _vlink(st, "red", "out")["rate"]["max"] == 40_000_000


# A reload that adds a substrate interface, and one that removes it again: the fast path's ring
# thread is stopped and started on the new set of rings each time (it must never walk a ring
# being unmapped); the flood over the first interface loses nothing meanwhile.
IFACE_TOPO = (t.link("x:e0", "y:e0") + t.link("x:e1", "y:e1")
              + _node("x", "y", 1, 11, 10, 31, 30) + _node("y", "x", 2, 10, 11, 30, 31))

SECOND_LINK = """
[[substrate_link]]
id = "q"
kind = "p2p"
interface = "e1"
peer_mac = "{peer}"
vlan = 20
"""


def test_reload_adds_and_removes_a_substrate_interface_under_traffic(make_lab):
    lab = make_lab(IFACE_TOPO)
    assert lab.ping("x", "10.0.1.2", vnet="blue", count=2).received == 2
    first = {n: (lab.workdir / f"{n}.toml").read_text() for n in ("x", "y")}
    flood = lab.popen("x", ["ping", "-q", "-c", "1500", "-i", "0.002", "-W", "1", "10.0.1.2"],
                      vnet="blue", stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    for node, peer, octet in (("x", "y", 1), ("y", "x", 2)):
        out = _reload(lab, node, first[node] + SECOND_LINK.format(peer=lab.mac(peer, "e1")) +
                      GREEN.format(ns=lab.prefix + f"{node}-green", link="q", b_in=40, b_out=40,
                                   octet=octet))
        assert "substrate link added: q" in out, out
    r = lab.run_in(lab.prefix + "x-green", ["ping", "-c", "3", "-i", "0.2", "10.0.2.2"])
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout
    for node in ("x", "y"):
        assert any(l["id"] == "q" for l in lab.control(node)["substrate_links"])
        _reload(lab, node, first[node])
    assert flood.poll() is None, "the ping flood ended before the reloads were done"
    out, _ = flood.communicate(timeout=60)
    assert flood.returncode == 0 and "1500 packets transmitted, 1500 received" in out, out
    for node in ("x", "y"):
        st = lab.control(node)
        assert [l["id"] for l in st["substrate_links"]] == ["p"]
        assert st["datapath"] == "fast"
    assert lab.ping("x", "10.0.1.2", vnet="blue", count=3).received == 3
    starts = [l.split("msg=")[1] for l in lab.log_path("x").read_text().splitlines()
              if "ring thread reads" in l]
    assert starts == ['"fast path: ring thread reads 1 substrate interface(s): e0"',
                      '"fast path: ring thread reads 2 substrate interface(s): e0 e1"',
                      '"fast path: ring thread reads 1 substrate interface(s): e0"'], starts
