"""Reading the benchmark: acceptance ratios, the markdown table, the plot, docs/benchmarks.md.

``run.py`` measures and hands its results (``run.Result`` rows, ``run.Latency`` cases) here;
nothing in this module touches the system but the files it writes.
"""
from __future__ import annotations

import time
from pathlib import Path

GEN_CORE, FWD_CORE = 0, 1       # the cores run.py pins the generator and the forwarder to
BASELINE = " [baseline]"        # a row's twin on the router of another commit (``--baseline``)


# The acceptance ratios of the fast path issue, each from rows of the same run of this command.
RATIOS = [
    ("fast path / Linux bridge, pass-through 64 B", "(d) fast path, VLI switch",
     "(a) Linux bridge", 64),
    ("fast path / reference datapath, pass-through 64 B", "(d) fast path, VLI switch",
     "(c) reference datapath, VLI switch", 64),
    ("fast path 1,000 vlinks / Linux bridge, 64 B", "(f) fast path, 1000 vlinks / 64 links",
     "(a) Linux bridge", 64),
    ("fast path substrate -> TAP / bare Python loop, 64 B", "(e) fast path substrate -> TAP",
     "(e) bare Python recv+os.write -> TAP", 64),
    ("fast path / generator alone (its rate with nothing attached), 64 B",
     "(d) fast path, VLI switch", "(0) generator alone (nothing forwards)", 64),
    ("fast path 1,000 vlinks / generator alone, 64 B", "(f) fast path, 1000 vlinks / 64 links",
     "(0) generator alone (nothing forwards)", 64),
]


# The rows of rows.py (what users configure), each compared with the bridge at its frame size.
BRIDGE = "(a) Linux bridge"
VS_BRIDGE = ("(g)", "(h)", "(i)", "(j)", "(k)")


def ratios(results) -> list[tuple[str, float, float, float]]:
    """(what, ratio of the medians, lowest and highest ratio of run i to run i)."""
    by = {(r.case, r.size): r for r in results}
    out = []
    extra = [(f"{r.case} / Linux bridge, {r.size} B", r.case, BRIDGE, r.size)
             for r in results if r.case.startswith(VS_BRIDGE) and BASELINE not in r.case]
    extra += [(f"{r.case} / the same row on the baseline, {r.size} B", r.case,
               r.case + BASELINE, r.size) for r in results if BASELINE not in r.case]
    for what, a, b, size in RATIOS + extra:
        ra, rb = by.get((a, size)), by.get((b, size))
        if ra is None or rb is None:
            continue
        den = rb.offered if rb.note == "alone" else rb.delivered
        pairs = [x / y for x, y in zip(ra.runs, rb.runs) if y]
        if den:
            out.append((what, ra.delivered / den, min(pairs), max(pairs)))
    return out


def added_vs_crelay(lats) -> list[tuple]:
    """Per core: RTT the vnet router and the C relay add to the bridge's, median and p99:
    (core, router median, router p99, crelay median, crelay p99), in us."""
    if not lats:
        return []
    base = lats[0]
    by = {l.case: l for l in lats}
    out = []
    for core in (GEN_CORE, FWD_CORE):
        r = by.get(f"ping via vnet router (fast path), core {core}")
        c = by.get(f"ping via C relay (yardstick), core {core}")
        if r is not None and c is not None and r.rtts and c.rtts:
            out.append((core, r.pct(50) - base.pct(50), r.pct(99) - base.pct(99),
                        c.pct(50) - base.pct(50), c.pct(99) - base.pct(99)))
    return out


def _over(a, b) -> str:
    """a / b of two added RTTs; "-" when either is not positive (a hop that measured faster
    than the bridge's path is noise, and a ratio of it says nothing)."""
    return f"{a / b:.2f}" if a > 0 and b > 0 else "-"


# a row's kernel-tier twin for the cost ratio: the bridge and the unrated switch vs (m), the
# rated switch vs the kernel tier's (g)
KERNEL_TWIN = {"(a)": "(m) kernel tier", "(d)": "(m) kernel tier", "(g)": "(g) kernel tier"}


