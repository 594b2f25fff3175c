"""``vnet-router``: the substrate router daemon.

Order of work: parse arguments, load and validate the configuration, check it against the
system (interfaces exist) -- all before touching anything; then create vNet namespaces and
TAPs (``ports``), open the datapath, serve the control socket, and run until SIGTERM/SIGINT,
when it removes what it created.  Exit status: 0 clean stop, 1 runtime failure, 2 bad
configuration.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time

from . import __version__, config as config_mod
from .datapath import Datapath
from .ports import EnvironmentError_, Ports, read_facts
from .status import status
from .tables import Tables
from .control import ControlServer
from .controlplane import ControlPlane

log = logging.getLogger("vnet_router")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="vnet-router",
        description="Substrate router: multiplexes virtual networks onto substrate links "
                    "(see docs/configuration.md for the config file).")
    p.add_argument("-c", "--config", required=True, help="TOML configuration file")
    p.add_argument("--check", action="store_true",
                   help="validate the configuration (and the interfaces it names) and exit")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="override [node].log_level")
    p.add_argument("--version", action="version", version=f"vnet-router {__version__}")
    return p.parse_args(argv)


def setup_logging(level: str):
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def run(cfg: config_mod.NodeConfig, tables: Tables, ports: Ports) -> int:
    loop = asyncio.get_running_loop()
    dp = None
    control = None
    cp = None
    started = time.time()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        dp = Datapath(tables, loop)
        for (vnet, name), tap in ports.taps.items():
            dp.add_port(vnet, name, tap.fd)
        dp.open()
        handlers = {
            "show": lambda: status(cfg, tables, dp, started, cp),
            "ping": lambda: "pong",
        }
        if cfg.tm is not None or cfg.vbm is not None:
            cp = ControlPlane(cfg, tables, dp, ports, loop)
            cp.start()
            handlers.update(alloc=cp.allocations, vlink_add=cp.vlink_add,
                            vlink_del=cp.vlink_del)
        control = ControlServer(cfg.node.control_socket, handlers)
        await control.start()
        log.info("node %s ready: %d substrate links, %d vNets, %d logical interfaces, "
                 "%d switched virtual links", cfg.node.name, len(cfg.substrate_links),
                 len(cfg.vnets), len(cfg.interfaces), len(cfg.switches))
        await stop.wait()
        log.info("stopping")
        return 0
    finally:
        if control is not None:
            await control.close()
        if cp is not None:
            await cp.close()
        if dp is not None:
            dp.close()


_MAIN_PID = os.getpid()


def _terminate(signum, frame):
    # pyroute2 forks helper processes that inherit this handler; only the daemon itself
    # turns SIGTERM into an orderly stop.
    if os.getpid() == _MAIN_PID:
        raise KeyboardInterrupt
    os._exit(0)


def main(argv=None) -> int:
    global _MAIN_PID
    args = parse_args(argv)
    _MAIN_PID = os.getpid()
    signal.signal(signal.SIGTERM, _terminate)       # until the event loop takes over
    try:
        cfg = config_mod.load(args.config)
        facts = read_facts(cfg)
    except (config_mod.ConfigError, EnvironmentError_) as e:
        print(f"vnet-router: {e}", file=sys.stderr)
        return 2
    setup_logging(args.log_level or cfg.node.log_level)
    if args.check:
        print(f"{args.config}: OK ({len(cfg.substrate_links)} substrate links, {len(cfg.vnets)} "
              f"vNets, {len(cfg.interfaces)} logical interfaces, {len(cfg.switches)} switches)")
        return 0
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:         # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    # Netlink work (pyroute2 runs its own event loop) happens outside the datapath's loop:
    # namespaces and TAPs are made before it starts and removed after it ends.
    tables = Tables(cfg, facts)
    ports = Ports(cfg)
    try:
        ports.setup(tables.compile())
        return runner(run(cfg, tables, ports))
    except KeyboardInterrupt:
        log.info("interrupted during set-up")
        return 0
    except Exception:
        log.exception("vnet-router failed")
        return 1
    finally:
        ports.teardown()


if __name__ == "__main__":
    sys.exit(main())
