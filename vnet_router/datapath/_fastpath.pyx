# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled engine: the reference engine's decisions in C, on TPACKET_V3 rings and batched
sends.  ``CEngine`` implements ``core.Engine``; ``select.DatapathC`` composes it with the core.

* receive: one TPACKET_V3 ring per substrate interface (``packet_io.RxRing``, ETH_P_ALL + the
  substrate BPF filter, VLAN from the ring header), read by a thread of its own (the *ring
  thread*, ``CEngine._start_ring_thread``).  Each wake-up walks every frame the kernel
  finished writing -- retired blocks and the block still being filled -- and classifies it
  against C tables compiled from the snapshot (``_Tables``): a hash of (interface, VLAN id,
  sender MAC) -> substrate link, a hash of (substrate link, VLI) -> input virtual link;
* switch (VLI swap): the output frame is the output virtual link's precomputed header (MACs,
  tag written inline, EtherType, VLI) + LEN + the payload, taken straight from the ring by
  ``sendmmsg`` (two iovecs per frame), one system call per batch and interface;
* deliver: ``write`` from the ring into the TAP;
* TAP -> substrate: ``read`` into a batch of buffers, then the same batched send.

Whatever is not hot is handed to the core (``core.Datapath``), so it cannot drift: drops (all
reasons, counted globally, per substrate link and per virtual link: ``Datapath.drop``), token
buckets (the very ``TokenBucket``/``Shaper`` objects, called when a virtual link has a rate),
output to multiaccess links from a TAP (learned MACs) and to shaped links
(``Datapath.output``), UDP tunnel links (read by the core).  Counters of the hot path are C
deltas added to the same Python objects (``LinkState``, ``VLink``, ``TapPort``) after every
batch, so ``vnetctl show`` reads the same fields.

