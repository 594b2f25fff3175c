"""``vnetctl``: command-line client of a daemon's control socket.

``vnetctl [-s SOCKET] show [--json] [--learned]`` prints a node's substrate links, virtual
links, vNets, logical interfaces (on a multiaccess link: how many MACs each learned;
``--learned`` lists them) and drop counters (by reason; by vNet and reason); ``top`` refreshes
per-virtual-link rates; ``reload`` applies a changed configuration file.  Against
``vnet-hostd``: ``vnet add|del``, ``join|leave``, ``vlink add|del`` change the end-system at
run time, ``instance start|stop|list`` runs sandboxed protocol instances.

With the router's control plane (``[tm]`` / ``[vbm]``):

* ``vnetctl alloc [--json]`` -- allocations: per virtual link min/current/max and demand, per
  vNet the node's aggregate, the VBM's view where the node is the VBM, control counters;
* ``vnetctl vlink add LINK VNET NAME --min R --max R [--address CIDR] [--peer NODE]`` -- create
  a virtual link pair with the neighbour on LINK (it chooses the VLI of its input);
* ``vnetctl vlink del VNET NAME`` -- tear it down on both ends.

Run-time changes of one value (vnet-router, ``node/runtime.py``): ``vlink rate VNET NAME
--min R --max R [--in]`` and, on the VBM, ``vbm share VNET SHARE``; they say that a plain
``reload`` undoes them unless the file is edited too.  Every view printed as tables (``show``,
``alloc``, ``top``, ``instance list``, ``tables``) takes ``--json`` for machines; nodes are
shown by name and id (8 hex digits), measured rates as ``19.99 Mbit/s``.

``vlink add`` is one command for both daemons: with ``--in-vli`` the VLIs are given (what
``vnet-hostd`` takes), with ``--max`` (and no ``--in-vli``) they are negotiated with the
neighbour by the router's control plane.  ``LINK`` may be given positionally or as ``--link``.

The sub-commands, their arguments and the requests they send come from the command registry
(``node/commands.py``); this module builds the argparse tree from it and holds the printers
its entries name (``Cli.output``).  Tables are drawn by ``ops/render.py``: styled on a
terminal, plain (and wide, never wrapped) into a pipe.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import textwrap
import time

from vnet_router.model.units import format_bitrate, format_rate
from vnet_router.node import commands
from vnet_router.node.api import ControlError, request
from vnet_router.ops import render

DEFAULT_SOCKET = "/run/vnet/vnet-router.sock"


def _drops(d: dict) -> str:
    return ",".join(f"{k}={n}" for k, n in sorted(d.items()) if n) or "-"


def _r(bps):
    return "-" if bps is None else format_rate(bps)


def _learned(t: dict | None) -> str:
    """A learned-MAC table in one cell: its entries (and what it refused, if anything)."""
    if t is None:
        return "-"
    return f"{t['entries']}" + (f" (overflow {t['overflow']})" if t["overflow"] else "")


def _state(s: dict) -> str:
    """A substrate link's state in one cell: ``up``, or ``down 12s`` (how long)."""
    if s.get("state") != "down":
        return s.get("state", "up")
    return f"down {s['down_seconds']:.0f}s"


# -- views -------------------------------------------------------------------------------------

