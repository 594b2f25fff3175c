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
  or, where the node captures a TAP's frames at its TC egress (``node/tapcap.py``,
  ``bpf/tap_capture.bpf.c``), walked from the capture ring (a BPF ring buffer the sender's
  context fills, ``_CapRing``) by the ring thread like a substrate ring.

Drops are counted by the core's ``Datapath.drop`` (globally, per substrate link, per virtual
link), the kernel's ring drops as ``ring_full`` (PACKET_STATISTICS).  Counters of the hot path
and bucket state are C deltas / values written to the same Python objects (``LinkState``,
``VLink``, ``TapPort``, the meters) at every sync, so ``vnetctl show`` reads the same fields.

``process_eth(ifindex, frame, tci)``, ``process_udp(local, remote, datagram)`` + ``flush()``
drive the same C code without sockets: the differential tests feed both engines one corpus that
way; ``walk(ring)`` walks a (synthetic) ring in the calling thread.
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
from libc.errno cimport errno, EINTR, EAGAIN
from posix.unistd cimport read, write
from posix.uio cimport iovec
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from vnet_router.datapath import packet_io
from vnet_router.wire import substrate as wire
from vnet_router.model.tables import DELIVER, SWITCH, DROP, IN, OUT

log = logging.getLogger("vnet_router.datapath.fast")

cdef extern from "<sys/socket.h>" nogil:
    cdef struct msghdr:
        void *msg_name
        unsigned int msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    cdef struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int sendmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags)
    int recvmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags, timespec *timeout)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    int MSG_DONTWAIT
    int MSG_TRUNC

cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    cdef struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int EPOLLIN
    int EPOLL_CTL_ADD
    int EPOLL_CLOEXEC

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_CLOEXEC
    int EFD_NONBLOCK

cdef extern from "<sys/timerfd.h>" nogil:
    cdef struct itimerspec:
        timespec it_interval
        timespec it_value
    int timerfd_create(int clockid, int flags)
    int timerfd_settime(int fd, int flags, const itimerspec *new_value, itimerspec *old_value)
    int TFD_CLOEXEC
    int TFD_NONBLOCK
    int TFD_TIMER_ABSTIME

cdef extern from *:
    """
    #include <stdint.h>
    static inline uint32_t vn_load32(const void *p) {
        return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE);
    }
    static inline void vn_store32(void *p, uint32_t v) {
        __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE);
    }
    static inline uint64_t vn_load64(const void *p) {
        return __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE);
    }
    static inline void vn_store64(void *p, uint64_t v) {
        __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELEASE);
    }
    #include <unistd.h>
    #include <sys/syscall.h>
    #include <linux/bpf.h>
    /* BPF_MAP_UPDATE_ELEM of a 16-byte key and an 8-byte value: the capture's pause flag */
    static inline int vn_map_update(int fd, const void *key, const void *value) {
        union bpf_attr a;
        __builtin_memset(&a, 0, sizeof(a));
        a.map_fd = fd;
        a.key = (uint64_t)(unsigned long)key;
        a.value = (uint64_t)(unsigned long)value;
        a.flags = BPF_ANY;
        return (int)syscall(SYS_bpf, BPF_MAP_UPDATE_ELEM, &a, sizeof(a));
    }
    static inline uint16_t vn_be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
    static inline uint64_t vn_mac48(const uint8_t *p) {
        return ((uint64_t)p[0] << 40) | ((uint64_t)p[1] << 32) | ((uint64_t)p[2] << 24) |
               ((uint64_t)p[3] << 16) | ((uint64_t)p[4] << 8) | (uint64_t)p[5];
    }
    """
    uint32_t vn_load32(const void *p) nogil
    void vn_store32(void *p, uint32_t v) nogil
    uint64_t vn_load64(const void *p) nogil
    void vn_store64(void *p, uint64_t v) nogil
    int vn_map_update(int fd, const void *key, const void *value) nogil
    uint16_t vn_be16(const uint8_t *p) nogil
    uint64_t vn_mac48(const uint8_t *p) nogil

# tpacket2_hdr offsets (linux/if_packet.h, TPACKET_V2)
DEF H2_STATUS = 0
DEF H2_LEN = 4
DEF H2_SNAPLEN = 8
DEF H2_MAC = 12
DEF H2_TCI = 24
DEF TP_STATUS_KERNEL = 0
DEF TP_STATUS_USER = 1
DEF TP_STATUS_VLAN_VALID = 16
DEF WALK_BATCH = 256       # frames walked before a flush hands their slots back
DEF WALK_BUDGET = 1024     # frames of one ring per turn of the ring thread (then timers, other
                           # rings, counters, a stop request get their turn)

DEF BATCH = 256            # frames per sendmmsg
DEF TAP_BATCH = 64         # frames read from one TAP per wake-up (as the reference)
DEF TAP_BUF = 65600
DEF HDR_MAX = 24

DEF EP_EVENTS = 64         # epoll events taken per wake-up of the ring thread
DEF STOP_KEY = 0xFFFFFFFF
DEF TIMER_KEY = 0xFFFFFFFE # the shapers' departure timer
DEF CAP_KEY = 0xFFFFFFFD   # the TAP capture ring
DEF RB_BUSY = 0x80000000   # BPF ring buffer record header: being written
DEF RB_DISCARD = 0x40000000  # discarded by the program
DEF RB_HDR = 8             # the ring buffer's record header; then the program's id, len
DEF CAP_SLOT = 0xFFF       # a capture id: slot (its port's, reused) | generation << 12
DEF SYNC_MS = 1            # ring thread: counters reach the Python objects within ~this

DEF AF_INET6_ = 10
DEF UDP_BATCH = 64         # datagrams per recvmmsg
DEF UDP_KEY = 0x10000      # epoll data of UDP socket j: UDP_KEY + j
DEF LCACHE = 1024         # learned-MAC cache slots per port (a power of two)
DEF UNKNOWN = 0x1000000000000   # LCE.outer: the table did not know the MAC (no 48-bit MAC)
# drop reasons (R_*, N_REASONS, DROP_REASON_NAMES), link kinds (K_*): model/names.py, generated
include "_names.pxi"
DEF CONTROL_QUEUE = 1024   # VLI-0 frames the ring thread may have handed to the loop at once


# -- a small open-addressing hash: (k1, k2) -> int --------------------------------------------

cdef struct HEntry:
    uint64_t k1
    uint32_t k2
    int32_t val          # -1: empty


cdef class _Hash:
    cdef HEntry *tab
    cdef uint64_t mask

    def __cinit__(self, int n):
        cdef uint64_t size = 16
        while size < <uint64_t>(4 * n):
            size <<= 1
        self.tab = <HEntry *>malloc(size * sizeof(HEntry))
        if self.tab == NULL:
            raise MemoryError()
        self.mask = size - 1
        cdef uint64_t i
        for i in range(size):
            self.tab[i].val = -1

    def __dealloc__(self):
        free(self.tab)

    @staticmethod
    cdef inline uint64_t _h(uint64_t k1, uint32_t k2) noexcept nogil:
        cdef uint64_t h = (k1 ^ (<uint64_t>k2 << 52) ^ (<uint64_t>k2 * 0x9E3779B97F4A7C15ULL))
        h *= 0xff51afd7ed558ccdULL
        return h ^ (h >> 29)

    cdef void put(self, uint64_t k1, uint32_t k2, int val):
        cdef uint64_t i = _Hash._h(k1, k2) & self.mask
        while self.tab[i].val >= 0 and not (self.tab[i].k1 == k1 and self.tab[i].k2 == k2):
            i = (i + 1) & self.mask
        self.tab[i].k1 = k1
        self.tab[i].k2 = k2
        self.tab[i].val = val

    cdef inline int get(self, uint64_t k1, uint32_t k2) noexcept nogil:
        cdef uint64_t i = _Hash._h(k1, k2) & self.mask
        while True:
            if self.tab[i].val < 0:
                return -1
            if self.tab[i].k1 == k1 and self.tab[i].k2 == k2:
                return self.tab[i].val
            i = (i + 1) & self.mask


# -- the compiled tables ----------------------------------------------------------------------

cdef struct Link:
    int kind
    int payload_mtu
    int txfd                 # -1: none (not opened); UDP: the local socket
    int udp                  # UDP: index of the local socket (``_Tables.udp_slot``), else -1
    int connected            # UDP: txfd is connected to the remote (no address per datagram)
    uint8_t addr[28]         # UDP: the remote's sockaddr_in / sockaddr_in6
    int addrlen
    int64_t rx_packets, rx_bytes, tx_packets, tx_bytes      # deltas since the last sync
    int64_t not_member       # delta: ignored multiaccess frames of vNets not hosted here

cdef struct Iface:
    int multi                # link index of the multiaccess link, -1 none
    uint64_t mac             # the interface's own MAC (48 bits)
    uint8_t vids[512]        # bitmap of VLAN ids p2p links use

# The bounded FIFO of one shaped output virtual link (``meters.Shaper.queue`` in C): ``limit``
# slots of ``slot`` bytes, ``count`` frames from ``head`` on.
cdef struct SQ:
    int limit, slot, head, count
    uint8_t *data            # limit x slot
    int *len
    uint8_t *dst             # limit x 6: outer destination (multiaccess), if has_dst
    uint8_t *has_dst

