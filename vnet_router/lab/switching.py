"""Lab switch ports that behave like a campus switch's: an egress rate per port, a bounded
queue, and 802.1p strict priority by the frame's PCP.

A lab switch is a Linux bridge in a namespace of its own (``lab.py``); its ports are veth
ends.  A bare veth has no queue (``noqueue``): a frame is handed to the peer at once, so no
frame ever waits behind another.  :func:`shape_port` gives one port what a switch port has:

* egress at ``rate`` (bit/s of Ethernet frames, header included, FCS, preamble and
  inter-frame gap not counted): ``tbf`` at the port's root.  Its bucket (:func:`burst_bytes`)
  is a few milliseconds at the rate, below 64 KB, so ``tbf`` cuts a GSO packet into frames
  before queueing them: frames, not 64 KB super-packets, wait and are dropped, as on a wire;
* a bounded queue under it: ``pfifo_fast`` (3 bands, each at most ``queue`` frames: the
  port's ``txqueuelen``) when ``priority_queues``, else one ``pfifo`` of ``queue`` frames.
  A frame that finds its queue full is dropped (tail drop), counted by the qdisc;
* ``priority_queues``: ``bpf/pcp_priority.bpf.c`` at TC ingress of the port copies the
  frame's PCP into ``skb->priority`` (PCP 5-7 -> band 0, PCP 0, 3, 4 -> band 1, PCP 1-2 ->
  band 2; untagged = PCP 0); the bridge keeps it when it forwards the frame, and the egress
  port's ``pfifo_fast`` sends band 0 first, band 1 when band 0 is empty, band 2 last: strict
  priority, as a switch's egress scheduler with three queues.  The program must be on every
  port frames come in by (:func:`classify_port`), the queues on every port they leave by.

A trunk between two lab switches (both ends in switch namespaces) is a port of each:
:func:`switch_ports` lists both ends, so :func:`build` shapes and classifies them too.  :func:`port_stats` reads a port's counters (``tc -s``).
The filter outlives the lab's handle on the program (cls_bpf holds it) and goes with the
namespace; nothing here is left on the host.
"""
from __future__ import annotations

import json
import subprocess

from vnet_router.lab.topology import PORT_QUEUE as QUEUE_FRAMES
from vnet_router.model.units import format_rate
from vnet_router.ops import ebpf

SOURCE = str(ebpf.BPF_DIR / "pcp_priority.bpf.c")
TC_HANDLE, TC_PRIORITY = 0x8021, 1          # the classifier's cls_bpf filter (802.1)
ROOT, CHILD = "1:", "10:"

#: PCP -> pfifo_fast band (0 is sent first); what pcp_priority.bpf.c does, for docs and tests
PCP_BAND = {0: 1, 1: 2, 2: 2, 3: 1, 4: 1, 5: 0, 6: 0, 7: 0}


class SwitchingError(RuntimeError):
    pass