def show_view(st: dict) -> list:
    """``vnetctl show``: the parts ``render.write`` prints."""
    kernel = st["datapath"] == "kernel"
    ds = st.get("datapath_stats", {})
    tiers = f" (kernel tier: {ds['kernel_frames']:,} frames)" if kernel else \
        f" (classified in the kernel: {ds['kernel_frames']:,} frames ended there)" \
        if ds.get("classified") else ""
    out = [f"node {_who(st['node'], st.get('node_id'))}  config {st['config']}  generation {st['generation']}  "
           f"datapath {st['datapath']}{tiers}  up {st['uptime_seconds']:.0f}s"]
    cs = st.get("config_state", {})
    if cs.get("runtime_changes"):
        out.append(f"run-time changes not in {cs.get('file') or st['config']} (a plain reload "
                   f"undoes them): " + "; ".join(cs["runtime_changes"]))
    out.append("")
    rows = []
    for s in st["substrate_links"]:
        where = s.get("interface") or f"{s.get('local')} -> {s.get('remote')}"
        extra = f"peer {s['peer_mac']} vlan {s['vlan']} prio {s['priority']}" \
            if s["kind"] == "p2p" else ""
        rows.append([s["id"], s["kind"], _state(s), where, extra or "-", s["mtu"],
                     s["rx_packets"], s["tx_packets"], _drops(s["drops"])])
    out += [render.table(["id", "kind", "state", "where", "peer", "mtu", "rx_pkts", "tx_pkts",
                          "drops"], rows, "substrate links"), ""]
    out += [f"substrate link {s['id']} is down: {s['down_reason']} (retried: {s['retries']})"
            for s in st["substrate_links"] if s.get("state") == "down"]
    if out[-1] != "":
        out.append("")
    rows = []
    for v in st["virtual_links"]:
        r = v["rate"]
        rate = f"{format_rate(r['min'])}/{format_rate(r['current'])}/{format_rate(r['max'])}" \
            if r["max"] is not None else "unlimited"
        rows.append([v["substrate_link"], v["vli"], v["direction"], v["vnet"], v["action"],
                     v["owner"], rate, v["packets"], v["bytes"], v["queue_depth"],
                     _drops(v["drops"])] + ([v["tier"] or "-"] if kernel else []))
    out += [render.table(["link", "vli", "dir", "vnet", "action", "owner", "rate min/cur/max",
                          "pkts", "bytes", "queue", "drops"] + (["tier"] if kernel else []),
                         rows, "virtual links"), ""]
    rows = [[p["vnet"], p["name"], p["namespace"], p["rx_packets"], p["tx_packets"],
             _learned(p["learned"])] for p in st["logical_interfaces"]]
    out += [render.table(["vnet", "name", "namespace", "from_vnet", "to_vnet", "learned_macs"],
                         rows, "logical interfaces"), ""]
    for p in st["logical_interfaces"]:
        if p["learned"] and "macs" in p["learned"]:
            rows = [[m["mac"], m["outer"], f"{m['age_seconds']:.0f}s"]
                    for m in p["learned"]["macs"]]
            out += [render.table(["mac", "outer", "age"], rows,
                                 f"learned MACs of {p['vnet']}/{p['name']}"), ""]
    out.append("drops: " + _drops(st["drops"]))
    if any(st.get("ignored", {}).values()):
        out.append("ignored (not for this node, no fault): " + _drops(st["ignored"]))
    rows = [[vnet, reason, n] for vnet, d in st.get("vnet_drops", {}).items()
            for reason, n in d.items()]
    if rows:
        out += ["", render.table(["vnet", "reason", "frames"], rows,
                                 'drops by vNet ("-": a VLI configured to drop)')]
    if "instances" in st:
        out += ["", _instances_table(st["instances"]),
                "instances stopped: " + _drops(st["instances_stopped"])]
    if st.get("kernel_instances"):
        out += ["", _kernel_table(st["kernel_instances"])]
    return out


def _instances_table(instances: list):
    rows = [[i["name"], i["vnet"], i["pid"], i["user"],
             f"{i['cpu_seconds_used']}/{i['cpu_seconds_limit']}s",
             f"{i['memory_bytes'] >> 20}/{i['memory_limit'] >> 20}M",
             f"{i['processes']}/{i['pids_limit']}", f"{i['uptime_seconds']:.0f}s"
             if "uptime_seconds" in i else "-", " ".join(i["argv"])] for i in instances]
    return render.table(["name", "vnet", "pid", "user", "cpu", "memory", "procs", "up",
                         "command"], rows, "instances")


