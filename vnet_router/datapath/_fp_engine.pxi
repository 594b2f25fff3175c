# The engine (part of ``_fastpath.pyx``): ``_Engine`` holds the current ``_Tables``, the two
# senders (the event loop's and the ring thread's), the TAP read buffers and the shapers' timer.
# It swaps tables (``install``), reads TAPs (``on_tap``), runs the ring thread's loop
# (``run_rings``: rings, UDP sockets, the capture ring, the timer) and writes the C counter
# deltas back to the Python objects ``show`` reads (``_sync``), drops included (``_drop``
# counts them in C arrays of the table, by reason).  The per-frame work it calls
# is in ``_fp_receive.pxi`` and ``_fp_transmit.pxi``.

cdef class _Engine:
    cdef _Tables t
    cdef object dp
    cdef object pyclock             # the core's clock when it is not time.monotonic (tests)
    cdef _Sender main               # the event loop's thread
    cdef _Sender rs                 # the ring thread
    cdef uint8_t *tapbuf            # TAP_BATCH x TAP_BUF
    cdef uint8_t *copybuf           # frames handed to process_eth / output (kept until flush)
    cdef int copy_used
    cdef public dict queues         # shaper -> (_Queue, entry): queues of the current table
    cdef dict udp_conn              # the CEngine's connected UDP sockets, by (local, remote)
    cdef dict vl_ix                 # entry key -> index in the current table
    cdef int timerfd                # the shapers' next departure (read by the ring thread)
    cdef mmsghdr *umsgs             # UDP_BATCH datagrams per recvmmsg (ring thread)
    cdef iovec *uiovs
    cdef uint8_t *udpbuf            # UDP_BATCH x TAP_BUF
    cdef uint8_t *unames            # UDP_BATCH x 28: senders' addresses
    cdef double armed               # when the timer fires (0: not armed)
    cdef public int64_t wakeups, batches, drains
    cdef public object kpoliced     # keys of input virtual links the classifier polices
    cdef public int cap_fd          # the TAP capture's ``ports`` map (-1: no capture)
    cdef public object cap_sync     # the capture's kernel drops by port, read at sync (or None)
    cdef list walkers               # the ring thread's rings while it serves them, else None

    def __cinit__(self, dp, dict udp_conn):
        self.dp = dp
        self.udp_conn = udp_conn
        self.pyclock = None if dp.clock is time.monotonic else dp.clock
        self.main = _Sender(False)
        self.rs = _Sender(True)
        self.queues = {}
        self.vl_ix = {}
        self.kpoliced = frozenset()
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
        cdef _Tables t, old = self.t
        cdef int i
        if old is not None:
            self.flush()            # batched frames out, counters and buckets written back
        t, kept = _compile(self.dp, snap, self.queues, self.udp_conn)
        left, self.queues = self.queues, kept
        self.vl_ix = {e.key: i for i, e in enumerate(t.vl_objs)}
        for key in self.kpoliced:           # the classifier polices them before the ring
            i = self.vl_ix.get(key, -1)
            if i >= 0 and t.vls[i].metered == M_POLICER:
                t.vls[i].metered = M_NONE
        self.t = t
        if old is not None:         # what the ring thread counted while this one compiled
            _sync(old, False)
        for q, e in left.values():
            self._release_all(e, q)
        for i in range(t.nports):           # the capture follows the port's pause
            self._cap_pause(t, i, t.ports[i].paused)
        _tx_rearm(self)

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

    cdef int _release_all(self, e, _Queue q) except -1:
        """Frames ``q`` held for entry ``e``, which this table no longer shapes: sent unshaped
        if its link is still here (shaping lifted, or the kernel shapes it now), else counted
        as lost."""
        cdef _Tables t = self.t
        cdef int k, i, o = self.vl_ix.get(e.key, -1)
        cdef SQ *sq = &q.q
        for k in range(sq.count):
            i = (sq.head + k) % sq.limit
            if o >= 0 and t.vls[o].fast_out:
                _tx_send(self, self.main, t, o, sq.data + <size_t>i * sq.slot, sq.len[i],
                           sq.dst + 6 * i if sq.has_dst[i] else NULL)
            else:
                self.dp.drop("queue_full", None, e.vlink)
        _tx_flush(self, self.main)
        sq.count = 0
        return 0

    def retune(self, e):
        """The core retuned entry ``e``'s Python bucket (a new current rate): the compiled
        bucket takes the new rate and burst the way ``TokenBucket.set_rate`` does."""
        cdef int o = self.vl_ix.get(e.key, -1)
        cdef VL *vl
        if o < 0 or self.t.vls[o].metered == M_NONE or e.meter is None:
            return
        vl = &self.t.vls[o]
        bucket = getattr(e.meter, "bucket", e.meter)
        _refill(vl, self.now())
        vl.rate = bucket.rate
        if bucket.burst != vl.burst:
            vl.burst = bucket.burst
            if vl.tokens > vl.burst:
                vl.tokens = vl.burst
        bucket.tokens, bucket.stamp = vl.tokens, vl.stamp

    # -- slow paths: the core's code ---------------------------------------------------------

    cdef void _drop(self, _Tables t, int reason, int link, int vl) noexcept:
        """Count a lost frame as ``Datapath.drop`` does, in ``t``'s C counters (no Python
        call): ``_sync`` adds them to the core's (``count_drops``).  ``vl``, if any, is on
        substrate link ``link``; else the core counts it at once (no C path drops so)."""
        t.ndrops += 1
        if vl >= 0:
            if t.vls[vl].link == link:
                t.vls[vl].drops += 1
                t.vl_drops[<size_t>vl * N_REASONS + reason] += 1
            else:
                t.ndrops -= 1
                self.dp.drop(DROP_REASON_NAMES[reason],
                             t.link_objs[link] if link >= 0 else None, t.vl_models[vl])
        elif link >= 0:
            t.links[link].drops += 1
            t.link_drops[<size_t>link * N_REASONS + reason] += 1
        else:
            t.node_drops[reason] += 1

    cdef int _later(self, _Sender s, fn, arg) except -1:
        if s.deferred is not None:
            s.deferred.append((fn, (arg,)))
        else:
            fn(arg)
        return 0

    cpdef flush_tx(self):
        """Send the frames the loop thread queued."""
        _tx_flush(self, self.main)

    cpdef sync(self):
        """Add the C counter deltas to the Python objects ``show`` reads, and zero them."""
        if self.t is not None:
            _sync(self.t)

    def flush(self):
        _tx_flush(self, self.main)
        self.copy_used = 0
        self.sync()

    def drain_due(self):
        """Drain the shapers if their next departure is due by ``now()`` (what the ring thread
        does when its timer fires), in this thread; the next departure, 0 if none.  A test's
        clock arms no timer: the test calls this as its clock reaches the departure."""
        if self.armed and self.now() >= self.armed:
            _tx_drain(self, self.main)
        return self.armed

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
            _tx_flush(self, self.main)
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
        _rx_frame(self, self.main, self.t.ifslot.get(ifindex, -1), f, n, -1 if tci is None else tci)

    def serve_round(self, list walkers):
        """One round of the ring thread's turns (``serve``) over ``walkers`` in the calling
        thread, with the ring thread's sender; then flush and sync.  Returns the frames walked.
        The unit tests drive the service order over synthetic rings this way."""
        cdef int n
        self.walkers = walkers
        try:
            n = self.serve()
        finally:
            self.walkers = None
        _tx_flush(self, self.rs)
        self._run_deferred(self.rs)
        self.flush()
        return n

    def walk(self, _Ring ring, bint as_ring_thread=False):
        """Walk ``ring`` in the calling thread until it is empty, then flush and sync; returns
        how many frames it read.  ``as_ring_thread``: with the ring thread's sender, whose slow
        paths are handed to the event loop (as ``run_rings`` does).  The unit tests drive the
        walk over synthetic rings this way."""
        cdef int64_t before = ring.frames
        cdef _Sender s = self.rs if as_ring_thread else self.main
        while ring.walk(self, s, WALK_BUDGET) == WALK_BUDGET:
            pass
        _tx_flush(self, s)
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
        _tx_flush(self, s)
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
                _tx_flush(self, s)
                self.sync()
                self.dp.port_closed(port)
                return
            self._tap_frame(s, t, pi, buf, <uint32_t>n)
            if p.paused or port.paused:
                break
        _tx_flush(self, s)
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
                dst = _learned_dst(self, t, pi, buf, dstbuf)
            return _tx_output(self, s, t, p.out, buf, n, dst, pi)
        if s.deferred is not None:          # the ring thread: the loop's Python path
            s.deferred.append((self.dp.output, (t.vl_objs[p.out], (<char *>buf)[:n],
                                                t.port_objs[pi])))
        else:
            _tx_flush(self, s)
            self.dp.output(t.vl_objs[p.out], (<char *>buf)[:n], t.port_objs[pi])
        return 0

    def run_rings(self, int epfd, list rings, list udps=None, list caps=None):
        """The ring thread: wait (without the GIL) until a ring, a UDP socket or the shapers'
        timer is readable, then serve the rings (``serve``) / read those sockets / drain the
        shapers holding the GIL.  Epoll data ``i`` stands for ``rings[i]``, ``UDP_KEY + j``
        for the UDP tunnel socket ``udps[j]`` (fd, local address), ``CAP_KEY - i`` for the TAP
        capture ring ``caps[i]`` (one per vNet); a ring's readiness only wakes the thread, which
        then looks at every ring.  It returns when the entry with data ``STOP_KEY`` (the stop
        eventfd) is readable.

        Counters are added to the Python objects (``sync``) when the thread falls idle (an
        epoll_wait of SYNC_MS finds nothing) or, under steady load, at least every SYNC_MS:
        not on the way of a lone frame to its next hop.  The kernel's count of frames it found
        no room for is read at the same moments (``ring_full``)."""
        cdef epoll_event evs[EP_EVENTS]
        cdef int n, i
        cdef uint32_t key
        cdef uint64_t ticks
        cdef bint stop = False, dirty = False, timer
        cdef int64_t last_sync = _now_ns()
        # TAP capture rings first: a vNet's frames from its own stack, then the substrate's
        self.walkers = (list(caps) if caps is not None else []) + list(rings)
        try:
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
                    elif key >= UDP_KEY and udps is not None and \
                            key - UDP_KEY < <uint32_t>len(udps):
                        fd_local = udps[key - UDP_KEY]
                        dirty = True
                        try:
                            self.read_udp(self.rs, fd_local[0], fd_local[1])
                        except Exception:
                            _tx_flush(self, self.rs)
                            log.exception("fast path: error while reading udp %s",
                                          fd_local[1])
                if self.serve():
                    dirty = True
                if timer or (self.armed and self.now() >= self.armed):
                    if timer:
                        read(self.timerfd, &ticks, 8)
                    dirty = True
                    _tx_drain(self, self.rs)
                self._run_deferred(self.rs)
            _tx_flush(self, self.rs)
            self._run_deferred(self.rs)
            self.sync()
            self._ring_drops(rings)
        finally:
            self.walkers = None

    cdef int serve(self) except -1:
        """One round of the rings' turns; returns the frames walked (the loop then waits in
        epoll_wait, which returns at once while a ring has frames: timers, sockets, a stop
        request and the event loop's thread get their turn between rounds).

        Round robin with a quiet list, as fq_codel's new flows: the round first serves the
        walkers that were empty at their last look (a quiet vNet's frame), then the
        backlogged ones, each up to its quantum (``quantum``: a vNet's weight) when another
        has frames too, else up to WALK_BUDGET.  A walk yields after every YIELD_EVERY frames
        to a quiet walker that has a frame, so such a frame waits behind at most YIELD_EVERY
        frames of each backlogged walker, however many they hold."""
        cdef list ws = self.walkers
        cdef _Walker w
        cdef int total = 0, k, i, nw = len(ws)
        cdef bint first
        for first in (True, False):
            for i in range(nw):
                w = <_Walker>ws[i]
                if w.quiet != first:
                    continue
                if not w.ready():
                    w.quiet = True
                    continue
                self.wakeups += 1
                try:
                    k = w.walk(self, self.rs,
                               w.quantum if self.other_ready(w, False) else WALK_BUDGET)
                except Exception:
                    _tx_flush(self, self.rs)
                    log.exception("fast path: error while walking %r", w)
                    k = 0
                total += k
                w.quiet = not w.ready()
        return total

    cdef bint other_ready(self, _Walker me, bint quiet_only):
        """A walker other than ``me`` has a frame (``quiet_only``: one that was quiet, to
        which ``me``'s walk yields; else ``me``'s turn is its quantum).  False outside the
        ring thread's turns (``walk`` in tests, a reload's drain)."""
        cdef list ws = self.walkers
        cdef int i
        cdef _Walker w
        if ws is None:
            return False
        for i in range(len(ws)):
            w = <_Walker>ws[i]
            if w is not me and (w.quiet or not quiet_only) and w.ready():
                return True
        return False

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
                _rx_udp(self, s, t, j, &self.udpbuf[<size_t>k * TAP_BUF],
                                self.umsgs[k].msg_len, &self.unames[k * 28])
            _tx_flush(self, s)
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
        _rx_udp(self, self.main, self.t, self.t.udp_slot.get(local, -1), f, n,
                        <const uint8_t *><char *>name)

    cdef int _ring_drops(self, list rings) except -1:
        cdef _Ring ring
        cdef int64_t n
        for ring in rings:
            n = ring.owner.dropped() if ring.base != NULL else 0
            if n:
                self.dp.count_drops("ring_full", n, vnet=ring.vnet)
        if self.cap_sync is not None:
            self.count_cap_drops(self.cap_sync())
        return 0

    def count_cap_drops(self, drops):
        """The TAP capture's drops by port (``TapCapture.take_drops``): ``ring_full``, globally
        and on the port's output virtual link (its vNet's)."""
        cdef int64_t n
        for port, n in drops:
            self.dp.count_drops("ring_full", n, None,
                                port.out.vlink if port.out is not None else None,
                                vnet=port.vnet if port.out is None else None)



cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def _run_all(work):
    for fn, args in work:
        fn(*args)


cdef int _sync(_Tables t, bint meters=True) except -1:
    """C counter deltas to the Python objects; with ``meters``, token bucket state and queue
    depth to the Python meters (what ``show`` and the next compile read)."""
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
            o = t.vl_models[i]
            o.packets += vl.packets
            o.bytes += vl.nbytes
            vl.packets = vl.nbytes = 0
        if meters and (vl.metered == M_POLICER or vl.metered == M_SHAPER):
            meter = t.vl_objs[i].meter
            if meter is not None:
                bucket = getattr(meter, "bucket", meter)
                bucket.tokens, bucket.stamp = vl.tokens, vl.stamp
                if vl.metered == M_SHAPER:
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
    if t.ndrops:
        _sync_drops(t)
    return 0


cdef int _sync_drops(_Tables t) except -1:
    """The drops ``_Engine._drop`` counted, to the core's counters (``count_drops``: global,
    substrate link, virtual link, vNet), by reason; zeroed."""
    cdef int i, r
    cdef int64_t *row
    count = t.count_drops
    for r in range(N_REASONS):
        if t.node_drops[r]:
            count(DROP_REASON_NAMES[r], t.node_drops[r])
            t.node_drops[r] = 0
    for i in range(t.nlinks):
        if t.links[i].drops:
            row = &t.link_drops[<size_t>i * N_REASONS]
            for r in range(N_REASONS):
                if row[r]:
                    count(DROP_REASON_NAMES[r], row[r], t.link_objs[i])
                    row[r] = 0
            t.links[i].drops = 0
    for i in range(t.nvl):
        if t.vls[i].drops:
            row = &t.vl_drops[<size_t>i * N_REASONS]
            for r in range(N_REASONS):
                if row[r]:
                    count(DROP_REASON_NAMES[r], row[r], t.link_objs[t.vls[i].link],
                          t.vl_models[i])
                    row[r] = 0
            t.vls[i].drops = 0
    t.ndrops = 0
    return 0
