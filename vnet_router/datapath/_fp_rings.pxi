# The ring walkers (part of ``_fastpath.pyx``): ``_Ring``, the user-space side of a substrate
# interface's TPACKET_V2 receive ring (``packet_io.RxRing``), and ``_CapRing``, the TAP capture's
# BPF ring buffer (``bpf/tap_capture.bpf.c``).  Both walk what the kernel published, WALK_BATCH
# frames at a time, hand each to the engine, flush the batch, then give the slots back.  The
# ring thread serves them in turns (``_Engine.serve``); a walk it runs yields, every
# YIELD_EVERY frames, to a quiet walker that has a frame (``_Engine.other_ready``).

cdef class _Walker:
    """What the ring thread serves in turns: a ring some kernel code fills with frames."""
    cdef public int quantum          # frames it may give per turn of the ring thread
    cdef public int64_t frames
    cdef public bint quiet           # it was empty at its last look: its next frames go first

    cdef bint ready(self):
        """A frame is there to walk (a load from the shared mapping; no system call)."""
        return False

    cdef int walk(self, _Engine e, _Sender s, int budget) except -1:
        return 0


cdef class _Ring(_Walker):
    """User-space side of a ``packet_io.RxRing`` (TPACKET_V2): the slot we are at."""
    cdef object owner                # the RxRing (keeps the mapping alive)
    cdef uint8_t[::1] view_keep
    cdef uint8_t *base
    cdef uint32_t frame_size, frame_nr, cur
    cdef public int ifindex
    cdef public int queue            # its place in the interface's fanout group (0: the only)
    cdef public object vnet          # the vNet whose frames it alone holds (its ring_full), or None

    def __cinit__(self, rx, int ifindex, int queue=0):
        cdef uint8_t[::1] mv = rx.map
        self.owner = rx
        self.view_keep = mv
        self.base = &mv[0]
        self.frame_size, self.frame_nr = rx.frame_size, rx.frame_nr
        self.cur = 0
        self.ifindex = ifindex
        self.queue = queue
        self.quantum = WALK_BUDGET
        self.quiet = True
        self.vnet = None

    @property
    def position(self):
        """The slot the next frame is expected in."""
        return self.cur

    def pending(self):
        """Frames the kernel has published that no walk has taken yet."""
        cdef uint32_t k, n = 0
        if self.base == NULL:
            return 0
        for k in range(self.frame_nr):
            if vn_load32(self.base + <size_t>k * self.frame_size + H2_STATUS) & TP_STATUS_USER:
                n += 1
        return n

    def release(self):
        self.view_keep = None
        self.base = NULL

    cdef bint ready(self):
        return self.base != NULL and vn_load32(
            self.base + <size_t>self.cur * self.frame_size + H2_STATUS) & TP_STATUS_USER

    cdef int walk(self, _Engine e, _Sender s, int budget) except -1:
        """The frames the kernel has published (TP_STATUS_USER, set after its copy), in
        order, up to ``budget``; WALK_BATCH at a time: they are decided, the batch is sent
        (payloads point into the slots), then the slots go back to the kernel.  Returns how
        many frames it read (``budget``: there may be more).  In the ring thread's turns it
        stops early, after a multiple of YIELD_EVERY frames, when a quiet walker has a frame."""
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
                if (done + n) % YIELD_EVERY == 0 and done + n and e.other_ready(self, True):
                    budget = done + n               # a quiet walker's frame goes next
                    break
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
                    _rx_frame(e, s, ifs, h + (<uint16_t *>(h + H2_MAC))[0], snap, tci)
                self.frames += 1
                n += 1
                self.cur = (self.cur + 1) % self.frame_nr
            _tx_flush(e, s)
            for k in range(n):
                vn_store32(self.base + <size_t>((first + k) % self.frame_nr) * self.frame_size,
                           TP_STATUS_KERNEL)
            done += n
            if n < WALK_BATCH or done >= budget:
                return done
            with nogil:                 # a full ring is many batches: let the loop thread in
                pass


