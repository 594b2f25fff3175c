"""``vnet-lab``: build lab topologies of network namespaces and run vnet-router on them.

    vnet-lab demo                 the paper's Fig. 4 LAN: build, check, report, tear down
    vnet-lab up FILE              build any topology file and keep it until Ctrl-C
    vnet-lab up --prefix P FILE   the same, its namespaces named P+NAME (labs side by side)
    vnet-lab up --prometheus FILE the same, with a Prometheus scraping every node (mgmt.py)
    vnet-lab clean                remove namespaces of labs whose process is gone, and kill
                                  what their background commands left running

The work (``Lab``, the demo) lives in ``lab.py`` and ``demo.py``; this module only parses
arguments and prints.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time

from vnet_router.ops import netlink
from vnet_router.model.schema import ConfigError
from vnet_router.lab import cgroup, demo, mgmt
from vnet_router.lab.lab import (Lab, LabError, forget_stale_owners, processes_in,
                                  stale_namespaces)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="vnet-lab",
        description="Build topologies of network namespaces, veth pairs and bridges, run "
                    "vnet-router on their nodes, and run the demo of the paper's Fig. 4 LAN. "
                    "Needs root. The topology file format is described in docs/lab.md.")
    def common(parser, default):
        parser.add_argument("--workdir", metavar="DIR", default=default,
                            help="write node configs and daemon logs here (kept afterwards); "
                                 "default: a fresh temporary directory, removed at the end")
        parser.add_argument("--keep-logs", action="store_true", default=default or False,
                            help="keep the temporary work dir (configs, daemon logs) and "
                                 "print its path")

    def prefix(parser):
        parser.add_argument("--prefix", metavar="P", default=None,
                            help="name the lab's namespaces P+NAME, so labs run side by side "
                                 "(a letter, up to 15 letters/digits/'_', then '-', e.g. "
                                 "'labA-'; default: vl<pid>-)")

    common(p, None)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    d = sub.add_parser("demo", help="build the Fig. 4 LAN, run the checks, print a report; "
                                    "exit 0 only if every check is as expected")
    common(d, argparse.SUPPRESS)
    prefix(d)
    d.add_argument("--topology", metavar="FILE", default=str(demo.DEMO_TOPOLOGY),
                   help="demo topology file (default: %(default)s)")
    d.add_argument("--plot", metavar="PNG", default="vnet-demo-rates.png",
                   help="where to write the plot of both vNets' rates under the flood "
                        "(default: %(default)s in the current directory)")
    u = sub.add_parser("up", help="build a topology file and keep it up until Ctrl-C")
    u.add_argument("file", help="topology file (TOML)")
    common(u, argparse.SUPPRESS)
    prefix(u)
    u.add_argument("--prometheus", metavar="HOST:PORT", nargs="?", const="127.0.0.1:9090",
                   default=None,
                   help="build the management network ([lab] management, else "
                        "172.31.0.0/24), run Prometheus in it with every node as a target, and "
                        "serve its web UI on this host loopback address (default: %(const)s; "
                        "port 0: any free one)")
    c = sub.add_parser("clean", help="remove the namespaces of labs whose process has gone "
                                     "and kill what their background commands left running")
    c.add_argument("--kill", action="store_true",
                   help="also SIGTERM processes still running inside those namespaces")
    sub.add_parser("check", help="validate a topology file, report the logical interfaces "
                                 "whose static path carries less than their MTU, and exit "
                                 "(1: frames would be lost)").add_argument("file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cmd == "check":
        return _check(args)
    if os.geteuid() != 0:
        print("vnet-lab: needs root (network namespaces, veth, TAP)", file=sys.stderr)
        return 1
    # Ctrl-C tears the lab down even when we were started with SIGINT ignored (`vnet-lab up &`
    # in a script: background jobs inherit SIGINT ignored, and Python then keeps it so)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if args.cmd == "demo":
            return demo.run(args.topology, workdir=args.workdir, keep_logs=args.keep_logs,
                            plot=args.plot, prefix=args.prefix)
        if args.cmd == "up":
            return _up(args)
        return _clean(args)
    except KeyboardInterrupt:
        print("\nvnet-lab: interrupted; everything was removed", file=sys.stderr)
        return 130


def _check(args) -> int:
    from vnet_router.lab import campus, topology
    try:
        t = topology.load(args.file)
    except ConfigError as e:
        print(f"vnet-lab: {e}", file=sys.stderr)
        return 2
    print(f"{args.file}: OK: {summary(t)}")
    lines, ok = topology.path_net(t).report()
    for line in lines:
        print(f"path MTU: {line}")
    for line in topology.underlay_report(t):
        print(f"underlay: {line}")
    for line in campus.report(t):
        print(f"campus: {line}")
    return 0 if ok else 1


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def summary(t) -> str:
    """What a topology holds, e.g. ``4 nodes (1 substrate router, 3 end-systems), 1 switch,
    4 links`` (``Node.role``)."""
    roles = [n.role for n in t.nodes]
    hostd = sum(n.daemon == "host" and n.has_router for n in t.nodes)
    parts = [text for text in (
        _plural(roles.count("router"), "substrate router"),
        _plural(roles.count("end-system"), "end-system") +
        (f" ({hostd} on vnet-hostd)" if hostd else ""),
        _plural(roles.count("daemon"), "other node running vnet-router",
                "other nodes running vnet-router"),
        f"{roles.count('plain')} without a daemon") if not text.startswith("0 ")]
    return (_plural(len(t.nodes), "node") + (f" ({', '.join(parts)})" if parts else "")
            + f", {_plural(len(t.switches), 'switch', 'switches')}, "
            f"{_plural(len(t.links), 'link')}")


def _up(args) -> int:
    def progress(msg):
        print(f"  {msg}", flush=True)

    print(f"vnet-lab: building {args.file}", flush=True)
    try:
        lab = Lab(args.file, workdir=args.workdir, keep_workdir=args.keep_logs,
                  progress=progress, prefix=args.prefix,
                  management=mgmt.DEFAULT_NETWORK if args.prometheus else None)
        listen = _host_port(args.prometheus) if args.prometheus else None
    except (ConfigError, LabError, ValueError) as e:
        print(f"vnet-lab: {e}", file=sys.stderr)
        return 2
    try:
        with lab:
            if listen is not None:
                try:
                    mgmt.start_prometheus(lab, listen)
                except (RuntimeError, OSError) as e:
                    raise LabError(f"prometheus: {e}") from None
            _print_summary(lab)
            print("up; press Ctrl-C to tear it down", flush=True)
            reported = set()
            while True:
                lab.commands.exited()           # reported by the lab's progress lines
                for node, rc in lab.alive().items():
                    if rc is not None and node not in reported:
                        reported.add(node)
                        print(f"vnet-lab: daemon of node {node} exited with status {rc}; "
                              f"last lines of its log:\n{lab.log_tail(node)}", flush=True)
                time.sleep(1)
    except KeyboardInterrupt:
        print("\nvnet-lab: torn down", flush=True)
        return 0
    except SystemExit as e:            # SIGTERM / SIGHUP while up (see Lab._install_signals)
        print(f"vnet-lab: torn down (signal {e.code - 128 if isinstance(e.code, int) else '?'})",
              flush=True)
        return 0
    except RuntimeError as e:          # LabError, or a campus/management step that failed
        print(f"vnet-lab: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep_logs or args.workdir:
            print(f"vnet-lab: configs and daemon logs kept in {lab.workdir}", flush=True)


def _print_summary(lab: Lab):
    print("namespaces (use `ip netns exec NAME COMMAND`):")
    for sw in lab.topo.switches:
        print(f"  {lab.ns(sw.name):24} switch {sw.name}")
    for node in lab.topo.nodes:
        ifs = ", ".join(f"{i} {lab.mac(node.name, i)}" for i in node.interfaces)
        print(f"  {lab.ns(node.name):24} node {node.name}: {ifs}")
        if node.name in lab.configs:
            for v in lab.configs[node.name].vnets:
                print(f"  {v.namespace:24}   vNet {v.name} of {node.name}")
    for bg in lab.commands.running():
        print(f"background {bg} (pid {bg.proc.pid}, log {bg.log.name}): {bg.command}")
    for node in lab.configs:
        print(f"control: vnetctl -s {shlex.quote(lab.socket(node))} show      # {node}")
    if lab.management is not None:
        print(f"management network {lab.management} in {lab.ns(mgmt.MGMT)}; metrics:")
        for node, target in mgmt.targets(lab).items():
            print(f"  ip netns exec {lab.ns(mgmt.MGMT)} curl -s http://{target}/metrics"
                  f"      # {node}")
    print(f"control messages: authenticated with {lab.key_file}" if lab.key_file else
          "control messages: NOT authenticated ([lab] keys = false)")
    print(f"work dir (configs, logs): {lab.workdir}"
          + ("" if lab.keep_workdir or lab._workdir_arg else " (removed at exit; --keep-logs keeps it)"))


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--prometheus {text!r}: want HOST:PORT, e.g. 127.0.0.1:9090")
    return host.strip("[]"), int(port)


def _clean(args) -> int:
    for prefix, n in cgroup.sweep().items():       # background commands of dead labs
        print(f"cgroup {cgroup.BASE}/{prefix}: killed {n} processes, removed")
    stale = stale_namespaces()
    if not stale:
        forget_stale_owners()
        print("vnet-lab: no stale lab namespaces")
        return 0
    for ns in stale:
        pids = processes_in(ns)
        if pids and args.kill:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            print(f"{ns}: sent SIGTERM to {', '.join(map(str, pids))}")
        elif pids:
            print(f"{ns}: processes still inside: {', '.join(map(str, pids))} "
                  "(--kill ends them)")
        netlink.netns_remove(ns)
        print(f"{ns}: removed")
    forget_stale_owners()
    return 0


if __name__ == "__main__":
    sys.exit(main())
