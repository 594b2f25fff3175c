"""``vnetctl``: command-line client of a daemon's control socket.

``vnetctl [-s SOCKET] show [--json]`` prints a node's substrate links, virtual links, vNets,
logical interfaces and drop counters; ``top`` refreshes per-virtual-link rates; ``reload``
applies a changed configuration file.  Against ``vnet-hostd``: ``vnet add|del``,
``join|leave``, ``vlink add|del`` change the end-system at run time, ``instance
start|stop|list`` runs sandboxed protocol instances.

With the router's control plane (``[tm]`` / ``[vbm]``):

* ``vnetctl alloc [--json]`` -- allocations: per virtual link min/current/max and demand, per
  vNet the node's aggregate, the VBM's view where the node is the VBM, control counters;
* ``vnetctl vlink add LINK VNET NAME --min R --max R [--address CIDR] [--peer NODE]`` -- create
  a virtual link pair with the neighbour on LINK (it chooses the VLI of its input);
* ``vnetctl vlink del VNET NAME`` -- tear it down on both ends.

``vlink add`` is one command for both daemons: with ``--in-vli`` the VLIs are given (what
``vnet-hostd`` takes), with ``--max`` (and no ``--in-vli``) they are negotiated with the
neighbour by the router's control plane.  ``LINK`` may be given positionally or as ``--link``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from vnet_router.node.api import ControlError, request
from vnet_router.model.units import format_rate

DEFAULT_SOCKET = "/run/vnet/vnet-router.sock"


def _table(headers, rows) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _drops(d: dict) -> str:
    return ",".join(f"{k}={n}" for k, n in sorted(d.items()) if n) or "-"


def render(st: dict) -> str:
    out = [f"node {st['node']}  config {st['config']}  generation {st['generation']}  "
           f"datapath {st['datapath']}  up {st['uptime_seconds']:.0f}s", ""]
    rows = []
    for s in st["substrate_links"]:
        where = s.get("interface") or f"{s.get('local')} -> {s.get('remote')}"
        extra = f"peer {s['peer_mac']} vlan {s['vlan']} prio {s['priority']}" \
            if s["kind"] == "p2p" else ""
        rows.append([s["id"], s["kind"], where, extra or "-", s["mtu"], s["rx_packets"],
                     s["tx_packets"], _drops(s["drops"])])
    out += ["substrate links", _table(["id", "kind", "where", "peer", "mtu", "rx_pkts",
                                       "tx_pkts", "drops"], rows), ""]
    rows = []
    for v in st["virtual_links"]:
        r = v["rate"]
        rate = f"{format_rate(r['min'])}/{format_rate(r['current'])}/{format_rate(r['max'])}" \
            if r["max"] is not None else "unlimited"
        rows.append([v["substrate_link"], v["vli"], v["direction"], v["vnet"], v["action"],
                     v["owner"], rate, v["packets"], v["bytes"], v["queue_depth"],
                     _drops(v["drops"])])
    out += ["virtual links", _table(["link", "vli", "dir", "vnet", "action", "owner",
                                     "rate min/cur/max", "pkts", "bytes", "queue", "drops"],
                                    rows), ""]
    rows = [[p["vnet"], p["name"], p["namespace"], p["rx_packets"], p["tx_packets"],
             len(p["learned"])] for p in st["logical_interfaces"]]
    out += ["logical interfaces", _table(["vnet", "name", "namespace", "from_vnet", "to_vnet",
                                          "learned_macs"], rows), ""]
    out.append("drops: " + _drops(st["drops"]))
    if "instances" in st:
        rows = [[i["name"], i["vnet"], i["pid"], i["user"],
                 f"{i['cpu_seconds_used']}/{i['cpu_seconds_limit']}s",
                 f"{i['rss_bytes'] >> 20}/{i['memory_limit'] >> 20}M", " ".join(i["argv"])]
                for i in st["instances"]]
        out += ["", "instances", _table(["name", "vnet", "pid", "user", "cpu", "memory",
                                         "command"], rows),
                "instances stopped: " + _drops(st["instances_stopped"])]
    return "\n".join(out)


def _rates(prev: dict, cur: dict, dt: float) -> list[list]:
    """Rows of `top`: per virtual link, frames/s and bit/s since the previous sample."""
    old = {(v["substrate_link"], v["vli"], v["direction"]): v for v in prev["virtual_links"]}
    rows = []
    for v in cur["virtual_links"]:
        p = old.get((v["substrate_link"], v["vli"], v["direction"]))
        dp = v["packets"] - p["packets"] if p else 0
        db = v["bytes"] - p["bytes"] if p else 0
        dd = sum(v["drops"].values()) - (sum(p["drops"].values()) if p else 0)
        rows.append([v["substrate_link"], v["vli"], v["direction"], v["vnet"], v["owner"],
                     f"{dp / dt:,.0f}", format_rate(int(db * 8 / dt)) if db else "0",
                     format_rate(v["rate"]["max"]), v["queue_depth"], f"{dd / dt:,.0f}"])
    rows.sort(key=lambda r: -float(r[5].replace(",", "")))
    return rows


def top(path: str, interval: float, count: int | None, out=sys.stdout) -> int:
    prev = request(path, "show")
    t0 = time.monotonic()
    n = 0
    while count is None or n < count:
        time.sleep(interval)
        cur = request(path, "show")
        t1 = time.monotonic()
        rows = _rates(prev, cur, t1 - t0)
        if out.isatty():
            out.write("\x1b[H\x1b[2J")
        out.write(f"node {cur['node']}  generation {cur['generation']}  every {interval:g}s  "
                  f"(Ctrl-C quits)\n")
        out.write(_table(["link", "vli", "dir", "vnet", "owner", "pkt/s", "bit/s", "max",
                          "queue", "drops/s"], rows) + "\n\n")
        out.flush()
        prev, t0, n = cur, t1, n + 1
    return 0


def _r(bps):
    return "-" if bps is None else format_rate(bps)


def render_alloc(a: dict) -> str:
    out = [f"node {a['node']} (id {a['node_id']})  VBM {a['vbm_peer'] or 'unknown'}", ""]
    rows = [[o["substrate_link"], o["vli"], o["vnet"], o["peer"], _r(o["min"]), _r(o["current"]),
             _r(o["max"]), _r(o["demand"]), o["state"]] for o in a["outputs"]]
    out += ["output virtual links", _table(["link", "vli", "vnet", "peer", "min", "current", "max",
                                            "demand", "state"], rows), ""]
    rows = [[i["substrate_link"], i["vli"], i["vnet"], i["peer"], _r(i["min"]), _r(i["current"]),
             _r(i["max"])] for i in a["inputs"]]
    out += ["input virtual links", _table(["link", "vli", "vnet", "peer", "min", "current",
                                           "max"], rows), ""]
    rows = [[v, _r(x["aggregate"]), _r(x["used"]), _r(x["minimum"])]
            for v, x in a["aggregates"].items()]
    out += ["vNet aggregates (input)", _table(["vnet", "aggregate", "used", "minimum"], rows), ""]
    if a["dynamic"]:
        rows = [[d["vnet"], d["name"], d["substrate_link"], d["peer"], d["in_vli"], d["out_vli"],
                 "up" if d["upstream"] else "down", d["state"]] for d in a["dynamic"]]
        out += ["dynamic virtual links", _table(["vnet", "name", "link", "peer", "in_vli",
                                                 "out_vli", "stream", "state"], rows), ""]
    vbm = a.get("vbm")
    if vbm:
        out.append(f"VBM: {vbm['state']}, LAN bandwidth {_r(vbm['lan_capacity'])}")
        rows = [[v, x["share"], _r(x["pool"]), _r(x["allocated"]), n, _r(y["aggregate"]),
                 _r(y["minimum"])] for v, x in vbm["vnets"].items()
                for n, y in (x["nodes"].items() or [("-", {"aggregate": None,
                                                           "minimum": None})])]
        out += [_table(["vnet id", "share", "pool", "allocated", "node", "aggregate", "minimum"],
                       rows), ""]
    out.append("control: " + (",".join(f"{k}={n}" for k, n in a["counters"].items()) or "-"))
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vnetctl", description="Query a vnet daemon over its "
                                "control socket.")
    p.add_argument("-s", "--socket", default=DEFAULT_SOCKET,
                   help=f"control socket of the daemon (default {DEFAULT_SOCKET})")
    sub = p.add_subparsers(dest="cmd", required=True)
    show = sub.add_parser("show", help="tables and counters of the node")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    alloc = sub.add_parser("alloc", help="rate allocations (Traffic Manager, VBM)")
    alloc.add_argument("--json", action="store_true", help="machine-readable output")
    tp = sub.add_parser("top", help="live rates of every virtual link, refreshed")
    tp.add_argument("-i", "--interval", type=float, default=1.0, help="seconds between samples")
    tp.add_argument("-n", "--count", type=int, help="stop after this many refreshes")
    rl = sub.add_parser("reload", help="validate the configuration file (or FILE) and apply "
                        "only what changed; an invalid file changes nothing")
    rl.add_argument("file", nargs="?", help="configuration to load (default: the one in use)")
    _host_commands(sub)
    if argv is None:
        argv = sys.argv[1:]
    cmd_argv: list[str] = []
    if "--" in argv:                    # instance start ... -- COMMAND ARGS
        i = argv.index("--")
        argv, cmd_argv = argv[:i], argv[i + 1:]
    args = p.parse_args(argv)
    try:
        if args.cmd in _HOST:
            return _HOST[args.cmd](args, cmd_argv)
        if args.cmd == "show":
            st = request(args.socket, "show")
            print(json.dumps(st, indent=2) if args.json else render(st))
        elif args.cmd == "alloc":
            a = request(args.socket, "alloc")
            print(json.dumps(a, indent=2) if args.json else render_alloc(a))
        elif args.cmd == "top":
            try:
                return top(args.socket, args.interval, args.count)
            except KeyboardInterrupt:
                return 0
        elif args.cmd == "reload":
            kw = {"path": os.path.abspath(args.file)} if args.file else {}
            r = request(args.socket, "reload", timeout=60, **kw)
            print(f"reloaded: generation {r['generation']}")
            for line in r["changes"]:
                print(f"  {line}")
    except ControlError as e:
        print(f"vnetctl: {e}", file=sys.stderr)
        return 1
    return 0


def _host_commands(sub):
    v = sub.add_parser("vnet", help="vnet-hostd: install (add) or remove (del) a vNet")
    vs = v.add_subparsers(dest="action", required=True)
    va = vs.add_parser("add")
    va.add_argument("name")
    va.add_argument("--id", type=int, required=True)
    va.add_argument("--namespace")
    va.add_argument("--allow", action="append", default=[],
                    help="user, uid or @group that may open endpoints of the vNet (repeat)")
    vs.add_parser("del").add_argument("name")
    for name, what in (("join", "install a vNet if needed and attach a logical interface"),):
        j = sub.add_parser(name, help=f"vnet-hostd: {what}")
        j.add_argument("vnet")
        j.add_argument("--id", type=int, required=True)
        _iface_args(j, name_required=False)
        j.add_argument("--allow", action="append", default=[])
    sub.add_parser("leave", help="vnet-hostd: detach from a vNet and remove it").add_argument(
        "vnet")
    vl = sub.add_parser("vlink", help="add or delete a virtual link pair / logical interface "
                        "at run time (vnet-router with [tm], vnet-hostd)")
    vls = vl.add_subparsers(dest="action", required=True)
    a = vls.add_parser("add", usage="vnetctl vlink add [LINK] VNET NAME (--in-vli N [--out-vli N] "
                       "[--kind K] [--rate R] | --max R [--min R] [--peer NODE]) [--link LINK] "
                       "[--address CIDR ...] [--json]",
                       help="[LINK] VNET NAME: with --in-vli the VLIs are given "
                       "(vnet-hostd); with --max they are negotiated with the neighbour "
                       "on LINK (vnet-router control plane)")
    a.add_argument("words", nargs="+", metavar="ARG", help="[LINK] VNET NAME")
    a.add_argument("--link", help="substrate link id (or the first positional argument)")
    a.add_argument("--in-vli", type=int, help="given VLIs: input VLI (vnet-hostd)")
    a.add_argument("--out-vli", type=int, help="given VLIs: output VLI (default: the input's)")
    a.add_argument("--address", action="append", default=[],
                   help="address of the local logical interface (repeatable)")
    a.add_argument("--kind", choices=("tap", "socket"), help="given VLIs: tap (default) or "
                   "socket (library endpoint)")
    a.add_argument("--rate", help="given VLIs: output rate, e.g. 10Mbit")
    a.add_argument("--min", help="negotiated: minimum rate (default 0)")
    a.add_argument("--max", help="negotiated: maximum rate, e.g. 50Mbit")
    a.add_argument("--peer", help="negotiated: neighbour node name (multiaccess links)")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    d = vls.add_parser("del", help="remove a run-time virtual link (negotiated ones on both "
                       "ends)")
    d.add_argument("vnet")
    d.add_argument("name")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    ins = sub.add_parser("instance", help="vnet-hostd: sandboxed protocol instances")
    iss = ins.add_subparsers(dest="action", required=True)
    st = iss.add_parser("start", help="start NAME in a vNet: ... start NAME --vnet V -- CMD ARGS")
    st.add_argument("name")
    st.add_argument("--vnet", required=True)
    st.add_argument("--user")
    st.add_argument("--cpu", type=int, help="CPU seconds")
    st.add_argument("--memory", help="e.g. 64MB")
    st.add_argument("--cap", action="append", default=[],
                    help="net_admin, net_raw or net_bind_service (repeat)")
    iss.add_parser("stop").add_argument("name")
    iss.add_parser("list")


def _iface_args(p, name_required):
    if name_required:
        p.add_argument("name")
    else:
        p.add_argument("--name", help="logical interface name (default VNET0)")
    p.add_argument("--link", required=True, help="substrate link id")
    p.add_argument("--in-vli", type=int, required=True)
    p.add_argument("--out-vli", type=int)
    p.add_argument("--address", action="append", default=[])
    p.add_argument("--kind", choices=("tap", "socket"), default="tap")
    p.add_argument("--rate", help="output rate, e.g. 10Mbit")


def _changed(r: dict) -> int:
    print(f"generation {r['generation']}")
    for line in r["changes"]:
        print(f"  {line}")
    return 0


def _iface_kw(a) -> dict:
    kw = {"substrate_link": a.link, "in_vli": a.in_vli, "out_vli": a.out_vli,
          "addresses": a.address, "kind": a.kind}
    if a.rate:
        kw["rate"] = a.rate
    return kw


def _vnet(a, _rest):
    if a.action == "add":
        return _changed(request(a.socket, "vnet_add", timeout=60, name=a.name, id=a.id,
                                namespace=a.namespace, allow=a.allow))
    return _changed(request(a.socket, "vnet_del", timeout=60, name=a.name))


def _join(a, _rest):
    return _changed(request(a.socket, "join", timeout=60, vnet=a.vnet, id=a.id, name=a.name,
                            allow=a.allow, **_iface_kw(a)))


def _leave(a, _rest):
    return _changed(request(a.socket, "leave", timeout=60, vnet=a.vnet))


def _vlink(a, _rest):
    if a.action == "del":
        r = request(a.socket, "vlink_del", timeout=60, vnet=a.vnet, name=a.name)
        if a.json:
            print(json.dumps(r))
            return 0
        if "generation" in r:                           # vnet-hostd
            return _changed(r)
        print(f"{r['vnet']}/{r['name']} removed" + ("" if r["peer_acked"] else
                                                     " (peer did not confirm)"))
        return 0
    words = list(a.words)
    if len(words) == 3:
        if a.link is not None and a.link != words[0]:
            return _usage(f"vlink add: substrate link given twice ({words[0]}, --link {a.link})")
        a.link = words.pop(0)
    if len(words) != 2 or a.link is None:
        return _usage("vlink add: usage: vlink add [LINK] VNET NAME (LINK positionally or as "
                      "--link)")
    vnet, name = words
    if a.in_vli is not None:                        # given VLIs: vnet-hostd
        for opt in ("min", "max", "peer"):
            if getattr(a, opt) is not None:
                return _usage(f"vlink add: --{opt} negotiates the VLIs; it does not go with "
                              f"--in-vli")
        a.kind = a.kind or "tap"
        r = request(a.socket, "vlink_add", timeout=60, vnet=vnet, name=name, **_iface_kw(a))
        if a.json:
            print(json.dumps(r))
            return 0
        return _changed(r)
    if a.max is None:
        return _usage("vlink add: give --in-vli (VLIs given, vnet-hostd) or --max (VLIs "
                      "negotiated with the neighbour, vnet-router with [tm])")
    for opt in ("out_vli", "kind", "rate"):
        if getattr(a, opt) is not None:
            return _usage(f"vlink add: --{opt.replace('_', '-')} needs --in-vli")
    r = request(a.socket, "vlink_add", timeout=30, link=a.link, vnet=vnet, name=name,
                min=a.min or "0", max=a.max, addresses=a.address, peer=a.peer)
    print(json.dumps(r) if a.json else
          f"{r['vnet']}/{r['name']} on {r['substrate_link']}: in VLI {r['in_vli']}, "
          f"out VLI {r['out_vli']} (chosen by {r['peer']}), {_r(r['min'])}..{_r(r['max'])}")
    return 0


def _usage(msg: str) -> int:
    print(f"vnetctl: {msg}", file=sys.stderr)
    return 2


def _instance(a, rest):
    if a.action == "start":
        if not rest:
            print("vnetctl: instance start needs a command after --", file=sys.stderr)
            return 2
        r = request(a.socket, "instance_start", name=a.name, vnet=a.vnet, argv=rest,
                    user=a.user, cpu_seconds=a.cpu, memory=a.memory, caps=a.cap)
        print(f"instance {r['name']}: pid {r['pid']} in {r['namespace']} as {r['user']}")
    elif a.action == "stop":
        request(a.socket, "instance_stop", name=a.name)
        print(f"instance {a.name}: stopping")
    else:
        r = request(a.socket, "instances")
        print(json.dumps(r, indent=2))
    return 0


_HOST = {"vnet": _vnet, "join": _join, "leave": _leave, "vlink": _vlink, "instance": _instance}


if __name__ == "__main__":
    sys.exit(main())
