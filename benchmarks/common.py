"""What the benchmark modules share: the topology's MAC addresses and the result records.

``run.py`` measures with them, ``rows.py`` adds the rows for what users configure, and
``report.py`` reads them; nothing here touches the system.
"""
from __future__ import annotations

import bisect
import contextlib
import os
import platform
import re
import struct

from dataclasses import dataclass, field

MAC = {"g0": "02:b0:00:00:00:01", "r0": "02:b0:00:00:00:02", "r1": "02:b0:00:00:00:03",
       "s0": "02:b0:00:00:00:04", "g2": "02:b0:00:00:00:05", "r2": "02:b0:00:00:00:06"}
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
    cpu_all_us: float | None = None     # both cores' busy time per delivered (alone: offered)

    @property
    def ratio(self) -> float:
        return self.delivered / self.offered if self.offered else 0.0


def percentile(xs, p: float):
    """The ``p``-th percentile of ``xs`` (nearest rank), None if empty."""
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


@dataclass
class Latency:
    case: str
    rtts: list = field(default_factory=list)
    sent: int = 0

    def pct(self, p):
        x = percentile(self.rtts, p)
        return float("nan") if x is None else x


@dataclass
class Shaped:
    """A shaped virtual link's achieved rate while another vNet floods the same interface."""
    case: str
    size: int                   # the flood's frame size
    offered_bps: float          # what the shaped vNet offered (payload bits/s)
    achieved_bps: float         # what reached the sink (payload bits/s, as the shaper counts)
    flood_pps: float            # the other vNet's frames at the sink
    target_bps: float
    runs: list = field(default_factory=list)     # achieved bits/s of each run (None: failed)
    flood_alone_pps: float = 0.0    # the same flood, same router, the shaped vNet silent
    failed: str = ""            # why the case produced no numbers (a sender or router failed)

    @property
    def ratio(self) -> float:
        return self.achieved_bps / self.target_bps

    @property
    def flood_ratio(self) -> float:
        """The flood's rate beside the shaped link over its rate alone."""
        return self.flood_pps / self.flood_alone_pps if self.flood_alone_pps else 0.0


@dataclass
class Iso:
    """An isolation row (``isolation.py``): vNet B beside vNet A's flood, and alone."""
    case: str
    engine: str
    kind: str = ""              # flood, in_rate, garbage, tap
    switch_us: float | None = None      # the engine's cost per forwarded frame (VLI switch)
    failed: str = ""
    b_sent_alone: int = 0
    b_lost_alone: int = 0
    b_median_alone: float | None = None     # ping RTT, us
    b_p99_alone: float | None = None
    b_tcp_alone: float = 0.0                # iperf3 TCP, bits/s received
    b_sent_beside: int = 0
    b_lost_beside: int = 0
    b_median_beside: float | None = None
    b_p99_beside: float | None = None
    b_tcp_beside: float = 0.0
    a_offered: float = 0.0                  # A's frames/s
    a_delivered: float = 0.0
    cost_offered_us: float | None = None    # both cores, net of B and the generator
    cost_fwd_us: float | None = None
    cost_drop_us: float | None = None
    prog_ns: float | None = None            # the classifier program's time per frame it ran on
    b_median_runs: list = field(default_factory=list)   # B's median ratio in each run


@dataclass
class Idle:
    """The router's CPU time with no traffic."""
    case: str
    engine: str
    seconds: float
    percent: float              # of one core: (utime + stime) / wall time
    resolution: float = 0.0     # percent one clock tick of utime/stime is worth here


def core_busy(core: int) -> float:
    """Seconds core ``core`` spent not idle (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                return busy / os.sysconf("SC_CLK_TCK")
    return 0.0


def machine() -> str:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}"


@contextlib.contextmanager
def awake():
    """Both cores kept out of their halt state while held (PM QoS: ``/dev/cpu_dma_latency``
    0, as cyclictest does): an idle core's wake-up from halt (a VM exit here) otherwise adds
    to B's RTT alone, when the router's core idles between pings, what it does not add beside
    A, when that core is busy; an idle core then polls (still idle in /proc/stat)."""
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        os.write(fd, struct.pack("i", 0))
        yield
    finally:
        os.close(fd)


def trafgen(dev: str, cfg, gap: str | None = None, qdisc: bool = False) -> list[str]:
    """trafgen's command line: one worker (``-P 1``, which trafgen pins to CPU 0, the
    generator's core), out of ``dev``, the frames of ``cfg``; at full speed from its TX ring,
    or one frame every ``gap`` (``-t``: a blocking ``sendto`` each, then a sleep); ``qdisc``:
    through the device's queueing layer (TC egress and qdisc), as a vNet's stack sends,
    instead of straight to the driver."""
    return (["trafgen", "-o", dev, "-i", str(cfg), "-P", "1", "--no-sock-mem", "-Q"] +
            (["-t", gap] if gap else []) + (["-q"] if qdisc else []))


STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


@contextlib.contextmanager
def no_bpf_stats(progress=print):
    """``kernel.bpf_stats_enabled`` 0 while inside, as it was after: left at 1 (by hand, or by
    a run killed before 2026-12-08 while it had it on), it times every BPF program run with two
    clock reads, in every cost the benchmark measures, the kernel tier's above all."""
    try:
        with open(STATS_SYSCTL) as f:
            was = f.read().strip()
    except OSError:
        was = "0"
    if was == "0":
        yield
        return
    progress(f"benchmarks: {STATS_SYSCTL} was {was}: 0 for the run, {was} again after")
    with open(STATS_SYSCTL, "w") as f:
        f.write("0")
    try:
        yield
    finally:
        with open(STATS_SYSCTL, "w") as f:
            f.write(was)


def slice_pings(text: str, switches: list, settle: float) -> tuple[dict, dict]:
    """``ping -D`` output split by the slices ``switches`` began ([(time, A flooding)], in
    order): each ping counts for the slice it was sent in (the reply's time less its RTT; a
    lost one's: its sequence number's place between answered ones), except in the ``settle``
    seconds after a switch.  Returns (alone, beside): pings sent, received, RTTs in us."""
    sent = re.search(r"(\d+) packets transmitted", text)
    if sent is None:
        raise RuntimeError(f"ping: {text.strip()[-200:]}")
    replies = {int(q): (float(t) - float(ms) / 1000, float(ms) * 1000) for t, q, ms in
               re.findall(r"\[([\d.]+)\] .*icmp_seq=(\d+) .*time=([\d.]+) ms", text)}
    if len(replies) < 2:
        raise RuntimeError(f"ping: {len(replies)} replies of {sent.group(1)}")
    seqs = sorted(replies)
    starts = [ts for ts, _ in switches]
    step = (replies[seqs[-1]][0] - replies[seqs[0]][0]) / max(1, seqs[-1] - seqs[0])
    out = ({"sent": 0, "received": 0, "rtts": []}, {"sent": 0, "received": 0, "rtts": []})
    for q in range(1, int(sent.group(1)) + 1):
        if q in replies:
            t, rtt = replies[q]
        else:                               # lost: where its neighbours say it was sent
            near = min(seqs, key=lambda x: abs(x - q))
            t, rtt = replies[near][0] + (q - near) * step, None
        k = bisect.bisect_right(starts, t) - 1          # the slice it was sent in
        if k < 0 or t - starts[k] < settle:
            continue
        w = out[1 if switches[k][1] else 0]
        w["sent"] += 1
        if rtt is not None:
            w["received"] += 1
            w["rtts"].append(rtt)
    for w in out:
        w["rtts"].sort()
    return out
