"""A lab's management network, and a Prometheus that scrapes every node through it.

Containerlab's management network is the model.  With ``[lab] management = "172.31.0.0/24"``
(or ``vnet-lab up --prometheus``, which uses :data:`DEFAULT_NETWORK` when the file names none)
the lab builds:

* namespace ``PREFIX+mgmt`` with a bridge ``mgmt`` holding the network's first address (the
  gateway, where Prometheus scrapes from);
* a veth ``mgmt0`` into every node (its bridge port is named like the node), the node's
  address the next ones, in file order;
* every daemon's metrics endpoint reachable on its management address: a config without
  ``[node] metrics`` gets ``MGMT_ADDRESS:9477``; one on a loopback address is served on all of
  the node's addresses (``0.0.0.0:PORT``), so it still answers on loopback inside the node.

Nothing is routed: the management network is one bridge in the lab's own namespace, with no
way out of the lab.  :func:`start_prometheus` writes ``WORKDIR/prometheus.yml`` (every daemon
a target, labelled ``node=NAME``), runs Debian's ``prometheus`` in the management namespace on
its loopback, and makes its web UI reachable on a host loopback port through
``vnet_router.lab.forward`` (the listening socket is opened here, in the host's namespace, and
handed to the forwarder that runs inside the management namespace).  Both are processes of
the lab: stopped at teardown, like the daemons.  Control sockets need none of this: they are
files in the work dir (``vnetctl -s WORKDIR/NODE.sock``).

``lab.py`` calls :func:`build` after the topology is built and :func:`render` on each node's
config; topology validation (``check``) runs when the file is loaded.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from vnet_router.model.schema import Invalid
from vnet_router.ops import netlink

MGMT = "mgmt"          #: the management namespace (PREFIX+mgmt), its bridge, the nodes' mgmt0
DEFAULT_NETWORK = "172.31.0.0/24"
METRICS_PORT = 9477
PROMETHEUS_PORT = 9090  #: in the management namespace, on its loopback


def check(cidr: str, names: set[str], ifaces: dict, nodes) -> None:
    """``[lab] management`` against the topology (Invalid naming the key)."""
    net = ipaddress.ip_interface(cidr).network
    if net.version != 4 or net.num_addresses < 4:
        raise Invalid(("lab", "management"), f"want an IPv4 network with room for the nodes, "
                      f"e.g. {DEFAULT_NETWORK}, not {cidr}")
    if len(nodes) + 2 > net.num_addresses - 1:
        raise Invalid(("lab", "management"), f"{net} has no room for {len(nodes)} nodes")
    if MGMT in names:
        raise Invalid(("lab", "management"), f"a node or switch is named {MGMT!r}, the "
                      "management network's namespace; rename it")
    for i, n in enumerate(nodes):
        if f"{MGMT}0" in ifaces.get(n.name, ()):
            raise Invalid(("node", i), f"node {n.name} has an interface {MGMT}0, the "
                          "management network's")
        for ifname, cidrs in n.addresses:
            for c in cidrs:
                other = ipaddress.ip_interface(c).network
                if other.version == 4 and other.overlaps(net):
                    raise Invalid(("lab", "management"), f"{net} overlaps node {n.name}'s "
                                  f"address {c} ({ifname}); choose another network")


def network(topo, override: str | None) -> str | None:
    """The lab's management network: ``[lab] management``, else ``override`` (checked)."""
    if topo.lab.management is not None or override is None:
        return topo.lab.management
    try:
        check(override, {n.name for n in topo.nodes} | {s.name for s in topo.switches},
              {n.name: n.interfaces for n in topo.nodes}, topo.nodes)
    except Invalid as e:
        raise ValueError(f"{topo.path}: management network {override}: {e}") from None
    return override


def addresses(network: str, nodes) -> tuple[str, dict[str, str]]:
    """(the gateway's address, node -> address), both as ``ADDRESS/PREFIXLEN``."""
    net = ipaddress.ip_interface(network).network
    hosts = iter(net.hosts())
    gw = f"{next(hosts)}/{net.prefixlen}"
    return gw, {n.name: f"{next(hosts)}/{net.prefixlen}" for n in nodes}


def build(lab) -> None:
    """The management namespace, bridge and a veth into each node of a started ``lab``."""
    network = lab.management
    if network is None:
        return
    ns = lab.ns(MGMT)
    if netlink.netns_exists(ns):
        raise RuntimeError(f"namespace {ns} already exists")
    netlink.netns_create(ns)
    lab._created.append(ns)
    netlink.bridge_create(MGMT, ns)
    gw, addrs = addresses(network, lab.topo.nodes)
    netlink.addr_add(MGMT, gw, ns)
    for node in lab.topo.nodes:
        netlink.veth_create_between(f"{MGMT}0", lab.ns(node.name), node.name, ns)
        netlink.bridge_attach(node.name, MGMT, ns)
        netlink.addr_add(f"{MGMT}0", addrs[node.name], lab.ns(node.name))
    lab.progress(f"management network {network}: namespace {ns}, gateway {gw}, "
                 + ", ".join(f"{n} {a}" for n, a in addrs.items()))