cdef struct VL:
    int action
    int link                 # substrate link index
    int metered              # 0 none, 1 input policer, 2 output shaper (``SQ`` q), 3 a Python
                             #   meter decides (output the C send path cannot take: UDP)
    int port                 # input DELIVER: port index, -1 none
    int out                  # input SWITCH: output virtual link index
    int fast_out             # output: 1 if the C send path takes it (p2p/multiaccess)
    int txfd                 # output: send socket (the link's, or its own when kernel-shaped)
    int hdr_len
    uint8_t hdr[HDR_MAX]     # output: precomputed header up to and including the VLI
    int64_t packets, nbytes  # deltas
    double rate, burst, tokens, stamp     # token bucket (``meters.TokenBucket``), bytes
    SQ *q                    # output shaper's queue (metered == 2)

# A slot of a port's learned-MAC cache: what the port's ``LearnTable`` (the authority: bound,
# ageing, counters, ``show``) said of inner MAC ``mac - 1`` at ``stamp``.
cdef struct LCE:
    uint64_t mac             # inner MAC + 1; 0: empty
    uint64_t outer
    double stamp

cdef struct Port:
    int fd
    int out                  # output virtual link index, -1 none
    int fast_out             # 1: the C send path takes its frames
    int learn_dst            # 1: multiaccess output without a fixed neighbour: learned dst
    int paused               # paused by a full shaper queue (resumed when it drains)
    int cap_id               # capture id (``bpf/tap_capture.bpf.c``), -1: read() only
    int cap_paused           # the capture leaves its frames to the TAP's queue
    uint8_t cap_key[16]      # its key in the capture's ``ports`` map
    int64_t rx_packets, rx_bytes, tx_packets, tx_bytes
    LCE *lc                  # LCACHE slots, direct-mapped by inner MAC
    double lvalid            # seconds a cached answer stands: min(1 s, ageing / 10)


cdef class _Tables:
    """C view of one snapshot (plus the Python objects its indexes stand for)."""
    cdef int nlinks, nvl, nports, nifaces
    cdef Link *links
    cdef VL *vls
    cdef Port *ports
    cdef Iface *ifaces
    cdef _Hash p2p            # (vid << 48 | peer MAC, iface) -> link
    cdef _Hash vli            # (vli, link) -> input virtual link
    cdef int ethertype
    cdef dict ifslot          # ifindex -> iface index
    cdef list link_objs, vl_objs, port_objs
    cdef list queues          # the _Queue objects the shaped VLs point into (kept alive)
    cdef dict udp_slot        # UDP local (ip, port) -> socket index
    cdef int *udp_links       # indexes of the UDP links
    cdef int nudp
    cdef LCE *lcache          # nports x LCACHE
    cdef int *shaped          # indexes of the VLs with metered == 2
    cdef int *cap_port        # capture slot (id & CAP_SLOT) -> port index (-1: none)
    cdef uint32_t *cap_id     # capture slot -> the full id of its port (slot + generation)
    cdef int ncap
    cdef int nshaped
    cdef dict ignored         # Tables.ignored: global ignore counters (``_sync``)

    def __dealloc__(self):
        free(self.shaped)
        free(self.cap_port)
        free(self.cap_id)
        free(self.udp_links)
        free(self.lcache)
        free(self.links)
        free(self.vls)
        free(self.ports)
        free(self.ifaces)


def _hdr_of(v, ctx):
    """Output header of virtual link ``v`` for the C send path (b"" if it cannot take it)."""
    if ctx.kind == "p2p":
        return v.encap
    if ctx.kind == "multiaccess":
        # switched frames: dst is broadcast, or the neighbour a dynamic virtual link names
        return (v.dst or wire.BROADCAST_MAC) + v.encap
    return v.encap                     # UDP: the VLI (no LEN)


def _sockaddr(remote):
    """The ``sockaddr_in`` / ``sockaddr_in6`` bytes of a (host, port) remote."""
    host, port = remote[0], remote[1]
    if ":" in host:
        return (struct.pack("=H", socket.AF_INET6) + struct.pack("!H", port) + bytes(4) +
                socket.inet_pton(socket.AF_INET6, host) + bytes(4))
    return (struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) +
            socket.inet_pton(socket.AF_INET, host) + bytes(8))


cdef inline bint _same_addr(const uint8_t *a, const uint8_t *b) noexcept nogil:
    """Same family, port and address (what a UDP link's remote is), other fields aside."""
    if a[0] != b[0] or a[1] != b[1] or a[2] != b[2] or a[3] != b[3]:
        return False
    if (<uint16_t *>a)[0] == AF_INET6_:
        return memcmp(a + 8, b + 8, 16) == 0
    return memcmp(a + 4, b + 4, 4) == 0


cdef class _Queue:
    """Owns one ``SQ``: it outlives table generations (a reload keeps what a link queued)."""
    cdef SQ q

    def __cinit__(self, int limit, int slot):
        self.q.limit, self.q.slot = max(limit, 1), slot
        self.q.data = <uint8_t *>malloc(<size_t>self.q.limit * slot)
        self.q.len = <int *>calloc(self.q.limit, sizeof(int))
        self.q.dst = <uint8_t *>calloc(self.q.limit, 6)
        self.q.has_dst = <uint8_t *>calloc(self.q.limit, 1)
        if not (self.q.data and self.q.len and self.q.dst and self.q.has_dst):
            raise MemoryError()

    def __dealloc__(self):
        free(self.q.data)
        free(self.q.len)
        free(self.q.dst)
        free(self.q.has_dst)

    @property
    def depth(self):
        return self.q.count


cdef int _sq_push(SQ *q, const uint8_t *payload, int length, const uint8_t *dst) noexcept nogil:
    """Append a frame; 0 if the queue is full (the caller counts the drop)."""
    cdef int i
    if q.count >= q.limit:
        return 0
    i = (q.head + q.count) % q.limit
    memcpy(q.data + <size_t>i * q.slot, payload, length)
    q.len[i] = length
    q.has_dst[i] = dst != NULL
    if dst != NULL:
        memcpy(q.dst + 6 * i, dst, 6)
    q.count += 1
    return 1


cdef void _move_queue(_Queue old, _Queue new) noexcept:
    """Carry what ``old`` holds over to ``new`` (a reload changed its size), oldest first."""
    cdef int k, i
    for k in range(old.q.count):
        i = (old.q.head + k) % old.q.limit
        if old.q.len[i] <= new.q.slot:
            _sq_push(&new.q, old.q.data + <size_t>i * old.q.slot, old.q.len[i],
                     old.q.dst + 6 * i if old.q.has_dst[i] else NULL)
    old.q.count = 0


cdef tuple _compile(dp, snap, dict queues, dict udp_conn):
    """C view of ``snap``.  ``queues`` (VLink -> _Queue) holds the shaper queues of the table
    before; shaped links keep theirs, the entries are moved to the new table's dict (what is
    left in ``queues`` belongs to links no longer shaped here: the caller empties them)."""
    cdef _Tables t = _Tables.__new__(_Tables)
    cdef int i, j
    cdef VL *vl
    cdef Link *ln
    cdef _Queue q, old
    links = list(snap.links.values())
    vls = list(snap.vlinks.values())
    ports = list(dp.ports.values())
    t.link_objs, t.vl_objs, t.port_objs = links, vls, ports
    t.nlinks, t.nvl, t.nports = len(links), len(vls), len(ports)
    t.nifaces = len(snap.ifaces)
    t.links = <Link *>calloc(max(t.nlinks, 1), sizeof(Link))
    t.vls = <VL *>calloc(max(t.nvl, 1), sizeof(VL))
    t.ports = <Port *>calloc(max(t.nports, 1), sizeof(Port))
    t.ifaces = <Iface *>calloc(max(t.nifaces, 1), sizeof(Iface))
    t.shaped = <int *>calloc(max(t.nvl, 1), sizeof(int))
    t.udp_links = <int *>calloc(max(t.nlinks, 1), sizeof(int))
    t.lcache = <LCE *>calloc(max(t.nports, 1) * LCACHE, sizeof(LCE))
    if not (t.links and t.vls and t.ports and t.ifaces and t.shaped and t.udp_links and
            t.lcache):
        raise MemoryError()
    t.ethertype = snap.ethertype
    t.ignored = dp.ignored
    t.queues = []
    link_ix = {id(c): i for i, c in enumerate(links)}
    vl_ix = {id(v): i for i, v in enumerate(vls)}
    port_ix = {id(p): i for i, p in enumerate(ports)}
    t.udp_slot = {local: j for j, local in enumerate(dp.udp)}
    for i, c in enumerate(links):
        ln = &t.links[i]
        ln.kind = K_P2P if c.kind == "p2p" else (K_MULTI if c.kind == "multiaccess" else K_UDP)
        ln.payload_mtu = c.payload_mtu
        ln.udp = -1
        if ln.kind == K_UDP:
            sock = udp_conn.get((c.local, c.remote))
            ln.connected = sock is not None
            if sock is None:
                sock = dp.udp.get(c.local)
            ln.udp = t.udp_slot.get(c.local, -1)
            addr = _sockaddr(c.remote)
            ln.addrlen = len(addr)
            for j in range(ln.addrlen):
                ln.addr[j] = addr[j]
            t.udp_links[t.nudp] = i
            t.nudp += 1
        else:
            sock = dp.tx.get(c.ifindex)
        ln.txfd = sock.fileno() if sock is not None else -1
    t.ifslot = {}
    t.p2p = _Hash(sum(len(f.p2p) for f in snap.ifaces.values()) + 1)
    for j, (ifindex, f) in enumerate(snap.ifaces.items()):
        t.ifslot[ifindex] = j
        t.ifaces[j].multi = link_ix[id(f.multiaccess)] if f.multiaccess is not None else -1
        t.ifaces[j].mac = int.from_bytes(f.mac, "big")
        for (vid, mac), c in f.p2p.items():
            t.p2p.put((<uint64_t>vid << 48) | int.from_bytes(mac, "big"), j, link_ix[id(c)])
            t.ifaces[j].vids[vid >> 3] |= 1 << (vid & 7)
    t.vli = _Hash(t.nvl + 1)
    kept = {}
    for i, v in enumerate(vls):
        vl = &t.vls[i]
        ctx = snap.links[v.link_id]
        vl.link = link_ix[id(ctx)]
        vl.action = v.action
        vl.port = vl.out = -1
        if v.direction == IN:
            t.vli.put(v.vli, vl.link, i)
            if v.action == DELIVER and v.port is not None:
                vl.port = port_ix.get(id(v.port), -1)
            elif v.action == SWITCH and v.port is not None:
                vl.out = vl_ix[id(v.port)]
        else:
            hdr = _hdr_of(v, ctx)
            vl.txfd = v.txsock.fileno() if v.txsock is not None else t.links[vl.link].txfd
            vl.fast_out = bool(hdr) and vl.txfd >= 0
            if vl.fast_out:
                vl.hdr_len = len(hdr)
                for j in range(vl.hdr_len):
                    vl.hdr[j] = hdr[j]
        v.engine_out = bool(vl.fast_out)
        meter = v.meter
        if meter is None:
            continue
        bucket = getattr(meter, "bucket", meter)
        vl.rate, vl.burst = bucket.rate, bucket.burst
        vl.tokens, vl.stamp = bucket.tokens, bucket.stamp
        if v.direction == IN:
            vl.metered = 1
        elif not vl.fast_out:
            vl.metered = 3
        else:
            vl.metered = 2
            q = queues.pop(v, None)
            if q is None or q.q.limit != max(meter.limit, 1) or q.q.slot < ctx.payload_mtu:
                old = q
                q = _Queue(meter.limit, max(ctx.payload_mtu, 1))
                if old is not None:
                    _move_queue(old, q)
            kept[v] = q
            vl.q = &q.q
            t.queues.append(q)
            t.shaped[t.nshaped] = i
            t.nshaped += 1
    t.ncap = max([(p.capture[0] & CAP_SLOT) + 1 for p in ports if p.capture is not None] or
                 [0])
    t.cap_port = <int *>malloc(max(t.ncap, 1) * sizeof(int))
    t.cap_id = <uint32_t *>calloc(max(t.ncap, 1), sizeof(uint32_t))
    if not (t.cap_port and t.cap_id):
        raise MemoryError()
    for j in range(t.ncap):
        t.cap_port[j] = -1
    for i, p in enumerate(ports):
        t.ports[i].fd = p.fd
        t.ports[i].cap_id = -1
        if p.capture is not None:
            t.ports[i].cap_id = p.capture[0]
            for j in range(16):
                t.ports[i].cap_key[j] = p.capture[1][j]
            t.cap_port[p.capture[0] & CAP_SLOT] = i
            t.cap_id[p.capture[0] & CAP_SLOT] = p.capture[0]
        t.ports[i].lc = &t.lcache[i * LCACHE]
        t.ports[i].lvalid = min(1.0, p.learned.ageing / 10)
        t.ports[i].out = vl_ix[id(p.out)] if p.out is not None and id(p.out) in vl_ix else -1
        t.ports[i].fast_out = 0
        t.ports[i].paused = p.paused
        if t.ports[i].out >= 0:
            vl = &t.vls[t.ports[i].out]
            t.ports[i].fast_out = vl.fast_out
            t.ports[i].learn_dst = t.links[vl.link].kind == K_MULTI and p.out.dst is None
    return t, kept


