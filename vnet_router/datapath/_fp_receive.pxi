# One received frame (part of ``_fastpath.pyx``): the demultiplexing rule of DESIGN section 3
# in C, mirroring ``classify.classify_eth`` / ``classify_udp`` + ``Datapath.receive`` -- the
# substrate link by (interface, VLAN id, sender MAC) or the UDP remote, LEN and MTU checks, the
# input virtual link by VLI, policing, then deliver (one ``write`` into the TAP), switch
# (``_tx_output``, in ``_fp_transmit.pxi``) or drop.  VLI 0 goes to the control plane.  The
# learned-MAC cache of multiaccess ports is here too (learned on receive, read on output).

# -- receive ------------------------------------------------------------------------------

cdef int _rx_frame(_Engine eng, _Sender s, int ifs, uint8_t *f, uint32_t n, int tci) except -1:
    """One frame received on interface slot ``ifs`` (-1 unknown); ``tci`` -1: no tag out of
    band.  Mirrors ``classify.classify_eth`` + ``Datapath.receive``."""
    cdef _Tables t = eng.t
    cdef uint32_t off = 14, start, length
    cdef int vid = -1, link, v, etype
    cdef Link *ln
    cdef VL *vl
    if ifs < 0:
        eng._drop(t, R_NO_LINK, -1, -1)
        return 0
    if n < 14:
        eng._drop(t, R_SHORT, -1, -1)
        return 0
    etype = vn_be16(f + 12)
    if etype == 0x8100 or etype == 0x88A8:
        if n < 18:
            eng._drop(t, R_SHORT, -1, -1)
            return 0
        vid = vn_be16(f + 14) & 0x0FFF
        etype = vn_be16(f + 16)
        off = 18
    elif tci >= 0:
        vid = tci & 0x0FFF
    if etype != t.ethertype:
        eng._drop(t, R_NO_LINK, -1, -1)
        return 0
    if vid <= 0:
        link = t.ifaces[ifs].multi
        if link < 0:
            eng._drop(t, R_NO_LINK, -1, -1)
            return 0
    else:
        link = t.p2p.get((<uint64_t>vid << 48) | vn_mac48(f + 6), ifs)
        if link < 0:
            if t.ifaces[ifs].vids[vid >> 3] & (1 << (vid & 7)):
                eng._drop(t, R_BAD_PEER, -1, -1)
            else:
                eng._drop(t, R_UNKNOWN_VLAN, -1, -1)
            return 0
    ln = &t.links[link]
    ln.rx_packets += 1
    ln.rx_bytes += n
    if n < off + 4:
        eng._drop(t, R_SHORT, link, -1)
        return 0
    length = vn_be16(f + off + 2)
    start = off + 4
    if start + length > n:
        eng._drop(t, R_BAD_LEN, link, -1)
        return 0
    if <int>length > ln.payload_mtu:
        eng._drop(t, R_OVERSIZE, link, -1)
        return 0
    v = t.vli.get(vn_be16(f + off), link)
    if v < 0:
        if vn_be16(f + off) != 0:
            if ln.kind == K_MULTI and vn_mac48(f) != t.ifaces[ifs].mac:
                ln.not_member += 1          # a vNet not hosted here: ignored, no fault
            else:
                eng._drop(t, R_UNKNOWN_VLI, link, -1)
        elif not _rx_control(eng, s, t, link, f, n, start, length):
            eng._drop(t, R_CONTROL, link, -1)
        return 0
    return _rx_vlink(eng, s, t, link, v, f, start, length)

cdef int _rx_vlink(_Engine eng, _Sender s, _Tables t, int link, int v, uint8_t *f, uint32_t start,
                   uint32_t length) except -1:
    """A frame classified to input virtual link ``v`` (``Datapath.receive``'s second half):
    police, then deliver / switch / drop."""
    cdef VL *vl = &t.vls[v]
    if vl.metered == M_POLICER and not _take(vl, eng.now(), length):
        eng._drop(t, R_POLICED, link, v)
        return 0
    if vl.action == DELIVER:
        return _rx_deliver(eng, t, v, link, f, start, length)
    if vl.action == SWITCH:
        vl.packets += 1
        vl.nbytes += length
        return _tx_output(eng, s, t, vl.out, f + start, length, NULL, -1)
    eng._drop(t, R_VLI_DROP, link, v)
    return 0

