"""Rows for what users configure (issue 11, part 5), measured by ``run.py``'s machinery.

Same topology as every pps case (``gen g0 == r0 router r1 == s0 sink``, trafgen on core 0,
the router under test on core 1), same report (kpps and the ratio to the Linux bridge measured
in the same run):

* (g) VLI switch whose output virtual link has a rate that never limits (``RATE_OPEN``; a
  switch's input virtual link takes no rate in the configuration);
* (h) substrate -> TAP with an ``in_rate`` that never limits;
* (i) TAP -> substrate with a ``rate`` that never limits;
* (j) TAP -> LAN: the logical interface on a multiaccess substrate link (untagged, outer
  destination broadcast until learned), counted at g0;
* (k) pass-through across UDP tunnels: frames arrive over a ``udp`` substrate link on r0 and
  leave over another on r1 (IPv4, port 4799), counted at s0.

``RATE_OPEN`` is 100 Gbit/s, not 10: 1500-byte frames at the ~1 Mpps this VM forwards are
12 Gbit/s, so a 10 Gbit/s rate would limit them.

Then two measurements of their own:

* (l) ``shaped``: a VLI switch shaped at 20 Mbit/s (vNet gold) while another vNet (flood) sends
  unshaped through the same router onto the same substrate interface r1.  One trafgen sends
  one 1500-byte gold frame for every ``GOLD_EVERY - 1`` flood frames (the gold offer is far
  above 20 Mbit/s); at the sink a tc u32 filter moves gold's VLI to a counting veth.  The
  achieved rate is counted as the shaper counts: the virtual link's payload (LEN) bytes.
* (n) ``idle_cpu``: the router with a configuration like ``etc/router.toml`` (links, a TAP
  with ``rate`` and ``in_rate``, a rated switch) and no traffic: utime + stime of its process
  from /proc/<pid>/stat over ``IDLE_SECONDS``, as percent of one core.

The C relay of the latency section (``crelay.c``) is compiled here (``build_crelay``).
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

from benchmarks.common import MAC, Idle, Shaped, mac_bytes as _b
from benchmarks.report import FWD_CORE, GEN_CORE

HERE = Path(__file__).resolve().parent
RATE_OPEN = "100Gbit"
SHAPED_RATE = "20Mbit"
SHAPED_BPS = 20e6
GOLD_EVERY = 100            # one gold frame in this many offered frames
GOLD_SIZE = 1500
HDR = 22                    # dst src tag 0x88B5 VLI LEN: a frame's bytes before its payload
IDLE_SECONDS = 10.0
UDP_PORT = 4799
SINK_AWAY = "02:00:00:00:5e:99"     # (k): the next hop's MAC as r1 knows it; not s0's
IP = {"g0": "10.77.1.1", "r0": "10.77.1.2", "r1": "10.77.2.1", "s0": "10.77.2.2"}

SHAPED_NAME = "(l) shaped link 20 Mbit/s, another vNet floods"
IDLE_NAME = "(n) idle router CPU"
CRELAY_NAME = "ping via C relay (yardstick)"


def engine(datapath: str) -> str:
    return {"fast": "fast path", "kernel": "kernel tier"}.get(datapath, "reference datapath")


def _kernel_shaping(datapath: str) -> str:
    """The kernel tier forwards a rated switch when HTB shapes its output (ktier.py)."""
    return "[tm]\nkernel_shaping = true\n" if datapath == "kernel" else ""


def pps_cases(b, datapath: str) -> list:
    """(name, setup) of the pps rows (g)..(k) on engine ``datapath``, for ``Bench.case``."""
    e = engine(datapath)
    return [
        (f"(g) {e}, VLI switch, rate {RATE_OPEN}", lambda: setup_switch_rated(b, datapath)),
        (f"(h) {e} substrate -> TAP, in_rate {RATE_OPEN}",
         lambda: setup_tap_rated(b, datapath, "in_rate", "tap_in")),
        (f"(i) {e} TAP -> substrate, rate {RATE_OPEN}",
         lambda: setup_tap_rated(b, datapath, "rate", "tap_out")),
        (f"(j) {e} TAP -> LAN (multiaccess)", lambda: setup_tap_lan(b, datapath)),
        (f"(k) {e}, VLI switch across UDP tunnels", lambda: setup_udp(b, datapath)),
    ]


def kernel_cases(b) -> list:
    """The kernel tier's rows: the switch without and with a rate (HTB shapes the rated
    output, ``_kernel_shaping``); its other rows would be the engine's (ktier.py)."""
    e = engine("kernel")
    return [(f"(m) {e}, VLI switch, no rate", lambda: b.setup_router("kernel")),
            (f"(g) {e}, VLI switch, rate {RATE_OPEN}", lambda: setup_switch_rated(b, "kernel"))]


def shaped_name(datapath: str) -> str:
    return SHAPED_NAME + (", kernel tier" if datapath == "kernel" else "")