# -- the engine: batches, rings, counters ------------------------------------------------------

cdef class _Sender:
    """One batch of frames waiting for ``sendmmsg``, and the thread that fills it.

    The loop thread (TAP reads, ``process_eth``) and the ring thread each have their own, so
    neither ever sees the other's half-built batch.  ``t`` is the table the queued frames were
    classified with: counters of a batch still in flight when a reload swapped the tables go
    to the table they belong to.  ``deferred`` is None in the loop thread (slow paths run at
    once) and a list in the ring thread (slow paths that touch the event loop are handed to
    it: control frames, and output to virtual links the C send path does not take)."""
    cdef mmsghdr *msgs
    cdef iovec *iovs
    cdef uint8_t *hdrs              # BATCH x HDR_MAX
    cdef int *msg_vl                # output virtual link of each queued frame
    cdef int *msg_len               # payload length of each queued frame
    cdef int *msg_fd
    cdef int nmsg
    cdef _Tables t
    cdef list deferred

    def __cinit__(self, bint ring_thread):
        self.msgs = <mmsghdr *>calloc(BATCH, sizeof(mmsghdr))
        self.iovs = <iovec *>calloc(2 * BATCH, sizeof(iovec))
        self.hdrs = <uint8_t *>calloc(BATCH, HDR_MAX)
        self.msg_vl = <int *>calloc(BATCH, sizeof(int))
        self.msg_len = <int *>calloc(BATCH, sizeof(int))
        self.msg_fd = <int *>calloc(BATCH, sizeof(int))
        if not (self.msgs and self.iovs and self.hdrs and self.msg_vl and self.msg_len and
                self.msg_fd):
            raise MemoryError()
        cdef int i
        for i in range(BATCH):
            self.msgs[i].msg_hdr.msg_iov = &self.iovs[2 * i]
            self.msgs[i].msg_hdr.msg_iovlen = 2
            self.iovs[2 * i].iov_base = &self.hdrs[i * HDR_MAX]
        self.deferred = [] if ring_thread else None

    def __dealloc__(self):
        free(self.msgs)
        free(self.iovs)
        free(self.hdrs)
        free(self.msg_vl)
        free(self.msg_len)
        free(self.msg_fd)


