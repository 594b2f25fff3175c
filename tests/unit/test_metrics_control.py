"""The Prometheus collector exports the control plane: messages by type and outcome, event
counters, the VBM's allocations -- from ``status()['control']``, as ``vnetctl`` sees them."""
import asyncio
import shutil
import subprocess

from prometheus_client import CollectorRegistry, generate_latest

from vnet_router.wire import substrate as wire
from vnet_router.control.plane import ControlPlane
from vnet_router.wire import control as m
from vnet_router.datapath.select import DatapathPy as Datapath
from vnet_router.ops.metrics import Collector
from vnet_router.node.status import status
from vnet_router.model.tables import IfaceFacts, Tables

from harness import load_example

OURS, PEER = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"


def test_control_messages_and_vbm_allocations_are_exported():
    cfg = load_example("vbm.toml", keys=False)      # it feeds the VBM unsealed frames
    tables = Tables(cfg, {"eth0": IfaceFacts(2, OURS, 1500)})
    loop = asyncio.new_event_loop()
    try:
        dp = Datapath(tables, loop)
        dp.snap = tables.compile()
        sent = []
        dp.send_control = lambda ctx, payload, dst=None: sent.append(payload) or True
        cp = ControlPlane(cfg, tables, dp, None, loop)
        ctx = dp.snap.links["lan"]
        hello = m.Hello(node=7, incarnation=1, role=m.Role.NODE, name="x").pack()
        frame = wire.BROADCAST_MAC + PEER + b"\x88\xb5" + b"\x00\x00" + \
            len(hello).to_bytes(2, "big") + hello
        assert cp.on_control(ctx, memoryview(frame), 18, len(hello))
        garbage = b"\x07garbage"
        assert not cp.on_control(ctx, memoryview(frame[:18] + garbage), 18, len(garbage))
        cp._hellos()
        assert sent
        st = status(cfg, tables, dp, 0.0, cp)
    finally:
        loop.close()
    assert st["control"]["messages"] == {"hello": {"received": 1, "sent": 1},
                                         "unknown": {"malformed": 1}}
    assert st["control"]["malformed"] == 1
    reg = CollectorRegistry()
    reg.register(Collector(lambda: st))
    text = generate_latest(reg).decode()
    assert 'vnet_control_messages_total{outcome="received",type="hello"} 1.0' in text
    assert 'vnet_control_messages_total{outcome="sent",type="hello"} 1.0' in text
    assert 'vnet_control_messages_total{outcome="malformed",type="unknown"} 1.0' in text
    assert 'vnet_control_events_total{event="malformed"} 1.0' in text
    assert 'vnet_vbm_share_ratio{vnet_id="1"} 0.6' in text
    assert 'vnet_vbm_lan_capacity_bytes_per_second 1.25e+08' in text      # 1Gbit
    assert "vnet_vbm_active 0.0" in text                # rebuilding after its start
    if shutil.which("promtool"):          # the VBM's and the TM's rates lint clean
        r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True)
        assert (r.returncode, r.stdout + r.stderr) == (0, "")
