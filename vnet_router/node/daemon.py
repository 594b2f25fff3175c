"""``vnet-router``: the substrate router daemon.

Order of work: parse arguments, load and validate the configuration, check it against the
system (interfaces exist) -- all before touching anything; then ``Node`` creates vNet
namespaces and TAPs, opens the datapath, serves the control socket (and metrics), reloads on
SIGHUP / ``vnetctl reload``, and runs until SIGTERM/SIGINT, when it removes what it created.
Exit status: 0 clean stop, 1 runtime failure, 2 bad configuration.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from vnet_router import __version__
from vnet_router.model import config as config_mod
from vnet_router.model.paths import narrowing_switches
from vnet_router.model.schema import ConfigError
from vnet_router.model.tables import Tables
from vnet_router.node.lifecycle import Node
from vnet_router.node.owned import StateError, StateFile
from vnet_router.ops import logs, loop, underlay
from vnet_router.node import keygen, ports as ports_mod, units
from vnet_router.node.ports import EnvironmentError_, read_facts

log = logging.getLogger("vnet_router")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="vnet-router",
        description="Substrate router: multiplexes virtual networks onto substrate links "
                    "(see docs/configuration.md for the config file).",
        epilog="vnet-router install-units [--dir DIR] [--print]: write the systemd units with "
               "the paths of the installed commands (see vnet-router install-units --help). "
               "vnet-router keygen FILE: write a key file for a substrate link's key_file "
               "(see vnet-router keygen --help).")
    p.add_argument("-c", "--config", required=True, help="TOML configuration file")
    p.add_argument("--check", action="store_true",
                   help="validate the configuration (and the interfaces it names) and exit; "
                        "warns about UDP links whose local address or route is missing here")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--prepare", action="store_true",
                       help="privileged helper step (systemd ExecStartPre=+): create the vNet "
                            "namespaces of the configuration, then exit")
    steps.add_argument("--configure", action="store_true",
                       help="privileged helper step (ExecStartPost=+, ExecReload=+): name, "
                            "address and bring up the running daemon's logical interfaces "
                            "inside their namespaces, then exit")
    steps.add_argument("--cleanup", action="store_true",
                       help="privileged helper step (ExecStopPost=+): remove the vNet "
                            "namespaces of the configuration, then exit")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="override [node].log_level")
    p.add_argument("--version", action="version", version=f"vnet-router {__version__}")
    return p.parse_args(argv)


def underlay_warnings(cfg) -> list[str]:
    """``--check``: a warning for each UDP link whose local address is not on this node or
    whose remote has no route from it -- as the kernel of the network namespace ``--check``
    runs in sees it (the daemon's is the one it is started in): such a link starts down and
    is retried (``node/underlay.py``); it does not stop the node."""
    out = []
    for s in cfg.substrate_links:
        if s.kind != "udp":
            continue
        try:
            missing = underlay.probe(s.local, s.remote)
        except OSError as e:
            missing = f"cannot probe it: {e}"
        if missing is not None:
            out.append(f"warning: substrate link {s.id}: {missing}, in "
                       f"{underlay.netns_name()}; the daemon starts with the link down and "
                       f"brings it up once it is there")
    return out


def setup_logging(level: str):
    logs.setup(level)


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["install-units"]:
        return units.main(argv[1:])
    if argv[:1] == ["keygen"]:
        return keygen.main(argv[1:])
    args = parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
        if args.prepare or args.configure or args.cleanup:
            step = (ports_mod.prepare_namespaces if args.prepare else
                    ports_mod.configure_namespaces if args.configure else
                    ports_mod.remove_namespaces)
            for line in step(cfg):
                print(f"vnet-router: {line}")
            return 0
        state = StateFile(cfg.node.state_path)
        if args.check:
            # the running node's own interfaces exist, of course: not a conflict
            facts = read_facts(cfg, owned={(cfg.vnet(li.vnet).namespace, li.name)
                                           for li in cfg.interfaces} if state.in_use() else None)
            previous = {}
        else:
            previous = state.acquire()         # before anything else: one node per state
            try:
                facts = read_facts(cfg)
            except EnvironmentError_:
                state.release(clean=not previous)
                raise
    except (ConfigError, EnvironmentError_, StateError) as e:
        print(f"vnet-router: {e}", file=sys.stderr)
        return 2
    setup_logging(args.log_level or cfg.node.log_level)
    if args.check:
        print(f"{args.config}: OK ({len(cfg.substrate_links)} substrate links, {len(cfg.vnets)} "
              f"vNets, {len(cfg.interfaces)} logical interfaces, {len(cfg.switches)} switches)")
        if cfg.vbm is not None and cfg.vbm.signing_seed:
            from vnet_router.wire import auth
            print(f"VBM public key (the nodes' [tm] vbm_public_key): "
                  f"{auth.public_bytes(auth.signing_key(cfg.vbm.signing_seed)).hex()}")
        snap = Tables(cfg, facts).compile()
        for line in narrowing_switches(cfg, {i: c.payload_mtu for i, c in snap.links.items()}):
            print(f"path MTU: {line}")
        for line in underlay_warnings(cfg):
            print(f"underlay: {line}")
        return 0
    # Netlink work (pyroute2 runs its own event loop) happens outside the datapath's loop:
    # namespaces and TAPs are made before it starts and removed after it ends.  Stop signals
    # are held back (blocked, not lost) during both, so set-up and clean-up are never cut
    # short; Node.run() unblocks them once its handlers are in place, and a SIGTERM that
    # arrived during set-up then stops the node at once.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    node = Node(cfg, facts, unblock=STOP_SIGNALS, state=state, previous=previous)
    try:
        node.setup_system()
        return loop.run(node.run())
    except Exception:
        log.exception("vnet-router failed")
        return 1
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        node.teardown_system()


if __name__ == "__main__":
    sys.exit(main())