def render(lab, node: str, config: dict) -> dict:
    """A node's rendered config with its metrics reachable on the management network."""
    if lab.management is None:
        return config
    section = config.setdefault("node", {})
    if not isinstance(section, dict):
        return config                       # the schema names the problem
    addr = addresses(lab.management, lab.topo.nodes)[1][node].split("/")[0]
    metrics = section.get("metrics")
    if metrics is None:
        section["metrics"] = f"{addr}:{METRICS_PORT}"
    elif isinstance(metrics, str) and ":" in metrics:
        host, _, port = metrics.rpartition(":")
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return config
        if ip.is_loopback:
            section["metrics"] = f"0.0.0.0:{port}" if ip.version == 4 else f"[::]:{port}"
    return config


def _wait_ready(prom: subprocess.Popen, url: str, workdir: Path, timeout: float) -> None:
    """Until Prometheus answers ``/-/ready`` through the forwarder (RuntimeError, with the
    log's tail, when it exits or does not within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        if prom.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    tail = (workdir / "prometheus.log").read_text(errors="replace").splitlines()[-10:]
    state = f"exited with status {prom.returncode}" if prom.poll() is not None else \
        f"not ready after {timeout:g} s"
    raise RuntimeError(f"prometheus {state}; last lines of prometheus.log:\n" + "\n".join(tail))


def targets(lab) -> dict[str, str]:
    """node -> ``ADDRESS:PORT`` of the metrics endpoint on the management network."""
    addrs = addresses(lab.management, lab.topo.nodes)[1]
    out = {}
    for node, cfg in lab.configs.items():
        if cfg.node.metrics is not None:
            out[node] = f"{addrs[node].split('/')[0]}:{cfg.node.metrics[1]}"
    return out


def prometheus_yml(lab, interval: float = 5.0) -> str:
    """Every daemon as a target, labelled ``node=NAME`` (YAML; JSON strings are YAML)."""
    lines = ["global:", f"  scrape_interval: {interval:g}s", f"  scrape_timeout: {interval:g}s",
             "scrape_configs:", "  - job_name: vnet", "    static_configs:"]
    for node, target in targets(lab).items():
        lines += [f"      - targets: [\"{target}\"]", f"        labels: {{node: \"{node}\"}}"]
    return "\n".join(lines) + "\n"


def start_prometheus(lab, listen: tuple[str, int], interval: float = 5.0,
                     timeout: float = 30.0) -> int:
    """Prometheus in the management namespace, its web UI on host ``listen`` (a loopback
    address; port 0: any free one).  Returns the port once it answers there."""
    if lab.management is None:
        raise RuntimeError("the lab has no management network ([lab] management)")
    if shutil.which("prometheus") is None:
        raise RuntimeError("prometheus is not installed (Debian: apt-get install prometheus)")
    if not ipaddress.ip_address(listen[0]).is_loopback:
        raise RuntimeError(f"--prometheus {listen[0]}: only a loopback address (the lab's "
                           "traffic stays on the host)")
    conf = Path(lab.workdir) / "prometheus.yml"
    conf.write_text(prometheus_yml(lab, interval))
    data = Path(lab.workdir) / "prometheus-data"
    data.mkdir(exist_ok=True)
    ns = lab.ns(MGMT)
    with open(Path(lab.workdir) / "prometheus.log", "ab") as log:
        lab._procs.append(prom := lab._popen(
            ["ip", "netns", "exec", ns, "prometheus", f"--config.file={conf}",
             f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(listen)
        listener.listen(64)
        port = listener.getsockname()[1]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")) if p)
        with open(Path(lab.workdir) / "forward.log", "ab") as log:
            lab._procs.append(lab._popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "vnet_router.lab.forward",
                 str(listener.fileno()), f"127.0.0.1:{PROMETHEUS_PORT}"],
                pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, env=env))
    finally:
        listener.close()                    # the forwarder holds it now
    _wait_ready(prom, f"http://{listen[0]}:{port}/-/ready", Path(lab.workdir), timeout)
    lab.progress(f"prometheus: {len(targets(lab))} targets ({conf.name}), scraping every "
                 f"{interval:g} s in {ns}; web UI http://{listen[0]}:{port}/ (log "
                 f"prometheus.log)")
    return port
