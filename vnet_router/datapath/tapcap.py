"""TAP capture (``[node] tap_capture = "auto"``): the frames a vNet sends into its TAP logical
interfaces reach the compiled engine through a ring of its vNet, filled in the sender's
context.

Without it the engine reads every TAP with one ``read()`` per frame, and the copy out of the
kernel, the free of the packet and the system call all land on the engine's core.  A frame
from a substrate interface costs the engine less: its AF_PACKET ring is filled in the sender's
softirq.  ``bpf/tap_capture.bpf.c`` at TC egress of each TAP does the same for TAPs: it copies
the frame into a BPF ring buffer and consumes it there; the engine's ring thread walks those
rings like substrate rings (``datapath/_fastpath.pyx``, ``_CapRing``).

``TapCapture`` owns the program (loaded once through ``ops.ebpf``), its attachments and its
``ports`` map: key (network namespace cookie, ifindex), so TAPs of different namespaces never
mix; value (capture id, paused).  The id is stable while the port lives: a slot (below the
map's 4096 entries, reused) and a generation above it (bit 12 on, new at every reuse), so a
record still in the ring from a port that went is never taken for the one that took its slot;
the engine's compiled ports are found by slot and checked by id.  ``paused`` is written by the engine when the port's shaper queue is
full (the program then leaves the TAP's frames in the TAP's queue, where the kernel's
back-pressure holds the sender, and the engine reads them with ``read()`` once resumed).

What the program leaves to the TAP is read with ``read()`` as before: a paused port's
frames, GSO packets, frames whose checksum the kernel has not finished -- every TCP segment
the vNet's own stack sends, so a local TCP connection keeps one way to the engine and the
kernel's TCP small queues keep their back-pressure -- and the odd ones (an offloaded VLAN
tag, above 9216 bytes).  What it takes is UDP, ICMP, raw frames and what the vNet forwards.

A vNet whose stack floods its TAPs cannot take the capture from the others: the ports of one
vNet make a group (``groups``: slot -> group), and each group has a ring of its own (``rings``,
an array of ring buffers: group ``g`` writes ring ``g % RINGS``, created here when a group
first needs it), which the ring thread serves in the same rounds as the substrate rings
(``_Engine.serve``: a quiet ring's frame first, a walk yields to it every YIELD_EVERY frames).
A quiet vNet's frame so waits behind a few frames of the flood, not behind whatever the flood
holds in a shared FIFO (one ring shared with a 1 MiB share per vNet: 12 ms of B's median RTT
beside A's flood, benchmark rows (o)).

Where more than RINGS vNets have captured TAPs, a ring is shared, and each of its groups holds
at most its share of it: the program counts the bytes it reserves per group, the engine's walk
publishes the bytes it walked past per group (``consumed``, mmap'd by ``_CapRing``) and the
program drops a frame whose group would hold more than its ``budget``.  ``shares`` computes
the budgets per ring: the ring, less one record per CPU (the check and the reservation are not
one atomic step), in equal parts among its groups (the whole ring for a group alone on it),
written again when a vNet comes or goes.

Every frame the program drops -- over its vNet's share, or the ring full -- is counted by its
port (``refused``); ``take_drops`` hands those counts over by port, and the engine adds them
to the ``ring_full`` drops, globally and on the port's output virtual link (its vNet).  If the
program cannot load or a TAP cannot be attached, one log line says why and those TAPs are
read with ``read()``.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import threading
import time

from vnet_router.model.names import CAPTURE_COUNTERS
from vnet_router.ops import ebpf

log = logging.getLogger(__name__)

SOURCE = str(ebpf.BPF_DIR / "tap_capture.bpf.c")
ENV = "VNET_TAP_CAPTURE"
TC_HANDLE, TC_PRIORITY = 0x564E, 2
TUNGETIFF = 0x800454D2
TUNGETDEVNETNS = 0x54E3
SO_NETNS_COOKIE = 71
COUNTERS = CAPTURE_COUNTERS.ordered()   # by index in its counters map: taken ring_full ...
SYNC_S = 0.2                # the ring thread reads the kernel's drop counts at most this often
SLOT_MASK = 0xFFF           # a capture id: slot | generation << 12
RECORD_MAX = 8 + 8 + 9216   # the ring bytes of the largest record (header, struct rec, JUMBO)
_KEY = struct.Struct("<QII")
_VAL = struct.Struct("<II")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


SHARE_MAX = 1 << 20         # bytes of a ring one vNet may hold while others share it
RINGS = 64                  # rings of the program's ``rings`` (bpf/tap_capture.bpf.c: RINGS)
RING_BYTES = 1 << 21        # data bytes of each (RING_BYTES there)
_RINGBUF = 27               # BPF_MAP_TYPE_RINGBUF


def shares(ring: int, groups, cpus: int) -> dict:
    """Ring bytes each of ``groups`` may hold: ``ring`` less one largest record per CPU (each
    CPU may pass the check before another's reservation counts), in equal parts rounded down
    to 8 bytes, never less than one largest record (a vNet can always send a frame; with
    more than ~900 vNets their shares may then add up to more than the ring).  With more than
    one vNet a part is at most SHARE_MAX: the ring is one FIFO, so a frame of a quiet vNet
    waits behind whatever a flooding vNet holds in it (1 MiB: about 7,000 small frames or 680
    full ones; 4 MiB, half of the ring, measured 46 ms of B's median RTT; 128 KiB refused the
    bursts of a single raw sender of 200-400 frames on a loaded machine, ENOBUFS to it).
    """
    groups = list(groups)
    if not groups:
        return {}
    part = (ring - cpus * RECORD_MAX) // len(groups) // 8 * 8
    if len(groups) > 1:
        part = min(part, SHARE_MAX)
    return dict.fromkeys(groups, max(part, RECORD_MAX))


class Attached:
    """One captured TAP."""

    def __init__(self, port, cid: int, key: bytes, namespace: int, ifname: str, ifindex: int,
                 created_qdisc: bool, refused: int):
        self.port, self.cid, self.key, self.namespace = port, cid, key, namespace
        self.ifname, self.ifindex, self.created_qdisc = ifname, ifindex, created_qdisc
        self.refused = refused              # the slot's drop count already handed over


class TapCapture:
    """The program, its attachments and its tables (see the module docstring)."""

    def __init__(self):
        self.prog = ebpf.load_shipped(SOURCE)
        self.ring_size = RING_BYTES
        self.rings: dict[int, int] = {}         # ring index -> its ring buffer's fd
        self.ports_fd = self.prog.maps["ports"].fd
        self.consumed_fd = self.prog.maps["consumed"].fd
        self.ngroups = self.prog.maps["consumed"].max_entries
        self.ports: dict[int, Attached] = {}    # id(TapPort) -> its attachment
        self.slots = self.prog.maps["ports"].max_entries
        self._free: list[int] = []
        self._next = 0
        self._gen: dict[int, int] = {}          # slot -> generation of its last id
        self.groups: dict[str, int] = {}        # vNet -> its group (while it has a port)
        self._cpus = len(self.prog.lookup("refused", _U32.pack(0)))    # possible CPUs
        self._lock = threading.Lock()           # take_drops: ring thread and loop thread
        self._gone: list[tuple[object, int]] = []   # drops of detached ports, not handed over
        self._read_at = 0.0

    @classmethod
    def start(cls, configured: str) -> TapCapture | None:
        """The capture, or None (``off``, or BPF cannot run here: one log line says why)."""
        mode = os.environ.get(ENV, "").strip().lower() or configured
        if mode == "off":
            log.info("TAP capture: off; TAPs are read with read()")
            return None
        why = ebpf.available(compiler=False)
        if why is None:
            try:
                return cls()
            except (ebpf.BpfError, OSError) as e:
                why = str(e).splitlines()[0]
        log.warning("TAP capture cannot run (%s); TAPs are read with read()", why)
        return None

    # -- ports ---------------------------------------------------------------------------------

    def attach(self, port) -> tuple[int, bytes] | None:
        """Capture ``port``'s frames (a ``TapPort``): (capture id, map key), or None if it is
        not a TAP or cannot be attached (it is read with ``read()``; logged)."""
        try:
            ifname = _tap_name(port.fd)
        except OSError:
            return None                         # a library endpoint's socket, not a TAP
        try:
            ns = fcntl.ioctl(port.fd, TUNGETDEVNETNS)   # the TAP's namespace, wherever it is
        except OSError as e:
            log.warning("TAP capture: %s/%s (%s) is read with read(): its namespace: %s",
                        port.vnet, port.name, ifname, e)
            return None

        def work():
            ifindex = socket.if_nametoindex(ifname)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                cookie = struct.unpack("<Q", s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE,
                                                          8))[0]
            created = ebpf.tc_attach(self.prog.fd, ifindex, TC_HANDLE, TC_PRIORITY,
                                     replace=True, egress=True)
            return ifindex, cookie, created
        try:
            ifindex, cookie, created = ebpf.in_namespace(ns, work)
        except (ebpf.BpfError, OSError) as e:
            os.close(ns)
            log.warning("TAP capture: %s/%s (%s) is read with read(): %s", port.vnet,
                        port.name, ifname, str(e).splitlines()[0])
            return None
        why = None
        if not self._free and self._next >= self.slots:
            why = f"all {self.slots} capture slots are in use"
        else:
            try:
                group = self._group(port.vnet)      # and its ring
            except ebpf.BpfError as e:
                why = str(e).splitlines()[0]
        if why is not None:
            log.warning("TAP capture: %s/%s is read with read(): %s", port.vnet, port.name, why)
            self._detach_tc(ns, ifname, ifindex, created)
            os.close(ns)
            return None
        slot = self._free.pop() if self._free else self._next
        if slot == self._next:
            self._next += 1
        self._gen[slot] = gen = self._gen.get(slot, 0) % 0xFFFFF + 1
        cid = gen << 12 | slot
        key = _KEY.pack(cookie, ifindex, 0)
        self.prog.update("groups", _U32.pack(slot), _U32.pack(group))
        self._write_budgets()                   # the group's budget before its first frame
        self.prog.update("ports", key, _VAL.pack(cid, 1 if port.paused else 0))
        with self._lock:
            self.ports[id(port)] = Attached(port, cid, key, ns, ifname, ifindex, created,
                                            self._refused(slot))
        log.info("TAP capture: %s/%s (%s) at TC egress, capture id %#x, group %d (ring %d)",
                 port.vnet, port.name, ifname, cid, group, group % RINGS)
        return cid, key

    def detach(self, port):
        with self._lock:
            a = self.ports.pop(id(port), None)
            if a is None:
                return
            self.prog.delete("ports", a.key)
            n = self._refused(a.cid & SLOT_MASK) - a.refused
            if n:
                self._gone.append((port, n))
        self._free.append(a.cid & SLOT_MASK)
        if not any(b.port.vnet == port.vnet for b in self.ports.values()):
            del self.groups[port.vnet]          # its records still in the ring stay counted
            self._write_budgets()               # under the group, whoever takes it next
        self._detach_tc(a.namespace, a.ifname, a.ifindex, a.created_qdisc)
        os.close(a.namespace)

    # -- shares of the ring --------------------------------------------------------------------

    def _group(self, vnet: str) -> int:
        """``vnet``'s group: its own while it has a port, the lowest free one."""
        if vnet not in self.groups:
            used = set(self.groups.values())
            g = next(g for g in range(self.ngroups) if g not in used)
            self._ring(g % RINGS)
            self.groups[vnet] = g
        return self.groups[vnet]

    def _ring(self, index: int):
        """Ring ``index``, created and put into the program's ``rings`` if it is not yet: the
        engine maps it at its next start (``core.Datapath._start_readers``).  A ring stays
        until the capture closes (a vNet that comes back finds it)."""
        if index in self.rings:
            return
        fd = ebpf.create_map(_RINGBUF, f"vnet_cap{index}", 0, 0, RING_BYTES)
        try:
            self.prog.update("rings", _U32.pack(index), _U32.pack(fd))
        except ebpf.BpfError:
            os.close(fd)
            raise
        self.rings[index] = fd

    def _write_budgets(self):
        by_ring: dict[int, list[int]] = {}
        for g in self.groups.values():
            by_ring.setdefault(g % RINGS, []).append(g)
        for groups in by_ring.values():
            for g, size in shares(self.ring_size, groups, self._cpus).items():
                self.prog.update("budget", _U32.pack(g), _U64.pack(size))

    def _detach_tc(self, ns, ifname, ifindex, created_qdisc):
        def work():                             # by ifindex: `--configure` may rename it
            ebpf.tc_detach(ifindex, TC_HANDLE, TC_PRIORITY, created_qdisc, egress=True)
        try:
            ebpf.in_namespace(ns, work)
        except (ebpf.BpfError, OSError) as e:
            log.warning("TAP capture: %s: %s", ifname, str(e).splitlines()[0])

    # -- counters ------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """The program's counters, summed over CPUs."""
        return self.prog.counters(COUNTERS)

    def take_drops(self, force: bool = False) -> list[tuple[object, int]]:
        """(port, frames) the program dropped since the last call, over its vNet's share or
        the ring full, for each port that had some (at most every SYNC_S unless ``force``)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._read_at < SYNC_S:
                return []
            self._read_at = now
            out, self._gone = self._gone, []
            for a in self.ports.values():
                n = self._refused(a.cid & SLOT_MASK)
                if n != a.refused:
                    out.append((a.port, n - a.refused))
                    a.refused = n
            return out

    def _refused(self, slot: int) -> int:
        """The program's count of frames it dropped for capture slot ``slot``, ever."""
        return sum(_U64.unpack(v)[0] for v in self.prog.lookup("refused", _U32.pack(slot)))

    def close(self, ports):
        for port in ports:
            self.detach(port)
        self.prog.close()
        for fd in self.rings.values():
            os.close(fd)
        self.rings.clear()


def _tap_name(fd: int) -> str:
    """The interface name of TAP file descriptor ``fd`` (TUNGETIFF; OSError if not a TAP)."""
    ifr = fcntl.ioctl(fd, TUNGETIFF, bytes(40))
    return ifr[:16].split(b"\0", 1)[0].decode()
