"""The paper's campus mechanism, end to end: p2p substrate links ride 802.1p priority 5, and a
switch with priority queues keeps their reservation while a legacy host congests the LAN.

The demo's LAN (``etc/lab/demo.toml``: 100 Mbit/s switch ports) twice, the same measurement
each time (``demo.LanFloodCheck.measure``): legacy host lg floods every port at 200 Mbit/s
(frames to a MAC no one has) while blue (p2p, PCP 5, reserved 20 Mbit/s) runs TCP h1 -> r with
pings h2 -> r beside it, and green (multiaccess, untagged) sends 10 Mbit/s of UDP h3 -> h2.

- With priority queues: blue >= 0.9x its reservation, its pings lose < 1%.
- Without them (the control): the same flood takes blue below 0.5x: the emulation matters.

The switch works alike on both tiers (the vnet datapath only makes blue's frames): one tier.
"""
import pytest

from vnet_router.lab import demo

pytestmark = [pytest.mark.root, pytest.mark.one_tier]
RESERVED = 20_000_000


def _demo(priority_queues: bool) -> str:
    text = demo.DEMO_TOPOLOGY.read_text()
    assert "priority_queues = true" in text
    return text.replace("priority_queues = true", f"priority_queues = {str(priority_queues).lower()}")


CHECK = next(c for c in demo.CHECKS if isinstance(c, demo.LanFloodCheck))


@pytest.mark.parametrize("queues", [True, False], ids=["priority-queues", "no-queues"])
def test_blue_keeps_its_reservation_only_with_priority_queues(make_lab, queues):
    lab = make_lab(_demo(queues))
    assert lab.ping("h1", "10.0.0.254", vnet="blue", count=2).received == 2
    m = CHECK.measure(lab)
    print(f"priority queues {'on' if queues else 'off'}: blue {m['blue'] / 1e6:.1f} Mbit/s, "
          f"pings {m['loss']:g}% lost, green {m['best_effort'] / 1e6:.1f} Mbit/s "
          f"({m['be_loss']:.0f}% lost), flood {m['legacy'] / 1e6:.0f} Mbit/s, "
          f"port drops {m['port_drops']}")
    # the flood congested r's port: it offered twice the port rate, and r's port dropped
    assert m["legacy"] > 180e6 and m["port_drops"]["r-eth0"] > 10_000, m
    if queues:
        assert m["blue"] >= 0.9 * RESERVED, m["blue"]
        assert m["loss"] < 1.0, m["loss"]
    else:
        assert m["blue"] < 0.5 * RESERVED, m["blue"]