def _kernel_table(kernel: list):
    rows = [[k["name"], k["vnet"], k["program"], " ".join(k["interfaces"]),
             " ".join(f"{n}={v}" for n, v in k["counters"].items() if v) or "-"]
            for k in kernel]
    return render.table(["name", "vnet", "program", "interfaces", "counters"], rows,
                        "kernel instances (eBPF at TC ingress)")


def instances_view(r: dict) -> list:
    """``vnetctl instance list``: sandboxed instances (vnet-hostd), kernel instances, the
    last stops."""
    out = []
    if "running" in r:
        out += [_instances_table(r["running"]),
                "instances stopped: " + _drops(r.get("stopped", {})), ""]
    out += [_kernel_table(r.get("kernel", [])),
            "kernel instances stopped: " + _drops(r.get("kernel_stopped", {}))]
    if r.get("events"):
        rows = [[e["instance"], e["vnet"], e["reason"], e["status"],
                 f"{e['cpu_seconds_used']}s", f"{e['memory_peak_bytes'] >> 20}M",
                 time.strftime("%H:%M:%S", time.localtime(e["at"]))] for e in r["events"]]
        out += ["", render.table(["instance", "vnet", "reason", "status", "cpu",
                                  "memory peak", "at"], rows, "last stops")]
    return out


def _rates(prev: dict, cur: dict, dt: float) -> list[dict]:
    """Per virtual link, frames/s, bit/s and drops/s since the previous sample, busiest
    first (what ``top --json`` prints)."""
    old = {(v["substrate_link"], v["vli"], v["direction"]): v for v in prev["virtual_links"]}
    rows = []
    for v in cur["virtual_links"]:
        p = old.get((v["substrate_link"], v["vli"], v["direction"]))
        dp = v["packets"] - p["packets"] if p else 0
        db = v["bytes"] - p["bytes"] if p else 0
        dd = sum(v["drops"].values()) - (sum(p["drops"].values()) if p else 0)
        rows.append({"substrate_link": v["substrate_link"], "vli": v["vli"],
                     "direction": v["direction"], "vnet": v["vnet"], "owner": v["owner"],
                     "packets_per_second": round(dp / dt, 3),
                     "bits_per_second": round(db * 8 / dt, 3), "max": v["rate"]["max"],
                     "queue_depth": v["queue_depth"], "drops_per_second": round(dd / dt, 3)})
    rows.sort(key=lambda r: -r["packets_per_second"])
    return rows


def _top_rows(rates: list[dict]) -> list[list]:
    return [[r["substrate_link"], r["vli"], r["direction"], r["vnet"], r["owner"],
             f"{r['packets_per_second']:,.0f}",
             format_bitrate(r["bits_per_second"]) if r["bits_per_second"] else "0",
             format_bitrate(r["max"]), r["queue_depth"], f"{r['drops_per_second']:,.0f}"]
            for r in rates]


def top(path: str, interval: float, count: int | None, out=None, first: dict | None = None,
        as_json: bool = False) -> int:
    """Every ``interval`` seconds the rates since the previous sample (``count`` times, or
    until Ctrl-C): redrawn in place on a terminal, one block per sample into a pipe;
    ``as_json``: one JSON object per sample and line."""
    out = out or sys.stdout
    prev = first if first is not None else request(path, "show")
    t0 = time.monotonic()
    n = 0
    with render.live(out) if not as_json else _lines(out) as show:
        while count is None or n < count:
            time.sleep(interval)             # the sampling period
            cur = request(path, "show")
            t1 = time.monotonic()
            rates = _rates(prev, cur, t1 - t0)
            if as_json:
                show(json.dumps({"node": cur["node"], "node_id": cur.get("node_id"),
                                 "generation": cur["generation"],
                                 "seconds": round(t1 - t0, 3), "virtual_links": rates}))
            else:
                show(f"node {_who(cur['node'], cur.get('node_id'))}  generation "
                     f"{cur['generation']}  every {interval:g}s  (Ctrl-C quits)",
                     render.table(["link", "vli", "dir", "vnet", "owner", "pkt/s", "bit/s",
                                   "max", "queue", "drops/s"], _top_rows(rates)))
            prev, t0, n = cur, t1, n + 1
    return 0


