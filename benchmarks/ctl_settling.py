"""Settling time of the control plane: N simulated nodes, 20% control message loss.

    python3 benchmarks/ctl_settling.py [--nodes 1000] [--seed 1] [--loss 0.2]

Prints, for a LAN with room for the demand and for a contended LAN, the simulated time after
which no current rate or aggregate changed any more, the message counts, and the number of
invariant violations (must be 0).  The time includes the VBM's start-up rebuild (12 s in
which it grants no increase until every node reported what it holds -- Σ of its minima at
least; without it the VBM would hand out bandwidth before knowing the nodes' minima, and the
simulation shows the pools overrun).  Simulated time: the result does not depend on the machine.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vnet_router.control.sim import Simulation  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--loss", type=float, default=0.2)
    p.add_argument("--seconds", type=float, default=90)
    a = p.parse_args()
    for label, cap, rebuild in (("room", 10**12, 12.0), ("contended", 10**10, 12.0)):
        t0 = time.monotonic()
        sim = Simulation(a.nodes, seed=a.seed, loss=a.loss, lan_capacity=cap,
                         vbm_rebuild=rebuild)
        sim.run(a.seconds)
        st = sim.stats()
        st.pop("counters")
        st["scenario"], st["lan_capacity"], st["vbm_rebuild"] = label, cap, rebuild
        st["wall_seconds"] = round(time.monotonic() - t0, 1)
        print(json.dumps(st))
        if sim.violations:
            print("\n".join(sim.violations[:10]))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
