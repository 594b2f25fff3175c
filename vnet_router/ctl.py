"""``vnetctl``: command-line client of a daemon's control socket.

``vnetctl [-s SOCKET] show [--json]`` prints a node's substrate links, virtual links, vNets,
logical interfaces and drop counters.  With the control plane (``[tm]`` / ``[vbm]``):

* ``vnetctl alloc [--json]`` -- allocations: per virtual link min/current/max and demand, per
  vNet the node's aggregate, the VBM's view where the node is the VBM, control counters;
* ``vnetctl vlink add LINK VNET NAME --min R --max R [--address CIDR] [--peer NODE]`` -- create
  a virtual link pair with the neighbour on LINK (it chooses the VLI of its input);
* ``vnetctl vlink del VNET NAME`` -- tear it down on both ends.
"""
from __future__ import annotations

import argparse
import json
import sys

from .control import ControlError, request
from .units import format_rate

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
    return "\n".join(out)


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
    vl = sub.add_parser("vlink", help="create or remove virtual links at run time")
    vsub = vl.add_subparsers(dest="vcmd", required=True)
    add = vsub.add_parser("add", help="set up a virtual link pair with the neighbour on LINK")
    add.add_argument("link", help="substrate link id")
    add.add_argument("vnet", help="vNet name")
    add.add_argument("name", help="logical interface (TAP) name on both ends")
    add.add_argument("--min", default="0", help="minimum rate (default 0)")
    add.add_argument("--max", required=True, help="maximum rate, e.g. 50Mbit")
    add.add_argument("--address", action="append", default=[],
                     help="address of the local logical interface (repeatable)")
    add.add_argument("--peer", help="neighbour node name (multiaccess links)")
    add.add_argument("--json", action="store_true")
    dl = vsub.add_parser("del", help="tear down a dynamic virtual link on both ends")
    dl.add_argument("vnet")
    dl.add_argument("name")
    dl.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.cmd == "show":
            st = request(args.socket, "show")
            print(json.dumps(st, indent=2) if args.json else render(st))
        elif args.cmd == "alloc":
            a = request(args.socket, "alloc")
            print(json.dumps(a, indent=2) if args.json else render_alloc(a))
        elif args.vcmd == "add":
            r = request(args.socket, "vlink_add", timeout=30, link=args.link, vnet=args.vnet,
                        name=args.name, min=args.min, max=args.max, addresses=args.address,
                        peer=args.peer)
            print(json.dumps(r) if args.json else
                  f"{r['vnet']}/{r['name']} on {r['substrate_link']}: in VLI {r['in_vli']}, "
                  f"out VLI {r['out_vli']} (chosen by {r['peer']}), "
                  f"{_r(r['min'])}..{_r(r['max'])}")
        else:
            r = request(args.socket, "vlink_del", timeout=30, vnet=args.vnet, name=args.name)
            print(json.dumps(r) if args.json else
                  f"{r['vnet']}/{r['name']} removed" + ("" if r["peer_acked"] else
                                                         " (peer did not confirm)"))
    except ControlError as e:
        print(f"vnetctl: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
