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
  unshaped through the same router onto the same substrate interface r1.  Each vNet has its
  own sender: flood's trafgen at full speed on g0, gold's trafgen paced, a 1500-byte frame
  every ``GOLD_GAP`` (about twice the shaped rate; not ``-b``, which sends each second's
  frames in one burst of ~50 ms) on g2, in a namespace of its own, over a p2p link of
  its own into the router (r2).  A shared sender is what broke the row on the kernel tier:
  that tier forwards the sender's own skb, and gold's frames waiting in r1's HTB stay charged
  to the sending socket's send buffer, so one socket for both vNets was paced (or, full,
  refused with EAGAIN) by gold's class (docs/benchmarks.md, "Row (l)").  First the flood
  alone (gold's sender silent), then both, in the same router; at the sink a tc u32 filter
  moves gold's VLI to a counting veth.  The achieved rate is counted as the shaper counts: the
  virtual link's payload (LEN) bytes.  A case that fails is a row saying why.
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
from dataclasses import replace
from pathlib import Path

from benchmarks.common import MAC, Idle, Shaped, mac_bytes as _b, trafgen
from benchmarks.report import FWD_CORE, GEN_CORE
from vnet_router.ops import netlink

HERE = Path(__file__).resolve().parent
RATE_OPEN = "100Gbit"
SHAPED_RATE = "20Mbit"
SHAPED_BPS = 20e6
GOLD_SIZE = 1500
GOLD_GAP = "240us"          # (l): gold's own sender, a frame every GOLD_GAP (trafgen -t): 50
                            # Mbit/s of 1500-byte frames at most, 2.5x the shaped rate (the
                            # sleeps overshoot: 45 Mbit/s here)
GOLD_PRIO = "10"            # (l): gold's sender's SCHED_FIFO priority
GOLD_VLAN = 11              # (l): gold's own p2p link, g2 -> r2
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
    """Gold shaped at ``SHAPED_RATE`` on r1 while flood (``size``-byte frames) fills r1 too; a
    case that fails (a sender or the router exits, a step errs) is a row saying so, never the
    end of the run."""
    name = shaped_name(datapath)
    try:
        r = _shaped(b, size, datapath, name)
    except Exception as e:          # noqa: BLE001 -- whatever broke, the table says it
        r = Shaped(name, size, 0.0, 0.0, 0.0, SHAPED_BPS, [None], failed=_why(e))
        b.progress(f"  {name:<50} {size:>5} B  FAILED: {r.failed}")
        return r
    b.progress(f"  {r.case:<50} {size:>5} B  gold offered {r.offered_bps / 1e6:7.1f} Mbit/s  "
               f"achieved {r.achieved_bps / 1e6:6.2f} Mbit/s = {r.ratio:5.3f} x 20 Mbit/s  "
               f"flood {r.flood_pps / 1e3:8.1f} kpps, alone {r.flood_alone_pps / 1e3:8.1f} "
               f"= {r.flood_ratio:5.3f}")
    return r


def _shaped(b, size: int, datapath: str, name: str) -> Shaped:
    """Each vNet from its own sender: flood's trafgen on g0 (``gen``), gold's on g2 in its own
    namespace (``gold``, a p2p link of its own into the router on r2).  First the flood alone
    (gold's sender not started), then both; both windows in the same router."""
    b.build()
    try:
        netlink.netns_create(b.ns("gold"))
        netlink.veth_create_between("g2", b.ns("gold"), "r2", b.ns("rtr"),
                                    mac=MAC["g2"], peer_mac=MAC["r2"])
        for ns, dev in (("gold", "g2"), ("rtr", "r2")):
            b.sh(ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", check=False)
        b.router(_links(b) + b.p2p("gin", "r2", MAC["g2"], GOLD_VLAN) +
                 _switch("gin", 100, "out", 200, "gold", SHAPED_RATE) +
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
        flood = _sender(b, "gen", "g0", write_cfg(b.work / f"flood{size}.cfg",
                                                  [substrate_frame(size, 102)]), "flood")
        alone = _window(b, {"flood": flood})
        gold = _sender(b, "gold", "g2", write_cfg(b.work / "gold.cfg", [substrate_frame(
            GOLD_SIZE, 100, dst=MAC["r2"], src=MAC["g2"], vlan=GOLD_VLAN)]), "gold",
            gap=GOLD_GAP)
        # its ramp-up drains the gold bucket's burst
        both = _window(b, {"flood": flood, "gold": gold})
        b.stop(gold)
        b.stop(flood)
    finally:
        b.teardown()
    payload = (GOLD_SIZE - HDR) * 8
    return Shaped(name, size, both["gold_offered"] * payload, both["gold"] * payload,
                  both["flood"], SHAPED_BPS, flood_alone_pps=alone["flood"])


def _sender(b, ns: str, dev: str, cfg: Path, name: str, gap: str | None = None):
    """A trafgen of its own (its own packet socket): at full speed from its TX ring on the
    generator's core; or (``gap``) paced, a frame every ``gap`` (trafgen's ``-t``: one blocking
    ``sendto`` a frame, then a sleep) on the router's core at a real-time priority, as B's
    sender in rows (o): its frames then cross the router there, like a NIC's second receive
    queue, not in the generator's backlog."""
    if not gap:
        return b.popen(ns, trafgen(dev, cfg), core=GEN_CORE, log=b.work / f"trafgen-{name}.log")
    p = b.popen(ns, ["chrt", "-f", GOLD_PRIO] + trafgen(dev, cfg, gap), core=FWD_CORE,
                log=b.work / f"trafgen-{name}.log")
    _pin_worker(p, FWD_CORE)
    return p


def _pin_worker(p, core: int) -> None:
    """trafgen's worker (``-P 1``: one, forked) moved to ``core``: trafgen pins worker i to
    CPU i whatever its own affinity, so every sender's worker is on CPU 0, the generator's
    core.  A paced sender there does, in each blocking ``sendto``, the softirq work of the
    flood's frames waiting in that core's backlog (gold offered 15 of its 45 Mbit/s so)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                              text=True).stdout.split()
        if kids:
            for pid in kids:
                subprocess.run(["taskset", "-pc", str(core), pid], capture_output=True,
                               check=True)
            return
        if p.poll() is not None:
            raise RuntimeError("trafgen exited before its worker started")
        time.sleep(0.01)
    raise RuntimeError("trafgen's worker did not start in 5 s")


def _window(b, senders: dict) -> dict:
    """Ramp up, then rates over ``b.seconds``: flood and gold at the sink, gold offered (g2);
    raises, with the sender's last words, if a sender is gone by the end."""
    time.sleep(min(1.0, b.seconds / 3))
    before = _counters(b)
    time.sleep(b.seconds)
    after = _counters(b)
    for name, p in senders.items():
        if p.poll() is not None:
            log = (b.work / f"trafgen-{name}.log").read_text(errors="replace")
            last = [x for x in log.splitlines() if x.strip()][-1:] or ["(no output)"]
            raise RuntimeError(f"{name}'s trafgen exited ({p.returncode}): {last[0]}")
    dt = after["t"] - before["t"]
    rate = {k: (after[k] - before[k]) / dt for k in after if k != "t"}
    return {"flood": rate["s0"] - rate["sg0"], "gold": rate["sg0"], "gold_offered": rate["g2"]}


def _counters(b) -> dict:
    """g2 tx packets incl. drops (gold offered), s0 rx packets (both vNets), gold packets at
    sg0 tx, and the moment of the gold count (it is what the rate is of)."""
    g = b.stats("gold", "g2")[1]
    s = b.stats("sink", "s0")[0]
    t = time.monotonic()
    gold = b.stats("sink", "sg0")[1]
    return {"t": t, "g2": g["packets"] + g.get("dropped", 0), "s0": s["packets"],
            "sg0": gold["packets"]}


def _why(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:160]


def median_shaped(rs: list[Shaped]) -> Shaped:
    """The run with the median achieved rate among those that did not fail, with every run's
    achieved rate (None for a failed one); failed if all failed."""
    ok = [r for r in rs if not r.failed]
    runs = [None if r.failed else r.achieved_bps for r in rs]
    if not ok:
        return replace(rs[0], runs=runs)
    mid = sorted(ok, key=lambda r: r.achieved_bps)[(len(ok) - 1) // 2]
    return replace(mid, runs=runs)


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
