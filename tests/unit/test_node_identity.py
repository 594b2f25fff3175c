"""Issue 26: one node identity (hex id and name) in the VBM's view and its metric labels; a
reload's list of changes names vNets by name and shows the VBM's shares it sets back; the
VBM's shares are replaced all or nothing.  No root, no sockets."""
from prometheus_client import CollectorRegistry, generate_latest

from vnet_router.control.vbm import VBM, AdmissionError
from vnet_router.model.config import loads
from vnet_router.node.changes import fixed_part as _fixed, table_diff as _table_diff
from vnet_router.ops.metrics import Collector

M = 1_000_000

BASE = """
[node]
name = "v"

[[substrate_link]]
id = "lan"
kind = "multiaccess"
interface = "eth0"

[[vnet]]
name = "blue"
id = 1

[vbm]
link = "lan"
capacity = "100Mbit"

[[vbm.share]]
vnet = 1
share = 0.5
"""


def test_vbm_view_keys_nodes_by_their_hex_id():
    vbm = VBM(lambda: 0.0, lan_capacity=100 * M, rebuild_time=0)
    vbm.admit(1, 0.5)
    from vnet_router.wire import control as m
    vbm.handle("p", m.AggRequest(node=851628420, vnet=1, current=M, want=M, minimum=M))
    assert list(vbm.view()["vnets"]["1"]["nodes"]) == ["32c2d184"]    # 851628420


def test_vbm_shares_are_replaced_all_or_nothing():
    vbm = VBM(lambda: 0.0, lan_capacity=100 * M)
    vbm.set_shares({1: 0.5, 2: 0.5})
    vbm.set_shares({1: 0.3, 2: 0.7})        # in any order: only the end result must fit
    assert vbm.shares == {1: 0.3, 2: 0.7}
    for bad in ({1: 0.6, 2: 0.7}, {1: 0.0}, {1: 1.5}):
        try:
            vbm.set_shares(bad)
        except AdmissionError:
            pass
        else:
            raise AssertionError(f"{bad} admitted")
        assert vbm.shares == {1: 0.3, 2: 0.7}
    vbm.set_shares({1: 0.3})
    assert vbm.shares == {1: 0.3} and 2 not in vbm.alloc


def test_reload_changes_name_vnets_and_shares_may_change():
    old = loads(BASE)
    new = loads(BASE.replace("share = 0.5", "share = 0.25") +
                '\n[[vnet]]\nname = "green"\nid = 2\n')
    assert _table_diff(old, new) == ["vbm share changed: vNet 1 0.5 -> 0.25",
                                     "vnet added: green"]
    assert _fixed(old.vbm) == _fixed(new.vbm)           # a reload may change only the shares
    assert _fixed(old.vbm) != _fixed(loads(BASE.replace('"100Mbit"', '"1Gbit"')).vbm)


class _Families:
    """A collector of the node's and the control plane's families of one status view."""

    def __init__(self, st):
        self.st = st

    def collect(self):
        yield from Collector._node(self.st)
        yield from Collector._control(self.st["control"])


def test_metric_labels_name_nodes_by_hex_id_and_name():
    st = {"node": "v", "node_id": "0a0b0c0d", "datapath": "reference",
          "datapath_stats": {}, "generation": 1, "drops": {}}
    st["control"] = {"messages": {}, "refused": {}, "allocations": {
        "outputs": [], "inputs": [], "aggregates": {}, "members": {},
        "vbm": {"state": "ACTIVE", "lan_capacity": 100 * M, "vnets": {"1": {
            "share": 0.5, "pool": 50 * M, "allocated": 2 * M, "nodes": {
                "32c2d184": {"aggregate": 2 * M, "minimum": M, "name": "x"}}}}}}}
    reg = CollectorRegistry()
    reg.register(_Families(st))
    text = generate_latest(reg).decode()
    assert 'vnet_info{datapath="reference",node="v",node_id="0a0b0c0d"} 1.0' in text
    assert ('vnet_vbm_node_aggregate_bytes_per_second{node_id="32c2d184",node_name="x",'
            'vnet_id="1"} 250000.0') in text
