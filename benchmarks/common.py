"""What the benchmark modules share: the topology's MAC addresses and the result records.

``run.py`` measures with them and ``report.py`` reads them; nothing here touches the
system.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MAC = {"g0": "02:b0:00:00:00:01", "r0": "02:b0:00:00:00:02", "r1": "02:b0:00:00:00:03",
       "s0": "02:b0:00:00:00:04"}
BELL = "02:b0:00:00:00:ff"


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


@dataclass
class Result:
    case: str
    size: int
    offered: float = 0.0
    delivered: float = 0.0
    cpu_us: float | None = None
    note: str = ""
    runs: list = field(default_factory=list)     # delivered pps of each run (median above)

    @property
    def ratio(self) -> float:
        return self.delivered / self.offered if self.offered else 0.0


@dataclass
class Latency:
    case: str
    rtts: list = field(default_factory=list)
    sent: int = 0

    def pct(self, p):
        if not self.rtts:
            return float("nan")
        s = sorted(self.rtts)
        return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]

