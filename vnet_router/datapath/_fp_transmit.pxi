# Transmit (part of ``_fastpath.pyx``): ``_Sender`` batches, the output of a frame on an output
# virtual link (``Datapath.output``: MTU, shaper, encapsulation), the batched ``sendmmsg``, and
# the shapers: the token bucket arithmetic of ``meters.TokenBucket`` on a compiled link, its
# bounded FIFO and the departure timer (a ``timerfd`` the ring thread waits on).

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


# -- output --------------------------------------------------------------------------------

cdef int _tx_output(_Engine eng, _Sender s, _Tables t, int o, uint8_t *payload, uint32_t length,
                    const uint8_t *dst, int pi) except -1:
    """Send ``payload`` on output virtual link ``o`` of table ``t`` (``Datapath.output``:
    MTU, shaper, encapsulation); ``dst``: outer destination MAC instead of the link's
    (multiaccess, learned), ``pi``: the port it came from (-1: switched).  The table is the
    caller's: in the ring thread a reload can swap ``eng.t`` while a frame is half-way."""
    cdef VL *vl = &t.vls[o]
    cdef SQ *q
    if not vl.fast_out:                 # UDP tunnel links: the core's Python path
        port = t.port_objs[pi] if pi >= 0 else None
        if s.deferred is not None:
            s.deferred.append((eng.dp.output, (t.vl_objs[o], (<char *>payload)[:length],
                                                port)))
        else:
            eng.dp.output(t.vl_objs[o], (<char *>payload)[:length], port)
        return 0
    if <int>length > t.links[vl.link].payload_mtu:
        eng._drop(t, R_TOO_BIG, vl.link, o)
        return 0
    if vl.metered == M_SHAPER:
        q = vl.q
        if q.count or not _take(vl, eng.now(), length):
            if not _sq_push(q, payload, length, dst):
                eng._drop(t, R_QUEUE_FULL, vl.link, o)
                return 0
            if q.count == 1:
                _tx_arm(eng, _departure(vl))
            if pi >= 0 and q.count >= q.limit and not t.ports[pi].paused:
                t.ports[pi].paused = 1
                eng._cap_pause(t, pi, 1)
                t.port_objs[pi].paused = True       # at once: on_tap reads it no more
                eng._later(s, eng.dp.pause_port, t.port_objs[pi])
            return 0
    return _tx_send(eng, s, t, o, payload, length, dst)

cdef int _tx_send(_Engine eng, _Sender s, _Tables t, int o, uint8_t *payload, uint32_t length,
                  const uint8_t *dst) except -1:
    """Queue one frame for the batched send (``payload`` must stay put until the flush)."""
    cdef VL *vl = &t.vls[o]
    cdef Link *ln
    cdef int i
    cdef uint8_t *h
    if s.nmsg == BATCH or (s.nmsg and s.t is not t):
        _tx_flush(eng, s)
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

cdef int _tx_flush(_Engine eng, _Sender s) except -1:
    """Send every frame ``s`` holds: one ``sendmmsg`` per run of frames for one socket."""
    cdef _Tables t = s.t
    cdef int i = 0, j, k, r, fd, n = s.nmsg, retried = -1
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
                # A connected UDP socket reports an ICMP error that an *earlier* datagram drew
                # (e.g. the remote's port closed while it restarted) on the next send, which
                # the kernel then does not send; reporting it cleared it, so that frame gets
                # one more try instead of a send_error it did not cause.
                if (errno == ECONNREFUSED or errno == EHOSTUNREACH or errno == ENETUNREACH) \
                        and retried != i:
                    retried = i
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
                eng._drop(t, R_SEND_ERROR, t.vls[s.msg_vl[i]].link, s.msg_vl[i])
                i += 1
    eng.batches += 1
    if t is not eng.t:          # a reload swapped the tables meanwhile
        _sync(t)
    return 0

# -- shaping: the departure timer --------------------------------------------------------

cdef int _tx_arm(_Engine eng, double due) except -1:
    """Have the ring thread drain the shapers at ``due`` (or earlier, if already armed so)."""
    cdef itimerspec its
    if eng.armed and eng.armed <= due:
        return 0
    eng.armed = due
    if eng.pyclock is not None:             # a test's clock: nothing real to wait for
        return 0
    memset(&its, 0, sizeof(its))
    its.it_value.tv_sec = <long>due
    its.it_value.tv_nsec = <long>((due - <double>its.it_value.tv_sec) * 1e9)
    if its.it_value.tv_sec == 0 and its.it_value.tv_nsec == 0:
        its.it_value.tv_nsec = 1
    if timerfd_settime(eng.timerfd, TFD_TIMER_ABSTIME, &its, NULL) < 0:
        raise OSError(errno, os.strerror(errno))
    return 0

cdef int _tx_rearm(_Engine eng) except -1:
    """After a table swap: the earliest departure of the queues now compiled."""
    cdef _Tables t = eng.t
    cdef int k
    cdef VL *vl
    eng.armed = 0
    for k in range(t.nshaped):
        vl = &t.vls[t.shaped[k]]
        if vl.q.count:
            _refill(vl, eng.now())
            _tx_arm(eng, _departure(vl))
    return 0

cdef int _tx_drain(_Engine eng, _Sender s) except -1:
    """Send every queued frame its bucket now has credit for, oldest first, per shaped
    link (``Datapath._drain``); resume the logical interfaces a full queue paused once it
    is below half; set the timer for the next departure."""
    cdef _Tables t = eng.t
    cdef double now = eng.now()
    cdef int k, n, i, o, pi
    cdef VL *vl
    cdef SQ *q
    eng.drains += 1
    eng.armed = 0
    _tx_flush(eng, s)
    for k in range(t.nshaped):
        o = t.shaped[k]
        vl = &t.vls[o]
        q = vl.q
        n = 0
        while n < q.count:
            i = (q.head + n) % q.limit
            if not _take(vl, now, q.len[i]):
                break
            _tx_send(eng, s, t, o, q.data + <size_t>i * q.slot, q.len[i],
                       q.dst + 6 * i if q.has_dst[i] else NULL)
            n += 1
        _tx_flush(eng, s)                   # the slots are given back only once sent
        if n > q.count:                  # a reload emptied the queue meanwhile
            n = q.count
        q.head = (q.head + n) % q.limit
        q.count -= n
        if q.count:
            _tx_arm(eng, _departure(vl))
        if q.count < q.limit // 2 + 1:
            for pi in range(t.nports):
                if t.ports[pi].paused and t.ports[pi].out == o:
                    t.ports[pi].paused = 0
                    eng._later(s, eng.dp.resume_port, t.port_objs[pi])
    return 0