``process_eth(ifindex, frame, tci)`` + ``flush()`` drive the same C code without a ring: the
differential tests feed both engines one corpus that way.
"""
import logging
import os
import signal
import socket
import threading

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.string cimport memcpy, memset
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

cdef extern from *:
    """
    #include <stdint.h>
    static inline uint32_t vn_load32(const void *p) {
        return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE);
    }
    static inline void vn_store32(void *p, uint32_t v) {
        __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE);
    }
    static inline uint16_t vn_be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
    static inline uint64_t vn_mac48(const uint8_t *p) {
        return ((uint64_t)p[0] << 40) | ((uint64_t)p[1] << 32) | ((uint64_t)p[2] << 24) |
               ((uint64_t)p[3] << 16) | ((uint64_t)p[4] << 8) | (uint64_t)p[5];
    }
    """
    uint32_t vn_load32(const void *p) nogil
    void vn_store32(void *p, uint32_t v) nogil
    uint16_t vn_be16(const uint8_t *p) nogil
    uint64_t vn_mac48(const uint8_t *p) nogil

# tpacket_block_desc / tpacket3_hdr offsets (linux/if_packet.h, TPACKET_V3)
DEF BD_STATUS = 8
DEF BD_NUM_PKTS = 12
DEF BD_FIRST = 16
DEF BLK_HDR = 48          # ALIGN(sizeof(tpacket_block_desc), 8): offset of the first frame
DEF BD_LEN = 20
DEF H3_NEXT = 0
DEF H3_SNAPLEN = 12
DEF H3_STATUS = 20
DEF H3_MAC = 24
DEF H3_TCI = 32
DEF TP_STATUS_KERNEL = 0
DEF TP_STATUS_USER = 1
DEF TP_STATUS_VLAN_VALID = 16

DEF BATCH = 256            # frames per sendmmsg
DEF TAP_BATCH = 64         # frames read from one TAP per wake-up (as the reference)
DEF TAP_BUF = 65600
DEF HDR_MAX = 24

DEF EP_EVENTS = 64         # epoll events taken per wake-up of the ring thread
DEF STOP_KEY = 0xFFFFFFFF
DEF BELL_BUSY = 64         # see _Ring.tune_doorbell
DEF BELL_IDLE = 16
DEF SYNC_MS = 1            # ring thread: counters reach the Python objects within ~this

DEF K_P2P = 0
DEF K_MULTI = 1
DEF K_UDP = 2

# reason indexes -> names (tables.DROP_REASONS)
_REASONS = ("short", "bad_len", "unknown_vlan", "bad_peer", "no_link", "unknown_vli", "control",
            "oversize", "policed", "tap_error")
DEF R_SHORT = 0
DEF R_BAD_LEN = 1
DEF R_UNKNOWN_VLAN = 2
DEF R_BAD_PEER = 3
DEF R_NO_LINK = 4
DEF R_UNKNOWN_VLI = 5
DEF R_CONTROL = 6
DEF R_OVERSIZE = 7
DEF R_POLICED = 8
DEF R_TAP_ERROR = 9


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
    int txfd                 # -1: none (UDP, or not opened)
    int64_t rx_packets, rx_bytes, tx_packets, tx_bytes      # deltas since the last sync

cdef struct Iface:
    int multi                # link index of the multiaccess link, -1 none
    uint8_t vids[512]        # bitmap of VLAN ids p2p links use

cdef struct VL:
    int action
    int link                 # substrate link index
    int metered              # 1: a Python token bucket / shaper decides
    int port                 # input DELIVER: port index, -1 none
    int out                  # input SWITCH: output virtual link index
    int fast_out             # output: 1 if the C send path may take it (p2p/multiaccess, no shaper)
    int txfd                 # output: send socket (the link's, or its own when kernel-shaped)
    int hdr_len
    uint8_t hdr[HDR_MAX]     # output: precomputed header up to and including the VLI
    int64_t packets, nbytes  # deltas

cdef struct Port:
    int fd
    int out                  # output virtual link index, -1 none
    int fast_out             # 1: the C send path takes its frames
    int64_t rx_packets, rx_bytes, tx_packets, tx_bytes


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

    def __dealloc__(self):
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
    return b""


cdef _Tables _compile(dp, snap):
    cdef _Tables t = _Tables.__new__(_Tables)
    cdef int i, j
    cdef VL *vl
    cdef Link *ln
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
    if not (t.links and t.vls and t.ports and t.ifaces):
        raise MemoryError()
    t.ethertype = snap.ethertype
    link_ix = {id(c): i for i, c in enumerate(links)}
    vl_ix = {id(v): i for i, v in enumerate(vls)}
    port_ix = {id(p): i for i, p in enumerate(ports)}
    for i, c in enumerate(links):
        ln = &t.links[i]
        ln.kind = K_P2P if c.kind == "p2p" else (K_MULTI if c.kind == "multiaccess" else K_UDP)
        ln.payload_mtu = c.payload_mtu
        sock = dp.tx.get(c.ifindex) if ln.kind != K_UDP else None
        ln.txfd = sock.fileno() if sock is not None else -1
    t.ifslot = {}
    t.p2p = _Hash(sum(len(f.p2p) for f in snap.ifaces.values()) + 1)
    for j, (ifindex, f) in enumerate(snap.ifaces.items()):
        t.ifslot[ifindex] = j
        t.ifaces[j].multi = link_ix[id(f.multiaccess)] if f.multiaccess is not None else -1
        for (vid, mac), c in f.p2p.items():
            t.p2p.put((<uint64_t>vid << 48) | int.from_bytes(mac, "big"), j, link_ix[id(c)])
            t.ifaces[j].vids[vid >> 3] |= 1 << (vid & 7)
    t.vli = _Hash(t.nvl + 1)
    for i, v in enumerate(vls):
        vl = &t.vls[i]
        ctx = snap.links[v.link_id]
        vl.link = link_ix[id(ctx)]
        vl.action = v.action
        vl.port = vl.out = -1
        vl.metered = v.meter is not None
        if v.direction == IN:
            t.vli.put(v.vli, vl.link, i)
            if v.action == DELIVER and v.port is not None:
                vl.port = port_ix.get(id(v.port), -1)
            elif v.action == SWITCH and v.port is not None:
                vl.out = vl_ix[id(v.port)]
        else:
            hdr = _hdr_of(v, ctx)
            vl.txfd = v.txsock.fileno() if v.txsock is not None else t.links[vl.link].txfd
            vl.fast_out = bool(hdr) and v.meter is None and vl.txfd >= 0
            if vl.fast_out:
                vl.hdr_len = len(hdr)
                for j in range(vl.hdr_len):
                    vl.hdr[j] = hdr[j]
    for i, p in enumerate(ports):
        t.ports[i].fd = p.fd
        t.ports[i].out = vl_ix[id(p.out)] if p.out is not None and id(p.out) in vl_ix else -1
        t.ports[i].fast_out = 0
        if t.ports[i].out >= 0:
            vl = &t.vls[t.ports[i].out]
            t.ports[i].fast_out = vl.fast_out and t.links[vl.link].kind == K_P2P
    return t


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


cdef class _Engine:
    cdef _Tables t
    cdef object dp
    cdef _Sender main               # the event loop's thread
    cdef _Sender rs                 # the ring thread
    cdef uint8_t *tapbuf            # TAP_BATCH x TAP_BUF
    cdef uint8_t *copybuf           # frames handed to process_eth (kept until flush)
    cdef int copy_used
    cdef public int64_t wakeups, batches

    def __cinit__(self, dp):
        self.dp = dp
        self.main = _Sender(False)
        self.rs = _Sender(True)
        self.tapbuf = <uint8_t *>malloc(TAP_BATCH * TAP_BUF)
        self.copybuf = <uint8_t *>malloc(BATCH * TAP_BUF)
        if not (self.tapbuf and self.copybuf):
            raise MemoryError()

    def __dealloc__(self):
        free(self.tapbuf)
        free(self.copybuf)

    def install(self, snap):
        """Compile ``snap`` (after the core's ``install`` attached meters and ports)."""
        if self.t is not None:
            self.flush()
        self.t = _compile(self.dp, snap)

    # -- slow paths: the core's code ---------------------------------------------------------

    cdef void _drop(self, _Tables t, int reason, int link, int vl):
        self.dp.drop(_REASONS[reason], t.link_objs[link] if link >= 0 else None,
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
                self._drop(t, R_UNKNOWN_VLI, link, -1)
            elif not self._control(s, t, link, f, n, start, length):
                self._drop(t, R_CONTROL, link, -1)
            return 0
        vl = &t.vls[v]
        if vl.metered and not t.vl_objs[v].meter.take(length):
            self._drop(t, R_POLICED, link, v)
            return 0
        if vl.action == DELIVER:
            return self._deliver(t, v, link, f, start, length)
        if vl.action == SWITCH:
            vl.packets += 1
            vl.nbytes += length
            return self._output(s, t, vl.out, f + start, length, None)
        self.dp.drop("vli_drop", t.link_objs[link], t.vl_objs[v])
        return 0

    cdef bint _control(self, _Sender s, _Tables t, int link, uint8_t *f, uint32_t n,
                       uint32_t start, uint32_t length) except -1:
        """VLI 0: hand a copy of the frame to the control plane (``Datapath.on_control``, as
        the reference does); False if there is none or it refused the frame.  From the ring
        thread the control plane gets it in the loop thread (it is counted there if refused)."""
        if self.dp.on_control is None:
            return False
        frame = (<char *>f)[:n]
        if s.deferred is not None:
            s.deferred.append((self._control_later, (t.link_objs[link], frame, start, length)))
            return True
        return bool(self.dp.on_control(t.link_objs[link], memoryview(frame), start, length))

    def _control_later(self, ctx, frame, start, length):
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
            port = t.port_objs[vl.port]
            src = (<char *>f)[start + 6:start + 12]
            outer = (<char *>f)[6:12]
            port.learned.learn(src, outer)
        if write(p.fd, f + start, length) < 0:
            self._drop(t, R_TAP_ERROR, link, v)
            return 0
        vl.packets += 1
        vl.nbytes += length
        p.tx_packets += 1
        p.tx_bytes += length
        return 0

    cdef int _output(self, _Sender s, _Tables t, int o, uint8_t *payload, uint32_t length,
                     object port) except -1:
        """Send ``payload`` on output virtual link ``o`` of table ``t`` (``Datapath.output``).
        The table is the caller's: in the ring thread a reload can swap ``self.t`` while a
        frame is half-way (a Python slow path lets the loop thread run)."""
        cdef VL *vl = &t.vls[o]
        cdef int i
        cdef uint8_t *h
        if not vl.fast_out or (port is not None and t.links[vl.link].kind != K_P2P):
            if s.deferred is not None:
                s.deferred.append((self.dp.output, (t.vl_objs[o], (<char *>payload)[:length],
                                                    port)))
            else:
                self.dp.output(t.vl_objs[o], (<char *>payload)[:length], port)
            return 0
        if <int>length > t.links[vl.link].payload_mtu:
            self._drop(t, R_OVERSIZE, vl.link, o)
            return 0
        if s.nmsg == BATCH or (s.nmsg and s.t is not t):
            self._flush(s)
        if s.nmsg == 0:
            s.t = t
        i = s.nmsg
        h = &s.hdrs[i * HDR_MAX]
        memcpy(h, vl.hdr, vl.hdr_len)
        h[vl.hdr_len] = length >> 8
        h[vl.hdr_len + 1] = length & 0xFF
        s.iovs[2 * i].iov_len = vl.hdr_len + 2
        s.iovs[2 * i + 1].iov_base = payload
        s.iovs[2 * i + 1].iov_len = length
        s.msg_vl[i] = o
        s.msg_len[i] = length
        s.msg_fd[i] = vl.txfd
        s.nmsg = i + 1
        return 0

    # -- transmit -----------------------------------------------------------------------------

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
                    self.dp.drop("send_error", t.link_objs[t.vls[s.msg_vl[i]].link],
                                  t.vl_objs[s.msg_vl[i]])
                    i += 1
        self.batches += 1
        if t is not self.t:          # a reload swapped the tables meanwhile
            _sync(t)
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

    def process_eth(self, int ifindex, frame, tci):
        """One frame, as a ring would hand it over (the frame is copied until ``flush``)."""
        cdef const uint8_t[::1] mv = frame
        cdef uint32_t n = mv.shape[0]
        cdef uint8_t *f
        if self.main.nmsg == BATCH or self.copy_used == BATCH:
            self._flush(self.main)
            self.copy_used = 0
        f = &self.copybuf[self.copy_used * TAP_BUF]
        if n > TAP_BUF:
            n = TAP_BUF
        if n:
            memcpy(f, &mv[0], n)
        self.copy_used += 1
        self.handle(self.main, self.t.ifslot.get(ifindex, -1), f, n, -1 if tci is None else tci)

    def walk(self, _Ring ring):
        """Walk ``ring`` once in the calling thread, as the ring thread does on a wake-up
        (without the doorbell), then flush and sync; returns how many frames it read.  The
        unit tests drive the walk over synthetic blocks this way."""
        cdef int64_t before = ring.frames
        ring.walk(self, self.main)
        self.flush()
        return ring.frames - before

    def on_tap(self, int pi):
        """Read up to TAP_BATCH frames from port ``pi`` and send them (``PyEngine.on_tap``)."""
        cdef _Tables t = self.t
        cdef Port *p = &t.ports[pi]
        cdef int k
        cdef ssize_t n
        cdef uint8_t *buf
        cdef _Sender s = self.main
        port = t.port_objs[pi]
        self._flush(s)
        for k in range(TAP_BATCH):
            buf = &self.tapbuf[k * TAP_BUF]
            n = read(p.fd, buf, TAP_BUF)
            if n < 0:
                if errno != EAGAIN and errno != EINTR:
                    log.warning("read error on %s/%s: %s", port.vnet, port.name,
                                os.strerror(errno))
                break
            if n == 0:                       # library endpoint: the application closed its end
                self._flush(s)
                self.sync()
                self.dp.port_closed(port)
                return
            p.rx_packets += 1
            p.rx_bytes += n
            if p.out < 0:
                continue
            if p.fast_out:
                self._output(s, t, p.out, buf, <uint32_t>n, None)
            else:
                self._flush(s)
                self.dp.output(t.vl_objs[p.out], (<char *>buf)[:n], port)
                if port.paused:
                    break
        self._flush(s)
        self.sync()

    cdef int64_t _poll(self, _Sender s, _Ring ring) except -1:
        """Everything the kernel finished writing into ``ring`` since the last call; returns
        how many frames that was."""
        cdef int64_t before = ring.frames, n
        self.wakeups += 1
        ring.walk(self, s)
        n = ring.frames - before
        ring.answer_doorbell(n)
        ring.tune_doorbell(n)
        return n

    def run_rings(self, int epfd, list rings):
        """The ring thread: wait (without the GIL) until a doorbell or a ring is readable,
        then walk those rings holding the GIL.  Epoll data ``2 * i`` / ``2 * i + 1`` stand for
        the doorbell / the ring socket of ``rings[i]``; it returns when the entry with data
        ``STOP_KEY`` (the stop eventfd) is readable.

        Counters are added to the Python objects (``sync``) when the thread falls idle (an
        epoll_wait of SYNC_MS finds nothing) or, under steady load, at least every SYNC_MS:
        not on the way of a lone frame to its next hop."""
        cdef epoll_event evs[EP_EVENTS]
        cdef int n, i, k, nr = len(rings)
        cdef uint32_t key
        cdef bint stop = False, dirty = False
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
                dirty = False
                last_sync = _now_ns()
            for i in range(n):
                key = evs[i].data.u32
                if key == STOP_KEY:
                    stop = True
                elif <int>(key >> 1) < nr:
                    seen[key >> 1] = 1
            for k in range(nr):
                if seen[k]:
                    seen[k] = 0
                    ring = rings[k]
                    dirty = True
                    try:
                        self._poll(self.rs, ring)
                    except Exception:
                        self._flush(self.rs)
                        log.exception("fast path: error while reading the ring of ifindex %d",
                                      ring.ifindex)
            self._run_deferred(self.rs)
        self._flush(self.rs)
        self._run_deferred(self.rs)
        self.sync()


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def _run_all(work):
    for fn, args in work:
        fn(*args)


cdef int _sync(_Tables t) except -1:
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
    for i in range(t.nvl):
        vl = &t.vls[i]
        if vl.packets:
            o = t.vl_objs[i]
            o.packets += vl.packets
            o.bytes += vl.nbytes
            vl.packets = vl.nbytes = 0
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
    """User-space side of a ``packet_io.RxRing``: the block and frame we are at."""
    cdef object owner                # the RxRing (keeps the mapping alive)
    cdef const uint8_t[::1] view_keep
    cdef uint8_t *base
    cdef uint32_t block_size, block_nr, cur, pos
    cdef public int ifindex
    cdef int bellfd
    cdef bint bell_on                # mirrors owner.bell_on (no attribute lookup per wake-up)
    cdef int64_t spins
    cdef public int64_t frames

    def __cinit__(self, rx, int ifindex):
        cdef uint8_t[::1] mv = rx.map
        self.owner = rx
        self.view_keep = mv
        self.base = &mv[0]
        self.block_size, self.block_nr = rx.block_size, rx.block_nr
        self.cur = 0
        self.pos = 0                 # offset of the next unread frame in block ``cur``; 0: start
        self.ifindex = ifindex
        self.bellfd = rx.doorbell.fileno()
        self.bell_on = rx.bell_on

    @property
    def position(self):
        """(block, offset of the next unread frame in it; 0: its start)."""
        return self.cur, self.pos

    def release(self):
        self.view_keep = None
        self.base = NULL

    cdef void answer_doorbell(self, int64_t found):
        """Take one bell per frame found.  A bell can ring before the kernel finished copying
        its frame into the ring: its bell then stays, the fd stays readable and the ring
        thread's next epoll turn looks again.  After 64 turns without a frame (the ring dropped
        it, or the bell socket dropped others) every bell is taken."""
        cdef char c[4]
        cdef int64_t k = 0
        if found == 0:
            self.spins += 1
            if self.spins < 64:
                return
            found = 1 << 30
        self.spins = 0
        while k < found and recv(self.bellfd, c, 1, MSG_DONTWAIT | MSG_TRUNC) >= 0:
            k += 1

    cdef int tune_doorbell(self, int64_t found) except -1:
        """Under load the doorbell only costs: every frame is cloned to it and nearly every one
        wakes the reader for a handful of frames.  So a wake-up that finds BELL_BUSY frames or
        more silences it (a filter that accepts nothing: no clone); blocks then come full (or
        at the latest when the kernel's 1 ms retire timer fires).  A wake-up that finds fewer
        than BELL_IDLE frames means the load went away: the doorbell rings again, and a lone
        frame is not held back."""
        if self.bell_on:
            if found >= BELL_BUSY:
                self.owner.set_doorbell(False)
                self.bell_on = False
        elif found < BELL_IDLE:
            self.owner.set_doorbell(True)
            self.bell_on = True
        return 0

    cdef int walk(self, _Engine e, _Sender s) except -1:
        cdef uint8_t *blk
        cdef uint8_t *h
        cdef uint32_t status, fstatus, blen, nxt
        cdef int ifs = -1, tci
        cdef _Tables t = None                       # the table ``ifs`` was looked up in
        if self.base == NULL:
            return 0
        while True:
            blk = self.base + <size_t>self.cur * self.block_size
            # read the block's status first: once retired (TP_STATUS_USER) every frame in it is
            # complete; before that, the kernel may be filling it and each frame header gets
            # TP_STATUS_USER when its copy is done (frames start at the fixed block header size)
            status = vn_load32(blk + BD_STATUS)
            if self.pos == 0:
                self.pos = BLK_HDR
            while self.pos + BLK_HDR <= self.block_size:
                h = blk + self.pos
                fstatus = vn_load32(h + H3_STATUS)
                if not fstatus & TP_STATUS_USER:
                    break
                tci = (<uint32_t *>(h + H3_TCI))[0] if fstatus & TP_STATUS_VLAN_VALID else -1
                if e.t is not t:                    # first frame, or a reload swapped tables
                    t = e.t
                    ifs = t.ifslot.get(self.ifindex, -1)
                e.handle(s, ifs, h + (<uint16_t *>(h + H3_MAC))[0],
                         (<uint32_t *>(h + H3_SNAPLEN))[0], tci)
                self.frames += 1
                nxt = (<uint32_t *>(h + H3_NEXT))[0]
                if nxt == 0:                        # last frame of a closed block
                    self.pos = self.block_size
                    break
                self.pos += nxt
            e._flush(s)                             # payloads point into the block
            if not status & TP_STATUS_USER:
                return 0
            # retired and read: hand it back zeroed, so stale frame headers never look finished
            blen = (<uint32_t *>(blk + BD_LEN))[0]
            if blen > self.block_size:
                blen = self.block_size
            if blen > BLK_HDR:
                memset(blk + BLK_HDR, 0, blen - BLK_HDR)
            vn_store32(blk + BD_STATUS, TP_STATUS_KERNEL)
            self.cur = (self.cur + 1) % self.block_nr
            self.pos = 0
            with nogil:                 # a full ring is many blocks: let the loop thread in
                pass


class CEngine:
    """``core.Engine`` on rings and C tables (see the module docstring)."""

    name = "fast"

    def __init__(self, dp):
        self.dp = dp
        self._engine = _Engine(dp)
        self.rings = {}        # ifindex -> (RxRing, _Ring)
        self._port_ix = {}     # id(TapPort) -> index in the compiled tables
        self._thread = None    # the ring thread, its rings, epoll fd and stop eventfd
        self._thread_rings = []
        self._epfd = self._stopfd = -1

    def sync_substrate(self, snap, close):
        """Substrate interfaces get a TPACKET_V3 ring (+ doorbell)."""
        for ifindex, iface in snap.ifaces.items():
            if ifindex not in self.rings:
                rx = packet_io.RxRing(iface.ifname, snap.ethertype)
                self.rings[ifindex] = (rx, _Ring(rx, ifindex))
        if close:
            gone = [i for i in self.rings if i not in snap.ifaces]
            if gone:
                self._stop_ring_thread()        # it must not be walking a ring we unmap
            for ifindex in gone:
                rx, ring = self.rings.pop(ifindex)
                ring.release()
                rx.close()

    def start(self):
        """(Re)start the ring thread when the set of rings changed."""
        if self._thread is None or [r for _, r in self._thread_rings] != \
                [r for _, r in self.rings.values()]:
            self._stop_ring_thread()
            self._start_ring_thread()

    def install(self, snap):
        self._engine.install(snap)
        self._port_ix = {id(p): i for i, p in enumerate(self.dp.ports.values())}

    def process_eth(self, ifindex, frame, tci):
        self._engine.process_eth(ifindex, frame, tci)

    def flush(self):
        self._engine.flush()

    def flush_tx(self):
        self._engine.flush_tx()

    def on_tap(self, port):
        self._engine.on_tap(self._port_ix[id(port)])

    def close(self):
        self._stop_ring_thread()
        st = self.stats()
        log.info("fast path: %d frames from rings in %d wake-ups, %d send batches, "
                 "%d doorbell switches", st["ring_frames"], st["wakeups"], st["batches"],
                 st["bell_switches"])
        for ifindex, (rx, ring) in self.rings.items():
            ring.release()
            rx.close()
        self.rings.clear()

    def stats(self):
        e = self._engine
        return {"wakeups": e.wakeups, "batches": e.batches,
                "ring_frames": sum(r.frames for _, r in self.rings.values()),
                "bell_switches": sum(rx.bell_switches for rx, _ in self.rings.values())}

    # -- the ring thread ---------------------------------------------------------------------
    #
    # Rings are read by a thread of their own: it sleeps in epoll_wait without the GIL and, when
    # a doorbell rings, walks the ring holding the GIL -- no event-loop callback, no Python
    # frame per wake-up.  Everything else (TAPs, UDP, control plane, timers) stays on the
    # event loop; slow paths of ring frames that touch it are handed over (``_Sender``).

    def _start_ring_thread(self):
        rings = list(self.rings.values())
        epfd = _epoll_create()
        stopfd = _eventfd()
        try:
            for i, (rx, ring) in enumerate(rings):
                _epoll_add(epfd, rx.doorbell.fileno(), 2 * i)
                _epoll_add(epfd, rx.sock.fileno(), 2 * i + 1)
            _epoll_add(epfd, stopfd, STOP_KEY)
        except BaseException:
            os.close(epfd)
            os.close(stopfd)
            raise
        self._epfd, self._stopfd = epfd, stopfd
        self._thread_rings = rings
        self._thread = threading.Thread(target=self._ring_thread, args=(epfd, rings),
                                        name="vnet-rings", daemon=True)
        self._thread.start()
        log.info("fast path: ring thread reads %d substrate interface(s): %s", len(rings),
                 " ".join(rx.ifname for rx, _ in rings) or "-")

    def _ring_thread(self, epfd, rings):
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self._engine.run_rings(epfd, [ring for _, ring in rings])
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
        self._thread_rings = []


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