cdef inline double _mono() noexcept nogil:
    """time.monotonic() (the same clock): what the token buckets' stamps are in."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


# token bucket arithmetic of ``meters.TokenBucket``, on a compiled virtual link (same operations
# in the same order: the same doubles come out)

cdef inline void _refill(VL *vl, double now) noexcept nogil:
    cdef double t = vl.tokens + (now - vl.stamp) * vl.rate
    vl.tokens = t if t < vl.burst else vl.burst
    vl.stamp = now


cdef inline bint _take(VL *vl, double now, int n) noexcept nogil:
    _refill(vl, now)
    if vl.tokens >= n:
        vl.tokens -= n
        return True
    return False


cdef inline double _departure(VL *vl) noexcept nogil:
    """When the head of ``vl``'s queue can go (the bucket was refilled just now), as the
    reference schedules it (``Shaper.next_departure``, at least 0.5 ms ahead)."""
    cdef SQ *q = vl.q
    cdef double wait = (q.len[q.head] - vl.tokens) / vl.rate
    return vl.stamp + (wait if wait > 0.0005 else 0.0005)


cdef class _Engine:
    cdef _Tables t
    cdef object dp
    cdef object pyclock             # the core's clock when it is not time.monotonic (tests)
    cdef _Sender main               # the event loop's thread
    cdef _Sender rs                 # the ring thread
    cdef uint8_t *tapbuf            # TAP_BATCH x TAP_BUF
    cdef uint8_t *copybuf           # frames handed to process_eth / output (kept until flush)
    cdef int copy_used
    cdef public dict queues         # VLink -> _Queue: shaper queues of the current table
    cdef dict udp_conn              # the CEngine's connected UDP sockets, by (local, remote)
    cdef dict vl_ix                 # id(VLink) -> index in the current table
    cdef int timerfd                # the shapers' next departure (read by the ring thread)
    cdef mmsghdr *umsgs             # UDP_BATCH datagrams per recvmmsg (ring thread)
    cdef iovec *uiovs
    cdef uint8_t *udpbuf            # UDP_BATCH x TAP_BUF
    cdef uint8_t *unames            # UDP_BATCH x 28: senders' addresses
    cdef double armed               # when the timer fires (0: not armed)
    cdef public int64_t wakeups, batches, drains
    cdef public int ctl_pending     # VLI-0 frames handed to the loop thread, not yet taken
    cdef public int cap_fd          # the TAP capture's ``ports`` map (-1: no capture)
    cdef public object cap_sync     # the capture's kernel drop count, read at sync (or None)

    def __cinit__(self, dp, dict udp_conn):
        self.dp = dp
        self.udp_conn = udp_conn
        self.pyclock = None if dp.clock is time.monotonic else dp.clock
        self.main = _Sender(False)
        self.rs = _Sender(True)
        self.queues = {}
        self.vl_ix = {}
        self.tapbuf = <uint8_t *>malloc(TAP_BATCH * TAP_BUF)
        self.copybuf = <uint8_t *>malloc(BATCH * TAP_BUF)
        self.umsgs = <mmsghdr *>calloc(UDP_BATCH, sizeof(mmsghdr))
        self.uiovs = <iovec *>calloc(UDP_BATCH, sizeof(iovec))
        self.udpbuf = <uint8_t *>malloc(UDP_BATCH * TAP_BUF)
        self.unames = <uint8_t *>calloc(UDP_BATCH, 28)
        if not (self.tapbuf and self.copybuf and self.umsgs and self.uiovs and self.udpbuf and
                self.unames):
            raise MemoryError()
        cdef int k
        for k in range(UDP_BATCH):
            self.uiovs[k].iov_base = &self.udpbuf[<size_t>k * TAP_BUF]
            self.uiovs[k].iov_len = TAP_BUF
            self.umsgs[k].msg_hdr.msg_iov = &self.uiovs[k]
            self.umsgs[k].msg_hdr.msg_iovlen = 1
            self.umsgs[k].msg_hdr.msg_name = &self.unames[k * 28]
            self.umsgs[k].msg_hdr.msg_namelen = 28
        self.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)
        if self.timerfd < 0:
            raise OSError(errno, os.strerror(errno))
        self.cap_fd = -1

    def __dealloc__(self):
        free(self.tapbuf)
        free(self.copybuf)
        free(self.umsgs)
        free(self.uiovs)
        free(self.udpbuf)
        free(self.unames)
        if self.timerfd >= 0:
            os.close(self.timerfd)

    def timer_fd(self):
        return self.timerfd

    def _ring_drops_py(self, rings):
        self._ring_drops(rings)

    cdef inline double now(self) except? -1:
        if self.pyclock is None:
            return _mono()
        return self.pyclock()

    def install(self, snap):
        """Compile ``snap`` (after the core's ``install`` attached meters and ports) and swap
        it in: one assignment, for the loop and the ring thread alike.  Shaper queues follow
        their virtual link; a link no longer shaped here sends what it held at once."""
        cdef _Tables t
        cdef int i
        if self.t is not None:
            self.flush()            # batched frames out, counters and buckets written back
        t, kept = _compile(self.dp, snap, self.queues, self.udp_conn)
        left, self.queues = self.queues, kept
        self.vl_ix = {id(v): i for i, v in enumerate(t.vl_objs)}
        self.t = t
        for v, q in left.items():
            self._release_all(v, q)
        for i in range(t.nports):           # the capture follows the port's pause
            self._cap_pause(t, i, t.ports[i].paused)
        self._rearm()

    cdef int _cap_pause(self, _Tables t, int pi, int paused) except -1:
        """Tell the capture to leave port ``pi``'s frames to its TAP queue (``paused``: the
        kernel's back-pressure, read() when resumed) or to take them again."""
        cdef Port *p = &t.ports[pi]
        cdef uint32_t val[2]
        if p.cap_id < 0 or self.cap_fd < 0:
            return 0
        val[0], val[1] = p.cap_id, paused
        if vn_map_update(self.cap_fd, p.cap_key, val) < 0:
            log.warning("TAP capture of %s/%s: cannot %s it: %s", t.port_objs[pi].vnet,
                        t.port_objs[pi].name, "pause" if paused else "resume",
                        os.strerror(errno))
            return 0
        p.cap_paused = paused
        return 0

    cdef int _release_all(self, v, _Queue q) except -1:
        """Frames ``q`` held for ``v``, which this table no longer shapes: sent unshaped if ``v``
        is still here (shaping lifted, or the kernel shapes it now), else counted as lost."""
        cdef _Tables t = self.t
        cdef int k, i, o = self.vl_ix.get(id(v), -1)
        cdef SQ *sq = &q.q
        for k in range(sq.count):
            i = (sq.head + k) % sq.limit
            if o >= 0 and t.vls[o].fast_out:
                self._send(self.main, t, o, sq.data + <size_t>i * sq.slot, sq.len[i],
                           sq.dst + 6 * i if sq.has_dst[i] else NULL)
            else:
                self.dp.drop("queue_full", None, v)
        self._flush(self.main)
        sq.count = 0
        return 0

    def retune(self, v):
        """The core retuned ``v``'s Python bucket (a new current rate): the compiled bucket
        takes the new rate and burst the way ``TokenBucket.set_rate`` does."""
        cdef int o = self.vl_ix.get(id(v), -1)
        cdef VL *vl
        if o < 0 or self.t.vls[o].metered == 0 or v.meter is None:
            return
        vl = &self.t.vls[o]
        bucket = getattr(v.meter, "bucket", v.meter)
        _refill(vl, self.now())
        vl.rate = bucket.rate
        if bucket.burst != vl.burst:
            vl.burst = bucket.burst
            if vl.tokens > vl.burst:
                vl.tokens = vl.burst
        bucket.tokens, bucket.stamp = vl.tokens, vl.stamp

    # -- slow paths: the core's code ---------------------------------------------------------

    cdef void _drop(self, _Tables t, int reason, int link, int vl):
        self.dp.drop(DROP_REASON_NAMES[reason], t.link_objs[link] if link >= 0 else None,
                      t.vl_objs[vl] if vl >= 0 else None)

    # -- receive ------------------------------------------------------------------------------

    cdef int handle(self, _Sender s, int ifs, uint8_t *f, uint32_t n, int tci) except -1:
        """One frame received on interface slot ``ifs`` (-1 unknown); ``tci`` -1: no tag out of
        band.  Mirrors ``classify.classify_eth`` + ``Datapath.receive``."""
        cdef _Tables t = self.t
        cdef uint32_t off = 14, start, length
        cdef int vid = -1, link, v, etype
        cdef Link *ln
        cdef VL *vl
        if ifs < 0:
            self._drop(t, R_NO_LINK, -1, -1)
            return 0
        if n < 14:
            self._drop(t, R_SHORT, -1, -1)
            return 0
        etype = vn_be16(f + 12)
        if etype == 0x8100 or etype == 0x88A8:
            if n < 18:
                self._drop(t, R_SHORT, -1, -1)
                return 0
            vid = vn_be16(f + 14) & 0x0FFF
            etype = vn_be16(f + 16)
            off = 18
        elif tci >= 0:
            vid = tci & 0x0FFF
        if etype != t.ethertype:
            self._drop(t, R_NO_LINK, -1, -1)
            return 0
        if vid <= 0:
            link = t.ifaces[ifs].multi
            if link < 0:
                self._drop(t, R_NO_LINK, -1, -1)
                return 0
        else:
            link = t.p2p.get((<uint64_t>vid << 48) | vn_mac48(f + 6), ifs)
            if link < 0:
                if t.ifaces[ifs].vids[vid >> 3] & (1 << (vid & 7)):
                    self._drop(t, R_BAD_PEER, -1, -1)
                else:
                    self._drop(t, R_UNKNOWN_VLAN, -1, -1)
                return 0
        ln = &t.links[link]
        ln.rx_packets += 1
        ln.rx_bytes += n
        if n < off + 4:
            self._drop(t, R_SHORT, link, -1)
            return 0
        length = vn_be16(f + off + 2)
        start = off + 4
        if start + length > n:
            self._drop(t, R_BAD_LEN, link, -1)
            return 0
        if <int>length > ln.payload_mtu:
            self._drop(t, R_OVERSIZE, link, -1)
            return 0
        v = t.vli.get(vn_be16(f + off), link)
        if v < 0:
            if vn_be16(f + off) != 0:
                if ln.kind == K_MULTI and vn_mac48(f) != t.ifaces[ifs].mac:
                    ln.not_member += 1          # a vNet not hosted here: ignored, no fault
                else:
                    self._drop(t, R_UNKNOWN_VLI, link, -1)
            elif not self._control(s, t, link, f, n, start, length):
                self._drop(t, R_CONTROL, link, -1)
            return 0
        return self._vl_in(s, t, link, v, f, start, length)

    cdef int _vl_in(self, _Sender s, _Tables t, int link, int v, uint8_t *f, uint32_t start,
                    uint32_t length) except -1:
        """A frame classified to input virtual link ``v`` (``Datapath.receive``'s second half):
        police, then deliver / switch / drop."""
        cdef VL *vl = &t.vls[v]
        if vl.metered == 1 and not _take(vl, self.now(), length):
            self._drop(t, R_POLICED, link, v)
            return 0
        if vl.action == DELIVER:
            return self._deliver(t, v, link, f, start, length)
        if vl.action == SWITCH:
            vl.packets += 1
            vl.nbytes += length
            return self._output(s, t, vl.out, f + start, length, NULL, -1)
        self._drop(t, R_VLI_DROP, link, v)
        return 0

    cdef int handle_udp(self, _Sender s, _Tables t, int j, uint8_t *f, uint32_t n,
                        const uint8_t *name) except -1:
        """One datagram received on UDP socket ``j`` from ``name`` (a sockaddr).  Mirrors
        ``classify.classify_udp`` + ``Datapath.receive``."""
        cdef int k, link = -1, v
        cdef uint32_t length
        cdef uint16_t vli
        cdef Link *ln
        if j >= 0:
            for k in range(t.nudp):
                ln = &t.links[t.udp_links[k]]
                if ln.udp == j and _same_addr(ln.addr, name):
                    link = t.udp_links[k]
                    break
        if link < 0:
            self._drop(t, R_NO_LINK, -1, -1)
            return 0
        ln = &t.links[link]
        ln.rx_packets += 1
        ln.rx_bytes += n
        if n < 2:
            self._drop(t, R_SHORT, link, -1)
            return 0
        length = n - 2
        if <int>length > ln.payload_mtu:
            self._drop(t, R_OVERSIZE, link, -1)
            return 0
        vli = vn_be16(f)
        v = t.vli.get(vli, link)
        if v < 0:
            if vli != 0:
                self._drop(t, R_UNKNOWN_VLI, link, -1)
            elif not self._control(s, t, link, f, n, 2, length):
                self._drop(t, R_CONTROL, link, -1)
            return 0
        return self._vl_in(s, t, link, v, f, 2, length)

    cdef bint _control(self, _Sender s, _Tables t, int link, uint8_t *f, uint32_t n,
                       uint32_t start, uint32_t length) except -1:
        """VLI 0: hand a copy of the frame to the control plane (``Datapath.on_control``, as
        the reference does); False if there is none or it refused the frame.  From the ring
        thread the control plane gets it in the loop thread (it is counted there if refused)."""
        if self.dp.on_control is None:
            return False
        if s.deferred is not None:
            if self.ctl_pending >= CONTROL_QUEUE:
                self._drop(t, R_CONTROL_QUEUE, link, -1)
                return True
            self.ctl_pending += 1
            s.deferred.append((self._control_later,
                               (t.link_objs[link], (<char *>f)[:n], start, length)))
            return True
        frame = (<char *>f)[:n]
        return bool(self.dp.on_control(t.link_objs[link], memoryview(frame), start, length))

    def _control_later(self, ctx, frame, start, length):
        self.ctl_pending -= 1
        on_control = self.dp.on_control
        if on_control is None or not on_control(ctx, memoryview(frame), start, length):
            self.dp.drop("control", ctx, None)

    cdef int _deliver(self, _Tables t, int v, int link, uint8_t *f, uint32_t start,
                      uint32_t length) except -1:
        cdef VL *vl = &t.vls[v]
        cdef Port *p
        if vl.port < 0:
            self._drop(t, R_TAP_ERROR, link, v)
            return 0
        p = &t.ports[vl.port]
        if t.links[link].kind == K_MULTI and length >= 12:
            self._learn(t, vl.port, f + start + 6, f + 6)
        if write(p.fd, f + start, length) < 0:
            self._drop(t, R_TAP_ERROR, link, v)
            return 0
        vl.packets += 1
        vl.nbytes += length
        p.tx_packets += 1
        p.tx_bytes += length
        return 0

    # -- the learned-MAC cache -------------------------------------------------------------------
    #
    # The port's ``LearnTable`` decides (its bound, its ageing, its counters); a small
    # direct-mapped cache per port remembers its answers for ``lvalid`` seconds, so a frame from
    # or to a MAC it knows costs no Python call.  What that changes: an entry the table has is
    # refreshed (its last-seen time) at most every ``lvalid`` instead of on every frame, and a
    # lookup may answer up to ``lvalid`` after the entry expired -- both within min(1 s,
    # ageing / 10).  "Unknown" is remembered too (frames to the MAC go broadcast), until the
    # MAC is learned on this port (which overwrites the slot) or ``lvalid`` passes.  A MAC the
    # table refused is never cached as learned: each of its frames is counted.

    cdef int _learn(self, _Tables t, int pi, const uint8_t *src, const uint8_t *outer) except -1:
        cdef Port *p = &t.ports[pi]
        cdef uint64_t mac = vn_mac48(src), out = vn_mac48(outer)
        cdef LCE *e = &p.lc[(mac * 0x9E3779B97F4A7C15ULL) >> 54 & (LCACHE - 1)]
        cdef double now = self.now()
        if e.mac == mac + 1 and e.outer == out and now - e.stamp < p.lvalid:
            return 0
        table = t.port_objs[pi].learned
        s, o = (<char *>src)[:6], (<char *>outer)[:6]
        table.learn(s, o)
        if table.lookup(s, None) == o:
            e.mac, e.outer, e.stamp = mac + 1, out, now
        elif e.mac == mac + 1:
            e.mac = 0
        return 0

    cdef const uint8_t *_learned_dst(self, _Tables t, int pi, const uint8_t *dst,
                                     uint8_t *buf) except? NULL:
        """The outer MAC learned for inner ``dst`` (written to ``buf``), or NULL: broadcast."""
        cdef Port *p = &t.ports[pi]
        cdef uint64_t mac = vn_mac48(dst)
        cdef LCE *e = &p.lc[(mac * 0x9E3779B97F4A7C15ULL) >> 54 & (LCACHE - 1)]
        cdef double now = self.now()
        cdef int k
        if not (e.mac == mac + 1 and now - e.stamp < p.lvalid):
            d = t.port_objs[pi].learned.lookup((<char *>dst)[:6], None)
            e.mac, e.stamp = mac + 1, now
            e.outer = UNKNOWN if d is None else int.from_bytes(d, "big")
        if e.outer == UNKNOWN:                  # the table does not know it: broadcast
            return NULL
        for k in range(6):
            buf[k] = (e.outer >> (40 - 8 * k)) & 0xFF
        return buf

    # -- transmit -----------------------------------------------------------------------------

    cdef int _output(self, _Sender s, _Tables t, int o, uint8_t *payload, uint32_t length,
                     const uint8_t *dst, int pi) except -1:
        """Send ``payload`` on output virtual link ``o`` of table ``t`` (``Datapath.output``:
        MTU, shaper, encapsulation); ``dst``: outer destination MAC instead of the link's
        (multiaccess, learned), ``pi``: the port it came from (-1: switched).  The table is the
        caller's: in the ring thread a reload can swap ``self.t`` while a frame is half-way."""
        cdef VL *vl = &t.vls[o]
        cdef SQ *q
        if not vl.fast_out:                 # UDP tunnel links: the core's Python path
            port = t.port_objs[pi] if pi >= 0 else None
            if s.deferred is not None:
                s.deferred.append((self.dp.output, (t.vl_objs[o], (<char *>payload)[:length],
                                                    port)))
            else:
                self.dp.output(t.vl_objs[o], (<char *>payload)[:length], port)
            return 0
        if <int>length > t.links[vl.link].payload_mtu:
            self._drop(t, R_TOO_BIG, vl.link, o)
            return 0
        if vl.metered == 2:
            q = vl.q
            if q.count or not _take(vl, self.now(), length):
                if not _sq_push(q, payload, length, dst):
                    self._drop(t, R_QUEUE_FULL, vl.link, o)
                    return 0
                if q.count == 1:
                    self._arm(_departure(vl))
                if pi >= 0 and q.count >= q.limit and not t.ports[pi].paused:
                    t.ports[pi].paused = 1
                    self._cap_pause(t, pi, 1)
                    t.port_objs[pi].paused = True       # at once: on_tap reads it no more
                    self._later(s, self.dp.pause_port, t.port_objs[pi])
                return 0
        return self._send(s, t, o, payload, length, dst)

    cdef int _send(self, _Sender s, _Tables t, int o, uint8_t *payload, uint32_t length,
                   const uint8_t *dst) except -1:
        """Queue one frame for the batched send (``payload`` must stay put until the flush)."""
        cdef VL *vl = &t.vls[o]
        cdef Link *ln
        cdef int i
        cdef uint8_t *h
        if s.nmsg == BATCH or (s.nmsg and s.t is not t):
            self._flush(s)
        if s.nmsg == 0:
            s.t = t
        i = s.nmsg
        h = &s.hdrs[i * HDR_MAX]
        memcpy(h, vl.hdr, vl.hdr_len)
        ln = &t.links[vl.link]
        if ln.kind == K_UDP:                # VLI, payload; to the link's remote
            s.iovs[2 * i].iov_len = vl.hdr_len
            if ln.connected:
                s.msgs[i].msg_hdr.msg_name = NULL
                s.msgs[i].msg_hdr.msg_namelen = 0
            else:
                s.msgs[i].msg_hdr.msg_name = ln.addr
                s.msgs[i].msg_hdr.msg_namelen = ln.addrlen
        else:                               # header, LEN, payload
            if dst != NULL:
                memcpy(h, dst, 6)
            h[vl.hdr_len] = length >> 8
            h[vl.hdr_len + 1] = length & 0xFF
            s.iovs[2 * i].iov_len = vl.hdr_len + 2
            s.msgs[i].msg_hdr.msg_name = NULL
            s.msgs[i].msg_hdr.msg_namelen = 0
        s.iovs[2 * i + 1].iov_base = payload
        s.iovs[2 * i + 1].iov_len = length
        s.msg_vl[i] = o
        s.msg_len[i] = length
        s.msg_fd[i] = vl.txfd
        s.nmsg = i + 1
        return 0

    cdef int _flush(self, _Sender s) except -1:
        """Send every frame ``s`` holds: one ``sendmmsg`` per run of frames for one socket."""
        cdef _Tables t = s.t
        cdef int i = 0, j, k, r, fd, n = s.nmsg
        cdef VL *vl
        cdef Link *ln
        if n == 0:
            return 0
        s.nmsg = 0
        while i < n:
            fd = s.msg_fd[i]
            j = i
            while j < n and s.msg_fd[j] == fd:
                j += 1
            while i < j:
                r = sendmmsg(fd, &s.msgs[i], j - i, MSG_DONTWAIT)
                if r < 0:
                    if errno == EINTR:
                        continue
                    r = 0
                for k in range(i, i + r):
                    vl = &t.vls[s.msg_vl[k]]
                    vl.packets += 1
                    vl.nbytes += s.msg_len[k]
                    ln = &t.links[vl.link]
                    ln.tx_packets += 1
                    ln.tx_bytes += s.msg_len[k]
                i += r
                if i < j:            # frame i was refused: counted, and go on with the next
                    self._drop(t, R_SEND_ERROR, t.vls[s.msg_vl[i]].link, s.msg_vl[i])
                    i += 1
        self.batches += 1
        if t is not self.t:          # a reload swapped the tables meanwhile
            _sync(t)
        return 0

    # -- shaping: the departure timer --------------------------------------------------------

    cdef int _arm(self, double due) except -1:
        """Have the ring thread drain the shapers at ``due`` (or earlier, if already armed so)."""
        cdef itimerspec its
        if self.armed and self.armed <= due:
            return 0
        self.armed = due
        if self.pyclock is not None:             # a test's clock: nothing real to wait for
            return 0
        memset(&its, 0, sizeof(its))
        its.it_value.tv_sec = <long>due
        its.it_value.tv_nsec = <long>((due - <double>its.it_value.tv_sec) * 1e9)
        if its.it_value.tv_sec == 0 and its.it_value.tv_nsec == 0:
            its.it_value.tv_nsec = 1
        if timerfd_settime(self.timerfd, TFD_TIMER_ABSTIME, &its, NULL) < 0:
            raise OSError(errno, os.strerror(errno))
        return 0

    cdef int _rearm(self) except -1:
        """After a table swap: the earliest departure of the queues now compiled."""
        cdef _Tables t = self.t
        cdef int k
        cdef VL *vl
        self.armed = 0
        for k in range(t.nshaped):
            vl = &t.vls[t.shaped[k]]
            if vl.q.count:
                _refill(vl, self.now())
                self._arm(_departure(vl))
        return 0

    cdef int drain(self, _Sender s) except -1:
        """Send every queued frame its bucket now has credit for, oldest first, per shaped
        link (``Datapath._drain``); resume the logical interfaces a full queue paused once it
        is below half; set the timer for the next departure."""
        cdef _Tables t = self.t
        cdef double now = self.now()
        cdef int k, n, i, o, pi
        cdef VL *vl
        cdef SQ *q
        self.drains += 1
        self.armed = 0
        self._flush(s)
        for k in range(t.nshaped):
            o = t.shaped[k]
            vl = &t.vls[o]
            q = vl.q
            n = 0
            while n < q.count:
                i = (q.head + n) % q.limit
                if not _take(vl, now, q.len[i]):
                    break
                self._send(s, t, o, q.data + <size_t>i * q.slot, q.len[i],
                           q.dst + 6 * i if q.has_dst[i] else NULL)
                n += 1
            self._flush(s)                   # the slots are given back only once sent
            if n > q.count:                  # a reload emptied the queue meanwhile
                n = q.count
            q.head = (q.head + n) % q.limit
            q.count -= n
            if q.count:
                self._arm(_departure(vl))
            if q.count < q.limit // 2 + 1:
                for pi in range(t.nports):
                    if t.ports[pi].paused and t.ports[pi].out == o:
                        t.ports[pi].paused = 0
                        self._later(s, self.dp.resume_port, t.port_objs[pi])
        return 0

    cdef int _later(self, _Sender s, fn, arg) except -1:
        if s.deferred is not None:
            s.deferred.append((fn, (arg,)))
        else:
            fn(arg)
        return 0

    cpdef flush_tx(self):
        """Send the frames the loop thread queued."""
        self._flush(self.main)

    cpdef sync(self):
        """Add the C counter deltas to the Python objects ``show`` reads, and zero them."""
        if self.t is not None:
            _sync(self.t)

    def flush(self):
        self._flush(self.main)
        self.copy_used = 0
        self.sync()

    cdef int _run_deferred(self, _Sender s) except -1:
        if s.deferred:
            work, s.deferred = s.deferred, []
            self.dp.loop.call_soon_threadsafe(_run_all, work)
        return 0

    # -- entry points -------------------------------------------------------------------------

    cdef uint8_t *_copy(self, data, uint32_t *n) except NULL:
        """A copy of ``data`` that stays put until the next flush."""
        cdef const uint8_t[::1] mv = data
        cdef uint8_t *f
        n[0] = mv.shape[0]
        if self.main.nmsg == BATCH or self.copy_used == BATCH:
            self._flush(self.main)
            self.copy_used = 0
        f = &self.copybuf[self.copy_used * TAP_BUF]
        if n[0] > TAP_BUF:
            n[0] = TAP_BUF
        if n[0]:
            memcpy(f, &mv[0], n[0])
        self.copy_used += 1
        return f

    def process_eth(self, int ifindex, frame, tci):
        """One frame, as a ring would hand it over (the frame is copied until ``flush``)."""
        cdef uint32_t n
        cdef uint8_t *f = self._copy(frame, &n)
        self.handle(self.main, self.t.ifslot.get(ifindex, -1), f, n, -1 if tci is None else tci)

    def output(self, v, payload, port):
        """``Datapath.output`` of a virtual link this engine sends (``v.engine_out``)."""
        cdef uint32_t n
        cdef uint8_t *f = self._copy(payload, &n)
        cdef int pi = -1
        cdef uint8_t dstbuf[6]
        cdef const uint8_t *dst = NULL
        o = self.vl_ix[id(v)]
        if port is not None:
            pi = self.t.port_objs.index(port) if port in self.t.port_objs else -1
            if pi >= 0 and self.t.ports[pi].learn_dst and n >= 6 and not f[0] & 1:
                dst = self._learned_dst(self.t, pi, f, dstbuf)
        self._output(self.main, self.t, o, f, n, dst, pi)

    def walk(self, _Ring ring, bint as_ring_thread=False):
        """Walk ``ring`` in the calling thread until it is empty, then flush and sync; returns
        how many frames it read.  ``as_ring_thread``: with the ring thread's sender, whose slow
        paths are handed to the event loop (as ``run_rings`` does).  The unit tests drive the
        walk over synthetic rings this way."""
        cdef int64_t before = ring.frames
        cdef _Sender s = self.rs if as_ring_thread else self.main
        while ring.walk(self, s, WALK_BUDGET) == WALK_BUDGET:
            pass
        self._flush(s)
        self._run_deferred(s)
        self.flush()
        return ring.frames - before

    def on_tap(self, int pi):
        """Read up to TAP_BATCH frames from port ``pi`` and send them (``PyEngine.on_tap``).
        A captured port's TAP holds only what the capture left to it (paused, too large)."""
        cdef _Tables t = self.t
        cdef Port *p = &t.ports[pi]
        cdef int k
        cdef ssize_t n
        cdef uint8_t *buf
        cdef _Sender s = self.main
        port = t.port_objs[pi]
        if port.paused:                     # paused by the ring thread, the loop to follow
            return
        p.paused = 0
        self._flush(s)
        for k in range(TAP_BATCH):
            buf = &self.tapbuf[k * TAP_BUF]
            n = read(p.fd, buf, TAP_BUF)
            if n < 0:
                if errno != EAGAIN and errno != EINTR:
                    log.warning("read error on %s/%s: %s", port.vnet, port.name,
                                os.strerror(errno))
                elif p.cap_paused and not p.paused:     # its queue is empty: capture again
                    self._cap_pause(t, pi, 0)
                break
            if n == 0:                       # library endpoint: the application closed its end
                self._flush(s)
                self.sync()
                self.dp.port_closed(port)
                return
            self._tap_frame(s, t, pi, buf, <uint32_t>n)
            if p.paused or port.paused:
                break
        self._flush(s)
        self.sync()

    cdef int _tap_frame(self, _Sender s, _Tables t, int pi, uint8_t *buf, uint32_t n) except -1:
        """One frame from logical interface ``pi`` to its output virtual link (``buf`` must
        stay put until the flush)."""
        cdef Port *p = &t.ports[pi]
        cdef uint8_t dstbuf[6]
        cdef const uint8_t *dst = NULL
        p.rx_packets += 1
        p.rx_bytes += n
        if p.out < 0:
            return 0
        if p.fast_out:
            if p.learn_dst and n >= 6 and not buf[0] & 1:
                dst = self._learned_dst(t, pi, buf, dstbuf)
            return self._output(s, t, p.out, buf, n, dst, pi)
        if s.deferred is not None:          # the ring thread: the loop's Python path
            s.deferred.append((self.dp.output, (t.vl_objs[p.out], (<char *>buf)[:n],
                                                t.port_objs[pi])))
        else:
            self._flush(s)
            self.dp.output(t.vl_objs[p.out], (<char *>buf)[:n], t.port_objs[pi])
        return 0

    def run_rings(self, int epfd, list rings, list udps=None, _CapRing cap=None):
        """The ring thread: wait (without the GIL) until a ring or the shapers' timer is
        readable, then walk those rings / drain the shapers holding the GIL.  Epoll data ``i``
        stands for ``rings[i]``, ``UDP_KEY + j`` for the UDP tunnel socket ``udps[j]`` (fd,
        local address); it returns when the entry with data ``STOP_KEY`` (the stop eventfd)
        is readable.

        Counters are added to the Python objects (``sync``) when the thread falls idle (an
        epoll_wait of SYNC_MS finds nothing) or, under steady load, at least every SYNC_MS:
        not on the way of a lone frame to its next hop.  The kernel's count of frames it found
        no room for is read at the same moments (``ring_full``)."""
        cdef epoll_event evs[EP_EVENTS]
        cdef int n, i, k, nr = len(rings)
        cdef uint32_t key
        cdef uint64_t ticks
        cdef bint stop = False, dirty = False, timer
        cdef _Ring ring
        cdef bytearray seen_buf = bytearray(max(nr, 1))
        cdef char *seen = seen_buf
        cdef int64_t last_sync = _now_ns()
        while not stop:
            with nogil:
                n = epoll_wait(epfd, evs, EP_EVENTS, SYNC_MS if dirty else -1)
            if n < 0:
                if errno == EINTR:
                    continue
                raise OSError(errno, os.strerror(errno))
            if n == 0 or (dirty and _now_ns() - last_sync >= SYNC_MS * 1000000):
                self.sync()
                self._ring_drops(rings)
                dirty = False
                last_sync = _now_ns()
            timer = False
            for i in range(n):
                key = evs[i].data.u32
                if key == STOP_KEY:
                    stop = True
                elif key == TIMER_KEY:
                    timer = True
                elif key == CAP_KEY:
                    if cap is not None:
                        dirty = True
                        self.wakeups += 1
                        try:
                            cap.walk(self, self.rs, WALK_BUDGET)
                        except Exception:
                            self._flush(self.rs)
                            log.exception("fast path: error while reading the TAP capture")
                elif key >= UDP_KEY:
                    if udps is not None and <int>(key - UDP_KEY) < len(udps):
                        fd_local = udps[key - UDP_KEY]
                        dirty = True
                        try:
                            self.read_udp(self.rs, fd_local[0], fd_local[1])
                        except Exception:
                            self._flush(self.rs)
                            log.exception("fast path: error while reading udp %s",
                                          fd_local[1])
                elif <int>key < nr:
                    seen[key] = 1
            for k in range(nr):
                if seen[k]:
                    seen[k] = 0
                    ring = rings[k]
                    dirty = True
                    self.wakeups += 1
                    try:
                        ring.walk(self, self.rs, WALK_BUDGET)
                    except Exception:
                        self._flush(self.rs)
                        log.exception("fast path: error while reading the ring of ifindex %d",
                                      ring.ifindex)
            if timer or (self.armed and self.now() >= self.armed):
                if timer:
                    read(self.timerfd, &ticks, 8)
                dirty = True
                self.drain(self.rs)
            self._run_deferred(self.rs)
        self._flush(self.rs)
        self._run_deferred(self.rs)
        self.sync()
        self._ring_drops(rings)

    cdef int read_udp(self, _Sender s, int fd, local) except -1:
        """Up to UDP_BATCH datagrams of one tunnel socket in one ``recvmmsg``; decided, sent
        (payloads point into the receive buffers), then the next batch."""
        cdef _Tables t = self.t
        cdef int j = t.udp_slot.get(local, -1), n, k, rounds
        for rounds in range(BATCH // UDP_BATCH):
            n = recvmmsg(fd, self.umsgs, UDP_BATCH, MSG_DONTWAIT, NULL)
            if n < 0:
                if errno != EAGAIN and errno != EINTR:
                    log.warning("receive error on udp %s: %s", local, os.strerror(errno))
                return 0
            for k in range(n):
                if self.t is not t:              # a reload swapped the tables meanwhile
                    t = self.t
                    j = t.udp_slot.get(local, -1)
                self.handle_udp(s, t, j, &self.udpbuf[<size_t>k * TAP_BUF],
                                self.umsgs[k].msg_len, &self.unames[k * 28])
            self._flush(s)
            for k in range(n):
                self.umsgs[k].msg_hdr.msg_namelen = 28
            if n < UDP_BATCH:
                return 0
        return 0

    def process_udp(self, local, remote, datagram):
        """One datagram, as a tunnel socket would hand it over (copied until ``flush``)."""
        cdef uint32_t n
        cdef uint8_t *f = self._copy(datagram, &n)
        cdef bytes name = _sockaddr(remote)
        self.handle_udp(self.main, self.t, self.t.udp_slot.get(local, -1), f, n,
                        <const uint8_t *><char *>name)

    cdef int _ring_drops(self, list rings) except -1:
        cdef _Ring ring
        cdef int64_t n
        for ring in rings:
            n = ring.owner.dropped() if ring.base != NULL else 0
            if n:
                self.dp.drops["ring_full"] += n
        if self.cap_sync is not None:
            n = self.cap_sync()
            if n:
                self.dp.drops["ring_full"] += n
        return 0


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def _run_all(work):
    for fn, args in work:
        fn(*args)


cdef int _sync(_Tables t) except -1:
    """C counter deltas to the Python objects; token bucket state and queue depth to the
    Python meters (what ``show`` and the next compile read)."""
    cdef int i
    cdef Link *ln
    cdef VL *vl
    cdef Port *p
    for i in range(t.nlinks):
        ln = &t.links[i]
        if ln.rx_packets or ln.tx_packets:
            st = t.link_objs[i].state
            st.rx_packets += ln.rx_packets
            st.rx_bytes += ln.rx_bytes
            st.tx_packets += ln.tx_packets
            st.tx_bytes += ln.tx_bytes
            ln.rx_packets = ln.rx_bytes = ln.tx_packets = ln.tx_bytes = 0
        if ln.not_member:
            t.link_objs[i].state.ignored["not_member"] += ln.not_member
            t.ignored["not_member"] += ln.not_member
            ln.not_member = 0
    for i in range(t.nvl):
        vl = &t.vls[i]
        if vl.packets:
            o = t.vl_objs[i]
            o.packets += vl.packets
            o.bytes += vl.nbytes
            vl.packets = vl.nbytes = 0
        if vl.metered == 1 or vl.metered == 2:
            meter = t.vl_objs[i].meter
            if meter is not None:
                bucket = getattr(meter, "bucket", meter)
                bucket.tokens, bucket.stamp = vl.tokens, vl.stamp
                if vl.metered == 2:
                    meter.held = vl.q.count
    for i in range(t.nports):
        p = &t.ports[i]
        if p.rx_packets or p.tx_packets:
            o = t.port_objs[i]
            o.rx_packets += p.rx_packets
            o.rx_bytes += p.rx_bytes
            o.tx_packets += p.tx_packets
            o.tx_bytes += p.tx_bytes
            p.rx_packets = p.rx_bytes = p.tx_packets = p.tx_bytes = 0
    return 0


cdef class _Ring:
    """User-space side of a ``packet_io.RxRing`` (TPACKET_V2): the slot we are at."""
    cdef object owner                # the RxRing (keeps the mapping alive)
    cdef uint8_t[::1] view_keep
    cdef uint8_t *base
    cdef uint32_t frame_size, frame_nr, cur
    cdef public int ifindex
    cdef public int64_t frames

    def __cinit__(self, rx, int ifindex):
        cdef uint8_t[::1] mv = rx.map
        self.owner = rx
        self.view_keep = mv
        self.base = &mv[0]
        self.frame_size, self.frame_nr = rx.frame_size, rx.frame_nr
        self.cur = 0
        self.ifindex = ifindex

    @property
    def position(self):
        """The slot the next frame is expected in."""
        return self.cur

    def release(self):
        self.view_keep = None
        self.base = NULL

    cdef int walk(self, _Engine e, _Sender s, int budget) except -1:
        """The frames the kernel has published (TP_STATUS_USER, set after its copy), in
        order, up to ``budget``; WALK_BATCH at a time: they are decided, the batch is sent
        (payloads point into the slots), then the slots go back to the kernel.  Returns how
        many frames it read (``budget``: there may be more)."""
        cdef int done = 0
        cdef uint8_t *h
        cdef uint32_t status, first, k, n, snap
        cdef int ifs = -1, tci
        cdef _Tables t = None                       # the table ``ifs`` was looked up in
        if self.base == NULL:
            return 0
        while True:
            first, n = self.cur, 0
            while n < WALK_BATCH and done + <int>n < budget:
                h = self.base + <size_t>self.cur * self.frame_size
                status = vn_load32(h + H2_STATUS)
                if not status & TP_STATUS_USER:
                    break
                tci = (<uint16_t *>(h + H2_TCI))[0] if status & TP_STATUS_VLAN_VALID else -1
                if e.t is not t:                    # first frame, or a reload swapped tables
                    t = e.t
                    ifs = t.ifslot.get(self.ifindex, -1)
                snap = (<uint32_t *>(h + H2_SNAPLEN))[0]
                if snap < (<uint32_t *>(h + H2_LEN))[0]:    # larger than a slot: cut
                    e._drop(t, R_OVERSIZE, -1, -1)
                else:
                    e.handle(s, ifs, h + (<uint16_t *>(h + H2_MAC))[0], snap, tci)
                self.frames += 1
                n += 1
                self.cur = (self.cur + 1) % self.frame_nr
            e._flush(s)
            for k in range(n):
                vn_store32(self.base + <size_t>((first + k) % self.frame_nr) * self.frame_size,
                           TP_STATUS_KERNEL)
            done += n
            if n < WALK_BATCH or done >= budget:
                return done
            with nogil:                 # a full ring is many batches: let the loop thread in
                pass


cdef class _CapRing:
    """User-space side of the TAP capture ring: a BPF ring buffer (``bpf/tap_capture.bpf.c``)
    mapped here as the kernel lays it out -- the consumer position (read-write page), the
    producer position (read-only page), then the data, mapped twice in a row so a record that
    wraps reads as one piece.  A record: the ring's 8-byte header (length of the reservation,
    BUSY while the program writes it, DISCARD), the capture id and frame length (4 bytes
    each), the frame."""
    cdef object cons_map, prod_map
    cdef uint64_t *cons_pos
    cdef const uint64_t *prod_pos
    cdef const uint8_t *data
    cdef uint64_t mask
    cdef public int fd
    cdef public int64_t frames

    def __cinit__(self, int fd, size_t size):
        import mmap
        cdef uint8_t[::1] cons
        cdef const uint8_t[::1] prod
        page = mmap.PAGESIZE
        self.fd = fd
        self.cons_map = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                                  offset=0)
        self.prod_map = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                  offset=page)
        cons = self.cons_map
        prod = memoryview(self.prod_map)
        self.cons_pos = <uint64_t *>&cons[0]
        self.prod_pos = <const uint64_t *>&prod[0]
        self.data = &prod[page]
        self.mask = size - 1

    def pending(self):
        """Bytes the program wrote that the walk has not consumed yet."""
        return vn_load64(self.prod_pos) - vn_load64(self.cons_pos)

    cdef int walk(self, _Engine e, _Sender s, int budget) except -1:
        """The records the program has committed, in order, up to ``budget`` frames;
        WALK_BATCH at a time: decided, sent (payloads point into the ring), then given back
        (the consumer position moves past them).  Returns how many records it read."""
        cdef uint64_t cons = vn_load64(self.cons_pos), prod
        cdef uint32_t hlen, cid, n, slot
        cdef const uint8_t *h
        cdef int done = 0, k, pi
        cdef _Tables t
        while True:
            prod = vn_load64(self.prod_pos)
            k = 0
            while cons < prod and k < WALK_BATCH and done + k < budget:
                h = self.data + (cons & self.mask)
                hlen = vn_load32(h)
                if hlen & RB_BUSY:                  # still being written: the next wake-up
                    break
                cons += ((hlen & ~(RB_BUSY | RB_DISCARD)) + RB_HDR + 7) & ~(<uint64_t>7)
                k += 1
                if hlen & RB_DISCARD:
                    continue
                cid = (<const uint32_t *>(h + RB_HDR))[0]
                n = (<const uint32_t *>(h + RB_HDR + 4))[0]
                t = e.t
                slot = cid & CAP_SLOT
                pi = t.cap_port[slot] if slot < <uint32_t>t.ncap and t.cap_id[slot] == cid \
                    else -1
                if pi < 0:                          # its port went with a reload
                    e._drop(t, R_TAP_ERROR, -1, -1)
                else:
                    e._tap_frame(s, t, pi, <uint8_t *>(h + RB_HDR + 8), n)
                self.frames += 1
            e._flush(s)
            vn_store64(self.cons_pos, cons)
            done += k
            if k < WALK_BATCH or done >= budget:
                return done
            with nogil:                 # a full ring is many batches: let the loop thread in
                pass

    def walk_py(self, e, bint as_ring_thread=True):
        """Walk until empty in the calling thread (tests); returns the records read."""
        cdef _Engine eng = e
        cdef _Sender s = eng.rs if as_ring_thread else eng.main
        cdef int n = 0, k
        while True:
            k = self.walk(eng, s, WALK_BUDGET)
            n += k
            if k < WALK_BUDGET:
                break
        eng._run_deferred(s)
        eng.flush()
        return n

    def close(self):
        self.cons_pos = NULL
        self.prod_pos = NULL
        self.data = NULL
        self.cons_map.close()
        self.prod_map.close()