# -- frames -------------------------------------------------------------------------------------

def substrate_frame(size: int, vli: int, dst=MAC["r0"], src=MAC["g0"], vlan=10) -> bytes:
    """``size`` bytes (no FCS): dst src [802.1Q vlan] 0x88B5 VLI LEN, payload an inner
    Ethernet frame (as ``Bench.trafgen_cfg`` writes it)."""
    plen = size - HDR
    inner = _b(MAC["s0"]) + _b("02:b0:00:00:00:aa") + b"\x88\xb6"
    return (_b(dst) + _b(src) + b"\x81\x00" + vlan.to_bytes(2, "big") + b"\x88\xb5" +
            struct.pack("!HH", vli, plen) + inner + bytes(plen - len(inner)))


def udp_frame(size: int, vli: int) -> bytes:
    """``size`` bytes: Ethernet, IPv4 g0 -> r0, UDP 4799 -> 4799 (checksum 0), VLI, payload."""
    udp_len = size - 14 - 20
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0,
                      bytes(map(int, IP["g0"].split("."))), bytes(map(int, IP["r0"].split("."))))
    s = sum(struct.unpack("!10H", iph))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    iph = iph[:10] + struct.pack("!H", ~s & 0xFFFF) + iph[12:]
    payload = struct.pack("!H", vli) + bytes(udp_len - 8 - 2)
    return (_b(MAC["r0"]) + _b(MAC["g0"]) + b"\x08\x00" + iph +
            struct.pack("!HHHH", UDP_PORT, UDP_PORT, udp_len, 0) + payload)


def write_cfg(path: Path, frames: list[bytes]) -> Path:
    """A trafgen configuration sending ``frames`` in turn."""
    path.write_text("".join("{ " + ", ".join(f"0x{x:02x}" for x in f) + " }\n" for f in frames))
    return path


# -- the pps rows -------------------------------------------------------------------------------

def _switch(in_link, in_vli, out_link, out_vli, vnet="gold", rate=None) -> str:
    return (f'[[switch]]\nvnet = "{vnet}"\nin_link = "{in_link}"\nin_vli = {in_vli}\n'
            f'out_link = "{out_link}"\nout_vli = {out_vli}\n' +
            (f'rate = "{rate}"\n' if rate else ""))


def _links(b) -> str:
    return b.p2p("in", "r0", MAC["g0"], 10) + b.p2p("out", "r1", MAC["s0"], 20)


def setup_switch_rated(b, datapath):
    b.router(_links(b) + _switch("in", 100, "out", 200, rate=RATE_OPEN) +
             _kernel_shaping(datapath), datapath)
    return {}


def setup_tap_rated(b, datapath, key, direction):
    # tap_cfg ends in the [[interface]] table: the key lands there
    b.router(b.tap_cfg() + f'{key} = "{RATE_OPEN}"\n', datapath)
    return {"direction": direction, "tap_ns": "blue", "tap_dev": "t0"}


def setup_tap_lan(b, datapath):
    b.router('[[substrate_link]]\nid = "lan"\nkind = "multiaccess"\ninterface = "r0"\n'
             f'[[vnet]]\nname = "blue"\nid = 1\nnamespace = "{b.ns("blue")}"\n'
             '[[interface]]\nvnet = "blue"\nname = "t0"\nsubstrate_link = "lan"\n'
             f'in_vli = 100\nout_vli = 101\nmac = "{MAC["s0"]}"\n', datapath)
    return {"direction": "tap_out"}


def setup_udp(b, datapath):
    for ns, dev, ip in (("rtr", "r0", IP["r0"]), ("rtr", "r1", IP["r1"]),
                        ("sink", "s0", IP["s0"])):
        b.sh(ns, "ip", "addr", "add", f"{ip}/24", "dev", dev)
    # no ARP in the measurement; and the datagrams go to a MAC that is not s0's, so the sink
    # drops them on arrival (not for this host), as it drops the other cases' substrate frames
    # (an EtherType nobody handles): what a veth peer receives is processed in the sender's
    # softirq, here on the router's core.  A socket taking them on s0 cost the router's core
    # about 0.36 us per datagram (IP and UDP receive, then a full buffer); no socket, an ICMP
    # port unreachable each.  s0's rx counter (counted as r1 sends) is the same either way.
    b.sh("rtr", "ip", "neigh", "replace", IP["s0"], "lladdr", SINK_AWAY, "dev", "r1",
         "nud", "permanent")
    udp = lambda lid, local, remote: (
        f'[[substrate_link]]\nid = "{lid}"\nkind = "udp"\nlocal = "{IP[local]}:{UDP_PORT}"\n'
        f'remote = "{IP[remote]}:{UDP_PORT}"\n')
    b.router(udp("in", "r0", "g0") + udp("out", "r1", "s0") + _switch("in", 100, "out", 200),
             datapath)
    return {"frame": lambda size: write_cfg(b.work / f"udp{size}.cfg", [udp_frame(size, 100)])}


