"""Rows (o), isolation under overload (issue 27): vNet A floods the router while vNet B's ping
stream and TCP flow cross the same substrate interface; B beside A against B alone.

Topology (``run.py``'s, one more vnet instance on the generator's side)::

    bsrc ns (B's end-system, TAP bs0 10.9.2.1)        anet ns (A's TAP ta)   bdst ns (tb 10.9.2.2)
      vnet instance "gen" (fast path)                        \\                /
    gen ns  g0 ==veth== r0  router under test (rtr ns, core 1)  r1 ==veth== s0  sink ns

* B: a vNet with a TAP at each end.  Its sender side is a vnet instance in the generator's
  namespace on g0 whose interface has ``rate = B_RATE`` (B's TCP is limited by configuration,
  so "B alone" is well defined); at the router under test B's TAP (``tb``, on substrate link
  ``in`` = r0) has ``in_rate = B_IN_RATE``, above what B's shaper sends.  B's instance, ping and
  iperf3 run on the router's core (``B_CORE``), the instance and ping at SCHED_FIFO priorities
  (``chrt``), not on the generator's: there B's frames would wait in that core's backlog queue
  (``netif_rx``) behind up to 1,000 of trafgen's, before any router sees them -- the Linux
  bridge in the router's place gave B 1.7-3.0x its RTT alone there.  On a LAN, B's sender is
  another machine.  ``ping -i`` is 10 ms: below that, iputils' ping busy-waits, and at
  SCHED_FIFO it took its core from everything else (the rows before 2026-12-07's last section
  measured that).
* A: a vNet with a TAP ``ta`` at the router under test.  The cases:
  - ``flood``: trafgen on g0 sends A's valid frames (VLAN 10, VLI 100) at its full rate into
    A's input virtual link, which has no input rate; A's frames end in A's TAP;
  - ``in_rate``: the same with ``in_rate = A_IN_RATE`` on A's interface (policed); one more
    window sends A's frames paced (``trafgen -t PACED_GAP``), below that rate: what a frame
    the policer lets through costs, one at a time, as the bucket lets them through;
  - ``policed``: the same with ``in_rate = A_POLICED_RATE``, so low that nearly every frame
    is policed: the cost of a policed frame alone;
  - ``garbage``: trafgen on g0 sends, in turn, a frame to an unknown VLI, a frame to B's VLI
    from a MAC that is not the p2p link's peer, and a VLI-0 (control) frame whose payload is
    no control message; none is A's or B's traffic, the router drops all;
  - ``tap``: A's end-system floods its TAP: trafgen in A's namespace writes Ethernet frames
    into ``ta`` through its queueing layer (``-q``, as the vNet's stack does); A's interface
    is then on substrate link ``out`` (r1), so A's frames leave by the sink and do not land
    on B's instance at g0.
  Each case on the router's ``datapath``; ``--datapath kernel`` runs the compiled engine and
  the kernel tier.
* The references (once per run): the Linux bridge in place of the router, joining r0, r1 and
  r2 (a veth to a0 in anet); B's instance on g0 as above, its other end a vnet instance (B's
  TAP tb) on the router's core.  ``bridge``: B's other end on s0, A's trafgen sends the
  ``flood`` case's frames to a0 across the same g0 -> r0 pair as B's.  ``bridge_tap``, the
  ``tap`` case's counterpart: B's other end on t0 (a fourth port, r3, in bend), and A's
  trafgen in anet writes the ``tap`` case's frames into a0 through its queueing layer, to s0
  (out by r1, as A's frames leave the router by r1 there).  What B's RTT does beside A here
  is what this machine does to it with no vnet router in the way.

Per case, in one router: B's TCP flow alone (one iperf3 flow over ``Bench.seconds``), then
A's flood started and B's TCP again; then B's ping stream (every ``PING_INTERVAL``, about
2 x ``Bench.seconds``) while A's trafgen is stopped (SIGSTOP) and let go (SIGCONT) in turn
every SLICE seconds: B alone and B beside A interleaved, so that what the machine does
meanwhile falls on both alike (``_ping_slices``).  Both cores are kept out of their halt state
meanwhile (``common.awake``): an idle core's wake-up would add to B alone what it does not add
beside A.
Reported: B's pings lost, median and p99 RTT, TCP throughput beside A and alone; A's offered
and delivered rate; the router's cost (both cores' busy time, as ``run.py`` reads it from
/proc/stat, beside A minus alone, minus the generator alone's cost per frame times A's
offered rate; the generator alone and the switch below are each netted of an idle window):
per offered frame, per forwarded frame (``flood``: per frame delivered; ``in_rate``:
per frame delivered in the paced window, net of the generator alone paced) and per dropped
frame (``in_rate``: net of the delivered frames at that cost; ``policed``: net of the
router's core's time beside A, where only the 30 frames a second delivered go; ``garbage``:
every frame dropped, both cores), beside the cost per forwarded frame of a VLI switch
(r0 -> r1, the same generator, no B) on the same engine, measured in the same run; none in
``tap``, whose generator writes through a TAP (the generator alone is on a veth).  A case
that fails is a row saying why, never the end of the run.  With ``--repeat N`` every case
runs N times, interleaved (run 1 of every case, then run 2 ...), each in a router of its own;
the row pools the runs (B's pings together, the windows' rates averaged) and shows B's median
ratio of each run beside the pooled one.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

from benchmarks import rows
from benchmarks.common import MAC, Iso, awake, core_busy, percentile, slice_pings, trafgen
from benchmarks.report import FWD_CORE, GEN_CORE
from vnet_router.ops import ebpf

PREFIX = "(o) isolation"
CASES = {
    "flood": "A floods its input virtual link (no in_rate)",
    "in_rate": "A floods, in_rate {}",
    "policed": "A floods, in_rate {} (nearly every frame policed)",
    "garbage": "garbage (unknown VLI, bad peer MAC, malformed VLI 0)",
    "tap": "A floods from its TAP",
}
SWITCH = "forwarding reference: VLI switch r0 -> r1"
BRIDGE = f"{PREFIX}, Linux bridge (reference): A floods through it beside B"
BRIDGE_TAP = f"{PREFIX}, Linux bridge (reference): A floods from a local port beside B"
A_SINK_MAC = "02:b0:00:00:00:a0"    # the bridge references: A's port (a0 in anet)
B_END_MAC = "02:b0:00:00:00:b0"     # bridge_tap: B's other end (t0 in bend)
GEN_ALONE = "(o) generator alone (nothing forwards)"
B_RATE = "20Mbit"           # B's output virtual link at its sender: what limits B's TCP
B_IN_RATE = "25Mbit"        # B's input virtual link at the router under test (never limits)
A_IN_RATE = "10Mbit"
A_POLICED_RATE = "10kbit"   # the policed case: about 30 of A's 64-byte frames a second pass
PACED_GAP = "30us"          # in_rate: A paced below its rate (trafgen -t; about 20 kpps here)
PING_INTERVAL = 0.01        # 100 pings/s (iputils ping busy-waits below 10 ms: at SCHED_FIFO
                            # it took its core from everything else)
SLICE = 0.5                 # s: A stopped, then flooding, in turn while B's pings run
SETTLE = 0.05               # s after each switch whose pings count for neither
B_CORE = FWD_CORE           # B's sending instance, ping and iperf3: not on the generator's core
RT_ROUTER = "20"            # SCHED_FIFO priorities on B's core: B's vnet instance,
RT_PING = "10"              # above B's pings (iperf3, client and server at one SCHED_FIFO
                            # priority, hung; it sleeps most of the time and runs as it is)
IPERF_PORT = 5201
B_IP = {"src": "10.9.2.1", "dst": "10.9.2.2"}
VLI = {"a_in": 100, "a_out": 101, "b_in": 300, "b_out": 301, "unknown": 999}
BAD_PEER = "02:b0:00:00:00:bb"
FRAME = 64


def name(case: str, datapath: str) -> str:
    what = CASES[case].format(A_POLICED_RATE if case == "policed" else A_IN_RATE)
    return f"{PREFIX}, {rows.engine(datapath)}: {what}"


def run(b, tiers, want, repeat: int = 1) -> list[Iso]:
    """The isolation rows ``want`` selects, on every tier, with the references they need;
    each case ``repeat`` times, interleaved (run 1 of every case, then run 2 ...), in a router
    of its own each time, the runs pooled (``_pool``)."""
    todo = [(c, t) for t in tiers for c in CASES if want(name(c, t))]
    refs = [c for c, n in (("bridge", BRIDGE), ("bridge_tap", BRIDGE_TAP)) if want(n)]
    if not todo and not refs:
        return []
    # every window, the references' too, under the same conditions: no core halts
    with awake():
        return _run(b, tiers, todo, refs, max(1, repeat))


def _run(b, tiers, todo, refs, repeat: int) -> list[Iso]:
    gen_us = {}                     # the generator alone's cost per frame, flooding and paced
    for gap in (None, PACED_GAP) if any(c == "in_rate" for c, _t in todo) else (None,):
        gen_net, gen_offered, _ = _reference(b, None, gap)
        gen_us[gap] = gen_net / gen_offered if gen_offered else None   # None: no cost columns
        b.progress(f"  {GEN_ALONE + (f', paced (-t {gap})' if gap else ''):<50} offered "
                   f"{gen_offered / 1e3:8.1f} kpps, {_f(gen_us[gap])} us per frame (both "
                   "cores, net of an idle window)")
    switch = {}
    for tier in tiers:
        if any(t == tier for _c, t in todo):
            sw_net, sw_offered, sw_delivered = _reference(b, tier)
            switch[tier] = ((sw_net - gen_us[None] * sw_offered) / sw_delivered
                            if sw_delivered and gen_us[None] is not None else None)
            b.progress(f"  {PREFIX}, {rows.engine(tier)}: {SWITCH}: {sw_delivered / 1e3:.1f} "
                       f"of {sw_offered / 1e3:.1f} kpps, {_f(switch[tier])} us per forwarded "
                       "frame")
    every = [(c, None) for c in refs] + [(c, t) for t in tiers for c, tt in todo if tt == t]
    runs: dict[tuple, list] = {k: [] for k in every}
    for i in range(repeat):
        if repeat > 1:
            b.progress(f"  {PREFIX}: run {i + 1}/{repeat}")
        for case, tier in every:
            runs[(case, tier)].append(_measure(b, case, tier))
    out = []
    for case, tier in every:
        r = _pool(_row(case, tier, switch.get(tier)), runs[(case, tier)], gen_us)
        b.progress(_line(r))
        out.append(r)
    return out


def _reference(b, datapath: str | None, gap: str | None = None) -> tuple[float, float, float]:
    """trafgen's full rate (or one frame every ``gap``) into r0 with nothing attached
    (``datapath`` None) or with the VLI switch of ``run.py``'s row (d) on ``datapath``: (both
    cores' busy us per second minus an idle window's just before, offered pps, delivered pps at
    s0); zeros, said, if it fails (the rows then go without the cost it stands for)."""
    try:
        return _measure_reference(b, datapath, gap)
    except Exception as e:          # noqa: BLE001 -- the rows go on without it
        b.progress(f"  {PREFIX}: reference on {datapath or 'no router'} FAILED: {e}")
        return 0.0, 0.0, 0.0


def _measure_reference(b, datapath: str | None, gap: str | None) -> tuple[float, float, float]:
    b.build()
    try:
        if datapath:
            b.setup_router(datapath)
        cfg = b.trafgen_cfg(FRAME, MAC["r0"], MAC["g0"])
        t0, idle0 = time.monotonic(), _both_busy()
        time.sleep(b.seconds)
        idle = (_both_busy() - idle0) / (time.monotonic() - t0)
        tg = b.popen("gen", trafgen("g0", cfg, gap), core=GEN_CORE)
        time.sleep(min(1.0, b.seconds / 3))
        c0 = (time.monotonic(), _both_busy(), _tx(b, "gen", "g0"), _rx(b, "sink", "s0"))
        time.sleep(b.seconds)
        c1 = (time.monotonic(), _both_busy(), _tx(b, "gen", "g0"), _rx(b, "sink", "s0"))
        if tg.poll() is not None:
            raise RuntimeError("trafgen exited")
        b.stop(tg)
    finally:
        b.teardown()
    dt = c1[0] - c0[0]
    return (((c1[1] - c0[1]) / dt - idle) * 1e6, (c1[2] - c0[2]) / dt, (c1[3] - c0[3]) / dt)


def _both_busy() -> float:
    return core_busy(GEN_CORE) + core_busy(FWD_CORE)


def _tx(b, ns, dev) -> int:
    tx = b.stats(ns, dev)[1]
    return tx["packets"] + tx.get("dropped", 0)


def _rx(b, ns, dev) -> int:
    return b.stats(ns, dev)[0]["packets"]


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _row(case: str, datapath: str | None, switch_us) -> Iso:
    if case.startswith("bridge"):
        return Iso(BRIDGE if case == "bridge" else BRIDGE_TAP, "Linux bridge", case)
    return Iso(name(case, datapath), rows.engine(datapath), case, switch_us=switch_us)


def _measure(b, case: str, datapath: str | None) -> dict | str:
    """One run of a case, in a router of its own: its windows (A not started, then A
    flooding: B's TCP and the costs), B's pings in both (the slices) and the classifier's
    runs and time meanwhile; or what broke (an exit, a missing reply, a tool's error)."""
    b.build()
    try:
        (_setup_bridge if case.startswith("bridge") else _setup)(b, case, datapath)
        alone = _window(b, case)                    # TCP and costs: A not started
        flood = _flood(b, case)
        time.sleep(min(1.0, b.seconds / 3))         # ramp up
        if flood.poll() is not None:
            raise RuntimeError(f"A's trafgen exited at once: {_last(b, 'trafgen-a')}")
        beside = _window(b, case)                   # ... A flooding
        # the classifier's time per run, while the pings run (A flooding half of the time):
        # timing each run costs two clock reads, which the cost windows do not carry
        with ebpf.run_time_stats():
            p0 = _classifier(b, case)
            pings_alone, pings_beside = _ping_slices(b, flood)
            p1 = _classifier(b, case)
        if flood.poll() is not None:
            raise RuntimeError(f"A's trafgen exited: {_last(b, 'trafgen-a')}")
        b.stop(flood)
        alone.update(pings_alone)
        beside.update(pings_beside)
        got = {"alone": alone, "beside": beside, "prog": (p1[0] - p0[0], p1[1] - p0[1])}
        if case == "in_rate":           # what A's delivered frames cost, A paced below its rate
            got["paced"] = _paced(b, case, alone)
    except Exception as e:          # noqa: BLE001 -- whatever broke, the table says it
        got = " ".join(str(e).split())[:200] or type(e).__name__
    finally:
        b.teardown()
    what = _row(case, datapath, None).case
    if isinstance(got, str):
        b.progress(f"  {what:<50}  FAILED: {got}")
    elif got["alone"]["rtts"] and got["beside"]["rtts"]:
        b.progress(f"  {what:<50}  B median {percentile(got['alone']['rtts'], 50):.0f} -> "
                   f"{percentile(got['beside']['rtts'], 50):.0f} us")
    return got


def _paced(b, case: str, alone: dict) -> dict:
    """A window (``_window``) with A's frames sent one every PACED_GAP, below A's ``in_rate``:
    every one delivered, none dropped (else an error); A's rates net of B's (``alone``)."""
    paced = _flood(b, case, PACED_GAP)
    time.sleep(min(1.0, b.seconds / 3))
    w = _window(b, case)
    if paced.poll() is not None:
        raise RuntimeError(f"A's paced trafgen exited: {_last(b, 'trafgen-a')}")
    b.stop(paced)
    offered, delivered = (w[k] - alone[k] for k in ("offered", "delivered"))
    if offered <= 0 or delivered < 0.99 * offered:
        raise RuntimeError(f"A paced: {delivered:.0f} of {offered:.0f} frames/s delivered "
                           "(some policed: PACED_GAP is too short)")
    return w


def _pool(r: Iso, runs: list, gen_us: dict) -> Iso:
    """The row from a case's runs: B's pings pooled (counts added, RTTs together), the
    windows' rates averaged, the classifier's runs and time added; a run that failed makes
    the row a failed one, saying why.  ``b_median_runs``: B's median ratio in each run."""
    failed = [x for x in runs if isinstance(x, str)]
    if failed:
        r.failed = failed[0]
        return r
    pooled = {}
    for key in [k for k in ("alone", "beside", "paced") if k in runs[0]]:
        ws = [x[key] for x in runs]
        w = {k: sum(x[k] for x in ws) / len(ws) for k in ws[0]
             if k not in ("sent", "received", "rtts")}
        if "sent" in ws[0]:
            w["sent"] = sum(x["sent"] for x in ws)
            w["received"] = sum(x["received"] for x in ws)
            w["rtts"] = sorted(t for x in ws for t in x["rtts"])
        pooled[key] = w
    r.b_median_runs = [percentile(x["beside"]["rtts"], 50) / percentile(x["alone"]["rtts"], 50)
                       for x in runs if x["alone"]["rtts"] and x["beside"]["rtts"]]
    n, ns = sum(x["prog"][0] for x in runs), sum(x["prog"][1] for x in runs)
    # none without runs, or if the program was replaced between (its statistics restart);
    # none where A's frames do not cross the substrate's classifier (from A's TAP)
    r.prog_ns = ns / n if n > 0 and ns >= 0 and r.kind != "tap" else None
    _fill(r, pooled, gen_us)
    return r


# -- set-up -------------------------------------------------------------------------------------

def _setup(b, case: str, datapath: str) -> None:
    a_link = "out" if case == "tap" else "in"
    a = (f'[[vnet]]\nname = "anet"\nid = 1\nnamespace = "{b.ns("anet")}"\n'
         f'[[interface]]\nvnet = "anet"\nname = "ta"\nsubstrate_link = "{a_link}"\n'
         f'in_vli = {VLI["a_in"]}\nout_vli = {VLI["a_out"]}\nmac = "{MAC["s0"]}"\n' +
         (f'in_rate = "{A_IN_RATE}"\n' if case == "in_rate" else
          f'in_rate = "{A_POLICED_RATE}"\n' if case == "policed" else ""))
    bb = (f'[[vnet]]\nname = "bnet"\nid = 2\nnamespace = "{b.ns("bdst")}"\n'
          f'[[interface]]\nvnet = "bnet"\nname = "tb"\nsubstrate_link = "in"\n'
          f'in_vli = {VLI["b_in"]}\nout_vli = {VLI["b_out"]}\n'
          f'addresses = ["{B_IP["dst"]}/24"]\nin_rate = "{B_IN_RATE}"\n')
    b.router(b.p2p("in", "r0", MAC["g0"], 10) + b.p2p("out", "r1", MAC["s0"], 20) + a + bb,
             datapath)
    _b_ready(b, _src(b, MAC["r0"]))


def _setup_bridge(b, case: str, datapath) -> None:
    """The references: the Linux bridge in rtr joins r0, r1 and r2 (to a0 in anet: where A's
    frames end in ``bridge``, where they come from in ``bridge_tap``).  B's sending instance on
    g0 as in the router's cases; its other end, an instance (B's TAP tb in bdst) on the core
    the router under test runs on, on s0 (``bridge``) or on t0 in bend, a fourth port r3
    (``bridge_tap``: s0 is where A's frames go)."""
    from benchmarks.run import _SEND_ONE, _b
    from vnet_router.ops import netlink
    b.setup_bridge()
    ports = [("r2", "anet", "a0", A_SINK_MAC)]
    if case == "bridge_tap":
        ports.append(("r3", "bend", "t0", B_END_MAC))
    for port, ns, dev, mac in ports:
        netlink.netns_create(b.ns(ns))
        netlink.veth_create_between(port, b.ns("rtr"), dev, b.ns(ns), peer_mac=mac)
        b.sh("rtr", "ip", "link", "set", "dev", port, "master", "br0")
        for n, d in (("rtr", port), (ns, dev)):
            b.sh(n, "sysctl", "-qw", f"net.ipv6.conf.{d}.disable_ipv6=1", check=False)
            b.sh(n, "ip", "link", "set", "dev", d, "up")
        b.sh(ns, "python3", "-c", _SEND_ONE.format(dev=dev, frame=(    # the bridge learns it
            _b("ff:ff:ff:ff:ff:ff") + _b(mac) + b"\x88\xb6" + bytes(50)).hex()))
    end, end_mac = ("t0", B_END_MAC) if case == "bridge_tap" else ("s0", MAC["s0"])
    dst = (b.p2p("up", end, MAC["g0"], 10) +
           f'[[vnet]]\nname = "bnet"\nid = 2\nnamespace = "{b.ns("bdst")}"\n'
           f'[[interface]]\nvnet = "bnet"\nname = "tb"\nsubstrate_link = "up"\n'
           f'in_vli = {VLI["b_in"]}\nout_vli = {VLI["b_out"]}\n'
           f'addresses = ["{B_IP["dst"]}/24"]\nin_rate = "{B_IN_RATE}"\n')
    # an instance runs in the namespace of its name: sink (s0) or bend (t0)
    b.router(dst, "fast", name="bend" if case == "bridge_tap" else "sink", core=FWD_CORE)
    _b_ready(b, _src(b, end_mac))


def _src(b, peer: str) -> str:
    """B's sending instance's config: on g0, its p2p link's peer ``peer``."""
    return (b.p2p("up", "g0", peer, 10) +
            f'[[vnet]]\nname = "bnet"\nid = 2\nnamespace = "{b.ns("bsrc")}"\n'
            f'[[interface]]\nvnet = "bnet"\nname = "bs0"\nsubstrate_link = "up"\n'
            f'in_vli = {VLI["b_out"]}\nout_vli = {VLI["b_in"]}\n'
            f'addresses = ["{B_IP["src"]}/24"]\nrate = "{B_RATE}"\n')


def _b_ready(b, src: str) -> None:
    """B's sending instance started (``src``), its iperf3 server, and a first reply."""
    p = b.router(src, "fast", name="gen", core=B_CORE)
    b.sh(None, "chrt", "-a", "-f", "-p", RT_ROUTER, str(p.pid))
    b.popen("bdst", ["iperf3", "-s", "-p", str(IPERF_PORT)], core=B_CORE,
            log=b.work / "iperf3-server.log")
    for _ in range(20):                 # link watch, ARP (run.py's latency warm-up)
        if _ping(b, 2, 0.2).returncode == 0:
            break
    else:
        raise RuntimeError("B: no ping reply through the router before the measurement")
    deadline = time.time() + 5
    while f":{IPERF_PORT}" not in b.sh("bdst", "ss", "-ltn").stdout:
        if time.time() > deadline:
            raise RuntimeError(f"iperf3 server not listening: {_last(b, 'iperf3-server')}")
        time.sleep(0.1)


def _flood(b, case: str, gap: str | None = None):
    """A's trafgen at full speed (its TX ring), or one frame every ``gap`` (not for the TAP
    cases), on the generator's core."""
    f = rows.substrate_frame
    if case in ("tap", "bridge_tap"):
        cfg = b.trafgen_cfg(FRAME - rows.HDR, MAC["s0"], "02:b0:00:00:00:aa", tagged=False,
                            substrate=False)
        return b.popen("anet", trafgen("ta" if case == "tap" else "a0", cfg, qdisc=True),
                       core=GEN_CORE, log=b.work / "trafgen-a.log")
    if case == "garbage":
        frames = [f(FRAME, VLI["unknown"]), f(FRAME, VLI["b_in"], src=BAD_PEER), _vli0()]
    elif case == "bridge":
        frames = [f(FRAME, VLI["a_in"], dst=A_SINK_MAC)]
    else:
        frames = [f(FRAME, VLI["a_in"])]
    cfg = rows.write_cfg(b.work / f"a-{case}.cfg", frames)
    return b.popen("gen", trafgen("g0", cfg, gap), core=GEN_CORE, log=b.work / "trafgen-a.log")


def _vli0() -> bytes:
    """A tagged VLI-0 frame of FRAME bytes from the link's peer whose LEN is right and whose
    payload is no control message (0xA5 bytes)."""
    plen = FRAME - rows.HDR
    return (bytes.fromhex(MAC["r0"].replace(":", "") + MAC["g0"].replace(":", "")) +
            b"\x81\x00\x00\x0a\x88\xb5" + (0).to_bytes(2, "big") + plen.to_bytes(2, "big") +
            b"\xa5" * plen)


def _rt(argv: list[str]) -> list[str]:
    return ["chrt", "-f", RT_PING] + argv if argv[0] == "ping" else argv


def _ping(b, count: int, interval: float):
    return subprocess.run(_bsrc(b, ["ping", "-n", "-c", str(count), "-i", str(interval), "-W",
                                    "1", B_IP["dst"]]),
                          capture_output=True, text=True, timeout=count * interval + 30)



def _last(b, log: str) -> str:
    try:
        text = (b.work / f"{log}.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    lines = [x for x in text.splitlines() if x.strip()]
    return lines[-1] if lines else "(no output)"


# -- measurement --------------------------------------------------------------------------------

def _window(b, case: str) -> dict:
    """B's TCP flow over ``b.seconds`` (whole seconds, after one second iperf3 omits: slow
    start; none in a window shorter than 2 s, a smoke run's); both cores' busy time and A's
    counters over it."""
    c0 = _counters(b, case)
    tcp = _in_bsrc(b, ["iperf3", "-c", B_IP["dst"], "-p", str(IPERF_PORT), "-t",
                       str(max(1, round(b.seconds))), "-O", "1" if b.seconds >= 2 else "0",
                       "-J", "--connect-timeout", "5000"], b.seconds + 30)
    c1 = _counters(b, case)
    dt = c1["t"] - c0["t"]
    return {"bps": _iperf_bps(tcp), **{k: (c1[k] - c0[k]) / dt for k in c1 if k != "t"}}


def _ping_slices(b, flood) -> tuple[dict, dict]:
    """B's ping stream over about 2 x ``b.seconds`` while A's trafgen is stopped and let go
    (SIGSTOP, SIGCONT) in turn every SLICE seconds: B alone and B beside A interleaved, so
    that what the machine does meanwhile (its other load, the host's scheduling of this VM)
    falls on both alike.  Each ping counts for the slice it was sent in, except in the SETTLE
    seconds after a switch (``common.slice_pings``).  Returns (alone, beside): pings sent,
    received, RTTs in us."""
    count = max(20, int(2 * b.seconds / PING_INTERVAL))
    out = b.work / "ping-slices.log"
    with open(out, "w") as f:
        p = subprocess.Popen(
            _bsrc(b, ["ping", "-n", "-D", "-c", str(count), "-i", str(PING_INTERVAL), "-W", "1",
                      B_IP["dst"]]), stdout=f, stderr=subprocess.STDOUT)
    switches, on = [], False
    try:
        while True:
            os.killpg(flood.pid, signal.SIGCONT if on else signal.SIGSTOP)
            switches.append((time.time(), on))
            try:
                p.wait(SLICE)
                break
            except subprocess.TimeoutExpired:
                on = not on
            if time.time() - switches[0][0] > 4 * b.seconds + 30:
                p.kill()
                raise RuntimeError("ping did not finish")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(flood.pid, signal.SIGCONT)
    return slice_pings(out.read_text(), switches, SETTLE)


def _bsrc(b, argv: list[str]) -> list[str]:
    """``argv`` as run in B's sending namespace on B's core (ping at real-time priority)."""
    return ["ip", "netns", "exec", b.ns("bsrc"), "taskset", "-c", str(B_CORE)] + _rt(argv)


def _in_bsrc(b, argv: list[str], timeout: float) -> str:
    """``argv`` in B's sending namespace (``_bsrc``); its output (killed, and an error, past
    ``timeout``)."""
    try:
        return subprocess.run(_bsrc(b, argv), capture_output=True, text=True,
                              timeout=timeout).stdout
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{argv[0]} did not finish in {timeout:g} s") from None


def _iperf_bps(out: str) -> float:
    """Bits/s the iperf3 server received, from the client's JSON; raises with iperf3's own
    error when there is none."""
    try:
        res = json.loads(out)
    except ValueError:
        raise RuntimeError(f"iperf3: {out.strip()[-200:]}") from None
    try:
        return float(res["end"]["sum_received"]["bits_per_second"])
    except (KeyError, TypeError):
        raise RuntimeError(f"iperf3: {res.get('error', 'no result')}") from None


def _counters(b, case: str) -> dict:
    """Both cores' busy seconds; A's frames offered (the generator's side: g0's or ta's tx
    with its drops, plus in the TAP case what the router's TAP capture took or found no room
    for) and delivered (A's TAP rx; in the TAP case s0 rx)."""
    busy, busy_fwd = _both_busy(), core_busy(FWD_CORE)
    if case == "bridge":
        offered, delivered = _tx(b, "gen", "g0"), _rx(b, "anet", "a0")
    elif case == "bridge_tap":
        offered, delivered = _tx(b, "anet", "a0"), _rx(b, "sink", "s0")
    elif case == "tap":
        offered, delivered = _tx(b, "anet", "ta") + b._captured(), _rx(b, "sink", "s0")
    else:
        offered, delivered = _tx(b, "gen", "g0"), _rx(b, "anet", "ta")
    return {"t": time.monotonic(), "busy": busy, "busy_fwd": busy_fwd, "offered": offered,
            "delivered": delivered}


def _classifier(b, case: str) -> tuple[int, int]:
    """The router's classifier program: (runs, nanoseconds in them), as the kernel counts them
    while ``kernel.bpf_stats_enabled`` is 1 (``one`` sets it for the pings); (0, 0) without
    (and for the bridge references)."""
    if case.startswith("bridge"):
        return 0, 0
    from vnet_router.node import api as control
    st = control.request(str(b.work / "r.sock"), "show", timeout=5.0)["datapath_stats"]
    return st.get("classifier_runs", 0), st.get("classifier_run_ns", 0)


def _fill(r: Iso, windows: dict, gen_us: dict) -> None:
    """The row from the windows (alone, beside, and paced for ``in_rate``); A's rates are net
    of B's (the alone window's)."""
    alone, beside, paced = windows["alone"], windows["beside"], windows.get("paced")
    for key, w in (("alone", alone), ("beside", beside)):
        setattr(r, f"b_sent_{key}", w["sent"])
        setattr(r, f"b_lost_{key}", w["sent"] - w["received"])
        setattr(r, f"b_median_{key}", percentile(w["rtts"], 50))
        setattr(r, f"b_p99_{key}", percentile(w["rtts"], 99))
        setattr(r, f"b_tcp_{key}", w["bps"])
    r.a_offered = beside["offered"] - alone["offered"]
    r.a_delivered = max(0.0, beside["delivered"] - alone["delivered"])
    if not r.a_offered or gen_us.get(None) is None or r.kind == "tap":
        return          # tap: its generator writes through A's TAP (and the capture program
                        # runs in its context), which the generator alone on a veth is not
    # busy us per second beside A, minus alone (B, the router's own), minus the generator's
    net = (beside["busy"] - alone["busy"]) * 1e6 - gen_us[None] * r.a_offered
    r.cost_offered_us = net / r.a_offered
    dropped = r.a_offered - r.a_delivered
    if r.kind in ("flood", "bridge", "bridge_tap"):
        r.cost_fwd_us = net / r.a_delivered if r.a_delivered else None
    elif dropped > 0 and r.kind == "in_rate" and paced and gen_us.get(PACED_GAP) is not None:
        # the frames the policer lets through cost what they cost paced, one at a time, as
        # the bucket lets them through here (both cores: classifier, ring copy and wake-up in
        # softirq on the generator's, ring thread, A's TAP and stack on the router's); the
        # rest of the router's time is the dropped frames'
        n_paced = paced["delivered"] - alone["delivered"]
        if n_paced > 0:
            r.cost_fwd_us = ((paced["busy"] - alone["busy"]) * 1e6 - gen_us[PACED_GAP] *
                             (paced["offered"] - alone["offered"])) / n_paced
            r.cost_drop_us = (net - r.cost_fwd_us * r.a_delivered) / dropped
    elif dropped > 0 and r.kind == "policed":
        # about 30 frames a second pass, to the router's core (its ring thread, A's TAP and
        # stack): the dropped ones end in the classifier, on the generator's core
        fwd = (beside["busy_fwd"] - alone["busy_fwd"]) * 1e6
        r.cost_drop_us = (net - fwd) / dropped
    elif dropped > 0:                       # garbage: every frame dropped, both cores its cost
        r.cost_drop_us = net / dropped


def _line(r: Iso) -> str:
    if r.failed:
        return f"  {r.case:<50}  FAILED: {r.failed}"
    f = lambda x: "-" if x is None else f"{x:.2f}"
    return (f"  {r.case:<50}  B lost {r.b_lost_beside}/{r.b_sent_beside} (alone "
            f"{r.b_lost_alone}/{r.b_sent_alone})  median {f(r.b_median_beside)} us (alone "
            f"{f(r.b_median_alone)})  TCP {r.b_tcp_beside / 1e6:.2f} Mbit/s (alone "
            f"{r.b_tcp_alone / 1e6:.2f})  A {r.a_offered / 1e3:.1f} -> "
            f"{r.a_delivered / 1e3:.1f} kpps  us/offered {f(r.cost_offered_us)}  classifier "
            f"{f(r.prog_ns)} ns/frame")
