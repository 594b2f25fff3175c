# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled engine: the reference engine's decisions in C, on TPACKET_V2 rings and batched
sends.  ``CEngine`` implements ``core.Engine``; ``select.DatapathC`` composes it with the core.

* receive: one TPACKET_V2 ring per substrate interface (``packet_io.RxRing``, ETH_P_ALL + the
  substrate BPF filter, VLAN from the slot header) and the UDP tunnel sockets (``recvmmsg``),
  read by a thread of its own (the *ring thread*, ``CEngine._start_ring_thread``).  It walks
  the slots the kernel has published (each after its copy is complete) and classifies each
  frame against C tables compiled from the snapshot (``_Tables``): a hash of (interface, VLAN
  id, sender MAC) -> substrate link, a hash of (substrate link, VLI) -> input virtual link;
  input policing by the compiled link's token bucket;
* switch (VLI swap): the output frame is the output virtual link's precomputed header (MACs,
  tag written inline, EtherType, VLI) + LEN + the payload, taken straight from the ring by
  ``sendmmsg`` (two iovecs per frame), one system call per batch and socket; UDP links the
  same with the remote as ``msg_name``;
* shaping: output links with a rate have a token bucket and a bounded FIFO (``_Queue``) in C,
  drained by the ring thread on a ``timerfd``;
* deliver: ``write`` from the ring into the TAP;
* TAP -> substrate: ``read`` into a batch of buffers, then the same output and batched send;
  or, where the node captures a TAP's frames at its TC egress (``datapath/tapcap.py``,
  ``bpf/tap_capture.bpf.c``), walked from the capture ring (a BPF ring buffer the sender's
  context fills, ``_CapRing``) by the ring thread like a substrate ring.

Drops are counted by the core's ``Datapath.drop`` (globally, per substrate link, per virtual
link), the kernel's ring drops as ``ring_full`` (PACKET_STATISTICS).  Counters of the hot path
and bucket state are C deltas / values written to the same Python objects (``LinkState``,
``VLink``, ``TapPort``, the meters) at every sync, so ``vnetctl show`` reads the same fields.

``process_eth(ifindex, frame, tci)``, ``process_udp(local, remote, datagram)`` + ``flush()``
drive the same C code without sockets: the differential tests feed both engines one corpus that
way; ``walk(ring)`` walks a (synthetic) ring in the calling thread.

The module is one compilation unit made of the units it includes, one per concern (the map is
at the top of ``_fastpath.pxd``, the private header they share).
"""
import logging
import os
import signal
import socket
import struct
import threading
import time

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memcpy, memset, memcmp
from libc.stdlib cimport malloc, calloc, free
from libc.errno cimport errno, EINTR, EAGAIN, ECONNREFUSED, EHOSTUNREACH, ENETUNREACH
from posix.unistd cimport read, write
from posix.uio cimport iovec
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from vnet_router.datapath import packet_io
from vnet_router.datapath.engine import Capabilities, engine_tier
from vnet_router.wire import substrate as wire
from vnet_router.model.tables import DELIVER, SWITCH, DROP, IN, OUT

log = logging.getLogger("vnet_router.datapath.fast")

# drop reasons and link kinds, numbered once in model/names.py (python3 -m
# vnet_router.model.namegen writes this file)
include "_names.pxi"

include "_fp_tables.pxi"
include "_fp_transmit.pxi"
include "_fp_receive.pxi"
include "_fp_engine.pxi"
include "_fp_rings.pxi"
include "_fp_wrapper.pxi"