cdef int _rx_udp(_Engine eng, _Sender s, _Tables t, int j, uint8_t *f, uint32_t n,
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
        eng._drop(t, R_NO_LINK, -1, -1)
        return 0
    ln = &t.links[link]
    ln.rx_packets += 1
    ln.rx_bytes += n
    if n < 2:
        eng._drop(t, R_SHORT, link, -1)
        return 0
    length = n - 2
    if <int>length > ln.payload_mtu:
        eng._drop(t, R_OVERSIZE, link, -1)
        return 0
    vli = vn_be16(f)
    v = t.vli.get(vli, link)
    if v < 0:
        if vli != 0:
            eng._drop(t, R_UNKNOWN_VLI, link, -1)
        elif not _rx_control(eng, s, t, link, f, n, 2, length):
            eng._drop(t, R_CONTROL, link, -1)
        return 0
    return _rx_vlink(eng, s, t, link, v, f, 2, length)

cdef bint _rx_control(_Engine eng, _Sender s, _Tables t, int link, uint8_t *f, uint32_t n,
                      uint32_t start, uint32_t length) except -1:
    """VLI 0: hand a copy of the frame to the control-plane policing (``copp``: known
    neighbours' queue or the rest's, served in the loop thread; ``Datapath.offer_control``
    in the reference), counting what its bounds refuse; False if no control plane runs or
    the payload is no control message (``_ctl_plausible``): the ``control`` drop."""
    cdef int kind = t.links[link].kind
    if eng.dp.on_control is None or not _ctl_plausible(f + start, length):
        return False
    ctx = t.link_objs[link]
    why = eng.dp.control.offer(ctx, (<char *>f)[6:12] if kind != K_UDP else None,
                               (<char *>f)[:n], start, length)
    if why is not None:
        eng._drop(t, _CTL_REFUSED[why], link, -1)
    return True


cdef inline bint _ctl_plausible(const uint8_t *p, uint32_t length) noexcept nogil:
    """``wire.control.plausible`` on a VLI 0 payload: a header, version 1, a known type, no
    flag but AUTH and SIGNED (what fails it costs no Python call)."""
    return (length >= CTL_HEADER_LEN and p[0] == CTL_VERSION and 1 <= p[1] <= CTL_MAX_TYPE
            and (vn_be16(p + 2) & ~CTL_FLAGS) == 0)


_CTL_REFUSED = {"control_queue": R_CONTROL_QUEUE, "control_peer": R_CONTROL_PEER,
                "control_other": R_CONTROL_OTHER, "control_source": R_CONTROL_SOURCE}

cdef int _rx_deliver(_Engine eng, _Tables t, int v, int link, uint8_t *f, uint32_t start,
                     uint32_t length) except -1:
    cdef VL *vl = &t.vls[v]
    cdef Port *p
    if vl.port < 0:
        eng._drop(t, R_TAP_ERROR, link, v)
        return 0
    p = &t.ports[vl.port]
    if t.links[link].kind == K_MULTI and length >= 12:
        _learn(eng, t, vl.port, f + start + 6, f + 6)
    if write(p.fd, f + start, length) < 0:
        eng._drop(t, R_TAP_ERROR, link, v)
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

cdef int _learn(_Engine eng, _Tables t, int pi, const uint8_t *src, const uint8_t *outer) except -1:
    cdef Port *p = &t.ports[pi]
    cdef uint64_t mac = vn_mac48(src), out = vn_mac48(outer)
    cdef LCE *e = &p.lc[(mac * 0x9E3779B97F4A7C15ULL) >> 54 & (LCACHE - 1)]
    cdef double now = eng.now()
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

cdef const uint8_t *_learned_dst(_Engine eng, _Tables t, int pi, const uint8_t *dst,
                                 uint8_t *buf) except? NULL:
    """The outer MAC learned for inner ``dst`` (written to ``buf``), or NULL: broadcast."""
    cdef Port *p = &t.ports[pi]
    cdef uint64_t mac = vn_mac48(dst)
    cdef LCE *e = &p.lc[(mac * 0x9E3779B97F4A7C15ULL) >> 54 & (LCACHE - 1)]
    cdef double now = eng.now()
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