def burst_bytes(rate: int) -> int:
    """tbf's bucket for ``rate`` bit/s: 2 ms at the rate, at least 2 full frames, under 64 KB
    (so GSO packets are cut into frames before they queue)."""
    return max(3028, min(rate // 8 // 500, 60000))


def _tc(namespace: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", "netns", "exec", namespace, "tc", *args], capture_output=True,
                       text=True, timeout=30)
    if check and r.returncode != 0:
        raise SwitchingError(f"`tc {' '.join(args)}` in {namespace} failed: "
                             f"{r.stderr.strip()}")
    return r


def _ip(namespace: str, *args: str):
    r = subprocess.run(["ip", "-n", namespace, *args], capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        raise SwitchingError(f"`ip {' '.join(args)}` in {namespace} failed: {r.stderr.strip()}")


def classify_port(namespace: str, ifname: str, program: ebpf.Program | None = None):
    """Attach the PCP classifier at TC ingress of ``ifname`` (in ``namespace``).  ``program``:
    one loaded with :func:`load_classifier` (else loaded for this call)."""
    prog = program or load_classifier()
    try:
        def work():
            ebpf.tc_attach(prog.fd, ebpf.iface_facts(ifname)[0], TC_HANDLE, TC_PRIORITY,
                           replace=True)
        ebpf.in_namespace(namespace, work)
    except (ebpf.BpfError, OSError) as e:
        raise SwitchingError(f"cannot attach the PCP classifier to {ifname} in {namespace}: "
                             f"{e}") from None
    finally:
        if program is None:
            prog.close()


def load_classifier() -> ebpf.Program:
    """The PCP classifier, loaded (verified); close it when every port has it."""
    why = ebpf.available(compiler=False)
    if why:
        raise SwitchingError(f"priority queues need eBPF: {why}")
    try:
        return ebpf.load_shipped(SOURCE)
    except (ebpf.BpfError, OSError) as e:
        raise SwitchingError(f"cannot load the PCP classifier: {e}") from None


def shape_port(namespace: str, ifname: str, rate: int | None, priority_queues: bool,
               queue: int = QUEUE_FRAMES, program: ebpf.Program | None = None):
    """Make ``ifname`` (in ``namespace``) a switch port: egress held to ``rate`` bit/s (None:
    unshaped) over a queue of ``queue`` frames per band; ``priority_queues``: frames coming in
    by it are classified by PCP, and (with a rate) its queue has the three bands."""
    if priority_queues:
        classify_port(namespace, ifname, program)
    if rate is None:
        return
    burst = burst_bytes(rate)
    _ip(namespace, "link", "set", ifname, "txqueuelen", str(queue))
    _tc(namespace, "qdisc", "replace", "dev", ifname, "root", "handle", ROOT, "tbf",
        "rate", f"{rate}bit", "burst", str(burst), "limit", str(burst + queue * 1514))
    child = ["pfifo_fast"] if priority_queues else ["pfifo", "limit", str(queue)]
    _tc(namespace, "qdisc", "replace", "dev", ifname, "parent", "1:1", "handle", CHILD, *child)


def port_stats(namespace: str, ifname: str) -> dict:
    """A port's egress counters, from ``tc -s``: ``{"rate", "sent_bytes", "sent_packets",
    "drops", "overlimits", "backlog_bytes", "backlog_packets", "queue"}`` (``rate`` None and
    the rest 0 for an unshaped port; ``queue``: the child qdisc's kind)."""
    r = _tc(namespace, "-s", "-j", "qdisc", "show", "dev", ifname)
    try:
        qdiscs = json.loads(r.stdout or "[]")
    except ValueError:
        raise SwitchingError(f"cannot read `tc -s -j qdisc show dev {ifname}` in {namespace}: "
                             f"{r.stdout[:200]!r}") from None
    root = next((q for q in qdiscs if q.get("kind") == "tbf" and q.get("root")), None)
    child = next((q for q in qdiscs if q.get("parent") == "1:1"), None)
    if root is None:
        return {"rate": None, "sent_bytes": 0, "sent_packets": 0, "drops": 0,
                "overlimits": 0, "backlog_bytes": 0, "backlog_packets": 0, "queue": None}
    return {"rate": int(root.get("options", {}).get("rate", 0)) * 8 or None,   # tc: bytes/s
            "sent_bytes": root.get("bytes", 0), "sent_packets": root.get("packets", 0),
            "drops": root.get("drops", 0),       # tbf counts what its queue refused
            "overlimits": root.get("overlimits", 0),
            "backlog_bytes": root.get("backlog", 0), "backlog_packets": root.get("qlen", 0),
            "queue": (child or {}).get("kind")}


# -- a lab's switches ---------------------------------------------------------------------------

def switch_ports(topo, switch: str) -> list:
    """``(port ifname, rate, queue)`` of each port of ``switch`` (a ``Topology``'s), in link
    order; a link's ``port_rate``/``port_queue`` win over the switch's (on a trunk, at both
    ends: each switch has one of its ports)."""
    sw = next(s for s in topo.switches if s.name == switch)
    return [(end.ifname,
             link.port_rate if link.port_rate is not None else sw.port_rate,
             link.port_queue if link.port_queue is not None else sw.port_queue)
            for link in topo.links for end in (link.a, link.b) if end.switch == switch]


def build(topo, ns_of, progress=lambda msg: None, error: type[Exception] = SwitchingError):
    """Give every port of ``topo``'s switches its rate, queue and classifier (``ns_of``:
    switch name -> its namespace).  Called once the links are up; a failure raises ``error``
    (the lab's own exception, which its callers catch) naming the switch and port."""
    try:
        _build(topo, ns_of, progress)
    except SwitchingError as e:
        raise error(str(e)) from None


def _build(topo, ns_of, progress):
    wanted = [sw for sw in topo.switches if sw.priority_queues or
              any(rate is not None for _p, rate, _q in switch_ports(topo, sw.name))]
    if not wanted:
        return
    program = load_classifier() if any(sw.priority_queues for sw in wanted) else None
    try:
        for sw in wanted:
            shown = []
            for port, rate, queue in switch_ports(topo, sw.name):
                shape_port(ns_of(sw.name), port, rate, sw.priority_queues, queue, program)
                shown.append(f"{port} {_rate_text(rate)}")
            progress(f"switch {sw.name}: " + ", ".join(shown) + (
                " (802.1p priority queues)" if sw.priority_queues else " (one FIFO per port)"))
    finally:
        if program is not None:
            program.close()


def switch_stats(topo, ns_of, switch: str) -> dict[str, dict]:
    """port ifname -> :func:`port_stats` of every port of ``switch``."""
    return {port: port_stats(ns_of(switch), port) for port, _r, _q in switch_ports(topo, switch)}



def _rate_text(rate: int | None) -> str:
    return "unshaped" if rate is None else format_rate(rate)
