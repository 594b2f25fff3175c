"""The names the Python, Cython and BPF sides of the datapath share, written once: drop
reasons, ignore reasons, link kinds and the counters of the project's own BPF programs.

Every name has a stable number.  The compiled engine passes a drop reason as its number and the
BPF programs count into arrays indexed by number, so numbers are never reused or reordered: a
new name is appended with the next number (as Cilium numbers its drop reasons once, in
``bpf/lib/drop_reasons.h``).  The order of a tuple of names below is the order of the numbers,
and it is also the order in which ``vnetctl show`` and the metrics list them.

The other languages get these names from files generated from this table, never edited by
hand (``vnet_router.model.namegen``; ``tests/unit/test_names.py`` fails when one is stale)::

    python3 -m vnet_router.model.namegen           # rewrite the generated files
    python3 -m vnet_router.model.namegen --check   # exit 1 if one is not what would be written

* ``vnet_router/datapath/_names.pxi`` (Cython, ``include``\\ d by the compiled engine):
  ``R_<REASON>`` / ``N_REASONS``, ``I_<REASON>`` / ``N_IGNORES`` and ``K_P2P`` / ``K_MULTI`` /
  ``K_UDP`` as C enum constants, and ``DROP_REASON_NAMES`` (the name of reason number i);
* ``vnet_router/bpf/vnet_names.h`` (C, ``#include``\\ d by ``substrate.bpf.c`` and
  ``tap_capture.bpf.c``): the same as enums, and the counter indexes of those programs.

``bpf/vnp_router.bpf.c`` is not here: it is an example of a kernel instance as users write
them, which name their counters in their own source (``// vnet-counters:``, docs/host.md).

This module is data only: it imports nothing of ours and does no I/O.
"""
from __future__ import annotations

from typing import NamedTuple


class Name(NamedTuple):
    number: int
    name: str           # as Python, the counters and the metrics spell it
    meaning: str
    c: str = ""         # the C identifier's suffix, if not ``name.upper()``

    @property
    def cname(self) -> str:
        return self.c or self.name.upper()


class NameSet(NamedTuple):
    """Names numbered 0..n-1 with the C prefix their constants get."""
    title: str
    tag: str            # the C enum: enum vnet_<tag>
    prefix: str         # its constants: prefix + cname, and count = how many names
    count: str
    names: tuple[Name, ...]

    def ordered(self) -> tuple[str, ...]:
        """The names in the order of their numbers (``[i]`` is the name of number i)."""
        return tuple(n.name for n in self.names)


def _numbered(title: str, tag: str, prefix: str, count: str, *names: Name) -> NameSet:
    """Refuse a table whose numbers are not 0, 1, 2, ... in order or whose names repeat."""
    for i, n in enumerate(names):
        if n.number != i:
            raise ValueError(f"{title}: {n.name} has number {n.number}, expected {i} "
                             f"(numbers are 0..n-1 in order; append new names)")
    if len({n.name for n in names}) != len(names):
        raise ValueError(f"{title}: a name repeats")
    return NameSet(title, tag, prefix, count, names)


# -- drop reasons: each has its own counter (globally and per substrate link where known) -----
DROP = _numbered(
    "drop reasons", "drop_reason", "R_", "N_REASONS",
    Name(0, "short", "shorter than the Ethernet / VLAN / substrate header"),
    Name(1, "bad_len", "LEN larger than what arrived"),
    Name(2, "unknown_vlan", "tagged with a VLAN id no p2p substrate link of the interface uses"),
    Name(3, "bad_peer", "p2p VLAN frame from a MAC that is not the configured peer"),
    Name(4, "no_link", "untagged but no multiaccess link here / UDP from an unknown remote"),
    Name(5, "unknown_vli", "no virtual link with this VLI on the substrate link"),
    Name(6, "control", "VLI 0 frame that does not parse (or no control plane runs)"),
    Name(7, "oversize", "larger than the substrate link MTU or the logical interface"),
    Name(8, "policed", "input token bucket empty"),
    Name(9, "queue_full", "output shaper queue full"),
    Name(10, "vli_drop", "virtual link configured with action drop"),
    Name(11, "tap_error", "the logical interface refused the frame"),
    Name(12, "send_error", "the substrate interface refused the frame"),
    Name(13, "ring_full", "the kernel found no room in the receive ring / socket buffer"),
    Name(14, "control_queue", "VLI 0 frame from a known neighbour beyond the bounded queue of "
                              "known neighbours to the control plane"),
    Name(15, "too_big", "switched (or sent) frame larger than the output substrate link carries"),
    Name(16, "control_peer", "VLI 0 frame from a known neighbour beyond its own share of the "
                             "queue to the control plane"),
    Name(17, "control_other", "VLI 0 frame from a source that is not a known neighbour, beyond "
                              "the small queue the rest share"),
    Name(18, "control_source", "VLI 0 frame from a source that is not a known neighbour, beyond "
                               "that source's share of the rest's queue"),
    Name(19, "control_policed", "VLI 0 frame beyond its sender's budget (a known neighbour's "
                                "own, or the budget all other senders on the link share)"),
)