# -- (l) a shaped link beside a flood -----------------------------------------------------------

def shaped(b, size: int, datapath: str) -> Shaped:
    """Gold shaped at ``SHAPED_RATE`` on r1 while flood (``size``-byte frames) fills r1 too."""
    b.build()
    try:
        b.router(_links(b) + _switch("in", 100, "out", 200, "gold", SHAPED_RATE) +
                 _switch("in", 102, "out", 202, "flood") + _kernel_shaping(datapath), datapath)
        # gold (out VLI 200) is taken off s0's ingress to the counting veth sg0
        b.sh("sink", "ip", "link", "add", "sg0", "type", "veth", "peer", "name", "sg1")
        for dev in ("sg0", "sg1"):
            b.sh("sink", "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", check=False)
            b.sh("sink", "ip", "link", "set", "dev", dev, "up")
        b.sh("sink", "tc", "qdisc", "add", "dev", "s0", "ingress")
        b.sh("sink", "tc", "filter", "add", "dev", "s0", "parent", "ffff:", "protocol", "all",
             "prio", "1", "u32", "match", "u16", "200", "0xffff", "at", "0",
             "action", "mirred", "egress", "redirect", "dev", "sg0")
        cfg = write_cfg(b.work / f"shaped{size}.cfg", [substrate_frame(GOLD_SIZE, 100)] +
                        [substrate_frame(size, 102)] * (GOLD_EVERY - 1))
        tg = b.popen("gen", ["trafgen", "-o", "g0", "-i", str(cfg), "-P", "1",
                             "--no-sock-mem", "-Q"], core=GEN_CORE)
        time.sleep(min(1.0, b.seconds / 3))     # ramp up; the gold bucket's burst drains
        if tg.poll() is not None:
            raise RuntimeError("trafgen exited at once")
        before = _counters(b)
        time.sleep(b.seconds)
        after = _counters(b)
        b.stop(tg)
    finally:
        b.teardown()
    dt = after[0] - before[0]
    offered, total, gold = ((a - z) / dt for a, z in zip(after[1:], before[1:]))
    r = Shaped(shaped_name(datapath), size, offered / GOLD_EVERY * (GOLD_SIZE - HDR) * 8,
               gold * (GOLD_SIZE - HDR) * 8, total - gold, SHAPED_BPS)
    b.progress(f"  {r.case:<50} {size:>5} B  gold offered {r.offered_bps / 1e6:7.1f} Mbit/s  "
               f"achieved {r.achieved_bps / 1e6:6.2f} Mbit/s = {r.ratio:5.3f} x 20 Mbit/s  "
               f"flood delivered {r.flood_pps / 1e3:8.1f} kpps")
    return r


def _counters(b):
    """(time, g0 tx packets incl. drops, s0 rx packets, gold packets at sg0 tx)."""
    g = b.stats("gen", "g0")[1]
    s = b.stats("sink", "s0")[0]
    t = time.monotonic()            # the gold count's moment (it is what the rate is of)
    gold = b.stats("sink", "sg0")[1]
    return (t, g["packets"] + g.get("dropped", 0), s["packets"], gold["packets"])


# -- (n) idle CPU ------------------------------------------------------------------------------

def idle_cpu(b, seconds: float, datapath: str) -> Idle:
    """The router's own CPU time (all its threads) while nothing is sent, % of one core."""
    b.build()
    try:
        p = b.router(b.tap_cfg() + f'rate = "{SHAPED_RATE}"\nin_rate = "{SHAPED_RATE}"\n' +
                     _switch("in", 102, "out", 202, "gold", SHAPED_RATE), datapath)
        cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
        if b"vnet_router.node.daemon" not in cmdline:     # nsenter/taskset exec, same pid
            raise RuntimeError(f"pid {p.pid} is not the router: {cmdline!r}")
        time.sleep(1.0)                 # past start-up
        t0, c0 = time.monotonic(), _proc_cpu(p.pid)
        time.sleep(seconds)
        t1, c1 = time.monotonic(), _proc_cpu(p.pid)
    finally:
        b.teardown()
    r = Idle(IDLE_NAME, engine(datapath), t1 - t0, (c1 - c0) / (t1 - t0) * 100,
             100 / os.sysconf("SC_CLK_TCK") / (t1 - t0))
    b.progress(f"  {r.case} ({r.engine}): {r.percent:.2f} % of one core over "
               f"{r.seconds:.1f} s (one clock tick: {r.resolution:.2f} %)")
    return r


def _proc_cpu(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()        # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the C relay --------------------------------------------------------------------------------

def build_crelay(work: Path) -> Path:
    """Compile ``crelay.c`` with the system C compiler into ``work``; its path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc) to build the C relay")
    out = work / "crelay"
    if not out.exists():
        r = subprocess.run([cc, "-O2", "-o", str(out), str(HERE / "crelay.c")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"cc crelay.c: {r.stderr.strip()}")
    return out