@contextlib.contextmanager
def _lines(out):
    def show(line):
        out.write(line + "\n")
        out.flush()
    yield show


def _who(name, node_id) -> str:
    """A node as every view shows it: its name and id (8 hex digits)."""
    return f"{name} ({node_id})" if name else (node_id or "?")


def _vbm_head(a: dict) -> str:
    """Where the LAN's VBM is, as the header of ``alloc`` says it."""
    v = a.get("vbm_node")
    if v and v.get("here"):
        return f"VBM this node ({a['vbm']['state']})" if a.get("vbm") else "VBM this node"
    if "vbm_link" in a and not a["vbm_link"]:
        return "no VBM expected ([tm] vbm_link unset)"
    lost = "" if a.get("vbm_reachable", True) else " (not heard lately)"
    if v:
        return f"VBM {_who(v['name'], v['id'])} at {a['vbm_peer']}{lost}"
    return f"VBM at {a['vbm_peer']}{lost}" if a.get("vbm_peer") else \
        f"VBM on {a.get('vbm_link') or '?'}: not heard"


def _peer(x: dict) -> str:
    return _who(x["peer_name"], x["peer_id"]) if x.get("peer_id") else x["peer"]


def alloc_view(a: dict) -> list:
    """``vnetctl alloc``: the parts ``render.write`` prints."""
    out = [f"node {_who(a['node'], a['node_id'])}  {_vbm_head(a)}", ""]
    rows = [[o["substrate_link"], o["vli"], o["vnet"], _peer(o), _r(o["min"]), _r(o["current"]),
             _r(o["max"]), _r(o["demand"]), o["state"]] for o in a["outputs"]]
    out += [render.table(["link", "vli", "vnet", "peer", "min", "current", "max", "demand",
                          "state"], rows, "output virtual links"), ""]
    rows = [[i["substrate_link"], i["vli"], i["vnet"], _peer(i), _r(i["min"]), _r(i["current"]),
             _r(i["max"])] for i in a["inputs"]]
    out += [render.table(["link", "vli", "vnet", "peer", "min", "current", "max"], rows,
                         "input virtual links"), ""]
    rows = [[v, _r(x["aggregate"]), _r(x["used"]), _r(x["minimum"])]
            for v, x in a["aggregates"].items()]
    out += [render.table(["vnet", "aggregate", "used", "minimum"], rows,
                         "vNet aggregates (input)"), ""]
    if a["dynamic"]:
        rows = [[d["vnet"], d["name"], d["substrate_link"], d["peer"], d["in_vli"], d["out_vli"],
                 "up" if d["upstream"] else "down", d["state"]] for d in a["dynamic"]]
        out += [render.table(["vnet", "name", "link", "peer", "in_vli", "out_vli", "stream",
                              "state"], rows, "dynamic virtual links"), ""]
    members = a.get("members") or {}
    if members:
        rows = [[v, m["node"], m["interface"], m["in_vli"], m["out_vli"]]
                for v, ms in members.items() for m in ms] or [["-"] * 5]
        out += [render.table(["vnet", "member", "interface", "in_vli", "out_vli"], rows,
                             "vNet members (joined at run time; rates: the links above)"), ""]
    if a.get("neighbours"):
        rows = [[n["name"], n["node"], n["role"], n["peer"], f"{n['incarnation']:08x}"]
                for n in a["neighbours"]]
        out += [render.table(["name", "node id", "role", "heard at", "incarnation"], rows,
                             "neighbours (their HELLOs)"), ""]
    vbm = a.get("vbm")
    if vbm:
        rows = [[v, x["share"], _r(x["pool"]), _r(x["allocated"]), _who(y.get("name"), n),
                 _r(y["aggregate"]), _r(y["minimum"])] for v, x in vbm["vnets"].items()
                for n, y in (x["nodes"].items() or [("-", {"aggregate": None,
                                                           "minimum": None})])]
        out += [render.table(["vnet id", "share", "pool", "allocated", "node", "aggregate",
                              "minimum"], rows,
                             f"VBM: {vbm['state']}, LAN bandwidth {_r(vbm['lan_capacity'])}"),
                ""]
    out.append("control: " + (",".join(f"{k}={n}" for k, n in a["counters"].items()) or "-"))
    return out


