"""pps benchmark suite: ``python3 -m benchmarks.run`` (root; trafgen from Debian's netsniff-ng).

Topology, built fresh for every case in namespaces named ``vl<pid>b-*`` and always removed::

    gen ns  g0 ==veth== r0  router ns  r1 ==veth== s0  sink ns

trafgen (pinned to core 0) sends substrate frames on g0 (802.1Q VLAN 10, EtherType 0x88B5,
VLI 100); the forwarder under test runs in the router ns pinned to core 1; the case runs for a
fixed time (TAP -> substrate: trafgen in the vNet sends through the TAP's queueing layer,
``-q``, as the vNet's stack does, where the router's TAP capture takes frames at TC egress;
offered adds what it took).  offered = g0 tx (+ tx drops), delivered = s0 rx (or the TAP's
counter), ratio,
and router CPU-us per delivered packet = busy time of core 1 (user+sys+softirq from
/proc/stat) / delivered -- the bridge and tc mirred do much of their work in the generator's
softirq on core 0, so their CPU column undercounts.

Cases: the generator alone (nothing attached at r0: its full rate), Linux bridge, tc mirred,
reference datapath, fast path (pass-through VLI switch on p2p
VLAN links), fast path substrate->TAP and TAP->substrate (plus a bare Python recv + os.write
loop into a TAP as the yardstick), fast path with 1,000 virtual links and 64 substrate links;
at 64 and 1500 bytes.  Then ping latency (median / p99) through the bridge and through the
fast-path router (on the end-systems' core and on the other one), with vnet end-systems on
both sides, all measured in alternating rounds.  Writes docs/benchmarks.md and a PNG.

Rows for what users configure are in ``rows.py`` (the router on ``--datapath``): (g)-(k) rated
VLI switch, rated TAP in and out, TAP -> multiaccess LAN, UDP tunnels, each with its ratio to
the bridge of the same run (a selected row brings the bridge along); (l) a 20 Mbit/s shaped
link beside a flood; (n) idle router CPU; and in the latency part the C relay (``crelay.c``).
Rows (o), isolation under overload, are in ``isolation.py`` (``--only isolation``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import isolation, report, rows
from benchmarks.common import (BELL, MAC, Latency, Result, Shaped, core_busy, mac_bytes, machine,
                               no_bpf_stats, trafgen)
from benchmarks.report import BASELINE, FWD_CORE, GEN_CORE, ratios, table
from vnet_router.ops import netlink

ROOT = Path(__file__).resolve().parents[1]
_b = mac_bytes


class Bench:
    def __init__(self, seconds: float, progress=print, tag="b"):
        self.seconds = seconds
        self.prefix = f"vl{os.getpid()}{tag}-"
        self.progress = progress
        self.work = Path(tempfile.mkdtemp(prefix="vnet-bench-"))
        self.procs: list[subprocess.Popen] = []
        self.code = ROOT        # the source tree the router runs from (``--baseline``: another)

    # -- plumbing -------------------------------------------------------------------------------

    def ns(self, name):
        return self.prefix + name

    def sh(self, ns, *argv, check=True, **kw):
        cmd = ["ip", "netns", "exec", self.ns(ns), *argv] if ns else list(argv)
        r = subprocess.run(cmd, capture_output=True, text=True, **kw)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        return r

    def build(self):
        for n in ("gen", "rtr", "sink"):
            netlink.netns_create(self.ns(n))
        netlink.veth_create_between("g0", self.ns("gen"), "r0", self.ns("rtr"),
                                    mac=MAC["g0"], peer_mac=MAC["r0"])
        netlink.veth_create_between("r1", self.ns("rtr"), "s0", self.ns("sink"),
                                    mac=MAC["r1"], peer_mac=MAC["s0"])
        for ns, dev in (("gen", "g0"), ("rtr", "r0"), ("rtr", "r1"), ("sink", "s0")):
            self.sh(ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", check=False)

    def teardown(self):
        for p in list(self.procs):          # stop() removes from the list
            self.stop(p)
        self.procs.clear()
        for n in netlink.netns_list():
            if n.startswith(self.prefix):
                try:
                    netlink.netns_remove(n)
                except OSError:
                    pass

    def popen(self, ns, argv, core=None, env=None, log=None):
        cmd = ["nsenter", f"--net={netlink.NETNS_DIR}/{self.ns(ns)}"]
        if core is not None:
            cmd += ["taskset", "-c", str(core)]
        out = open(log, "w") if log else subprocess.DEVNULL
        p = subprocess.Popen(cmd + list(argv), stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGINT):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
                p.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stats(self, ns, dev):
        r = self.sh(ns, "ip", "-s", "-j", "link", "show", "dev", dev)
        s = json.loads(r.stdout)[0]["stats64"]
        return s["rx"], s["tx"]

    # -- forwarders -----------------------------------------------------------------------------

    def router(self, cfg: str, datapath: str, name="r", core=None):
        path = self.work / f"{name}.toml"
        sock = self.work / f"{name}.sock"
        # path_mtu_interval = 0: the router under test faces trafgen and the sink (or the
        # bridge, a relay), none of which answers a path MTU notice, so every start waited its
        # full start_wait (2.25 s) for nothing; the notices (a frame per link every 2 s) and
        # the TAPs' path MTU (the same on every veth here) are no part of what is measured
        path.write_text(f'[node]\nname = "{name}"\ncontrol_socket = "{sock}"\n'
                        f'log_level = "info"\ndatapath = "{datapath}"\n'
                        'path_mtu_interval = 0\n' + cfg)
        env = dict(os.environ, PYTHONPATH=str(self.code), VNET_DATAPATH=datapath)
        log = self.work / f"{name}.log"
        p = self.popen("rtr" if name == "r" else name, [sys.executable, "-m", "vnet_router.node.daemon",
                                                        "-c", str(path)],
                       core=core if core is not None else FWD_CORE if name == "r" else GEN_CORE,
                       env=env, log=log)
        from vnet_router.node import api as control
        deadline = time.time() + 15
        while time.time() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"router {name} exited: {log.read_text()[-2000:]}")
            try:
                show = control.request(str(sock), "show", timeout=1.0)
                if show.get("datapath") != datapath:
                    raise RuntimeError(f"router {name} runs {show.get('datapath')}, not {datapath}")
                return p
            except (OSError, ValueError, KeyError, control.ControlError):
                time.sleep(0.1)
        raise RuntimeError(f"router {name} not ready: {log.read_text()[-2000:]}")

    def p2p(self, lid, dev, peer, vlan):
        return (f'[[substrate_link]]\nid = "{lid}"\nkind = "p2p"\ninterface = "{dev}"\n'
                f'peer_mac = "{peer}"\nvlan = {vlan}\n')

    def switch_cfg(self, extra_links=0, extra_vlinks=0):
        cfg = self.p2p("in", "r0", MAC["g0"], 10) + self.p2p("out", "r1", MAC["s0"], 20)
        sw = ('[[switch]]\nvnet = "gold"\nin_link = "{}"\nin_vli = {}\nout_link = "{}"\n'
              'out_vli = {}\n')
        cfg += sw.format("in", 100, "out", 200)
        links_in, links_out = ["in"], ["out"]
        for i in range(extra_links // 2):
            cfg += self.p2p(f"in{i}", "r0", f"02:b1:00:00:{i // 256:02x}:{i % 256:02x}", 10 + i % 50)
            cfg += self.p2p(f"out{i}", "r1", f"02:b2:00:00:{i // 256:02x}:{i % 256:02x}",
                            20 + i % 50)
            links_in.append(f"in{i}")
            links_out.append(f"out{i}")
        for j in range(extra_vlinks):
            a, b = links_in[j % len(links_in)], links_out[j % len(links_out)]
            cfg += sw.format(a, 1000 + j, b, 3000 + j)
        return cfg

    def tap_cfg(self):
        return (self.p2p("in", "r0", MAC["g0"], 10) + self.p2p("out", "r1", MAC["s0"], 20) +
                f'[[vnet]]\nname = "blue"\nid = 1\nnamespace = "{self.ns("blue")}"\n'
                '[[interface]]\nvnet = "blue"\nname = "t0"\nsubstrate_link = "in"\n'
                f'in_vli = 100\nout_vli = 101\nmac = "{MAC["s0"]}"\n')

    # -- traffic --------------------------------------------------------------------------------

    def trafgen_cfg(self, size: int, dst: str, src: str, tagged=True, substrate=True) -> Path:
        """One frame of ``size`` bytes (no FCS): [tag 10] 0x88B5 VLI 100 LEN payload."""
        head = list(_b(dst) + _b(src))
        if tagged:
            head += [0x81, 0x00, 0x00, 0x0A]
        if substrate:
            plen = size - len(head) - 6
            head += [0x88, 0xB5, 0x00, 0x64, plen >> 8, plen & 0xFF]
            # payload: an inner Ethernet frame (dst = the TAP's MAC in the TAP cases)
            inner = list(_b(MAC["s0"]) + _b("02:b0:00:00:00:aa")) + [0x88, 0xB6]
            body = inner + [0] * (plen - len(inner))
        else:
            body = [0x88, 0xB6] + [0] * (size - len(head) - 2)
        path = self.work / f"frame{size}{'t' if tagged else ''}{'s' if substrate else ''}.cfg"
        path.write_text("{ " + ", ".join(f"0x{x:02x}" for x in head + body) + " }\n")
        return path

    def offer(self, gen_ns, gen_dev, cfg: Path, count_ns, count_dev, count_rx=True,
              qdisc=False):
        """Run trafgen for the fixed time; (offered pps, delivered pps, core-1 busy us).
        ``qdisc``: trafgen sends through the device's queueing layer (TC egress and qdisc),
        as a vNet's stack does, instead of straight to the driver."""
        tg = self.popen(gen_ns, trafgen(gen_dev, cfg, qdisc=qdisc), core=GEN_CORE)
        time.sleep(min(1.0, self.seconds / 3))           # ramp up
        if tg.poll() is not None:
            raise RuntimeError("trafgen exited at once")
        g0 = self.stats(gen_ns, gen_dev)[1]
        k0 = self._captured() if qdisc else 0
        c0 = self.stats(count_ns, count_dev)[0 if count_rx else 1]
        cpu0, all0, t0 = core_busy(FWD_CORE), core_busy(GEN_CORE), time.monotonic()
        time.sleep(self.seconds)
        g1 = self.stats(gen_ns, gen_dev)[1]
        k1 = self._captured() if qdisc else 0
        c1 = self.stats(count_ns, count_dev)[0 if count_rx else 1]
        cpu1, all1, t1 = core_busy(FWD_CORE), core_busy(GEN_CORE), time.monotonic()
        self.stop(tg)
        dt = t1 - t0
        offered = (g1["packets"] + g1.get("dropped", 0) - g0["packets"] - g0.get("dropped", 0)
                   + k1 - k0)
        delivered = c1["packets"] - c0["packets"]
        # busy us per second of measurement (so that / delivered pps = us per packet): core 1,
        # and both cores (the kernel's forwarding runs in the generator's softirq on core 0)
        both = (cpu1 - cpu0 + all1 - all0) * 1e6 / dt * self.seconds
        return offered / dt, delivered / dt, (cpu1 - cpu0) * 1e6 / dt * self.seconds, both

    def _captured(self) -> int:
        """Frames the router's TAP capture took at TC egress of its TAPs (or dropped there:
        no room, or over its vNet's share): the TAP's own transmit counters never see them."""
        from vnet_router.node import api as control
        st = control.request(str(self.work / "r.sock"), "show", timeout=5.0)["datapath_stats"]
        return sum(st.get("capture_" + k, 0) for k in ("taken", "ring_full", "over_share"))

    # -- cases ----------------------------------------------------------------------------------

    def case(self, name, size, setup, **kw) -> Result:
        self.build()
        try:
            extra = setup() or {}
            direction = extra.get("direction", "fwd")
            if direction == "tap_in":       # substrate -> TAP: count at the TAP
                o, d, cpu, both = self.offer("gen", "g0",
                                             self.trafgen_cfg(size, MAC["r0"], MAC["g0"]),
                                       extra["tap_ns"], extra["tap_dev"])
            elif direction == "tap_out":    # TAP -> substrate: trafgen in the vNet, count at g0
                o, d, cpu, both = self.offer("blue", "t0", self.trafgen_cfg(size - 22, MAC["s0"],
                                                                      "02:b0:00:00:00:aa",
                                                                      tagged=False,
                                                                      substrate=False),
                                       "gen", "g0", qdisc=True)
            else:                           # a setup may bring its own frame (UDP)
                frame = extra["frame"](size) if "frame" in extra else \
                    self.trafgen_cfg(size, extra.get("dst", MAC["r0"]), MAC["g0"])
                o, d, cpu, both = self.offer("gen", "g0", frame, "sink", "s0")
            per = o if direction == "alone" else d
            r = Result(name, size, o, d, cpu / (d * self.seconds) if d else None,
                       note=direction, cpu_all_us=both / (per * self.seconds) if per else None)
        finally:
            self.teardown()
        self.progress(f"  {name:<50} {size:>5} B  offered {r.offered / 1e3:8.1f} kpps  "
                      f"delivered {r.delivered / 1e3:8.1f} kpps  ratio {r.ratio:5.2f}  "
                      f"cpu {r.cpu_us if r.cpu_us is not None else float('nan'):6.2f} us/pkt")
        return r

    def setup_bridge(self):
        self.sh("rtr", "ip", "link", "add", "br0", "type", "bridge")
        for dev in ("r0", "r1"):
            self.sh("rtr", "ip", "link", "set", "dev", dev, "master", "br0")
        self.sh("rtr", "ip", "link", "set", "dev", "br0", "up")
        # the bridge learns s0 so frames are forwarded, not flooded
        self.sh("sink", "python3", "-c", _SEND_ONE.format(dev="s0", frame=(
            _b(BELL) + _b(MAC["s0"]) + b"\x88\xb6" + bytes(50)).hex()))
        return {"dst": MAC["s0"]}

    def setup_mirred(self):
        self.sh("rtr", "tc", "qdisc", "add", "dev", "r0", "ingress")
        self.sh("rtr", "tc", "filter", "add", "dev", "r0", "parent", "ffff:", "protocol", "all",
                "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect",
                "dev", "r1")
        return {}

    def setup_router(self, datapath, extra_links=0, extra_vlinks=0):
        self.router(self.switch_cfg(extra_links, extra_vlinks), datapath)
        return {}

    def setup_tap_in(self, datapath="fast"):
        self.router(self.tap_cfg(), datapath)
        return {"direction": "tap_in", "tap_ns": "blue", "tap_dev": "t0"}

    def setup_tap_out(self, datapath="fast"):
        self.router(self.tap_cfg(), datapath)
        return {"direction": "tap_out"}

    def setup_bare_tap(self):
        script = ROOT / "benchmarks" / "bare_tap.py"
        self.popen("rtr", [sys.executable, str(script), "r0", "bt0"], core=FWD_CORE,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.sh("rtr", "ip", "link", "show", "dev", "bt0", check=False).returncode == 0:
                time.sleep(0.3)
                return {"direction": "tap_in", "tap_ns": "rtr", "tap_dev": "bt0"}
            time.sleep(0.1)
        raise RuntimeError("bare TAP loop did not start")

    # -- latency --------------------------------------------------------------------------------

    def latency_setup(self, via_router: bool, core=FWD_CORE):
        """Build the latency topology: vnet end-systems (namespaces ablue, bblue behind their
        own routers on g0 and s0, pinned to core GEN_CORE) joined by the Linux bridge or by the
        vnet router in rtr (pinned to ``core``)."""
        self.build()
        if via_router in ("relay", "crelay"):       # bare Python relay / C relay (crelay.c)
            if via_router == "relay":
                argv = [sys.executable, str(ROOT / "benchmarks" / "bare_relay.py")]
            else:
                argv = [str(rows.build_crelay(self.work))]
            hdr = lambda dst, src, vlan, vli: (_b(dst) + _b(src) + b"\x81\x00" +
                                               vlan.to_bytes(2, "big") + b"\x88\xb5" +
                                               vli.to_bytes(2, "big")).hex()
            self.popen("rtr", argv + ["r0", "r1",
                                      "100", hdr(MAC["s0"], MAC["r1"], 20, 200),
                                      "201", hdr(MAC["g0"], MAC["r0"], 10, 101)],
                       core=core, env=dict(os.environ, PYTHONPATH=str(ROOT)))
            a_peer, b_peer, b_vlan, b_in, b_out = MAC["r0"], MAC["r1"], 20, 200, 201
        elif via_router:            # True: the fast path; "kernel": the kernel tier
            self.router(self.p2p("in", "r0", MAC["g0"], 10) +
                        self.p2p("out", "r1", MAC["s0"], 20) +
                        '[[switch]]\nvnet = "blue"\nin_link = "in"\nin_vli = 100\n'
                        'out_link = "out"\nout_vli = 200\n'
                        '[[switch]]\nvnet = "blue"\nin_link = "out"\nin_vli = 201\n'
                        'out_link = "in"\nout_vli = 101\n',
                        "kernel" if via_router == "kernel" else "fast", core=core)
            a_peer, b_peer, b_vlan, b_in, b_out = MAC["r0"], MAC["r1"], 20, 200, 201
        else:
            self.setup_bridge()
            a_peer, b_peer, b_vlan, b_in, b_out = MAC["s0"], MAC["g0"], 10, 100, 101
        blue = lambda ns: f'[[vnet]]\nname = "blue"\nid = 1\nnamespace = "{ns}"\n'
        iface = ('[[interface]]\nvnet = "blue"\nname = "blue0"\nsubstrate_link = "up"\n'
                 'in_vli = {}\nout_vli = {}\naddresses = ["{}"]\n')
        self.router(self.p2p("up", "g0", a_peer, 10) + blue(self.ns("ablue")) +
                    iface.format(101, 100, "10.9.1.1/24"), "fast", name="gen")
        self.router(self.p2p("up", "s0", b_peer, b_vlan) + blue(self.ns("bblue")) +
                    iface.format(b_in, b_out, "10.9.1.2/24"), "fast", name="sink")
        # Warm-up, not measured, the same for bridge and router: freshly raised veths drop
        # what they are given until the kernel's link watch activates them (up to ~1 s),
        # and the first ping waits for ARP; neither is forwarding latency.
        for _ in range(10):
            if self.ping(2, 0.2).returncode == 0:
                break

    def ping(self, count: int, interval: float):
        return subprocess.run(["ip", "netns", "exec", self.ns("ablue"), "ping", "-n", "-c",
                               str(count), "-i", str(interval), "-W", "1", "10.9.1.2"],
                              capture_output=True, text=True, timeout=count * interval + 30)


KERNEL_LAT_NAME = "ping via vnet router (kernel tier)"


def latency(count: int, interval: float, rounds: int, progress=print,
            relay=True, crelay=False, kernel=False) -> list[Latency]:
    """Ping RTT through the bridge and through the router, all topologies up at once and
    measured in alternating rounds of ``count / rounds`` pings each, so that all see the same
    machine (this VM's timing drifts by +-20% from minute to minute).

    The end-systems' routers run on core GEN_CORE, so the bridge forwards there too (in the
    softirq of the sender).  The vnet router is measured twice: on that same core, and on
    core FWD_CORE, where every hop crosses cores and wakes an idle vCPU.  With ``relay``, a bare
    Python relay (``bare_relay.py``) on each core shows what any user-space hop costs here; with
    ``crelay``, so does the C relay (``crelay.c``, compiled now), the floor of such a hop; with
    ``kernel``, the router on the kernel tier (it forwards in the sender's softirq, as the
    bridge does, so its core does not matter)."""
    cases = [(Latency("ping via Linux bridge"), Bench(0, progress, tag="l"), False, None)]
    for tag, core in zip("mn", (GEN_CORE, FWD_CORE)):
        cases.append((Latency(f"ping via vnet router (fast path), core {core}"),
                      Bench(0, progress, tag=tag), True, core))
    if kernel:
        cases.append((Latency(KERNEL_LAT_NAME), Bench(0, progress, tag="s"), "kernel", FWD_CORE))
    if relay:
        for tag, core in zip("op", (GEN_CORE, FWD_CORE)):
            cases.append((Latency(f"ping via bare Python relay (yardstick), core {core}"),
                          Bench(0, progress, tag=tag), "relay", core))
    if crelay:
        for tag, core in zip("qr", (GEN_CORE, FWD_CORE)):
            cases.append((Latency(f"{rows.CRELAY_NAME}, core {core}"),
                          Bench(0, progress, tag=tag), "crelay", core))
    try:
        for _, b, via_router, core in cases:
            b.latency_setup(via_router, core)
        rounds = max(1, min(rounds, count))
        per = max(1, count // rounds)
        for _ in range(rounds):
            for lat, b, _, _ in cases:
                r = b.ping(per, interval)
                lat.rtts += [float(x) * 1000 for x in re.findall(r"time=([\d.]+) ms", r.stdout)]
                lat.sent += per
    finally:
        for _, b, _, _ in cases:
            b.teardown()
            shutil.rmtree(b.work, ignore_errors=True)
    for lat, _, _, _ in cases:
        progress(f"  {lat.case:<50} {len(lat.rtts)}/{lat.sent} replies  median "
                 f"{lat.pct(50):7.1f} us  p99 {lat.pct(99):7.1f} us")
    return [lat for lat, _, _, _ in cases]


_SEND_ONE = ("import socket; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0); "
             "s.bind(('{dev}', 0)); s.send(bytes.fromhex('{frame}'))")

def run_all(seconds, sizes, pings, interval, only=None, progress=print, rounds=10,
            relay=True, repeat=3, datapath="fast", idle_seconds=rows.IDLE_SECONDS,
            baseline: Path | None = None):
    """Every case ``repeat`` times, the cases interleaved (run 1 of each, then run 2 ...), so a
    drift of the machine hits all of them alike; each row is the median run.  The rows of
    ``rows.py`` run the router on ``datapath``; one of them selected brings the Linux bridge,
    their reference, along.  With ``baseline`` (a source tree of another commit, its fast path
    built in place) every router row has a twin, ``... [baseline]``, whose router runs that
    code, interleaved with the row.  Returns (pps results, latency cases, shaped-link results,
    idle, isolation rows)."""
    b = Bench(seconds, progress)
    lats, idle = [], []
    want = lambda name: not only or any(o in name for o in only)
    cases = [
        ("(0) generator alone (nothing forwards)", lambda: {"direction": "alone"}),
        ("(a) Linux bridge", b.setup_bridge),
        ("(b) tc mirred", b.setup_mirred),
        ("(c) reference datapath, VLI switch", lambda: b.setup_router("reference")),
        ("(d) fast path, VLI switch", lambda: b.setup_router("fast")),
        ("(e) bare Python recv+os.write -> TAP", b.setup_bare_tap),
        ("(e) fast path substrate -> TAP", lambda: b.setup_tap_in("fast")),
        ("(e) fast path TAP -> substrate", lambda: b.setup_tap_out("fast")),
        ("(f) fast path, 1000 vlinks / 64 links", lambda: b.setup_router("fast", 62, 999)),
    ]
    # the kernel tier's rows beside the compiled engine's, in the same run
    new = rows.pps_cases(b, "fast") + rows.kernel_cases(b) if datapath == "kernel" else \
        rows.pps_cases(b, datapath)
    tiers = ["fast", "kernel"] if datapath == "kernel" else [datapath]
    if any(want(n) for n, _ in new) and not want(cases[1][0]):
        progress(f" with {cases[1][0]}: the reference of the rows selected")
        only = list(only) + [cases[1][0]]
    cases = [c for c in cases + new if want(c[0])]
    if baseline is not None:
        cases = [x for name, setup in cases for x in
                 [(name, setup)] + ([(name + BASELINE, _on_code(b, baseline, setup))]
                                    if _runs_router(name) else [])]
    raw: dict[tuple, list] = {}
    try:
        for size in sizes:
            for run in range(repeat):
                if repeat > 1:
                    progress(f" {size}-byte frames, run {run + 1}/{repeat}")
                for name, setup in cases:
                    raw.setdefault((name, size), []).append(b.case(name, size, setup))
                for tier in tiers:
                    if want(rows.SHAPED_NAME):
                        raw.setdefault((rows.shaped_name(tier), size), []).append(
                            rows.shaped(b, size, tier))
        for tier in tiers:
            if want(rows.IDLE_NAME):
                progress(f" {rows.IDLE_NAME}: {idle_seconds:g} s without traffic ({tier})")
                idle.append(rows.idle_cpu(b, idle_seconds, tier))
        iso = isolation.run(b, tiers, want, repeat)
    finally:
        b.teardown()
        shutil.rmtree(b.work, ignore_errors=True)
    results = [_median_run(rs) for rs in raw.values() if isinstance(rs[0], Result)]
    shaped = [rows.median_shaped(rs) for rs in raw.values() if isinstance(rs[0], Shaped)]
    if pings:
        lats = latency(pings, interval, rounds, progress, relay, crelay=want(rows.CRELAY_NAME),
                       kernel=datapath == "kernel" and want(KERNEL_LAT_NAME))
    return results, lats, shaped, idle, iso


def _runs_router(name: str) -> bool:
    """Rows whose forwarder is the vnet router (not the generator, bridge, mirred, bare loop)."""
    return not name.startswith(("(0)", "(a)", "(b)", "(e) bare"))


def _on_code(b: Bench, code: Path, setup):
    """``setup`` with the router started from source tree ``code``."""
    def run():
        b.code = code
        try:
            return setup()
        finally:
            b.code = ROOT
    return run


def _median_run(rs: list[Result]) -> Result:
    """The run with the median delivered rate (offered for the generator alone), with the
    delivered rates of all runs attached."""
    key = (lambda r: r.offered) if rs[0].note == "alone" else (lambda r: r.delivered)
    mid = sorted(rs, key=key)[(len(rs) - 1) // 2]
    return Result(mid.case, mid.size, mid.offered, mid.delivered, mid.cpu_us, mid.note,
                  [key(r) for r in rs], mid.cpu_all_us)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per case")
    p.add_argument("--sizes", default="64,1500", help="frame sizes in bytes")
    p.add_argument("--pings", type=int, default=2000, help="pings per latency case (0: none)")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between pings")
    p.add_argument("--rounds", type=int, default=20,
                   help="latency: alternate bridge and router in this many rounds")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of every case, interleaved; the table shows the median run")
    p.add_argument("--no-relay", dest="relay", action="store_false",
                   help="latency: leave out the bare Python relay yardstick")
    p.add_argument("--only", action="append", help="run only cases whose name contains this")
    p.add_argument("--datapath", choices=("fast", "reference", "kernel"), default="fast",
                   help="engine of the router in rows (g)-(n) (rows.py)")
    p.add_argument("--idle-seconds", type=float, default=rows.IDLE_SECONDS,
                   help="(n) idle router CPU: seconds measured")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"),
                   help="markdown report ('-': none); the PNG goes next to it")
    p.add_argument("--json", help="also write the raw results here")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="also run every router row with the router from DIR (a checkout of "
                        "another commit, fast path built in place: `python3 setup.py build_ext "
                        "--inplace`), interleaved; rows '... [baseline]' and their ratios")
    a = p.parse_args(argv)
    if a.baseline is not None and not (a.baseline / "vnet_router").is_dir():
        print(f"benchmarks: --baseline {a.baseline}: no vnet_router/ there", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("benchmarks: needs root (namespaces, veth, TAP)", file=sys.stderr)
        return 2
    if not shutil.which("trafgen"):
        print("benchmarks: trafgen missing (apt-get install netsniff-ng)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in a.sizes.split(",")]
    cmd = "python3 -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"vnet benchmarks on {machine()}; {a.seconds:g} s per case; trafgen on core "
          f"{GEN_CORE}, forwarder on core {FWD_CORE}")
    with no_bpf_stats():
        results, lats, shaped, idle, iso = run_all(
            a.seconds, sizes, a.pings, a.interval, a.only, rounds=a.rounds, relay=a.relay,
            repeat=a.repeat, datapath=a.datapath, idle_seconds=a.idle_seconds,
            baseline=a.baseline)
    text = table(results, lats, shaped, idle, iso)
    print()
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps({
            "results": [r.__dict__ | {"ratio": r.ratio} for r in results],
            "ratios": [{"what": w, "median": m, "low": lo, "high": hi}
                       for w, m, lo, hi in ratios(results)],
            "latency": [{"case": l.case, "sent": l.sent, "replies": len(l.rtts),
                         "median_us": l.pct(50), "p99_us": l.pct(99)} for l in lats],
            "router_vs_crelay": [dict(zip(("core", "router_median_us", "router_p99_us",
                                           "crelay_median_us", "crelay_p99_us"), x))
                                 for x in report.added_vs_crelay(lats)],
            "shaped": [r.__dict__ | {"ratio": r.ratio, "flood_ratio": r.flood_ratio}
                       for r in shaped],
            "idle": [r.__dict__ for r in idle],
            "isolation": [r.__dict__ for r in iso]}, indent=1))
    if a.out != "-":
        out = report.write_markdown(Path(a.out), results, lats, machine(), cmd.strip(), a,
                                    shaped, idle, iso)
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
