# The compiled tables of one snapshot (part of ``_fastpath.pyx``; structs in ``_fastpath.pxd``).
#
# ``_compile`` turns a snapshot into ``_Tables``: C arrays of substrate links (``Link``), virtual
# links (``VL``), logical interfaces (``Port``) and interfaces (``Iface``), indexed by position,
# plus two ``_Hash``es for the two lookups of the demultiplexing rule -- (VLAN id, sender MAC,
# interface) -> substrate link and (VLI, substrate link) -> input virtual link.  A table is
# never changed once compiled (but for the C counters and bucket state the engine keeps in
# it): a reload compiles the next one and the engine swaps the reference.  ``_Queue`` owns a
# shaped link's FIFO, which outlives table generations.

# -- a small open-addressing hash: (k1, k2) -> int --------------------------------------------

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


# -- the tables ------------------------------------------------------------------------------

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
    cdef list link_objs, vl_objs, port_objs   # LinkCtx, entries (``entries.py``), TapPort
    cdef list vl_models       # the model's VLink of each entry (its counters)
    cdef list queues          # the _Queue objects the shaped VLs point into (kept alive)
    cdef dict udp_slot        # UDP local (ip, port) -> socket index
    cdef int *udp_links       # indexes of the UDP links
    cdef int nudp
    cdef LCE *lcache          # nports x LCACHE
    cdef int *shaped          # indexes of the VLs with metered == M_SHAPER
    cdef int *cap_port        # capture slot (id & CAP_SLOT) -> port index (-1: none)
    cdef uint32_t *cap_id     # capture slot -> the full id of its port (slot + generation)
    cdef int ncap
    cdef int nshaped
    cdef dict ignored         # Tables.ignored: global ignore counters (``_sync``)
    # drops (``_Engine._drop``), deltas by reason merged by ``_sync`` through ``count_drops``
    # (``Datapath.count_drops``); each drop is in one of the three, the most specific
    cdef int64_t node_drops[N_REASONS]  # of no substrate link (not classified that far)
    cdef int64_t *link_drops  # nlinks x N_REASONS: on a substrate link, of no virtual link
    cdef int64_t *vl_drops    # nvl x N_REASONS: of a virtual link (on its substrate link)
    cdef int64_t ndrops       # all of them (0: nothing to merge)
    cdef object count_drops

    def __dealloc__(self):
        free(self.link_drops)
        free(self.vl_drops)
        free(self.shaped)
        free(self.cap_port)
        free(self.cap_id)
        free(self.udp_links)
        free(self.lcache)
        free(self.links)
        free(self.vls)
        free(self.ports)
        free(self.ifaces)


def _hdr_of(out, ctx):
    """Output header of output entry ``out`` for the C send path (b"" if it cannot take it)."""
    if ctx.kind == "p2p":
        return out.encap
    if ctx.kind == "multiaccess":
        # switched frames: dst is broadcast, or the neighbour a dynamic virtual link names
        return (out.dst or wire.BROADCAST_MAC) + out.encap
    return out.encap                   # UDP: the VLI (no LEN)


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
    """C view of ``snap`` (the core's ``entries.Compiled``).  ``queues`` (the Python shaper ->
    (its _Queue, the entry it shaped)) holds the shaper queues of the table before; links
    shaped by the same shaper keep theirs, moved to the new table's dict (what is left in
    ``queues`` belongs to links no longer shaped here: the caller empties them)."""
    cdef _Tables t = _Tables.__new__(_Tables)
    cdef int i, j
    cdef VL *vl
    cdef Link *ln
    cdef _Queue q, old
    links = list(snap.links.values())
    vls = list(snap.outputs.values()) + list(snap.inputs.values())
    ports = list(dp.ports.values())
    t.link_objs, t.vl_objs, t.port_objs = links, vls, ports
    t.vl_models = [e.vlink for e in vls]
    t.nlinks, t.nvl, t.nports = len(links), len(vls), len(ports)
    t.nifaces = len(snap.ifaces)
    t.links = <Link *>calloc(max(t.nlinks, 1), sizeof(Link))
    t.vls = <VL *>calloc(max(t.nvl, 1), sizeof(VL))
    t.ports = <Port *>calloc(max(t.nports, 1), sizeof(Port))
    t.ifaces = <Iface *>calloc(max(t.nifaces, 1), sizeof(Iface))
    t.shaped = <int *>calloc(max(t.nvl, 1), sizeof(int))
    t.udp_links = <int *>calloc(max(t.nlinks, 1), sizeof(int))
    t.lcache = <LCE *>calloc(max(t.nports, 1) * LCACHE, sizeof(LCE))
    t.link_drops = <int64_t *>calloc(max(t.nlinks, 1) * N_REASONS, sizeof(int64_t))
    t.vl_drops = <int64_t *>calloc(max(t.nvl, 1) * N_REASONS, sizeof(int64_t))
    if not (t.links and t.vls and t.ports and t.ifaces and t.shaped and t.udp_links and
            t.lcache and t.link_drops and t.vl_drops):
        raise MemoryError()
    t.ethertype = snap.ethertype
    t.ignored = dp.ignored
    t.count_drops = dp.count_drops
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
    for i, e in enumerate(vls):
        vl = &t.vls[i]
        v = e.vlink
        ctx = e.ctx
        vl.link = link_ix[id(ctx)]
        vl.action = v.action
        vl.port = vl.out = -1
        if v.direction == IN:
            t.vli.put(v.vli, vl.link, i)
            if e.action == DELIVER and e.port is not None:
                vl.port = port_ix.get(id(e.port), -1)
            elif e.action == SWITCH and e.out is not None:
                vl.out = vl_ix[id(e.out)]
        else:
            hdr = _hdr_of(e, ctx)
            vl.txfd = e.txsock.fileno() if e.txsock is not None else t.links[vl.link].txfd
            vl.fast_out = bool(hdr) and vl.txfd >= 0
            if vl.fast_out:
                vl.hdr_len = len(hdr)
                for j in range(vl.hdr_len):
                    vl.hdr[j] = hdr[j]
        meter = e.meter
        if meter is None:
            continue
        bucket = getattr(meter, "bucket", meter)
        vl.rate, vl.burst = bucket.rate, bucket.burst
        vl.tokens, vl.stamp = bucket.tokens, bucket.stamp
        if v.direction == IN:
            vl.metered = M_POLICER
        elif not vl.fast_out:
            vl.metered = M_PYTHON
        else:
            vl.metered = M_SHAPER
            q, _was = queues.pop(meter, (None, None))
            if q is None or q.q.limit != max(meter.limit, 1) or q.q.slot < ctx.payload_mtu:
                old = q
                q = _Queue(meter.limit, max(ctx.payload_mtu, 1))
                if old is not None:
                    _move_queue(old, q)
            kept[meter] = (q, e)
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
