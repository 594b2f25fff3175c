"""Settling time of the control plane: N simulated nodes, 20% control message loss.

    python3 benchmarks/ctl_settling.py [--nodes 1000] [--seed 1] [--loss 0.2]

Prints, for a LAN with room for the demand and for a contended LAN, the simulated time after
which no current rate or aggregate changed any more, the message counts, and the number of
invariant violations (must be 0).  Simulated time: the result does not depend on the machine.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vnet_router.ctlproto.sim import Simulation  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--loss", type=float, default=0.2)
    p.add_argument("--seconds", type=float, default=90)
    a = p.parse_args()
    for label, cap in (("room", 10**12), ("contended", 10**10)):
        t0 = time.monotonic()
        sim = Simulation(a.nodes, seed=a.seed, loss=a.loss, lan_capacity=cap)
        sim.run(a.seconds)
        st = sim.stats()
        st.pop("counters")
        st["scenario"], st["lan_capacity"] = label, cap
        st["wall_seconds"] = round(time.monotonic() - t0, 1)
        print(json.dumps(st))
        if sim.violations:
            print("\n".join(sim.violations[:10]))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