# -- ignore reasons: frames that are not for this node and are dropped as a matter of course,
# not as a fault -- counted apart from the drops (``vnet_ignored_total``), which alerts watch --
IGNORE = _numbered(
    "ignore reasons", "ignore_reason", "I_", "N_IGNORES",
    Name(0, "not_member", "multiaccess: a vNet this node does not host (VLI unknown here, "
                          "frame not addressed to this node's MAC)"),
)

# -- kinds of substrate links (``[[link]].kind``) --------------------------------------------
LINK_KINDS = _numbered(
    "link kinds", "link_kind", "K_", "N_KINDS",
    Name(0, "p2p", "point-to-point Ethernet: a VLAN id and the peer's MAC", "P2P"),
    Name(1, "multiaccess", "a shared Ethernet LAN, untagged", "MULTI"),
    Name(2, "udp", "a UDP tunnel to one remote address", "UDP"),
)

# -- counters of bpf/substrate.bpf.c (the classifier and the kernel tier): per CPU, u64 each, by
# index; besides these, its per-link and node counters hold drops by DROP number and ignored
# frames by IGNORE number --
VLINK_COUNTERS = _numbered(
    "substrate.bpf.c vstats (per virtual link)", "vstat", "VSTAT_", "VSTAT_N",
    Name(0, "packets", "frames received (input) or sent (output) by the kernel"),
    Name(1, "bytes", "their payload bytes"),
    Name(2, "policed", "input: dropped by the token bucket (the policed drop)"),
    Name(3, "too_big", "output: larger than the output link carries (the too_big drop)"),
    Name(4, "vli_drop", "input: the virtual link's action is drop (the vli_drop drop)"),
)
LINK_COUNTERS = _numbered(
    "substrate.bpf.c lstats (per substrate link)", "lstat", "LSTAT_", "LSTAT_N",
    Name(0, "rx_packets", "frames the kernel took from the link"),
    Name(1, "rx_bytes", "their bytes"),
    Name(2, "tx_packets", "frames the kernel sent on the link"),
    Name(3, "tx_bytes", "their payload bytes"),
)

# -- counters of bpf/tap_capture.bpf.c: per CPU, u64 each, by index ---------------------------
CAPTURE_COUNTERS = _numbered(
    "tap_capture.bpf.c counters", "cap_counter", "CAP_", "CAP_N",
    Name(0, "taken", "copied into the ring and consumed (TC_ACT_STOLEN)"),
    Name(1, "ring_full", "no room in the ring: dropped (TC_ACT_SHOT), the ring_full drop"),
    Name(2, "passed", "left to the TAP, read with read()"),
    Name(3, "over_share", "its vNet already holds its share of the ring: dropped (TC_ACT_SHOT), "
                          "the ring_full drop of that vNet"),
)

# what the rest of the tree imports
DROP_REASONS = DROP.ordered()
IGNORE_REASONS = IGNORE.ordered()
LINK_KIND_NAMES = LINK_KINDS.ordered()

# the sets each generated file carries
CYTHON = (DROP, IGNORE, LINK_KINDS)
BPF = (DROP, IGNORE, LINK_KINDS, VLINK_COUNTERS, LINK_COUNTERS, CAPTURE_COUNTERS)