def _us(x) -> str:
    return f"{x:.2f}" if x is not None else "-"


def forwarding_cost(results) -> list[tuple[str, int, float]]:
    """(case, size, both cores' busy us per delivered frame minus the generator alone's per
    offered frame): what forwarding costs the machine, wherever it runs (the kernel forwards
    in the generator's softirq, the user-space engine on core 1 plus the copy on core 0)."""
    alone = {r.size: r.cpu_all_us for r in results if r.note == "alone" and r.cpu_all_us}
    return [(r.case, r.size, r.cpu_all_us - alone[r.size]) for r in results
            if r.note != "alone" and r.size in alone and r.cpu_all_us is not None]


def table(results, lats, shaped=(), idle=(), iso=()) -> str:
    lines = ["| case | frame | offered kpps | delivered kpps | delivered/offered | "
             "router CPU-us/pkt | both cores CPU-us/pkt | each run, kpps |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    if not results:
        lines = []
    for r in results:
        each = " / ".join(f"{x / 1e3:.0f}" for x in r.runs)
        if r.note == "alone":
            lines.append(f"| {r.case} | {r.size} B | {r.offered / 1e3:.1f} | - | - | - | "
                         f"{_us(r.cpu_all_us)} (per offered) | {each} (offered) |")
            continue
        lines.append(f"| {r.case} | {r.size} B | {r.offered / 1e3:.1f} | "
                     f"{r.delivered / 1e3:.1f} | {r.ratio:.2f} | {_us(r.cpu_us)} | "
                     f"{_us(r.cpu_all_us)} | {each} |")
    rs = ratios(results)
    if rs:
        lines += ["", "| ratio (delivered) | medians | run by run |", "|---|---:|---:|"]
        for what, med, lo, hi in rs:
            lines.append(f"| {what} | {med:.2f} | {lo:.2f} - {hi:.2f} |")
    cost = forwarding_cost(results)
    if cost:
        by = {(c, s): x for c, s, x in cost}
        lines += ["", "| forwarding cost per frame (both cores' busy us per delivered frame "
                  "minus the generator alone's per offered frame) | frame | us | vs kernel "
                  "tier, same frame and rate |", "|---|---:|---:|---:|"]
        for c, size, x in cost:
            twin = KERNEL_TWIN.get(c[:3]) if "kernel tier" not in c else None
            k = next((v for (kc, ks), v in by.items()
                      if twin and kc.startswith(twin) and ks == size), None)
            lines.append(f"| {c} | {size} B | {x:.3f} | "
                         f"{f'{x / k:.2f}' if k and k > 0 else '-'} |")
    if lats:
        lines += ["", "| latency (ping, vnet end-systems on both sides) | replies | median RTT us "
                  "| p99 RTT us |", "|---|---:|---:|---:|"]
        for l in lats:
            lines.append(f"| {l.case} | {len(l.rtts)}/{l.sent} | {l.pct(50):.1f} | "
                         f"{l.pct(99):.1f} |")
        base = lats[0]
        lines += ["", f"| added RTT vs {base.case} | median us | p99 us |", "|---|---:|---:|"]
        for l in lats[1:]:
            lines.append(f"| {l.case} | {l.pct(50) - base.pct(50):+.1f} | "
                         f"{l.pct(99) - base.pct(99):+.1f} |")
        vs = added_vs_crelay(lats)
        if vs:
            lines += ["", "| added RTT: vnet router vs C relay | router median us | C relay "
                      "median us | router / C relay | router p99 us | C relay p99 us | "
                      "router / C relay |", "|---|---:|---:|---:|---:|---:|---:|"]
            for core, rm, r99, cm, c99 in vs:
                lines.append(f"| core {core} | {rm:+.1f} | {cm:+.1f} | {_over(rm, cm)} | "
                             f"{r99:+.1f} | {c99:+.1f} | {_over(r99, c99)} |")
    if shaped:
        lines += ["", "| shaped link (one vNet shaped, another floods the same interface; a "
                  "sender each) | flood frame | shaped vNet offered Mbit/s | achieved Mbit/s | "
                  "achieved / 20 Mbit/s | flood delivered kpps | flood alone kpps | flood "
                  "beside / alone | each run, Mbit/s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in shaped:
            each = " / ".join("failed" if x is None else f"{x / 1e6:.2f}" for x in r.runs)
            if r.failed:
                lines.append(f"| {r.case} | {r.size} B | **failed**: {r.failed} | - | - | - | "
                             f"- | - | {each} |")
                continue
            lines.append(f"| {r.case} | {r.size} B | {r.offered_bps / 1e6:.1f} | "
                         f"{r.achieved_bps / 1e6:.2f} | {r.ratio:.3f} | "
                         f"{r.flood_pps / 1e3:.1f} | {r.flood_alone_pps / 1e3:.1f} | "
                         f"{r.flood_ratio:.2f} | {each} |")
    for r in idle:
        lines += ["", f"Idle router CPU ({r.engine}; links, a TAP and a switch with rates; no "
                  f"traffic; {r.seconds:.0f} s): **{r.percent:.2f}% of one core** (utime + "
                  f"stime of its process; one clock tick is {r.resolution:.2f}%)."]
    lines += isolation_table(iso)
    while lines and not lines[0]:           # no pps rows: start at the first table there is
        lines.pop(0)
    return "\n".join(lines)


def isolation_table(results) -> list[str]:
    """Markdown lines for the isolation rows of ``isolation.py`` (none: no lines)."""
    if not results:
        return []
    f = lambda x, d=2: "-" if x is None else f"{x:.{d}f}"
    ratio = lambda a, z: f"{a / z:.2f}" if a is not None and z else "-"
    runs = lambda xs: "; runs " + " / ".join(f"{x:.2f}" for x in xs) if len(xs) > 1 else ""
    lines = ["", "| isolation: A floods, B alone -> beside A | B pings lost | B median RTT us "
             "| B p99 RTT us | B TCP Mbit/s | A offered kpps | A delivered kpps | router us "
             "per offered frame | per forwarded frame | per dropped frame | dropped / "
             "forwarded (VLI switch) | classifier ns per frame |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r.failed:
            lines.append(f"| {r.case} | **failed**: {r.failed} | - | - | - | - | - | - | - | "
                         "- | - | - |")
            continue
        lost = lambda n, s: f"{n}/{s} ({100 * n / s:.1f}%)" if s else "-"
        lines.append(
            f"| {r.case} | {lost(r.b_lost_alone, r.b_sent_alone)} -> "
            f"{lost(r.b_lost_beside, r.b_sent_beside)} | {f(r.b_median_alone, 0)} -> "
            f"{f(r.b_median_beside, 0)} ({ratio(r.b_median_beside, r.b_median_alone)}x"
            f"{runs(r.b_median_runs)}) | "
            f"{f(r.b_p99_alone, 0)} -> {f(r.b_p99_beside, 0)} | "
            f"{r.b_tcp_alone / 1e6:.2f} -> {r.b_tcp_beside / 1e6:.2f} "
            f"({ratio(r.b_tcp_beside, r.b_tcp_alone)}x) | {r.a_offered / 1e3:.1f} | "
            f"{r.a_delivered / 1e3:.1f} | {f(r.cost_offered_us, 3)} | {f(r.cost_fwd_us, 3)} | "
            f"{f(r.cost_drop_us, 3)} | {ratio(r.cost_drop_us, r.switch_us)} | "
            f"{f(r.prog_ns, 0)} |")
    refs = {r.engine: r.switch_us for r in results if r.switch_us is not None}
    if refs:
        lines += ["", "Cost per forwarded frame of the VLI switch (r0 -> r1, the same "
                  "generator, no B; both cores net of the generator alone), the reference of "
                  "the dropped / forwarded column: " + ", ".join(f"{e} {x:.3f} us" for e, x in
                                                               refs.items())
                  + ".  Classifier ns per frame: the time the kernel counted in the substrate "
                  "program per frame it ran on while B's pings ran, A flooding half of that time "
                  "(BPF run-time statistics, on only then: they cost each run two clock reads, "
                  "which the cost columns do not carry).  The router's TAP rows have no cost "
                  "columns: A's generator writes through A's TAP there, with the router's "
                  "capture program in its context, and the generator alone is measured on a "
                  "veth."]
    return lines


def plot(results, path: Path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = sorted({r.size for r in results})
    if not sizes:
        return False
    fig, axes = plt.subplots(1, len(sizes), figsize=(7 * len(sizes), 5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        rs = [r for r in results if r.size == size]
        y = range(len(rs))
        ax.barh([i + 0.2 for i in y], [r.offered / 1e3 for r in rs], 0.4, label="offered",
                color="#bbbbbb")
        ax.barh([i - 0.2 for i in y], [r.delivered / 1e3 for r in rs], 0.4, label="delivered",
                color="#2a6fb0")
        ax.set_yticks(list(y), [r.case for r in rs], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("kpps")
        ax.set_title(f"{size}-byte frames")
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True




def write_markdown(out: Path, results, lats, machine: str, cmd: str, a, shaped=(),
                   idle=(), iso=()) -> str:
    """docs/benchmarks.md (and the PNG next to it) for one run; returns what was written."""
    png = out.with_suffix(".png")
    have_png = plot(results, png)
    text = table(results, lats, shaped, idle, iso)
    out.write_text(
        "# Benchmarks\n\n"
        f"- machine: {machine}\n- date: {time.strftime('%Y-%m-%d %H:%M %Z')}\n"
        f"- command: `{cmd}`\n"
        f"- {a.seconds:g} s per case, every case run {a.repeat} times interleaved (run 1 of "
        "each case, then run 2, ...); a row is the median run, the last column lists all; "
        f"ratios compare medians and, run by run, run i with run i. Latency: {a.pings} pings "
        f"per path at {1 / a.interval:g}/s, all paths up at once and measured in "
        f"{a.rounds} alternating rounds.\n"
        f"- trafgen pinned to core {GEN_CORE}, forwarder to core "
        f"{FWD_CORE}; offered = generator veth tx, delivered = sink veth rx (TAP cases: the "
        "TAP's counter; TAP -> substrate cases: trafgen sends through the TAP's queueing "
        "layer (`-q`) as a vNet's stack does, offered = the TAP's tx plus what the router's "
        "TAP capture took or found no room for); router CPU-us/pkt = busy time of core 1 per delivered packet (the "
        "bridge and tc mirred forward mostly in the generator's softirq on core 0, so their "
        "column undercounts). Other work on the machine shares both cores.\n"
        f"- rows (g)-(n) (`benchmarks/rows.py`): the router on the {getattr(a, 'datapath', 'fast')}"
        " engine; rates that never limit are 100Gbit; (l) counts the shaped vNet's payload "
        "bytes at the sink, as the shaper counts them, each vNet sending from its own trafgen "
        "(the flood's rate alone is measured first, in the same router). Rows (o) "
        "(`benchmarks/isolation.py`): vNet B's TCP flow alone, then beside vNet A's flood "
        "through the same interface, then B's pings while A's trafgen is stopped and let go "
        "every 0.5 s (B alone and beside A interleaved; B's sender on the router's core); "
        "each case --repeat times, interleaved, the runs pooled; the router's cost is both cores' busy time net of B's alone and of "
        "the generator's (per dropped frame of the in_rate rows: net of the router's core's, "
        "where only the delivered frames go).\n\n"
        + text + "\n" + (f"\n![pps]({png.name})\n" if have_png else ""))
    return f"{out}" + (f" and {png}" if have_png else "")
