# The compiled engine's private header: what every unit of ``_fastpath`` shares.
#
# ``_fastpath.pyx`` is one extension module built from the units it includes (one per
# concern, as Open vSwitch splits ``dpif-netdev`` behind its ``dpif-netdev-private-*.h``):
#
#   _fastpath.pxd        this file: C declarations of the system calls used, the engine's
#                        constants and the structs of the compiled tables
#   _names.pxi           generated from ``model/names.py``: drop reasons and link kinds
#   _fp_tables.pxi       the C tables of one snapshot and their compilation (``_compile``)
#   _fp_receive.pxi      one received frame: the demultiplexing rule, policing, deliver
#   _fp_transmit.pxi     output, batched ``sendmmsg``, shapers and their departure timer
#   _fp_engine.pxi       ``_Engine``: state, table swaps, TAP reads, the ring thread's loop
#   _fp_rings.pxi        the walkers of the TPACKET_V2 rings and of the TAP capture ring
#   _fp_wrapper.pxi      ``CEngine``: the ``core.Engine`` the rest of Python sees
#
# One compilation unit on purpose: per frame, every call between the units is a direct (often
# inlined) C call, as it was when they were one file.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from posix.uio cimport iovec
from posix.time cimport timespec

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

# -- constants ---------------------------------------------------------------------------------

cdef enum:
    # tpacket2_hdr offsets and status bits (linux/if_packet.h, TPACKET_V2)
    H2_STATUS = 0
    H2_LEN = 4
    H2_SNAPLEN = 8
    H2_MAC = 12
    H2_TCI = 24
    TP_STATUS_KERNEL = 0
    TP_STATUS_USER = 1
    TP_STATUS_VLAN_VALID = 16
    # batches and buffers
    WALK_BATCH = 8          # frames walked before a flush (one sendmmsg) hands their slots back:
                            # a quiet ring's frame waits behind at most one such send (16: B's
                            # median RTT +20 us, 1.2x, beside A's TAP flood; 8: +1-4 us)
    WALK_BUDGET = 1024      # frames of one ring per turn of the ring thread (then timers,
                            # other rings, counters, a stop request get their turn)
    CAP_QUANTUM = 64        # frames of one vNet's TAP capture ring per turn (its weight
                            # among backlogged rings)
    YIELD_EVERY = 2         # a walk yields, after every this many frames, to a quiet ring
                            # with a frame: what that frame waits behind per flooding ring
    BATCH = 256             # frames per sendmmsg
    TAP_BATCH = 64          # frames read from one TAP per wake-up (as the reference)
    TAP_BUF = 65600
    HDR_MAX = 24            # the longest precomputed output header (up to the VLI)
    UDP_BATCH = 64          # datagrams per recvmmsg
    LCACHE = 1024           # learned-MAC cache slots per port (a power of two)
    # the ring thread
    EP_EVENTS = 64          # epoll events taken per wake-up
    SYNC_MS = 1             # counters reach the Python objects within ~this
    UDP_KEY = 0x10000       # epoll data of UDP socket j: UDP_KEY + j
    # the TAP capture ring (a BPF ring buffer, ``bpf/tap_capture.bpf.c``)
    RB_HDR = 8              # the ring buffer's record header; then the program's id, len
    CAP_SLOT = 0xFFF        # a capture id: slot (its port's, reused) | generation << 12
    AF_INET6_ = 10

# How a compiled virtual link is metered (``VL.metered``)
cdef enum Metering:
    M_NONE = 0              # no rate
    M_POLICER = 1           # input: token bucket, excess dropped (``policed``)
    M_SHAPER = 2            # output the C send path takes: token bucket + FIFO (``SQ``)
    M_PYTHON = 3            # output the C send path cannot take (UDP): the core's meter decides

cdef extern from *:
    """
    #define VN_STOP_KEY 0xFFFFFFFFu
    #define VN_TIMER_KEY 0xFFFFFFFEu
    #define VN_CAP_KEY 0xFFFFFFFDu
    #define VN_RB_BUSY 0x80000000u
    #define VN_RB_DISCARD 0x40000000u
    #define VN_UNKNOWN 0x1000000000000ULL
    """
    # epoll data of the ring thread's own fds
    const uint32_t STOP_KEY "VN_STOP_KEY"         # the stop eventfd
    const uint32_t TIMER_KEY "VN_TIMER_KEY"       # the shapers' departure timer
    const uint32_t CAP_KEY "VN_CAP_KEY"           # TAP capture ring i: CAP_KEY - i
    # BPF ring buffer record header bits
    const uint32_t RB_BUSY "VN_RB_BUSY"           # being written
    const uint32_t RB_DISCARD "VN_RB_DISCARD"     # discarded by the program
    # LCE.outer: the table did not know the MAC (no 48-bit MAC)
    const uint64_t UNKNOWN "VN_UNKNOWN"


# -- the compiled tables -----------------------------------------------------------------------

# a slot of ``_Hash``, the open-addressing hash (k1, k2) -> int of the classification
cdef struct HEntry:
    uint64_t k1
    uint32_t k2
    int32_t val          # -1: empty

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
    int64_t drops            # delta: drops of no virtual link here (by reason: its row of
                             # ``_Tables.link_drops``)

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
    Metering metered         # see ``Metering``
    int port                 # input DELIVER: port index, -1 none
    int out                  # input SWITCH: output virtual link index
    int fast_out             # output: 1 if the C send path takes it (p2p/multiaccess)
    int txfd                 # output: send socket (the link's, or its own when kernel-shaped)
    int hdr_len
    uint8_t hdr[HDR_MAX]     # output: precomputed header up to and including the VLI
    int64_t packets, nbytes  # deltas
    int64_t drops            # delta: drops of this link (by reason: ``_Tables.vl_drops``)
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
