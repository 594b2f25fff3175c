"""Campus trunks and the management network of a lab: parsing, validation, the VBM's derived
capacity, metrics rendering, prometheus.yml (no system access)."""
from types import SimpleNamespace

import pytest

from vnet_router.model.schema import ConfigError
from vnet_router.model.toml import dump_toml
from vnet_router.lab import campus, mgmt, trunks
from vnet_router.lab import topology as T


def _topo(*, trunks=(("sw1", "sw2", "50Mbit"),), vbm=None, lab=None, addresses=None,
          names=("x", "v"), switches=None):
    """x on sw1 and v (the VBM, ``vbm``: its [vbm] table) on sw2; ``trunks``: (a, b, port_rate)."""
    data = {"switch": switches or [{"name": s} for s in ("sw1", "sw2", "sw3")],
            "link": [{"a": a, "b": b, **({"port_rate": r} if r else {})} for a, b, r in trunks],
            "node": []}
    for name, sw in zip(names, ("sw1", "sw2")):
        router = {"substrate_link": [{"id": "lan", "kind": "multiaccess", "interface": "e0"}]}
        if name == "v" and vbm is not None:
            router["vbm"] = vbm
        node = {"name": name, "router": router}
        if addresses and name in addresses:
            node["addresses"] = {"e0": [addresses[name]]}
        data["node"].append(node)
        data["link"].append({"a": f"{name}:e0", "b": sw})
    if lab:
        data["lab"] = lab
    return T.loads(dump_toml(data), "campus.toml")


def test_a_trunk_gets_a_port_on_each_switch_named_after_the_other():
    t = _topo(trunks=(("sw1", "sw2", "50Mbit"), ("sw2", "sw1", None)))
    one, two = t.links[0], t.links[1]
    assert (one.a.switch, one.a.ifname, one.b.switch, one.b.ifname) == ("sw1", "sw2", "sw2", "sw1")
    assert one.port_rate == 50_000_000 and two.port_rate is None
    # a second trunk between the same switches: its port names are taken, so p<index>a/b
    assert (two.a.ifname, two.b.ifname) == ("p1a", "p1b")
    assert len({e.mac for link in t.links for e in (link.a, link.b)}) == 2 * len(t.links)
    assert trunks.segments(t) == {"sw1": "sw1", "sw2": "sw1", "sw3": "sw3"}


@pytest.mark.parametrize("trunk, problem", [
    (("sw1", "sw1", None), "a trunk from switch 'sw1' to itself"),
    (("sw1", "sw9", None), "unknown switch 'sw9'"),
    (("sw1", "x:e1", None), "'sw1' is a switch: 'b' must be one too (a trunk)"),
    (("sw1", "sw2", "10Mbps"), "ambiguous rate"),
])
def test_bad_trunks_are_refused_naming_the_link(trunk, problem):
    with pytest.raises(ConfigError) as e:
        _topo(trunks=(trunk,))
    assert e.value.key.startswith("link[0]") and problem in e.value.problem, str(e.value)


def test_the_vbm_capacity_follows_the_slowest_link_of_its_lan():
    vbm = {"link": "lan", "share": [{"vnet": 1, "share": 0.5}]}
    t = _topo(trunks=(("sw1", "sw2", "50Mbit"), ("sw2", "sw3", "20Mbit")), vbm=vbm)
    assert campus.lan_rate(t, "v", "lan") == 20_000_000        # sw3 is on the same LAN
    rendered = campus.render(t, "v", {"vbm": dict(vbm)})
    assert rendered["vbm"]["capacity"] == 20_000_000
    assert campus.report(t) == ["node v: VBM capacity 20Mbit, the slowest link of its LAN "
                                "(derived: [vbm] capacity is not set)"]
    # set above it: a warning; set at or below it: kept, nothing said
    high = _topo(vbm={**vbm, "capacity": "1Gbit"})
    assert campus.render(high, "v", {"vbm": {**vbm, "capacity": "1Gbit"}})["vbm"][
        "capacity"] == "1Gbit"
    [line] = campus.report(high)
    assert line.startswith("warning: node v: [vbm] capacity 1Gbit is above the slowest link "
                           "of its LAN (50Mbit)"), line
    assert campus.report(_topo(vbm={**vbm, "capacity": "40Mbit"})) == []
    # an access port slower than the trunks (the switch's port_rate) is the slowest link
    slow = _topo(trunks=(("sw1", "sw2", "50Mbit"),), vbm=vbm, switches=[
        {"name": "sw1", "port_rate": "10Mbit"}, {"name": "sw2"}, {"name": "sw3"}])
    assert campus.lan_rate(slow, "v", "lan") == 10_000_000
    # no shaped port on the VBM's LAN: nothing derived
    alone = _topo(trunks=(("sw1", "sw3", "10Mbit"),), vbm=vbm)
    assert campus.lan_rate(alone, "v", "lan") is None and campus.report(alone) == []