class CEngine:
    """``core.Engine`` on rings and C tables (see the module docstring)."""

    name = "fast"
    reads_udp = True       # the ring thread reads the UDP tunnel sockets too

    def __init__(self, dp):
        self.dp = dp
        self.udp_conn = {}     # (local, remote) of a UDP link -> its connected socket
        self._engine = _Engine(dp, self.udp_conn)
        self.rings = {}        # ifindex -> (RxRing, _Ring)
        self._port_ix = {}     # id(TapPort) -> index in the compiled tables
        self._thread = None    # the ring thread, its rings, epoll fd and stop eventfd
        self._thread_rings = []
        self._thread_udp = []
        self._epfd = self._stopfd = -1
        self._cap = None       # _CapRing of the node's TAP capture (``dp.capture``), if any

    def sync_substrate(self, snap, close):
        """Substrate interfaces get a TPACKET_V2 ring; UDP tunnel links a socket of their own
        connected to the remote (bound to the link's local address beside the core's socket):
        a connected ``sendmmsg`` skips the route lookup per datagram, and the kernel delivers
        the remote's datagrams to it (the ring thread reads both)."""
        for ifindex, iface in snap.ifaces.items():
            if ifindex not in self.rings:
                rx = packet_io.RxRing(iface.ifname, snap.ethertype)
                self.rings[ifindex] = (rx, _Ring(rx, ifindex))
        want = {(c.local, c.remote) for c in snap.links.values() if c.kind == "udp"}
        for key in want:
            if key not in self.udp_conn:
                self.udp_conn[key] = _connected_udp(*key)
        if close:
            gone = [i for i in self.rings if i not in snap.ifaces]
            gone_conn = [k for k in self.udp_conn if k not in want]
            if gone or gone_conn or [x for x in self._thread_udp if x[1] not in snap.udp]:
                self._stop_ring_thread()        # it must not read a ring / socket that goes
            for key in gone_conn:
                self.udp_conn.pop(key).close()
            for ifindex in gone:
                rx, ring = self.rings.pop(ifindex)
                self._engine._ring_drops_py([ring])
                ring.release()
                rx.close()

    def start(self):
        """(Re)start the ring thread when the set of rings changed."""
        udps = [(s.fileno(), local) for local, s in self.dp.udp.items()] + \
            [(s.fileno(), local) for (local, _remote), s in self.udp_conn.items()]
        cap = getattr(self.dp, "capture", None)
        if cap is not None and self._cap is None:
            self._stop_ring_thread()
            self._cap = _CapRing(cap.ring_fd, cap.ring_size)
            self._engine.cap_fd = cap.ports_fd
            self._engine.cap_sync = cap.take_drops
        if self._thread is None or [r for _, r in self._thread_rings] != \
                [r for _, r in self.rings.values()] or self._thread_udp != udps:
            self._stop_ring_thread()
            self._start_ring_thread(udps)

    def install(self, snap):
        self._engine.install(snap)
        self._port_ix = {id(p): i for i, p in enumerate(self.dp.ports.values())}

    def retune(self, v):
        self._engine.retune(v)

    def output(self, v, payload, port):
        self._engine.output(v, payload, port)

    def process_eth(self, ifindex, frame, tci):
        self._engine.process_eth(ifindex, frame, tci)

    def process_udp(self, local, remote, datagram):
        self._engine.process_udp(local, remote, datagram)

    def flush(self):
        self._engine.flush()

    def flush_tx(self):
        self._engine.flush_tx()

    def on_tap(self, port):
        self._engine.on_tap(self._port_ix[id(port)])

    def close(self):
        self._stop_ring_thread()
        self._engine._ring_drops_py([ring for _, ring in self.rings.values()])
        st = self.stats()
        log.info("fast path: %d frames from rings in %d wake-ups, %d send batches, "
                 "%d shaper drains", st["ring_frames"], st["wakeups"], st["batches"],
                 st["drains"])
        for ifindex, (rx, ring) in self.rings.items():
            ring.release()
            rx.close()
        self.rings.clear()
        for sock in self.udp_conn.values():
            sock.close()
        self.udp_conn.clear()
        if self._cap is not None:
            self._engine.cap_fd = -1
            self._engine.cap_sync = None
            self._cap.close()
            self._cap = None

    def stats(self):
        e = self._engine
        st = {"wakeups": e.wakeups, "batches": e.batches, "drains": e.drains,
              "ring_frames": sum(r.frames for _, r in self.rings.values())}
        if self._cap is not None:
            st["capture_frames"] = self._cap.frames
            st.update({f"capture_{k}": v for k, v in self.dp.capture.counters().items()})
        return st

    def sync_counters(self):
        """Counts kept outside Python (the TAP capture's kernel drops) before a read."""
        if self._cap is not None:
            self.dp.drops["ring_full"] += self.dp.capture.take_drops(True)

    # -- the ring thread ---------------------------------------------------------------------
    #
    # Rings are read by a thread of their own: it sleeps in epoll_wait without the GIL and,
    # when a ring has frames, walks it holding the GIL -- no event-loop callback, no Python
    # frame per wake-up.  The same thread drains the shaper queues when their timer fires.
    # Everything else (TAPs, UDP, control plane, timers) stays on the event loop; slow paths of
    # ring frames that touch it are handed over (``_Sender``).

    def _start_ring_thread(self, udps):
        rings = list(self.rings.values())
        epfd = _epoll_create()
        stopfd = _eventfd()
        try:
            for i, (rx, ring) in enumerate(rings):
                _epoll_add(epfd, rx.sock.fileno(), i)
            for j, (fd, _local) in enumerate(udps):
                _epoll_add(epfd, fd, UDP_KEY + j)
            _epoll_add(epfd, self._engine.timer_fd(), TIMER_KEY)
            _epoll_add(epfd, stopfd, STOP_KEY)
            if self._cap is not None:
                _epoll_add(epfd, self._cap.fd, CAP_KEY)
        except BaseException:
            os.close(epfd)
            os.close(stopfd)
            raise
        self._epfd, self._stopfd = epfd, stopfd
        self._thread_rings, self._thread_udp = rings, udps
        self._thread = threading.Thread(target=self._ring_thread, args=(epfd, rings, udps),
                                        name="vnet-rings", daemon=True)
        self._thread.start()
        log.info("fast path: ring thread reads %d substrate interface(s): %s, %d udp socket(s)%s",
                 len(rings), " ".join(rx.ifname for rx, _ in rings) or "-", len(udps),
                 ", the TAP capture ring" if self._cap is not None else "")

    def _ring_thread(self, epfd, rings, udps):
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self._engine.run_rings(epfd, [ring for _, ring in rings], udps, self._cap)
        except BaseException as e:
            log.exception("fast path: the ring thread failed; substrate frames are no longer "
                          "read")
            try:
                self.dp.loop.call_soon_threadsafe(self._fatal,
                                                  f"the ring thread failed: {e!r}")
            except RuntimeError:       # the loop is closed: the node is stopping anyway
                pass

    def _fatal(self, msg):
        if self.dp.on_fatal is not None:
            self.dp.on_fatal(msg)

    def _stop_ring_thread(self):
        if self._thread is None:
            return
        os.eventfd_write(self._stopfd, 1)
        self._thread.join()
        self._thread = None
        for fd in (self._epfd, self._stopfd):
            try:
                os.close(fd)
            except OSError:            # a failed thread may have lost its epoll fd
                pass
        self._epfd = self._stopfd = -1
        self._thread_rings, self._thread_udp = [], []


def _connected_udp(local, remote):
    """A UDP socket bound to ``local`` (beside the core's, SO_REUSEADDR) and connected to
    ``remote``."""
    s = socket.socket(socket.AF_INET6 if ":" in local[0] else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(local)
        s.connect(remote)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def _epoll_create():
    cdef int fd = epoll_create1(EPOLL_CLOEXEC)
    if fd < 0:
        raise OSError(errno, os.strerror(errno))
    return fd


def _eventfd():
    cdef int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
    if fd < 0:
        raise OSError(errno, os.strerror(errno))
    return fd


def _epoll_add(int epfd, int fd, uint32_t key):
    cdef epoll_event ev
    ev.events = EPOLLIN
    ev.data.u64 = 0
    ev.data.u32 = key
    if epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
        raise OSError(errno, os.strerror(errno))