def tables_view(t: dict) -> list:
    """``vnetctl tables`` (vnet-hostd): the tables it exports to applications."""
    rows = [[v["name"], v["id"], v["namespace"]] for v in t["vnets"]]
    out = [f"node {t['node']}  generation {t['generation']}", "",
           render.table(["vnet", "id", "namespace"], rows, "vNets"), ""]
    rows = [[i["vnet"], i["name"], i["kind"], i["substrate_link"], i["in_vli"], i["out_vli"],
             i["mtu"], " ".join(i["addresses"]) or "-"] for i in t["interfaces"]]
    out.append(render.table(["vnet", "name", "kind", "link", "in_vli", "out_vli", "mtu",
                             "addresses"], rows, "logical interfaces"))
    return out


# -- printers: Cli.output in the registry names one; (result, args) -> exit status --------------

def _json_or(view):
    def printer(r, a):
        if a.json:
            print(json.dumps(r, indent=2))
        else:
            render.write(sys.stdout, *view(r))
    return printer


def _top(r, a):
    try:
        return top(a.socket, a.interval, a.count, first=r, as_json=a.json)
    except KeyboardInterrupt:
        return 0


def _reload(r, a):
    print(f"reloaded{' ' + r['from'] if r.get('from') else ''}: generation {r['generation']}")
    if r.get("from") and r.get("file") and r["from"] != r["file"]:
        print(f"  (applied once: the file in use stays {r['file']}, which a plain reload "
              f"reads; --adopt makes FILE the file in use)")
    for line in r["changes"]:
        print(f"  {line}")


def _changed(r, a=None):
    print(f"generation {r['generation']}")
    for line in r["changes"]:
        print(f"  {line}")


def _vlink(r, a):
    if a.json:
        print(json.dumps(r))
    elif "generation" in r:                                 # vnet-hostd
        _changed(r)
    elif "peer_acked" in r:                                 # negotiated: removed
        print(f"{r['vnet']}/{r['name']} on {r['substrate_link']} removed (in VLI "
              f"{r['in_vli']}, out VLI {r['out_vli']})" +
              ("" if r["peer_acked"] else f"; {r['peer']} did not confirm"))
    else:                                                   # negotiated: added
        print(f"{r['vnet']}/{r['name']} on {r['substrate_link']}: in VLI {r['in_vli']}, "
              f"out VLI {r['out_vli']} (chosen by {r['peer']}), {_r(r['min'])}..{_r(r['max'])}")


def _runtime(r, a):
    """``vlink rate``, ``vbm share``: what changed, and that the file still says otherwise."""
    if a.json:
        print(json.dumps(r, indent=2))
        return
    if "direction" in r:
        side = "output (rate)" if r["direction"] == "out" else "input (in_rate)"
        print(f"{r['vnet']}/{r['name']} {side}: {_range(r['was'])} -> {_range(r['rate'])}"
              + (f" (generation {r['generation']})" if "generation" in r else ""))
    else:
        was = "none" if r["was"] is None else f"{r['was']:g}"
        print(f"vNet {r['vnet']}: share of the LAN {was} -> {r['share']:g} "
              f"(pool {_r(r['pool'])})")
    print(f"note: {r['note']}")