def test_management_network_is_checked_against_the_topology():
    t = _topo(lab={"management": "172.31.0.0/24"})
    assert t.lab.management == "172.31.0.0/24"
    assert mgmt.addresses(t.lab.management, t.nodes) == (
        "172.31.0.1/24", {"x": "172.31.0.2/24", "v": "172.31.0.3/24"})
    for lab, addresses, names, problem in [
        ({"management": "192.168.1.0/24"}, {"x": "192.168.1.7/24"}, ("x", "v"),
         "192.168.1.0/24 overlaps node x's address 192.168.1.7/24 (e0)"),
        ({"management": "fd00::/64"}, None, ("x", "v"), "want an IPv4 network"),
        ({"management": "10.9.0.0/31"}, None, ("x", "v"), "want an IPv4 network"),
        ({"management": "10.9.0.0/30"}, None, ("x", "v"), "no room for 2 nodes"),
        ({"management": "10.9.0.0/24"}, None, ("mgmt", "v"), "a node or switch is named"),
    ]:
        with pytest.raises(ConfigError) as e:
            _topo(lab=lab, addresses=addresses, names=names)
        assert problem in e.value.problem, str(e.value)
    # `vnet-lab up --prometheus` on a file without [lab] management: the default, checked
    clash = _topo(addresses={"x": "172.31.0.9/16"})
    with pytest.raises(ValueError, match="overlaps node x's address"):
        mgmt.network(clash, mgmt.DEFAULT_NETWORK)
    assert mgmt.network(_topo(), mgmt.DEFAULT_NETWORK) == mgmt.DEFAULT_NETWORK
    assert mgmt.network(_topo(), None) is None


def test_metrics_are_served_on_the_management_address():
    t = _topo(lab={"management": "172.31.0.0/24"})
    lab = SimpleNamespace(management=t.lab.management, topo=t)
    assert mgmt.render(lab, "x", {})["node"]["metrics"] == "172.31.0.2:9477"
    assert mgmt.render(lab, "v", {"node": {"metrics": "127.0.0.1:9100"}})["node"][
        "metrics"] == "0.0.0.0:9100"
    assert mgmt.render(lab, "v", {"node": {"metrics": "[::1]:9100"}})["node"][
        "metrics"] == "[::]:9100"
    assert mgmt.render(lab, "v", {"node": {"metrics": "10.1.1.1:9100"}})["node"][
        "metrics"] == "10.1.1.1:9100"                  # an address the user chose: kept
    off = SimpleNamespace(management=None, topo=t)
    assert mgmt.render(off, "x", {}) == {}


def test_prometheus_yml_has_every_daemon_labelled_with_its_node():
    t = _topo(lab={"management": "172.31.0.0/24"})
    cfgs = {n: SimpleNamespace(node=SimpleNamespace(metrics=("0.0.0.0", port)))
            for n, port in (("x", 9477), ("v", 9100))}
    lab = SimpleNamespace(management=t.lab.management, topo=t, configs=cfgs)
    assert mgmt.targets(lab) == {"x": "172.31.0.2:9477", "v": "172.31.0.3:9100"}
    text = mgmt.prometheus_yml(lab, interval=2)
    assert '- targets: ["172.31.0.2:9477"]\n        labels: {node: "x"}' in text
    assert '- targets: ["172.31.0.3:9100"]\n        labels: {node: "v"}' in text
    assert "scrape_interval: 2s" in text


# -- the example campus (etc/lab/campus.toml, docs/lab.md "A campus") -------------------------

def test_the_example_campus_is_what_docs_lab_md_says():
    from harness import ETC
    t = T.load(ETC / "lab" / "campus.toml")
    [uplink] = campus.trunk_links(t)
    assert (uplink.a.switch, uplink.b.switch, uplink.port_rate) == ("floor1", "floor2", 50_000_000)
    hosts = [n.name for n in t.nodes if n.name.startswith("h")]
    assert hosts == ["h1", "h2", "h3", "h4"]
    floors = {link.a.node: link.b.switch for link in t.links if link.a.node}
    assert {floors[h] for h in hosts} == {"floor1", "floor2"}       # hosts on both floors
    assert floors["r"] != floors["h3"]                              # r is across the uplink
    assert not t.node("legacy").has_router                          # the legacy host
    assert t.lab.management is not None
    # the VBM names no capacity: the lab derives the uplink's, and check says so
    assert campus.report(t) == ["node vbm: VBM capacity 50Mbit, the slowest link of its LAN "
                                "(derived: [vbm] capacity is not set)"]
    vbm = campus.render(t, "vbm", T.render_router(t, "vbm", "x-", "/tmp/x"))["vbm"]
    assert vbm["capacity"] == 50_000_000
    assert T.path_net(t).report()[1]                                # every path carries its MTU


def test_vnet_lab_check_reports_the_campus(capsys, tmp_path):
    from harness import ETC
    from vnet_router.lab import cli
    assert cli.main(["check", str(ETC / "lab" / "campus.toml")]) == 0
    out = capsys.readouterr().out
    assert "OK: 7 nodes (1 substrate router, 4 end-systems" in out
    assert "campus: node vbm: VBM capacity 50Mbit, the slowest link of its LAN" in out
    text = (ETC / "lab" / "campus.toml").read_text().replace('rebuild_time = 3',
                                                              'rebuild_time = 3\ncapacity = "1Gbit"')
    (tmp_path / "campus.toml").write_text(text)
    assert cli.main(["check", str(tmp_path / "campus.toml")]) == 0       # a warning only
    assert "campus: warning: node vbm: [vbm] capacity 1Gbit is above the slowest link of its " \
           "LAN (50Mbit)" in capsys.readouterr().out
