"""eBPF: compile a program's C source, load it through the kernel's verifier, attach it at TC
ingress (cls_bpf, direct action) of interfaces in a network namespace, read and write its maps.

The one owner of libbpf (``libbpf.so.1``, Debian's libbpf1, through ctypes) and of clang:
nothing else in the tree loads BPF.  ctypes rather than ``tc filter add ... bpf obj``: one
load gives one program whose maps are shared by every interface it is attached to (``tc``
loads the object again per interface, so a router's learned table would be split per port
unless pinned under one global name in /sys/fs/bpf), the daemon holds the descriptors (the
program and maps go away with it, nothing pinned is left behind), and the verifier's log comes
back in a buffer (``bpf_program__set_log_buf``) instead of being scraped from ``tc``'s output.

How work is split: :func:`shipped_object` (the project's programs, ``bpf/NAME.bpf.c``: the
``NAME.bpf.o`` that setup.py built with the package, so the daemon needs no compiler; compiled
here only when it is missing or older than its sources, in a development tree),
:func:`compile_c` (clang, in a private temporary directory, the object kept in memory by the
source's hash; kernel instances that users write are compiled at load), :class:`Program`
(open from memory, load = verify, maps, close), :func:`tc_attach` / :func:`tc_detach` (in a
short-lived thread that entered the namespace: setns is per thread).  ``node/kernel.py``
decides what to load where.

Standard library only: setup.py loads this file on its own (:func:`clang_argv`) to build the
shipped objects with the flags the daemon uses.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
from ctypes import (CFUNCTYPE, POINTER, Structure, byref, c_char_p, c_int, c_size_t, c_uint32,
                    c_void_p, create_string_buffer)
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("vnet_router.ebpf")

CLANG = "clang"
BPF_DIR = Path(__file__).resolve().parents[1] / "bpf"    # the shipped programs and objects
LOG_SIZE = 1 << 22                  # the verifier's log of a failed load (4 MiB)
LOG_TAIL = 40                       # lines of it kept in the error: the reason is at the end
NETNS_DIR = "/run/netns"
_CLONE_NEWNET = 0x40000000

# map types (linux/bpf.h) whose values are per CPU
_PERCPU = {5, 6, 10}                # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
MAP_TYPES = {1: "hash", 2: "array", 5: "percpu_hash", 6: "percpu_array", 9: "lru_hash",
             10: "lru_percpu_hash", 27: "ringbuf"}
BPF_F_RDONLY_PROG = 1 << 7
BPF_TC_INGRESS, BPF_TC_EGRESS = 1, 2
BPF_TC_F_REPLACE = 1


class BpfError(RuntimeError):
    """A program that cannot be compiled, loaded (the verifier's log in ``log``) or attached."""

    def __init__(self, msg: str, log: str = ""):
        super().__init__(msg + (f"\n{log}" if log else ""))
        self.log = log


class _TcHook(Structure):           # struct bpf_tc_hook (libbpf.h)
    _fields_ = [("sz", c_size_t), ("ifindex", c_int), ("attach_point", c_int),
                ("parent", c_uint32)]


class _TcOpts(Structure):           # struct bpf_tc_opts (libbpf.h)
    _fields_ = [("sz", c_size_t), ("prog_fd", c_int), ("flags", c_uint32),
                ("prog_id", c_uint32), ("handle", c_uint32), ("priority", c_uint32)]


class _TestRunOpts(Structure):      # struct bpf_test_run_opts (libbpf.h)
    _fields_ = [("sz", c_size_t), ("data_in", c_void_p), ("data_out", c_void_p),
                ("data_size_in", c_uint32), ("data_size_out", c_uint32),
                ("ctx_in", c_void_p), ("ctx_out", c_void_p), ("ctx_size_in", c_uint32),
                ("ctx_size_out", c_uint32), ("retval", c_uint32), ("repeat", c_int),
                ("duration", c_uint32), ("flags", c_uint32), ("cpu", c_uint32),
                ("batch_size", c_uint32)]


SKB_CTX_SIZE, SKB_IFINDEX, SKB_MARK = 192, 40, 8   # struct __sk_buff: size, ifindex, mark
PROG_INFO_SIZE, PROG_INFO_RUN_TIME = 232, 192     # struct bpf_prog_info: run_time_ns, run_cnt

_PRINT = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
_lib = None
_libc = None
_messages = threading.local()       # libbpf's messages of the current thread's call


def _print(level, fmt, args):
    buf = create_string_buffer(1024)
    _libc.vsnprintf(buf, len(buf), fmt, c_void_p(args))
    line = buf.value.decode(errors="replace").rstrip()
    sink = getattr(_messages, "lines", None)
    if sink is not None:
        sink.append(line)
    else:
        log.debug("libbpf: %s", line)
    return 0


_print_cb = _PRINT(_print)


def available(compiler: bool = True) -> str | None:
    """None if BPF programs can be loaded here (``compiler``: and built from C), else what is
    missing.  The shipped programs need no compiler (:func:`shipped_object`)."""
    try:
        _libbpf()
    except OSError as e:
        return f"libbpf is missing ({e}; Debian: libbpf1)"
    if compiler and shutil.which(CLANG) is None:
        return "clang is missing (Debian: clang, llvm, libbpf-dev)"
    return None


def _libbpf():
    global _lib, _libc
    if _lib is not None:
        return _lib
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    sig = {
        "bpf_object__open_mem": (c_void_p, [c_void_p, c_size_t, c_void_p]),
        "bpf_object__load": (c_int, [c_void_p]),
        "bpf_object__close": (None, [c_void_p]),
        "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
        "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
        "bpf_program__name": (c_char_p, [c_void_p]),
        "bpf_program__fd": (c_int, [c_void_p]),
        "bpf_program__set_log_buf": (c_int, [c_void_p, c_char_p, c_size_t]),
        "bpf_map__name": (c_char_p, [c_void_p]),
        "bpf_map__fd": (c_int, [c_void_p]),
        "bpf_map__type": (c_int, [c_void_p]),
        "bpf_map__key_size": (c_uint32, [c_void_p]),
        "bpf_map__value_size": (c_uint32, [c_void_p]),
        "bpf_map__max_entries": (c_uint32, [c_void_p]),
        "bpf_map__map_flags": (c_uint32, [c_void_p]),
        "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
        "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
        "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
        "bpf_map_create": (c_int, [c_int, c_char_p, c_uint32, c_uint32, c_uint32, c_void_p]),
        "libbpf_num_possible_cpus": (c_int, []),
        "bpf_prog_test_run_opts": (c_int, [c_int, POINTER(_TestRunOpts)]),
        "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, POINTER(c_uint32)]),
        "libbpf_set_print": (c_void_p, [_PRINT]),
        "bpf_tc_hook_create": (c_int, [POINTER(_TcHook)]),
        "bpf_tc_hook_destroy": (c_int, [POINTER(_TcHook)]),
        "bpf_tc_attach": (c_int, [POINTER(_TcHook), POINTER(_TcOpts)]),
        "bpf_tc_detach": (c_int, [POINTER(_TcHook), POINTER(_TcOpts)]),
        "bpf_enable_stats": (c_int, [c_int]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
    _libc = libc
    lib.libbpf_set_print(_print_cb)
    _lib = lib
    return lib


BPF_STATS_RUN_TIME = 0


@contextlib.contextmanager
def run_time_stats():
    """Every BPF program's run-time statistics (``Program.run_stats``) on while inside:
    BPF_ENABLE_STATS, whose file descriptor holds them on and, closed (with the process, if it
    is killed), turns them off; nothing if the kernel refuses.  They cost each program run two
    clock reads.  ``kernel.bpf_stats_enabled``, the other switch, is left as it is."""
    fd = _libbpf().bpf_enable_stats(BPF_STATS_RUN_TIME)
    try:
        yield fd >= 0
    finally:
        if fd >= 0:
            os.close(fd)


# -- compile ---------------------------------------------------------------------------------

_objects: dict[str, bytes] = {}
_compile_lock = threading.Lock()


def compile_c(source: str) -> bytes:
    """The BPF object built from C ``source`` (clang -O2 -g -target bpf), cached by the hash
    of the source and the headers beside it."""
    with open(source, "rb") as f:
        text = f.read()
    for h in sorted(Path(source).resolve().parent.glob("*.h")):
        text += h.read_bytes()
    key = hashlib.sha256(text + source.encode()).hexdigest()
    with _compile_lock:
        if key in _objects:
            return _objects[key]
        if shutil.which(CLANG) is None:
            raise BpfError(f"cannot compile {source}: clang is missing (Debian: clang, llvm, "
                           f"libbpf-dev)")
        with tempfile.TemporaryDirectory(prefix="vnet-bpf-") as tmp:
            obj = os.path.join(tmp, "prog.o")
            r = subprocess.run(clang_argv(source, obj), capture_output=True, text=True,
                               timeout=120)
            if r.returncode != 0:
                raise BpfError(f"cannot compile {source} (clang exit status {r.returncode}):",
                               _tail(r.stderr))
            with open(obj, "rb") as f:
                _objects[key] = f.read()
        return _objects[key]


def clang_argv(source: str, obj: str, clang: str = CLANG) -> list[str]:
    """The command that compiles ``source`` into BPF object ``obj`` (here and in setup.py)."""
    return [clang, "-O2", "-g", "-Wall", "-target", "bpf", f"-I/usr/include/{_multiarch()}",
            f"-I{os.path.dirname(os.path.abspath(source))}", "-c", source, "-o", obj]


def shipped_object(source: str | Path) -> bytes:
    """The BPF object of a shipped program (``source``: ``bpf/NAME.bpf.c``): ``NAME.bpf.o``
    beside it, as setup.py built it with the package, read without a compiler.  Missing, or
    in a development tree (setup.py beside the package) older than its source or a header
    beside it: compiled from the source (:func:`compile_c`, clang needed)."""
    source = Path(source)
    obj = source.with_suffix(".o")
    why = outdated(source, obj)
    if why is None:
        return obj.read_bytes()
    if shutil.which(CLANG) is None:
        if obj.exists():
            log.warning("%s %s and clang is missing to rebuild it: loading it as it is",
                        obj.name, why)
            return obj.read_bytes()
        raise BpfError(f"{source.name}: no prebuilt {obj.name} (the package was built without "
                       f"clang) and clang is missing (Debian: clang, llvm, libbpf-dev)")
    log.info("%s %s: compiling %s", obj.name, why, source.name)
    return compile_c(str(source))


def load_shipped(source: str | Path) -> "Program":
    """The shipped program ``source`` loaded (verified): see :func:`shipped_object`."""
    return Program(shipped_object(source), Path(source).name)


def outdated(source: Path, obj: Path) -> str | None:
    """Why ``obj`` cannot stand for ``source`` (None: it can)."""
    try:
        built = obj.stat().st_mtime_ns
    except OSError:
        return "is missing"
    if not (BPF_DIR.parents[1] / "setup.py").exists():    # installed: built with the package
        return None
    inputs = [source, *sorted(source.parent.glob("*.h"))]
    newer = [p.name for p in inputs if p.exists() and p.stat().st_mtime_ns > built]
    return f"is older than {', '.join(newer)}" if newer else None


def _multiarch() -> str:
    m = os.uname().machine
    return {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(m, f"{m}-linux-gnu")


def _tail(text: str, n: int = LOG_TAIL) -> str:
    lines = [ln for ln in text.rstrip().splitlines()]
    return "\n".join((["..."] if len(lines) > n else []) + lines[-n:])


# -- load ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MapInfo:
    name: str
    fd: int
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int

    @property
    def percpu(self) -> bool:
        return self.type in _PERCPU

    @property
    def read_only_for_program(self) -> bool:
        return bool(self.flags & BPF_F_RDONLY_PROG)


class Program:
    """A BPF object loaded into the kernel (verified); its first program and its maps."""

    def __init__(self, obj: bytes, name: str):
        lib = _libbpf()
        self.name = name
        self._buf = ctypes.create_string_buffer(obj, len(obj))
        _messages.lines = lines = []
        try:
            self._obj = lib.bpf_object__open_mem(self._buf, len(obj), None)
            if not self._obj:
                err = ctypes.get_errno()
                raise BpfError(f"{name}: not a BPF object libbpf can open "
                               f"({os.strerror(err)})", _tail("\n".join(lines)))
            progs = []
            prog = lib.bpf_object__next_program(self._obj, None)
            while prog:
                progs.append(prog)
                prog = lib.bpf_object__next_program(self._obj, prog)
            if not progs:
                self.close()
                raise BpfError(f"{name}: the object has no program")
            self.prog_name = lib.bpf_program__name(progs[0]).decode()
            logs = []
            for prog in progs:
                logs.append(ctypes.create_string_buffer(LOG_SIZE))
                lib.bpf_program__set_log_buf(prog, logs[-1], LOG_SIZE)
            rc = lib.bpf_object__load(self._obj)
            if rc != 0:
                verifier = "\n".join(b.value.decode(errors="replace") for b in logs
                                     if b.value)
                self.close()
                if not verifier and rc == -errno.EPERM:
                    raise BpfError(f"{name}: the kernel refused to load program "
                                   f"{self.prog_name}: {os.strerror(-rc)} (loading eBPF needs "
                                   f"CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)")
                raise BpfError(f"{name}: the kernel refused program {self.prog_name} "
                               f"({os.strerror(-rc)}); the verifier said:",
                               _tail(verifier or "\n".join(lines)))
            # every program of the object by name (the first is the default one)
            self.programs = {lib.bpf_program__name(p).decode(): lib.bpf_program__fd(p)
                             for p in progs}
            self.fd = self.programs[self.prog_name]
        finally:
            _messages.lines = None
        self.maps: dict[str, MapInfo] = {}
        m = lib.bpf_object__next_map(self._obj, None)
        while m:
            info = MapInfo(lib.bpf_map__name(m).decode(), lib.bpf_map__fd(m),
                           lib.bpf_map__type(m), lib.bpf_map__key_size(m),
                           lib.bpf_map__value_size(m), lib.bpf_map__max_entries(m),
                           lib.bpf_map__map_flags(m))
            if not info.name.startswith("."):          # .rodata, .bss: not tables
                self.maps[info.name] = info
            m = lib.bpf_object__next_map(self._obj, m)

    def test_run(self, frame: bytes, ifindex: int = 0, repeat: int = 1,
                 program: str | None = None, ctx_out: bytearray | None = None) \
            -> tuple[int, bytes, int]:
        """Run the program on ``frame`` as if received by ``ifindex`` (of the calling thread's
        namespace) without sending anything (BPF_PROG_TEST_RUN): (its verdict, the frame as
        it left it, mean nanoseconds per run).  ``ctx_out`` (SKB_CTX_SIZE bytes) receives the
        ``__sk_buff`` as the program left it (its ``mark`` at SKB_MARK)."""
        out = ctypes.create_string_buffer(len(frame) + 256)
        ctx = bytearray(SKB_CTX_SIZE)
        ctx[SKB_IFINDEX:SKB_IFINDEX + 4] = ifindex.to_bytes(4, "little")
        data_in = ctypes.create_string_buffer(frame, len(frame))
        ctx_in = (ctypes.c_char * SKB_CTX_SIZE).from_buffer(ctx)
        opts = _TestRunOpts(sz=ctypes.sizeof(_TestRunOpts), data_in=ctypes.addressof(data_in),
                            data_out=ctypes.addressof(out), data_size_in=len(frame),
                            data_size_out=len(out), ctx_in=ctypes.addressof(ctx_in),
                            ctx_size_in=SKB_CTX_SIZE, repeat=repeat)
        if ctx_out is not None:
            out_ctx = (ctypes.c_char * SKB_CTX_SIZE).from_buffer(ctx_out)
            opts.ctx_out, opts.ctx_size_out = ctypes.addressof(out_ctx), SKB_CTX_SIZE
        fd = self.fd if program is None else self.programs[program]
        rc = _libbpf().bpf_prog_test_run_opts(fd, byref(opts))
        if rc != 0:
            raise BpfError(f"{self.name}: test run: {os.strerror(-rc)}")
        return opts.retval, out.raw[:opts.data_size_out], opts.duration

    def run_stats(self, program: str | None = None) -> tuple[int, int]:
        """(runs, total nanoseconds) of a program as the kernel counts them (BPF_ENABLE_STATS:
        only while ``kernel.bpf_stats_enabled`` is 1, else both stay 0)."""
        fd = self.fd if program is None else self.programs[program]
        info = ctypes.create_string_buffer(PROG_INFO_SIZE)
        size = c_uint32(PROG_INFO_SIZE)
        if _libbpf().bpf_obj_get_info_by_fd(fd, info, byref(size)) != 0:
            return 0, 0
        ns, runs = struct.unpack_from("<QQ", info.raw, PROG_INFO_RUN_TIME)
        return runs, ns

    def close(self):
        if self._obj:
            _libbpf().bpf_object__close(self._obj)
            self._obj = None

    # -- maps --

    def update(self, map_name: str, key: bytes, value: bytes, flags: int = 0):
        m = self.maps[map_name]
        if len(key) != m.key_size or len(value) != m.value_size:
            raise BpfError(f"{self.name}: map {map_name}: key/value of {len(key)}/{len(value)} "
                           f"bytes, the map has {m.key_size}/{m.value_size}")
        rc = _libbpf().bpf_map_update_elem(m.fd, key, value, flags)
        if rc != 0:
            raise BpfError(f"{self.name}: map {map_name}: update: {os.strerror(-rc)}")

    def delete(self, map_name: str, key: bytes):
        """Remove ``key`` (gone already is no error)."""
        rc = _libbpf().bpf_map_delete_elem(self.maps[map_name].fd, key)
        if rc not in (0, -errno.ENOENT):
            raise BpfError(f"{self.name}: map {map_name}: delete: {os.strerror(-rc)}")

    def lookup(self, map_name: str, key: bytes) -> list[bytes] | None:
        """The value of ``key`` (one per possible CPU for per-CPU maps), None if absent."""
        m = self.maps[map_name]
        ncpu = _libbpf().libbpf_num_possible_cpus() if m.percpu else 1
        size = (m.value_size + 7) // 8 * 8 if m.percpu else m.value_size
        buf = ctypes.create_string_buffer(size * ncpu)
        if _libbpf().bpf_map_lookup_elem(m.fd, key, buf) != 0:
            return None
        raw = buf.raw
        return [raw[i * size:i * size + m.value_size] for i in range(ncpu)]

    def counters(self, names, map_name: str = "counters", limit: int = 1024) -> dict[str, int]:
        """A counters map (array keyed by index, 64-bit values, per CPU or not) summed over
        CPUs, by name (``names[i]`` for index i; an index beyond them by its number)."""
        out = {}
        for i, key in enumerate(self.keys(map_name, limit)):
            total = sum(int.from_bytes(v[:8], "little") for v in self.lookup(map_name, key) or [])
            out[names[i] if i < len(names) else str(i)] = total
        return out

    def keys(self, map_name: str, limit: int = 1024) -> list[bytes]:
        m = self.maps[map_name]
        if m.type in (2, 6):                              # arrays: every index exists
            return [i.to_bytes(4, "little") for i in range(min(m.max_entries, limit))]
        out, prev = [], None
        nxt = ctypes.create_string_buffer(m.key_size)
        while len(out) < limit:
            if _libbpf().bpf_map_get_next_key(m.fd, prev, nxt) != 0:
                break
            out.append(nxt.raw)
            prev = ctypes.create_string_buffer(nxt.raw, m.key_size)
        return out


def create_map(map_type: int, name: str, key_size: int, value_size: int,
               max_entries: int) -> int:
    """A new map of its own (the fd; the caller closes it), e.g. a ring buffer to put into
    an array of maps."""
    fd = _libbpf().bpf_map_create(map_type, name.encode()[:15], key_size, value_size,
                                  max_entries, None)
    if fd < 0:
        raise BpfError(f"cannot create BPF map {name}: {os.strerror(-fd)}")
    return fd


# -- attach (TC ingress, in a namespace) -----------------------------------------------------

@dataclass
class Attachment:
    ifname: str
    ifindex: int
    handle: int
    priority: int
    created_qdisc: bool              # the clsact qdisc is ours: removed on detach


def in_namespace(namespace: str | int, fn):
    """``fn()`` run in a thread that entered network namespace ``namespace`` (a name under
    /run/netns, or an open descriptor of a namespace)."""
    box: dict = {}

    def work():
        try:
            fd = namespace if isinstance(namespace, int) else \
                os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY)
            try:
                if _libbpf() and _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {namespace}: "
                                  f"{os.strerror(ctypes.get_errno())}")
            finally:
                if not isinstance(namespace, int):
                    os.close(fd)
            box["result"] = fn()
        except BaseException as e:              # handed to the caller
            box["error"] = e
    t = threading.Thread(target=work, name="vnet-bpf-netns")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def iface_facts(ifname: str) -> tuple[int, bytes, int]:
    """(ifindex, MAC, MTU) of ``ifname`` in the calling thread's namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16s16x", ifname.encode())
        mac = fcntl.ioctl(s, 0x8927, req)[18:24]                   # SIOCGIFHWADDR
        mtu = struct.unpack_from("i", fcntl.ioctl(s, 0x8921, req), 16)[0]   # SIOCGIFMTU
    return socket.if_nametoindex(ifname), mac, mtu


def tc_attach(prog_fd: int, ifindex: int, handle: int, priority: int,
              replace: bool = False, egress: bool = False) -> bool:
    """Attach at TC ingress (``egress``: egress) of ``ifindex`` (this thread's namespace);
    True if the clsact qdisc was created for it.  ``replace``: a filter already at
    ``handle``/``priority`` (ours, left by a killed run: a cls_bpf filter outlives its
    loader) is replaced.  Nothing is left attached when it raises."""
    lib = _libbpf()
    where = "egress" if egress else "ingress"
    hook = _TcHook(ctypes.sizeof(_TcHook), ifindex, BPF_TC_EGRESS if egress else BPF_TC_INGRESS,
                   0)
    rc = lib.bpf_tc_hook_create(byref(hook))
    if rc not in (0, -17):                                          # -EEXIST: someone's clsact
        raise BpfError(f"cannot add the clsact qdisc: {os.strerror(-rc)}")
    created = rc == 0
    opts = _TcOpts(ctypes.sizeof(_TcOpts), prog_fd, BPF_TC_F_REPLACE if replace else 0, 0,
                   handle, priority)
    rc = lib.bpf_tc_attach(byref(hook), byref(opts))
    if rc != 0:
        if created:
            _destroy_hook(ifindex)
        raise BpfError(f"cannot attach at TC {where}: {os.strerror(-rc)}")
    return created


def tc_detach(ifindex: int, handle: int, priority: int, created_qdisc: bool,
              egress: bool = False):
    lib = _libbpf()
    hook = _TcHook(ctypes.sizeof(_TcHook), ifindex, BPF_TC_EGRESS if egress else BPF_TC_INGRESS,
                   0)
    opts = _TcOpts(ctypes.sizeof(_TcOpts), 0, 0, 0, handle, priority)
    rc = lib.bpf_tc_detach(byref(hook), byref(opts))
    if rc not in (0, -2, -19):                       # gone already (ENOENT, ENODEV)
        raise BpfError(f"cannot detach from TC {'egress' if egress else 'ingress'}: "
                       f"{os.strerror(-rc)}")
    if created_qdisc:
        _destroy_hook(ifindex)


def _destroy_hook(ifindex: int):
    hook = _TcHook(ctypes.sizeof(_TcHook), ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS, 0)
    _libbpf().bpf_tc_hook_destroy(byref(hook))
