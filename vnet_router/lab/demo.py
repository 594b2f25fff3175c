"""The demo: the LAN of the paper's Fig. 4 (``etc/lab/demo.toml``), built, checked, reported.

``run(...)`` builds the lab (progress lines on the way) and runs the checks below:
reachability inside each vNet, isolation between the two vNets that share 10.0.0.0/24, legacy
IP on the LAN, the substrate frames on the wire (tcpdump), the 20 Mbit/s limit of blue's
virtual links (iperf3), that limit held while green floods the same LAN interface (both
vNets' rates sampled every 0.5 s and plotted to a PNG), and held again while a legacy host
floods the LAN at twice its switch's port rate (802.1p priority at the switch; green, best
effort, shares what is left with the flood; a second PNG).  A check whose tool (``tools``: ping,
tcpdump, iperf3) is not installed is not run: it is reported as SKIP with the reason, never as
PASS.  It prints a report table (drawn by ``ops/render.py``) plus every node's substrate
counters, tears everything down and returns 0 only if no check failed.  ``cli.py`` calls it
for ``vnet-lab demo``; the topology and what it means are described in ``docs/lab.md``.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from vnet_router.model.schema import ConfigError
from vnet_router.lab.lab import Lab, LabError, parse_ping
from vnet_router.ops import render, shipped

# shipped in the package (vnet_router/data/etc/lab/demo.toml, a copy of etc/lab/demo.toml), so
# the demo runs from a wheel as from the source tree
DEMO_TOPOLOGY = shipped.path("etc/lab/demo.toml")


@dataclass(frozen=True)
class Check:
    """Ping ``dst`` from ``node`` (in ``vnet``, or the node's own namespace if None)."""

    what: str
    node: str
    vnet: str | None
    dst: str
    reachable: bool
    tools: ClassVar[tuple[str, ...]] = ("ping",)    # programs it runs (SKIP without them)

    @property
    def expected(self) -> str:
        return "reachable" if self.reachable else "unreachable"

    def run(self, lab: Lab) -> tuple[str, bool]:
        r = lab.ping(self.node, self.dst, vnet=self.vnet, count=3, interval=0.2, wait=1.0)
        return str(r), r.ok == self.reachable


@dataclass(frozen=True)
class RateCheck:
    """TCP throughput (iperf3, 2 s) from ``node`` to ``server`` inside ``vnet``."""

    what: str
    node: str
    vnet: str
    server: str
    dst: str
    low: int                       # bit/s; the measured rate must lie in [low, high]
    high: int | None
    expected: str
    tools: ClassVar[tuple[str, ...]] = ("iperf3",)

    def run(self, lab: Lab) -> tuple[str, bool]:
        bps = lab.throughput(self.node, self.server, self.dst, vnet=self.vnet, seconds=2)
        ok = bps >= self.low and (self.high is None or bps <= self.high)
        return f"{bps / 1e6:.1f} Mbit/s", ok


@dataclass(frozen=True)
class WireCheck:
    """Ping inside ``vnet`` while tcpdump watches ``node``'s port on switch ``sw``: the
    substrate frames must look like ``pattern`` (tcpdump -e text) on the LAN."""

    what: str
    node: str
    vnet: str
    dst: str
    bpf: str                       # tcpdump filter, after "ether src NODE's MAC and"
    pattern: str                   # regex over tcpdump -e -nn output
    expected: str
    tools: ClassVar[tuple[str, ...]] = ("tcpdump", "ping")

    def run(self, lab: Lab) -> tuple[str, bool]:
        link = next(l for l in lab.topo.links if l.a.node == self.node and l.b.switch)
        flt = f"ether src {link.a.mac} and {self.bpf}"
        cap = lab.popen(link.b.switch, ["tcpdump", "-i", link.b.ifname, "-e", "-nn", "-l", "-c", "3", flt],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cap.stderr.readline()                   # "listening on ...": the capture is open
        lab.ping(self.node, self.dst, vnet=self.vnet, count=3, interval=0.1, wait=1.0)
        try:
            out, _ = cap.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            cap.kill()
            out, _ = cap.communicate()
        frames = [line for line in out.splitlines() if " > " in line and "ethertype" in line]
        if not frames:
            return "no substrate frames seen", False
        good = [line for line in frames if re.search(self.pattern, line)]
        bad = [line for line in frames if line not in good]
        return (f"{len(good)}/{len(frames)} {_describe_frame(frames[0])}" +
                (f"; unexpected: {bad[0].strip()[:160]}" if bad else ""), not bad)


@dataclass(frozen=True)
class FloodCheck:
    """The guarantee under load: TCP in ``vnet`` from ``node`` to ``dst`` while vNet ``flood``
    sends UDP as fast as iperf3 can from the same node over the same LAN interface.  Samples
    both vNets' output rates at ``node`` every 0.5 s (from its daemon's counters) and plots
    them to ``plot`` (PNG) when matplotlib is there."""

    what: str
    node: str
    vnet: str
    server: str
    dst: str
    flood: str
    flood_server: str
    flood_dst: str
    guaranteed: int                # bit/s
    seconds: float = 8.0
    plot: str | None = "vnet-demo-rates.png"
    tools: ClassVar[tuple[str, ...]] = ("iperf3",)     # the plot also wants matplotlib

    @property
    def expected(self) -> str:
        return f">= {0.85 * self.guaranteed / 1e6:g} Mbit/s while flooded"

    def run(self, lab: Lab) -> tuple[str, bool]:
        procs = [
            lab.popen(self.server, ["iperf3", "-s", "-1", "-B", self.dst, "-p", "5301"],
                      vnet=self.vnet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            lab.popen(self.flood_server, ["iperf3", "-s", "-1", "-B", self.flood_dst,
                                          "-p", "5302"], vnet=self.flood,
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        time.sleep(0.5)
        t = self.seconds
        procs.append(lab.popen(self.node, ["iperf3", "-c", self.flood_dst, "-p", "5302", "-u",
                                           "-b", "1G", "-t", str(t + 2)], vnet=self.flood,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        procs.append(lab.popen(self.node, ["iperf3", "-c", self.dst, "-p", "5301",
                                           "-t", str(t)], vnet=self.vnet,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        series = self._sample(lab, t + 2.0)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        # judge the seconds when both ran: the TCP flow's lifetime, minus its slow start
        both = [(ts, r[self.vnet], r[self.flood]) for ts, r in series if 2.0 <= ts <= t + 0.5]
        if not both:
            return "no samples", False
        blue = sorted(b for _, b, _ in both)[len(both) // 2]
        green = sorted(g for _, _, g in both)[len(both) // 2]
        note = ""
        if self.plot:
            note = "; " + _plot(series, self, self.plot)
        ok = blue >= 0.85 * self.guaranteed and green > self.guaranteed
        return (f"{self.vnet} {blue / 1e6:.1f} Mbit/s (median) while {self.flood} "
                f"{green / 1e6:.0f} Mbit/s{note}"), ok

    def _sample(self, lab: Lab, seconds: float):
        def totals():
            st = lab.control(self.node)
            acc = {self.vnet: 0, self.flood: 0}
            for v in st["virtual_links"]:
                if v["direction"] == "out" and v["vnet"] in acc:
                    acc[v["vnet"]] += v["bytes"]
            return time.monotonic(), acc
        return _rate_series(totals, seconds)[0]


def _rate_series(totals, seconds: float):
    """Sample ``totals()`` -> (monotonic time, {key: bytes}) every 0.5 s for ``seconds``:
    ([(t since start, {key: bit/s over the last step})], the first totals, the last)."""
    t0, first = totals()
    start, series, prev = t0, [], first
    while time.monotonic() - start < seconds:
        time.sleep(0.5)
        t1, cur = totals()
        series.append((t1 - start, {k: (cur[k] - prev[k]) * 8 / (t1 - t0) for k in cur}))
        t0, prev = t1, cur
    return series, first, prev


@dataclass(frozen=True)
class LanFloodCheck:
    """The LAN's part of the guarantee (the paper's campus design): legacy host ``legacy``
    floods the LAN at ``flood_rate`` (``lab/flood.py``: frames to a MAC no one has, so switch
    ``switch`` sends them out of every port, twice the port rate) while vNet ``vnet`` runs TCP
    from ``node`` to ``server`` (its reservation ``guaranteed``, p2p, PCP 5) with a ping stream
    beside it from ``pinger``, and best-effort vNet ``best_effort`` sends ``be_rate`` of UDP
    from ``be_node`` to ``be_server``, whose switch port the flood congests too.  Passes if
    ``vnet`` holds ``share`` of its reservation and its pings lose < 1%, while
    ``best_effort`` shares what is left with the flood: it gets through, and loses about what
    the port loses (within 20 points; best effort has no priority over legacy traffic).
    Rates are sampled every 0.5 s (received at the servers' daemons; legacy: what the flooder
    sent) and plotted to ``plot``."""

    what: str
    node: str
    vnet: str
    server: str
    dst: str
    pinger: str
    best_effort: str
    be_node: str
    be_server: str
    be_dst: str
    legacy: str
    switch: str
    guaranteed: int                # bit/s
    flood_rate: int = 200_000_000
    be_rate: int = 10_000_000
    be_iface: str = "green0"
    share: float = 0.9
    seconds: float = 6.0
    plot: str | None = "vnet-demo-lan.png"
    tools: ClassVar[tuple[str, ...]] = ("iperf3", "ping")

    @property
    def expected(self) -> str:
        return (f"{self.vnet} >= {self.share * self.guaranteed / 1e6:g} Mbit/s, pings < 1% "
                f"lost; {self.best_effort} loses what its port loses")

    def measure(self, lab: Lab) -> dict:
        """Run the flood and the flows: ``vnet`` (median bit/s received past TCP's slow
        start), ``best_effort`` (median bit/s received), ``legacy`` (bit/s the flooder sent),
        ``loss`` (the pings', %), ``be_loss`` (the best-effort flow's: 1 - received / sent,
        from the two daemons' counters, %), ``port_loss`` (``be_server``'s switch port's, %),
        ``series``, ``port_drops`` (frames, by port)."""
        t = self.seconds
        # neighbours resolved before the flood (a flooded port loses half of ARP as well)
        for node, vnet, dst in ((self.node, self.vnet, self.dst),
                                (self.pinger, self.vnet, self.dst),
                                (self.be_node, self.best_effort, self.be_dst)):
            lab.ping(node, dst, vnet=vnet, count=1, wait=1.0)
        be_mac = lab.exec(self.be_server, ["cat", f"/sys/class/net/{self.be_iface}/address"],
                          vnet=self.best_effort).stdout.strip()
        port = next(ln.b.ifname for ln in lab.topo.links
                    if ln.a.node == self.be_server and ln.b.switch == self.switch)
        stats0 = lab.switch_stats(self.switch)

        def flood(node, iface, rate, vnet=None, *extra):
            return lab.popen(node, [sys.executable, "-m", "vnet_router.lab.flood", iface,
                                    "--rate", str(rate), *extra], vnet=vnet,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        server = lab.popen(self.server, ["iperf3", "-s", "-1", "-B", self.dst, "-p", "5311"],
                           vnet=self.vnet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        legacy = flood(self.legacy, "eth0", self.flood_rate)
        # best effort: UDP without a control channel (iperf3's would not survive the loss)
        be = flood(self.be_node, self.be_iface, self.be_rate, self.best_effort,
                   "--dst", be_mac, "--size", "1000")
        time.sleep(0.5)                              # the server listens; the floods are on
        client = lab.popen(self.node, ["iperf3", "-c", self.dst, "-p", "5311", "-t", str(t)],
                           vnet=self.vnet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ping = lab.popen(self.pinger, ["ping", "-n", "-q", "-i", "0.02", "-w",
                                       str(int(t) - 1), self.dst], vnet=self.vnet,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs = [client, server, ping, legacy, be]
        try:
            series, sent_be, got_be = self._sample(lab, t + 0.5)
            for p in (legacy, be):                   # the floods end with the window
                p.send_signal(signal.SIGTERM)
            legacy_out, _ = legacy.communicate(timeout=10)
            stats = lab.switch_stats(self.switch)
            ping_out, _ = ping.communicate(timeout=t + 10)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        drops = {k: v["drops"] - stats0[k]["drops"] for k, v in stats.items()}
        sent = stats[port]["sent_packets"] - stats0[port]["sent_packets"]
        flooded = re.search(r"\(([\d.]+) Mbit/s\)", legacy_out or "")
        if flooded is None:
            raise LabError(f"the flood from {self.legacy} failed: {(legacy_out or '')[-300:]}")
        both = [r for ts, r in series if 1.5 <= ts <= t]       # past TCP's slow start
        if not both or not sent_be:
            raise LabError(f"no rate samples, or {self.best_effort} sent nothing")
        med = lambda k: sorted(r[k] for r in both)[len(both) // 2]     # noqa: E731
        return {"blue": med(self.vnet), "best_effort": med(self.best_effort),
                "legacy": float(flooded.group(1)) * 1e6, "loss": parse_ping(ping_out).loss,
                "be_loss": 100 * (1 - got_be / sent_be),
                "port_loss": 100 * drops[port] / max(1, drops[port] + sent),
                "series": series, "port_drops": drops}

    def run(self, lab: Lab) -> tuple[str, bool]:
        m = self.measure(lab)
        ok = (m["blue"] >= self.share * self.guaranteed and m["loss"] < 1.0
              and m["best_effort"] > 0 and abs(m["be_loss"] - m["port_loss"]) < 20)
        note = "; " + _plot_lan(m["series"], self, self.plot) if self.plot else ""
        return (f"{self.vnet} {m['blue'] / 1e6:.1f} Mbit/s, pings {m['loss']:g}% lost; "
                f"{self.best_effort} {m['best_effort'] / 1e6:.1f} of "
                f"{self.be_rate / 1e6:g} Mbit/s ({m['be_loss']:.0f}% lost, its port "
                f"{m['port_loss']:.0f}%); legacy {m['legacy'] / 1e6:.0f} Mbit/s offered{note}"), ok

    def _sample(self, lab: Lab, seconds: float):
        """(series of (t, bit/s received by vNet, legacy's sent)), best effort's bytes sent
        and received over the whole window)."""
        def totals():
            acc = {self.vnet: 0, self.best_effort: 0, "be_sent": 0}
            for node, vnet, direction, key in (
                    (self.server, self.vnet, "in", self.vnet),
                    (self.be_server, self.best_effort, "in", self.best_effort),
                    (self.be_node, self.best_effort, "out", "be_sent")):
                for v in lab.control(node)["virtual_links"]:
                    if v["direction"] == direction and v["vnet"] == vnet:
                        acc[key] += v["bytes"]
            acc["legacy"] = int(lab.exec(self.legacy, ["cat", "/sys/class/net/eth0/statistics/"
                                                        "tx_bytes"]).stdout or 0)
            return time.monotonic(), acc
        series, first, last = _rate_series(totals, seconds)
        return (series, last["be_sent"] - first["be_sent"],
                last[self.best_effort] - first[self.best_effort])


def _pyplot():
    """matplotlib.pyplot on the Agg backend (files, no display), or None without it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _plot_lan(series, check: LanFloodCheck, path: str) -> str:
    plt = _pyplot()
    if plt is None:
        return "no plot (matplotlib missing)"
    ts = [t for t, _ in series]
    fig, ax = plt.subplots(figsize=(8, 4))
    for key, color, label in (
            (check.vnet, "tab:blue", f"{check.vnet} (p2p, PCP 5, reserved "
                                     f"{check.guaranteed / 1e6:g} Mbit/s): received"),
            (check.best_effort, "tab:green", f"{check.best_effort} (multiaccess, best effort, "
                                             f"{check.be_rate / 1e6:g} Mbit/s UDP): received"),
            ("legacy", "tab:gray", f"legacy flood from {check.legacy}: offered")):
        ax.plot(ts, [r[key] / 1e6 if r[key] > 0 else float("nan") for _, r in series],
                color=color, marker=".", label=label)
    ax.axhline(check.guaranteed / 1e6, color="tab:blue", linestyle="--", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("Mbit/s (log)")
    ax.set_title(f"vnet demo: the LAN flooded at {check.flood_rate / 1e6:g} Mbit/s "
                 f"(100 Mbit/s ports, 802.1p queues)")
    ax.legend(loc="center right", fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot {Path(path).resolve()}"


def _plot(series, check: "FloodCheck", path: str) -> str:
    plt = _pyplot()
    if plt is None:
        return "no plot (matplotlib missing)"
    ts = [t for t, _ in series]
    fig, ax = plt.subplots(figsize=(8, 4))

    def mbit(vnet):        # an idle sample has no place on a log scale
        return [r[vnet] / 1e6 if r[vnet] > 0 else float("nan") for _, r in series]
    ax.plot(ts, mbit(check.vnet), color="tab:blue", marker=".",
            label=f"{check.vnet} (TCP, guaranteed {check.guaranteed / 1e6:g} Mbit/s)")
    ax.plot(ts, mbit(check.flood), color="tab:green", marker=".",
            label=f"{check.flood} (UDP flood, 1 Gbit/s offered)")
    ax.axhline(check.guaranteed / 1e6, color="tab:blue", linestyle="--", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("Mbit/s sent by " + check.node + " (log)")
    ax.set_title("vnet demo: two vNets on one LAN interface")
    ax.legend(loc="center right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot {Path(path).resolve()}"


def _describe_frame(line: str) -> str:
    vlan = re.search(r"vlan (\d+), p (\d+)", line)
    types = re.findall(r"ethertype [^,]*?\((0x[0-9a-f]+)\)", line)
    inner = types[-1] if types else "?"
    return (f"VLAN {vlan.group(1)} PCP {vlan.group(2)}, {inner}" if vlan
            else f"untagged, {inner}")


CHECKS = (
    Check("blue h1 -> h2 (via r's bridge)", "h1", "blue", "10.0.0.2", True),
    Check("blue h1 -> r", "h1", "blue", "10.0.0.254", True),
    Check("blue h3 -> h2 (via r's bridge)", "h3", "blue", "10.0.0.2", True),
    Check("green h1 -> h2", "h1", "green", "10.0.0.12", True),
    Check("green h2 -> h3", "h2", "green", "10.0.0.13", True),
    Check("blue h1 -> 10.0.0.12 (green only)", "h1", "blue", "10.0.0.12", False),
    Check("green h1 -> 10.0.0.254 (blue only)", "h1", "green", "10.0.0.254", False),
    Check("legacy h1 -> h2 on the LAN", "h1", None, "192.168.77.2", True),
    # blue's output virtual links are shaped to 20 Mbit/s; green's are unlimited
    # what the substrate puts on the wire (Fig. 4): blue p2p tagged, green multiaccess untagged
    WireCheck("blue frames on the LAN", "h1", "blue", "10.0.0.254", "vlan 10",
              r"vlan 10, p 5, ethertype [^,]*\(0x88b5\)", "VLAN 10 PCP 5, 0x88b5"),
    # (on veth the kernel strips the tag before the capture filter runs, so "ether proto" alone
    # also matches blue's tagged frames; "not vlan" reads the stripped tag: a tagged green frame
    # is then not seen at all, and the check fails with "no substrate frames seen")
    WireCheck("green frames on the LAN", "h1", "green", "10.0.0.12",
              "ether proto 0x88b5 and not vlan",
              r"^(?!.*vlan).*ethertype [^,]*\(0x88b5\)", "untagged, 0x88b5"),
    RateCheck("blue h1 -> r TCP rate (20Mbit)", "h1", "blue", "r", "10.0.0.254",
              10_000_000, 21_000_000, "10-21 Mbit/s"),
    RateCheck("green h1 -> h2 TCP rate (no limit)", "h1", "green", "h2", "10.0.0.12",
              40_000_000, None, "> 40 Mbit/s"),
    FloodCheck("blue h1 -> r TCP while green floods", "h1", "blue", "r", "10.0.0.254",
               "green", "h2", "10.0.0.12", 20_000_000),
    # the LAN's part: a legacy host floods every switch port at twice its rate; blue's
    # priority (PCP 5) keeps its reservation at r's port, green shares h2's with the flood
    LanFloodCheck("blue h1 -> r TCP while a legacy host floods the LAN", "h1", "blue", "r",
                  "10.0.0.254", "h2", "green", "h3", "h2", "10.0.0.12", "lg", "sw",
                  20_000_000),
)


def _counters(lab: Lab) -> list[list[str]]:
    rows = []
    for node in lab.configs:
        try:
            st = lab.control(node)
        except Exception as e:          # the report must not die on a daemon hiccup
            rows.append([node, "-", "-", "-", f"show failed: {e}"])
            continue
        for s in st.get("substrate_links", []):
            drops = ",".join(f"{k}={n}" for k, n in sorted(s.get("drops", {}).items())) or "-"
            rows.append([node, f"{s.get('id')} ({s.get('kind')})", str(s.get("rx_packets", "?")),
                         str(s.get("tx_packets", "?")), drops])
    return rows


PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
_VERDICT_STYLE = {PASS: "green", FAIL: "bold red", SKIP: "yellow"}


def missing_tools(check) -> list[str]:
    """The programs ``check`` runs that are not installed."""
    return [t for t in check.tools if shutil.which(t) is None]


def run_checks(lab: Lab, checks=CHECKS, out=None) -> list[tuple[object, str, str]]:
    """Run ``checks``: (check, result, PASS|FAIL|SKIP) each.  A check whose tools are missing
    is not run: SKIP, the result names what is missing."""
    out = out or sys.stdout
    results = []
    for c in checks:
        missing = missing_tools(c)
        if missing:
            result, verdict = "not run: " + ", ".join(f"no {t}" for t in missing), SKIP
        else:
            try:
                result, passed = c.run(lab)
            except LabError as e:
                result, passed = f"error: {e}", False
            verdict = PASS if passed else FAIL
        results.append((c, result, verdict))
        print(f"  check {c.what}: {result} -> {verdict}", file=out, flush=True)
    return results


def report_table(results):
    """The table ``check | expected | result | verdict``."""
    return render.table(["check", "expected", "result", "verdict"],
                        [[c.what, c.expected, res, render.cell(v, _VERDICT_STYLE[v])]
                         for c, res, v in results])


def summary(results, clean: bool = True) -> str:
    """The last line: PASS only if no check failed (and ``clean``: daemons and cleanup fine);
    skipped checks are counted apart, never as passed."""
    n = {v: sum(1 for _, _, x in results if x == v) for v in (PASS, FAIL, SKIP)}
    verdict = PASS if clean and not n[FAIL] else FAIL
    line = f"{verdict}: {n[PASS]}/{len(results)} checks as expected"
    if n[SKIP]:
        line += f", {n[SKIP]} skipped (" + "; ".join(
            f"{c.what}: {res}" for c, res, v in results if v == SKIP) + ")"
    return line


def _plot_path(plot: str | None, check) -> str | None:
    """``plot`` for the first flood check; ``NAME-lan.png`` beside it for the LAN's."""
    if plot is None or not isinstance(check, LanFloodCheck):
        return plot
    p = Path(plot)
    return str(p.with_name(f"{p.stem}-lan{p.suffix}"))


def run(topology: str | Path = DEMO_TOPOLOGY, *, workdir=None, keep_logs: bool = False,
        out=None, plot: str | None = "vnet-demo-rates.png", prefix: str | None = None) -> int:
    out = out or sys.stdout
    checks = tuple(dataclasses.replace(c, plot=_plot_path(plot, c))
                   if isinstance(c, (FloodCheck, LanFloodCheck)) else c for c in CHECKS)

    def progress(msg):
        print(f"  {msg}", file=out, flush=True)

    print(f"vnet-lab demo: building {topology}", file=out, flush=True)
    t0 = time.monotonic()
    try:
        lab = Lab(topology, workdir=workdir, keep_workdir=keep_logs, progress=progress,
                  prefix=prefix)
    except LabError as e:
        print(f"vnet-lab demo: {e}", file=out, flush=True)
        return 2
    try:
        with lab:
            print(f"built in {time.monotonic() - t0:.1f} s; running checks", file=out, flush=True)
            # the first frames of a vNet also resolve ARP; give the daemons a moment of warm-up
            lab.ping("h1", "10.0.0.254", vnet="blue", count=1, wait=1.0)
            results = run_checks(lab, checks, out=out)
            counters = _counters(lab)
            print("tearing down", file=out, flush=True)
    except (LabError, ConfigError) as e:
        print(f"vnet-lab demo: FAILED to build or run the lab: {e}", file=out, flush=True)
        return 1
    bad_exit = {n: rc for n, rc in lab.daemon_exit.items() if rc != 0}

    render.write(out, "", render.table(["node", "substrate link", "rx_pkts", "tx_pkts", "drops"],
                                       counters, "substrate counters (at the end of the checks)"),
                 "", report_table(results), "")
    if bad_exit:
        print("daemons that did not exit cleanly: "
              + ", ".join(f"{n} (status {rc})" for n, rc in bad_exit.items()), file=out)
    if lab.leftovers:
        print("namespaces the daemons left behind (removed by the lab): "
              + ", ".join(lab.leftovers), file=out)
    if lab.cleanup_errors:
        print("cleanup problems: " + "; ".join(lab.cleanup_errors), file=out)
    if keep_logs or workdir:
        print(f"configs and daemon logs kept in {lab.workdir}", file=out)
    line = summary(results, clean=not bad_exit and not lab.cleanup_errors)
    print(line, file=out, flush=True)
    return 0 if line.startswith(PASS) else 1
