# ``CEngine`` (part of ``_fastpath.pyx``): the compiled engine as the rest of Python sees it,
# the ``core.Engine`` protocol -- it opens the rings and connected UDP sockets, runs the ring
# thread, and hands frames, TAP reads and table swaps to ``_Engine``.

class CEngine:
    """``core.Engine`` on rings and C tables (see the module docstring)."""

    name = "fast"
    # the ring thread reads the UDP tunnel sockets too, and the TAP capture's ring
    capabilities = Capabilities(reads_udp=True, walks_capture=True)
    tier_of = engine_tier

    def __init__(self, dp):
        self.dp = dp
        self.udp_conn = {}     # (local, remote) of a UDP link -> its connected socket
        self._engine = _Engine(dp, self.udp_conn)
        self.rings = {}        # (ifindex, queue) -> (RxRing, _Ring)
        self.fanout = None     # (selector program fd, [slots of ring i]): classified rings
        self._port_ix = {}     # id(TapPort) -> index in the compiled tables
        self._thread = None    # the ring thread, its rings, epoll fd and stop eventfd
        self._thread_rings = []
        self._thread_udp = []
        self._epfd = self._stopfd = -1
        self._caps = {}        # the node's TAP capture rings (``dp.capture``): index -> _CapRing

    def sync_substrate(self, snap, close):
        """Substrate interfaces get a TPACKET_V2 ring; UDP tunnel links a socket of their own
        connected to the remote (bound to the link's local address beside the core's socket):
        a connected ``sendmmsg`` skips the route lookup per datagram, and the kernel delivers
        the remote's datagrams to it (the ring thread reads both)."""
        have = {i for i, _q in self.rings}
        for ifindex, iface in snap.ifaces.items():
            if ifindex in have:
                continue
            if self.fanout is None:
                rx = packet_io.RxRing(iface.ifname, snap.ethertype)
                self.rings[(ifindex, 0)] = (rx, _Ring(rx, ifindex))
            else:
                selector, frames = self.fanout
                for q, rx in enumerate(packet_io.fanout_rings(iface.ifname, snap.ethertype,
                                                              selector, frames)):
                    self.rings[(ifindex, q)] = (rx, _Ring(rx, ifindex, q))
        # the UDP links that are up (``snap.udp``; one waiting for its underlay has no socket)
        want = {(local, remote) for local, ends in snap.udp.items() for remote in ends}
        for key in want:
            if key not in self.udp_conn:
                self.udp_conn[key] = _connected_udp(*key)
        if close:
            gone = [k for k in self.rings if k[0] not in snap.ifaces]
            gone_conn = [k for k in self.udp_conn if k not in want]
            if gone or gone_conn or [x for x in self._thread_udp if x[1] not in snap.udp]:
                self._stop_ring_thread()        # it must not read a ring / socket that goes
            for key in gone_conn:
                self.udp_conn.pop(key).close()
            for key in gone:
                rx, ring = self.rings.pop(key)
                self._engine._ring_drops_py([ring])
                ring.release()
                rx.close()

    def start(self):
        """(Re)start the ring thread when the set of rings changed."""
        udps = [(s.fileno(), local) for local, s in self.dp.udp.items()] + \
            [(s.fileno(), local) for (local, _remote), s in self.udp_conn.items()]
        cap = getattr(self.dp, "capture", None)
        new = [i for i in (cap.rings if cap is not None else ()) if i not in self._caps]
        if new:                                 # a vNet's first captured TAP: its ring
            self._stop_ring_thread()
            for i in new:
                self._caps[i] = _CapRing(cap.rings[i], cap.ring_size, cap.consumed_fd,
                                         cap.ngroups)
            self._engine.cap_fd = cap.ports_fd
            self._engine.cap_sync = cap.take_drops
        if self._thread is None or {id(r) for _, r in self._thread_rings} != \
                {id(r) for _, r in self.rings.values()} or self._thread_udp != udps:
            self._stop_ring_thread()
            self._start_ring_thread(udps)

    def install(self, snap):
        self._engine.install(snap)
        self._port_ix = {id(p): i for i, p in enumerate(self.dp.ports.values())}

    def retune(self, v):
        self._engine.retune(v)

    def set_peers(self, peers):
        """VLI 0 is sorted by the core's queues only (``copp``): nothing here."""

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
        self._close_rings()
        for sock in self.udp_conn.values():
            sock.close()
        self.udp_conn.clear()
        if self._caps:
            self._engine.cap_fd = -1
            self._engine.cap_sync = None
            for c in self._caps.values():
                c.close()
            self._caps.clear()

    def _close_rings(self):
        for rx, ring in self.rings.values():
            ring.release()
            rx.close()
        self.rings.clear()

    def reopen_rings(self, snap, fanout):
        """Every ring closed and opened again, classified (``fanout``: selector fd, slots) or
        not (None): the ring thread restarts on the new ones.  What the old rings held is
        dropped (counted ``ring_full``: the rings went)."""
        self._stop_ring_thread()
        held = sum(ring.pending() for _, ring in self.rings.values())
        self._engine._ring_drops_py([ring for _, ring in self.rings.values()])
        self._close_rings()
        if held:
            self.dp.count_drops("ring_full", held)
        self.fanout = fanout
        self.sync_substrate(snap, False)
        self.start()

    def shape_service(self, quanta, vnets):
        """Per ring: frames per turn (``quanta``: queue -> frames) and the vNet whose frames it
        alone holds (``vnets``: queue -> name, or absent)."""
        for (_ifindex, q), (_rx, ring) in self.rings.items():
            ring.quantum = quanta.get(q, WALK_BUDGET)
            ring.vnet = vnets.get(q)

    def stats(self):
        e = self._engine
        st = {"wakeups": e.wakeups, "batches": e.batches, "drains": e.drains,
              "ring_frames": sum(r.frames for _, r in self.rings.values())}
        if self._caps:
            st["capture_frames"] = sum(c.frames for c in self._caps.values())
            st.update({f"capture_{k}": v for k, v in self.dp.capture.counters().items()})
        return st

    def sync_counters(self):
        """Counts kept outside Python (the TAP capture's kernel drops) before a read."""
        if self._caps:
            self._engine.count_cap_drops(self.dp.capture.take_drops(True))

    # -- the ring thread ---------------------------------------------------------------------
    #
    # Rings are read by a thread of their own: it sleeps in epoll_wait without the GIL and,
    # when a ring has frames, walks it holding the GIL -- no event-loop callback, no Python
    # frame per wake-up.  The same thread drains the shaper queues when their timer fires.
    # Everything else (TAPs, UDP, control plane, timers) stays on the event loop; slow paths of
    # ring frames that touch it are handed over (``_Sender``).

    def _start_ring_thread(self, udps):
        # served in this order each turn: known neighbours' control first, strangers' last
        rings = sorted(self.rings.values(), key=lambda r: _SERVICE_ORDER.get(r[1].queue, 2))
        epfd = _epoll_create()
        stopfd = _eventfd()
        try:
            for i, (rx, ring) in enumerate(rings):
                _epoll_add(epfd, rx.sock.fileno(), i)
            for j, (fd, _local) in enumerate(udps):
                _epoll_add(epfd, fd, UDP_KEY + j)
            _epoll_add(epfd, self._engine.timer_fd(), TIMER_KEY)
            _epoll_add(epfd, stopfd, STOP_KEY)
            caps = list(self._caps.values())
            for i, c in enumerate(caps):
                _epoll_add(epfd, c.fd, CAP_KEY - i)
        except BaseException:
            os.close(epfd)
            os.close(stopfd)
            raise
        self._epfd, self._stopfd = epfd, stopfd
        self._thread_rings, self._thread_udp = rings, udps
        self._thread = threading.Thread(target=self._ring_thread,
                                        args=(epfd, rings, udps, caps),
                                        name="vnet-rings", daemon=True)
        self._thread.start()
        names = list(dict.fromkeys(rx.ifname for rx, _ in rings))
        log.info("fast path: ring thread reads %d substrate interface(s): %s, %d udp socket(s)%s"
                 "%s", len(names), " ".join(names) or "-", len(udps),
                 f", {len(caps)} TAP capture ring(s)" if caps else "",
                 f" ({len(rings)} rings: one per vNet queue)" if len(rings) > len(names) else "")

    def _ring_thread(self, epfd, rings, udps, caps):
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self._engine.run_rings(epfd, [ring for _, ring in rings], udps, caps)
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


_SERVICE_ORDER = {1: 0, 0: 1, 2: 3}      # classifier.Q_KNOWN, Q_DEFAULT, Q_OTHER; vNets: 2


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