cdef class _CapRing(_Walker):
    """User-space side of the TAP capture ring: a BPF ring buffer (``bpf/tap_capture.bpf.c``)
    mapped here as the kernel lays it out -- the consumer position (read-write page), the
    producer position (read-only page), then the data, mapped twice in a row so a record that
    wraps reads as one piece.  A record: the ring's 8-byte header (length of the reservation,
    BUSY while the program writes it, DISCARD), the capture id (4 bytes), the frame length
    and the group (2 bytes each), the frame.

    The program's ``consumed`` array (a vNet's group -> ring bytes of its records walked past)
    is mapped too: after each batch gives its records back, the walk adds their bytes to their
    groups there -- a store, no system call -- and the program lets each group hold at most
    its share of the ring (``tapcap.shares``)."""
    cdef object cons_map, prod_map, acct_map
    cdef uint64_t *cons_pos
    cdef const uint64_t *prod_pos
    cdef const uint8_t *data
    cdef uint64_t *consumed
    cdef uint32_t ngroups
    cdef uint64_t mask
    cdef public int fd

    def __cinit__(self, int fd, size_t size, int consumed_fd, uint32_t ngroups):
        import mmap
        cdef uint8_t[::1] cons, acct
        cdef const uint8_t[::1] prod
        page = mmap.PAGESIZE
        self.fd = fd
        self.cons_map = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                                  offset=0)
        self.prod_map = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                  offset=page)
        self.acct_map = mmap.mmap(consumed_fd, (ngroups * 8 + page - 1) // page * page,
                                  mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        cons = self.cons_map
        prod = memoryview(self.prod_map)
        acct = self.acct_map
        self.cons_pos = <uint64_t *>&cons[0]
        self.prod_pos = <const uint64_t *>&prod[0]
        self.data = &prod[page]
        self.consumed = <uint64_t *>&acct[0]
        self.ngroups = ngroups
        self.mask = size - 1
        self.quantum = CAP_QUANTUM
        self.quiet = True

    def pending(self):
        """Bytes the program wrote that the walk has not consumed yet."""
        return vn_load64(self.prod_pos) - vn_load64(self.cons_pos)

    cdef bint ready(self):
        cdef uint64_t cons
        if self.data == NULL:
            return False
        cons = vn_load64(self.cons_pos)
        return cons < vn_load64(self.prod_pos) and \
            not vn_load32(self.data + (cons & self.mask)) & RB_BUSY

    cdef int walk(self, _Engine e, _Sender s, int budget) except -1:
        """The records the program has committed, in order, up to ``budget`` frames;
        WALK_BATCH at a time: decided, sent (payloads point into the ring), then given back
        (the consumer position moves past them), then their bytes credited to their groups
        (after the ring has the room: a group never looks emptier than the ring is).
        Returns how many records it read; in the ring thread's turns it stops early, as
        ``_Ring.walk`` does, when a quiet walker has a frame."""
        cdef uint64_t cons = vn_load64(self.cons_pos), prod, size
        cdef uint32_t hlen, cid, n, slot
        cdef uint16_t grp[WALK_BATCH]
        cdef uint32_t took[WALK_BATCH]
        cdef uint64_t *c
        cdef const uint8_t *h
        cdef int done = 0, k, j, pi
        cdef _Tables t
        while True:
            prod = vn_load64(self.prod_pos)
            k = 0
            while cons < prod and k < WALK_BATCH and done + k < budget:
                if (done + k) % YIELD_EVERY == 0 and done + k and e.other_ready(self, True):
                    budget = done + k               # a quiet walker's frame goes next
                    break
                h = self.data + (cons & self.mask)
                hlen = vn_load32(h)
                if hlen & RB_BUSY:                  # still being written: the next wake-up
                    break
                size = ((hlen & ~(RB_BUSY | RB_DISCARD)) + RB_HDR + 7) & ~(<uint64_t>7)
                cons += size
                grp[k] = (<const uint16_t *>(h + RB_HDR + 6))[0]
                took[k] = <uint32_t>size
                k += 1
                if hlen & RB_DISCARD:
                    continue
                cid = (<const uint32_t *>(h + RB_HDR))[0]
                n = (<const uint16_t *>(h + RB_HDR + 4))[0]
                t = e.t
                slot = cid & CAP_SLOT
                pi = t.cap_port[slot] if slot < <uint32_t>t.ncap and t.cap_id[slot] == cid \
                    else -1
                if pi < 0:                          # its port went with a reload
                    e._drop(t, R_TAP_ERROR, -1, -1)
                else:
                    e._tap_frame(s, t, pi, <uint8_t *>(h + RB_HDR + 8), n)
                self.frames += 1
            _tx_flush(e, s)
            vn_store64(self.cons_pos, cons)
            for j in range(k):                      # the one writer of ``consumed``
                if grp[j] < self.ngroups:
                    c = &self.consumed[grp[j]]
                    vn_store64(c, c[0] + took[j])
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
        self.consumed = NULL
        self.cons_map.close()
        self.prod_map.close()
        self.acct_map.close()
