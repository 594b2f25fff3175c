"""The system-call filter of protocol instances (seccomp BPF, compiled with libseccomp).

A protocol instance needs sockets of its vNet (IPv4/IPv6, Unix -- the daemon's control
socket and library endpoints --, netlink for routes), files in its working directory, timers,
processes and threads.  It never needs to change the system it runs on, so the filter
refuses (EPERM unless said otherwise), whatever capabilities the instance was granted:

* mounts and the new mount API, ``pivot_root``, ``chroot``;
* new namespaces and entering others: ``unshare``, ``setns``, ``clone`` with a ``CLONE_NEW*``
  flag; ``clone3`` gets ENOSYS (its flags are behind a pointer seccomp cannot read; the C
  library falls back to ``clone``);
* other processes' memory: ``ptrace``, ``process_vm_readv/writev``, ``kcmp``;
* the kernel: module loading, ``kexec``, ``bpf``, ``perf_event_open``, ``reboot``, ``swapon``,
  ``acct``, ``quotactl``, the clock (``settimeofday``, ``clock_settime``, ``adjtimex``),
  ``syslog``, the keyring, ``iopl``/``ioperm``, ``userfaultfd``, ``io_uring`` (its requests
  bypass this filter), ``open_by_handle_at``;
* sockets other than AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK (EAFNOSUPPORT); AF_PACKET
  only for an instance granted ``net_raw`` (a user-space protocol on its own TAP): the
  instance's network namespace holds its vNet's interfaces only, so raw access can never
  reach another vNet's or the host's interfaces;
* the ``TIOCSTI``/``TIOCLINUX`` ioctls (typing into a terminal).

This module is the one user of libseccomp (Debian ``libseccomp2``, through ctypes: the
daemon's Python need not be Debian's, so ``python3-seccomp`` is not used).  It compiles the
filter to BPF; bubblewrap installs it (``--seccomp FD``) right before the instance's command.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import socket

ALLOW = 0x7FFF0000


def _errno(e: int) -> int:
    return 0x00050000 | (e & 0xFFFF)


EQ, MASKED_EQ, GE = 4, 7, 5          # enum scmp_compare

DENY = (
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr",
    "unshare", "setns",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
    "perf_event_open", "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "syslog",
    "add_key", "request_key", "keyctl", "iopl", "ioperm", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "uselib", "vhangup",
    "nfsservctl", "fanotify_init",
)
CLONE_NEW = (0x00020000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
             0x02000000)     # NS, UTS, IPC, USER, PID, NET, CGROUP
FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)
AF_MAX = 64
TIOCSTI, TIOCLINUX = 0x5412, 0x541C


class SeccompError(RuntimeError):
    pass


class _Arg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


@functools.cache
def _lib():
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise SeccompError(f"libseccomp not found ({e}); install Debian's libseccomp2") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_Arg)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def rules(packet: bool) -> list[tuple[str, int, list[tuple[int, int, int, int]]]]:
    """(syscall, action, [(arg, op, a, b) ...]) of the filter; ``packet``: AF_PACKET allowed."""
    out = [(name, _errno(errno.EPERM), []) for name in DENY]
    out.append(("clone3", _errno(errno.ENOSYS), []))
    out += [("clone", _errno(errno.EPERM), [(0, MASKED_EQ, f, f)]) for f in CLONE_NEW]
    allowed = FAMILIES + ((socket.AF_PACKET,) if packet else ())
    for call in ("socket", "socketpair"):
        out += [(call, _errno(errno.EAFNOSUPPORT), [(0, EQ, af, 0)])
                for af in range(AF_MAX) if af not in allowed]
        out.append((call, _errno(errno.EAFNOSUPPORT), [(0, GE, AF_MAX, 0)]))
    out += [("ioctl", _errno(errno.EPERM), [(1, MASKED_EQ, 0xFFFFFFFF, req)])
            for req in (TIOCSTI, TIOCLINUX)]
    return out


@functools.cache
def compile_filter(packet: bool = False) -> bytes:
    """The filter as BPF (``struct sock_filter`` array) for the native architecture; other
    architectures' system calls (e.g. x32, i386 on x86_64) kill the process."""
    lib = _lib()
    ctx = lib.seccomp_init(ALLOW)
    if not ctx:
        raise SeccompError("seccomp_init failed")
    try:
        for name, action, args in rules(packet):
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                continue                     # not on this architecture
            arr = (_Arg * max(1, len(args)))(*[_Arg(*a) for a in args])
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(args), arr)
            if rc < 0:
                raise SeccompError(f"seccomp rule for {name}: {os.strerror(-rc)}")
        fd = os.memfd_create("vnet-seccomp-export", 0)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise SeccompError(f"seccomp_export_bpf: {os.strerror(-rc)}")
            return os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def filter_fd(packet: bool = False) -> int:
    """A readable descriptor holding the compiled filter (for ``bwrap --seccomp FD``);
    the caller passes it to the child and closes it."""
    fd = os.memfd_create("vnet-seccomp", 0)
    os.write(fd, compile_filter(packet))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
