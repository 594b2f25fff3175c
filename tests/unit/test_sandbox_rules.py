"""What an instance may be called and which system calls its filter refuses (no daemon: the
integration tests in tests/integration/test_containment.py run real instances)."""
import errno
import os
import socket
import subprocess
import sys

import pytest

from vnet_host import seccomp
from vnet_host.sandbox import SandboxError, check_dest, check_name


@pytest.mark.parametrize("name", ["bird", "ospf-1", "a", "r1.v2_x", "9", "x" * 64])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "../../victim", "/abs", "a/b", ".hidden", "..", "a..b",
                                  "-rf", "x" * 65, "bad name", "tab\t", "é", None, 3])
def test_bad_names_are_refused_naming_the_input(name):
    with pytest.raises(SandboxError, match="bad instance name") as e:
        check_name(name)
    assert repr(name) in str(e.value)


@pytest.mark.parametrize("dst", ["bird.conf", "etc/bird/bird.conf", ".config", "a..b"])
def test_good_file_destinations(dst):
    assert check_dest(dst) == dst


@pytest.mark.parametrize("dst, msg", [
    ("/etc/passwd", "an absolute path"), ("../x", "not inside"), ("a/../../x", "not inside"),
    ("a//b", "not inside"), ("./x", "not inside"), ("x/", "not inside"), ("a\0b", "not inside"),
    ("output.log", "the daemon's own file"), ("", "empty"), (None, "empty"),
    ("/".join("a" * 9), "8 parts")])
def test_bad_file_destinations_are_refused_naming_the_input(dst, msg):
    with pytest.raises(SandboxError, match=msg) as e:
        check_dest(dst)
    if dst and msg != "8 parts":
        assert repr(dst) in str(e.value)


def test_rules_refuse_what_an_instance_does_not_need():
    by = {}
    for call, action, args in seccomp.rules(packet=False):
        by.setdefault(call, []).append((action, args))
    for call in ("mount", "unshare", "setns", "ptrace", "bpf", "init_module", "kexec_load"):
        assert by[call] == [(seccomp._errno(errno.EPERM), [])], call
    families = {args[0][2] for _, args in by["socket"] if args[0][1] == seccomp.EQ}
    assert socket.AF_PACKET in families and socket.AF_ALG in families
    assert not families & {socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK}
    with_packet = {a[0][2] for c, _, a in seccomp.rules(packet=True)
                   if c == "socket" and a[0][1] == seccomp.EQ}
    assert socket.AF_PACKET not in with_packet


def test_filter_compiles_and_refuses_in_a_child():
    prog = seccomp.compile_filter(False)
    assert prog and len(prog) % 8 == 0          # struct sock_filter: 8 bytes each
    code = ("import ctypes, os, socket, struct, sys\n"
            "prog = sys.stdin.buffer.read()\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "buf = ctypes.create_string_buffer(prog)\n"
            "fprog = struct.pack('HxxxxxxQ', len(prog) // 8, ctypes.addressof(buf))\n"
            "assert libc.prctl(38, 1, 0, 0, 0) == 0\n"            # PR_SET_NO_NEW_PRIVS
            "assert libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) == 0\n"  # SECCOMP_MODE_FILTER
            "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()\n"
            "for fam in (socket.AF_ALG, socket.AF_PACKET):\n"
            "    try:\n"
            "        socket.socket(fam, socket.SOCK_RAW)\n"
            "        print('allowed', fam)\n"
            "    except OSError as e:\n"
            "        print('refused', fam, e.errno)\n"
            "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n")   # CLONE_NEWUSER
    r = subprocess.run([sys.executable, "-c", code], input=prog, capture_output=True,
                       timeout=30)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert f"refused {socket.AF_ALG} {errno.EAFNOSUPPORT}" in out, out
    assert f"refused {socket.AF_PACKET} {errno.EAFNOSUPPORT}" in out, out
    assert f"unshare -1 {errno.EPERM}" in out, out