def _range(x: dict) -> str:
    if x["max"] is None:
        return "unlimited"
    return format_rate(x["max"]) if x["min"] == x["max"] else \
        f"{format_rate(x['min'])}..{format_rate(x['max'])}"


PRINTERS = {
    "runtime": _runtime,
    "show": _json_or(show_view),
    "alloc": _json_or(alloc_view),
    "instances": _json_or(instances_view),
    "tables": _json_or(tables_view),
    "top": _top,
    "reload": _reload,
    "changes": _changed,
    "vlink": _vlink,
    "instance_start": lambda r, a: print(
        f"kernel instance {r['name']}: program {r['program']} verified, attached at TC ingress "
        f"of {', '.join(r['interfaces'])} in {r['namespace']}" if r.get("kind") == "kernel" else
        f"instance {r['name']}: pid {r['pid']} in {r['namespace']} as {r['user']}"),
    "instance_stop": lambda r, a: print(f"instance {r['stopping']}: stopping"),
    "json": lambda r, a: print(json.dumps(r, indent=2)),
    "text": lambda r, a: print(r),
}


# -- the command line --------------------------------------------------------------------------

def _served_by(daemons) -> str:
    return "" if daemons == commands.BOTH else f"{', '.join(sorted(daemons))}: "


def _epilog(entries) -> str:
    """The sub-commands of the groups (``vnet add``, ...), for ``vnetctl --help``."""
    lines = ["commands of the groups (vnetctl GROUP ACTION --help for their arguments):"]
    for cmd, cli in entries:
        if len(cli.path) > 1:
            text = _served_by(cmd.daemons) + (cli.help or cmd.help)
            lines += textwrap.wrap(text, 78, initial_indent=f"  {' '.join(cli.path):<16}  ",
                                   subsequent_indent=" " * 20, break_on_hyphens=False)
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """vnetctl's argparse tree, built from the command registry."""
    entries = [(c, cli) for c in commands.COMMANDS for cli in c.cli]
    p = argparse.ArgumentParser(prog="vnetctl", description="Query or change a vnet daemon "
                                "(vnet-router, vnet-hostd) over its control socket.",
                                epilog=_epilog(entries),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-s", "--socket", default=DEFAULT_SOCKET,
                   help=f"control socket of the daemon (default {DEFAULT_SOCKET})")
    top_level = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    groups: dict = {}                   # ("vlink",) -> its sub-parsers
    for cmd, cli in entries:
        parent = top_level
        for depth in range(1, len(cli.path)):
            key = cli.path[:depth]
            if key not in groups:
                daemons = frozenset().union(*(c.daemons for c, x in entries
                                              if x.path[:depth] == key))
                g = parent.add_parser(key[-1], help=_served_by(daemons) +
                                      commands.GROUPS[" ".join(key)])
                groups[key] = g.add_subparsers(dest=f"action{depth}", required=True,
                                               metavar="ACTION")
            parent = groups[key]
        text = _served_by(cmd.daemons) + (cli.help or cmd.help)
        leaf = parent.add_parser(cli.path[-1], help=text, description=text, usage=cli.usage)
        for a in cli.args:
            leaf.add_argument(*a.flags, **dict(a.options))
        leaf.set_defaults(command=cmd, cli=cli)
    return p


def _usage(msg: str) -> int:
    print(f"vnetctl: {msg}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    rest: list[str] = []
    if "--" in argv:                    # instance start ... -- COMMAND ARGS
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    args = parser().parse_args(argv)
    try:
        kw = commands.request_args(args.cli, args, rest)
    except commands.UsageError as e:
        return _usage(str(e))
    try:
        result = request(args.socket, args.command.name, timeout=args.cli.timeout, **kw)
        return PRINTERS[args.cli.output](result, args) or 0
    except ControlError as e:
        print(f"vnetctl: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
