"""The demo: the LAN of the paper's Fig. 4 (``etc/lab/demo.toml``), built, checked, reported.

``run(...)`` builds the lab (progress lines on the way) and runs the checks below:
reachability inside each vNet, isolation between the two vNets that share 10.0.0.0/24, legacy
IP on the LAN, the substrate frames on the wire (tcpdump) and the 20 Mbit/s limit of blue's
virtual links (iperf3).  It prints a report table plus every node's substrate counters, tears
everything down and returns 0 only if every check came out as expected.  ``cli.py`` calls it
for ``vnet-lab demo``; the topology and what it means are described in ``docs/lab.md``.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError
from .lab import Lab, LabError

DEMO_TOPOLOGY = Path(__file__).resolve().parents[2] / "etc" / "lab" / "demo.toml"


@dataclass(frozen=True)
class Check:
    """Ping ``dst`` from ``node`` (in ``vnet``, or the node's own namespace if None)."""

    what: str
    node: str
    vnet: str | None
    dst: str
    reachable: bool

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

    def run(self, lab: Lab) -> tuple[str, bool]:
        if shutil.which("iperf3") is None:
            return "skipped: no iperf3", True
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

    def run(self, lab: Lab) -> tuple[str, bool]:
        if shutil.which("tcpdump") is None:
            return "skipped: no tcpdump", True
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
        return f"{len(good)}/{len(frames)} {_describe_frame(frames[0])}", len(good) == len(frames)


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
    WireCheck("green frames on the LAN", "h1", "green", "10.0.0.12", "ether proto 0x88b5",
              r"^(?!.*vlan).*ethertype [^,]*\(0x88b5\)", "untagged, 0x88b5"),
    RateCheck("blue h1 -> r TCP rate (20Mbit)", "h1", "blue", "r", "10.0.0.254",
              10_000_000, 21_000_000, "10-21 Mbit/s"),
    RateCheck("green h1 -> h2 TCP rate (no limit)", "h1", "green", "h2", "10.0.0.12",
              40_000_000, None, "> 40 Mbit/s"),
)


def _table(headers, rows) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


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


def run_checks(lab: Lab, checks=CHECKS, out=None) -> list[tuple[object, str, bool]]:
    out = out or sys.stdout
    results = []
    for c in checks:
        try:
            result, passed = c.run(lab)
        except LabError as e:
            result, passed = f"error: {e}", False
        results.append((c, result, passed))
        print(f"  check {c.what}: {result} -> {'PASS' if passed else 'FAIL'}",
              file=out, flush=True)
    return results


def run(topology: str | Path = DEMO_TOPOLOGY, *, workdir=None, keep_logs: bool = False,
        out=None) -> int:
    out = out or sys.stdout

    def progress(msg):
        print(f"  {msg}", file=out, flush=True)

    print(f"vnet-lab demo: building {topology}", file=out, flush=True)
    t0 = time.monotonic()
    lab = Lab(topology, workdir=workdir, keep_workdir=keep_logs, progress=progress)
    try:
        with lab:
            print(f"built in {time.monotonic() - t0:.1f} s; running checks", file=out, flush=True)
            # the first frames of a vNet also resolve ARP; give the daemons a moment of warm-up
            lab.ping("h1", "10.0.0.254", vnet="blue", count=1, wait=1.0)
            results = run_checks(lab, out=out)
            counters = _counters(lab)
            print("tearing down", file=out, flush=True)
    except (LabError, ConfigError) as e:
        print(f"vnet-lab demo: FAILED to build or run the lab: {e}", file=out, flush=True)
        return 1
    ok = all(p for _, _, p in results)
    bad_exit = {n: rc for n, rc in lab.daemon_exit.items() if rc != 0}

    print("", file=out)
    print("substrate counters (at the end of the checks)", file=out)
    print(_table(["node", "substrate link", "rx_pkts", "tx_pkts", "drops"], counters), file=out)
    print("", file=out)
    print(_table(["check", "expected", "result", "verdict"],
                 [[c.what, c.expected, res, "PASS" if p else "FAIL"] for c, res, p in results]),
          file=out)
    print("", file=out)
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
    passed = sum(p for _, _, p in results)
    verdict = "PASS" if ok and not bad_exit and not lab.cleanup_errors else "FAIL"
    print(f"{verdict}: {passed}/{len(results)} checks as expected", file=out, flush=True)
    return 0 if verdict == "PASS" else 1
