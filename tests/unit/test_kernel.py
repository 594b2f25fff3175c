"""Kernel instances (node/kernel.py, ops/ebpf.py): requests and refusals without the kernel;
with root and clang, the shipped VNP router against its Python reference (vnet_host.vnp.router)
on one corpus through BPF_PROG_TEST_RUN, and the verifier's refusals (unchecked packet access,
a store into a read-only table)."""
import os
import random
import shutil
import struct
import subprocess

import pytest

from vnet_host.vnp.router import Router
from vnet_host.vnp.wire import BROADCAST, DATA, HELLO, Packet, addr, frame, mac_of
from vnet_router.cli import vnetctl as ctl
from vnet_router.node import commands, kernel
from vnet_router.ops import ebpf

BAD = os.path.join(os.path.dirname(__file__), "..", "integration", "bpf", "bad_unchecked.bpf.c")
needs_bpf = pytest.mark.skipif(os.geteuid() != 0 or ebpf.available() is not None,
                               reason=f"needs root and {ebpf.available() or 'libbpf'}")


def _request(argv, rest=()):
    ns = ctl.parser().parse_args(argv)
    return commands.request_args(ns.cli, ns, list(rest))


def test_kernel_request_needs_no_command():
    kw = _request(["instance", "start", "k", "--vnet", "vnp", "--kernel", "vnp_router",
                   "--interface", "p1", "--interface", "p2", "--route", "3=p2"])
    assert kw["kernel"] == "vnp_router" and kw["interfaces"] == ["p1", "p2"]
    assert kw["routes"] == ["3=p2"] and kw["argv"] == []
    kw = _request(["instance", "start", "k", "--vnet", "v", "--kernel", "x/prog.c",
                   "--interface", "p1"])
    assert kw["kernel"] == os.path.abspath("x/prog.c")
    with pytest.raises(commands.UsageError, match="needs a command after --"):
        _request(["instance", "start", "k", "--vnet", "v"])


@pytest.mark.parametrize("name, ifaces, routes, msg", [
    ("../x", ["p1"], [], "bad instance name"),
    ("a/b", ["p1"], [], "no path separators"),
    ("k", [], [], "needs --interface"),
    ("k", ["nope"], [], "has no logical interface 'nope'"),
    ("k", ["s0"], [], "a kernel instance attaches to TAPs"),
    ("k", ["p1"], ["2=p2"], "bad route '2=p2'"),
    ("k", ["p1"], ["x=p1"], "bad route"),
    ("busy", ["p1"], [], "already runs"),
])
def test_check_refuses(name, ifaces, routes, msg):
    table = kernel.KernelInstances()
    with pytest.raises(kernel.KernelError, match=msg):
        table.check(name, "vnp", ifaces, routes, {"p1": "tap", "p2": "tap", "s0": "socket"},
                    user_names={"busy"})


def test_check_normalises():
    ifaces, routes = kernel.KernelInstances().check("k", "vnp", ["p1", "p2", "p1"], ["3=p2"],
                                                    {"p1": "tap", "p2": "tap"})
    assert ifaces == ["p1", "p2"] and routes == {3: "p2"}


def test_resolve_and_counter_names():
    path = kernel.resolve("vnp_router")
    assert path.endswith("vnet_router/bpf/vnp_router.bpf.c") and "vnp_router" in kernel.shipped()
    names = kernel.counter_names(path)
    assert names[:6] == ("forwarded", "hello", "no_route", "ttl_expired", "malformed",
                         "same_port")
    with pytest.raises(kernel.KernelError, match="no shipped kernel program 'nope'"):
        kernel.resolve("nope")
    with pytest.raises(kernel.KernelError, match="absolute path"):
        kernel.resolve("rel/prog.c")


# -- with the kernel ----------------------------------------------------------------------------

@pytest.fixture
def ports():
    """A namespace with two interfaces (a veth pair): the router's ports p1, p2."""
    ns = f"vnet-ut-bpf-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "p1", "type", "veth", "peer", "name",
                        "p2"], check=True)
        facts = ebpf.in_namespace(ns, lambda: {n: ebpf.iface_facts(n) for n in ("p1", "p2")})
        yield ns, facts
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def _corpus():
    a11, a21, a37, a99 = addr("1.1"), addr("2.1"), addr("3.7"), addr("9.9")
    good = [("p1", Packet(DATA, a21, a11, b"before hello").pack()),
            ("p1", Packet(HELLO, BROADCAST, a11).pack()),
            ("p2", Packet(HELLO, BROADCAST, a21).pack()),
            ("p1", Packet(DATA, a21, a11, b"request").pack()),
            ("p2", Packet(DATA, a11, a21, b"reply").pack()),
            ("p1", Packet(DATA, a37, a11, b"static route").pack()),
            ("p2", Packet(DATA, a37, a21, b"same port").pack()),
            ("p1", Packet(DATA, a99, a11, b"nowhere").pack()),
            ("p1", Packet(DATA, a21, a11, b"last hop", ttl=1).pack()),
            ("p1", Packet(DATA, a21, a11, b"two hops", ttl=2).pack()),
            ("p1", Packet(DATA, BROADCAST, a11, b"to all").pack()),
            ("p1", b"\x12\x10\x00"),                                     # short
            ("p1", b"\x22" + Packet(DATA, a21, a11).pack()[1:]),         # version 2
            ("p1", b"\x17" + Packet(DATA, a21, a11).pack()[1:]),         # type 7
            ("p1", Packet(DATA, a21, a11, b"x" * 8).pack()[:-3])]        # cut payload
    rnd = random.Random(14)
    for _ in range(200):
        dst = rnd.choice((a11, a21, a37, a99, BROADCAST))
        src = rnd.choice((a11, a21))
        raw = Packet(rnd.choice((DATA, DATA, HELLO)), dst, src,
                     bytes(rnd.randrange(256) for _ in range(rnd.randrange(40))),
                     ttl=rnd.randrange(4)).pack()
        if rnd.random() < 0.1:
            raw = raw[:rnd.randrange(len(raw))]
        good.append((rnd.choice(("p1", "p2")), raw))
    return good


@needs_bpf
def test_bpf_router_decides_as_the_python_router(ports):
    ns, facts = ports
    prog = ebpf.Program(ebpf.compile_c(kernel.resolve("vnp_router")), "vnp_router")
    try:
        ebpf.in_namespace(ns, lambda: kernel.fill_tables(prog, facts, {3: "p2"}))
        ref = Router({"p1": None, "p2": None})
        ref.fib.nets[3] = "p2"
        by_mac = {mac: name for name, (_, mac, _) in facts.items()}
        for inport, raw in _corpus():
            want = ref.handle(inport, raw)
            # a node's frames come from its own MAC; the router learns it from HELLO
            src = mac_of(struct.unpack_from("!I", raw, 8)[0]) if len(raw) >= 12 else b"\x02" * 6
            verdict, out, _ = ebpf.in_namespace(
                ns, lambda: prog.test_run(frame(raw, src), facts[inport][0]))
            if want is None:
                assert verdict == 2, (inport, raw.hex(), verdict)           # TC_ACT_SHOT
                continue
            assert verdict == 7, (inport, raw.hex(), verdict)               # TC_ACT_REDIRECT
            dst = struct.unpack_from("!I", raw, 4)[0]
            assert by_mac[out[6:12]] == want[0]                             # out port's MAC
            assert out[0:6] == (mac_of(dst) if dst in ref.fib.hosts else b"\xff" * 6)
            assert out[12:14] == b"\x88\xb6" and out[14:] == want[1]        # TTL - 1
        inst = kernel.KernelInstance("t", "vnp", ns, "", prog, {}, {},
                                     kernel.counter_names(kernel.resolve("vnp_router")))
        got = inst.counters()
        for name, n in ref.counters.items():
            if name != "send_error":
                assert got[name] == n, (name, got, ref.counters)
        assert got["forwarded"] >= 3 and got["malformed"] >= 4
    finally:
        prog.close()


@needs_bpf
def test_verifier_refusals(tmp_path):
    with pytest.raises(ebpf.BpfError, match="invalid access to packet") as e:
        ebpf.Program(ebpf.compile_c(os.path.abspath(BAD)), "bad")
    assert "the verifier said" in str(e.value) and "processed" in e.value.log
    # a store into a read-only table (BPF_F_RDONLY_PROG) is refused by the verifier
    src = tmp_path / "store.bpf.c"
    src.write_text(_PROG % "__uint(map_flags, BPF_F_RDONLY_PROG);" + _STORE)
    with pytest.raises(ebpf.BpfError, match="write into map forbidden"):
        ebpf.Program(ebpf.compile_c(str(src)), "store")
    # and a table declared writable is refused before anything is attached
    src = tmp_path / "writable.bpf.c"
    src.write_text(_PROG % "" + _STORE.replace("*v = 1", "(void)v"))
    table = kernel.KernelInstances()
    with pytest.raises(kernel.KernelError, match="must declare it read-only"):
        table.start("w", "vnp", "no-such-namespace", str(src), ["p1"], {})
    assert table.instances == {} and table.stopped["refused"] == 1


_PROG = """#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
struct {
\t__uint(type, BPF_MAP_TYPE_HASH);
\t__uint(max_entries, 4);
\t__type(key, __u32);
\t__type(value, __u64);
\t%s
} vnet_ports SEC(".maps");
"""
_STORE = """
SEC("tc")
int store(struct __sk_buff *skb)
{
\t__u32 k = skb->ifindex;
\t__u64 *v = bpf_map_lookup_elem(&vnet_ports, &k);
\tif (v)
\t\t*v = 1;
\treturn TC_ACT_OK;
}
char LICENSE[] SEC("license") = "Dual MIT/GPL";
"""


def test_clang_is_there_when_libbpf_is():
    """run.sh installs clang, llvm and libbpf-dev: a machine set up by it can build programs."""
    if shutil.which("clang") is None:
        pytest.skip("clang missing (run.sh installs it)")
    assert ebpf.available() is None


def _tc_state(ns) -> str:
    out = []
    for dev in ("p1", "p2"):
        for what in (["qdisc", "show", "dev", dev], ["filter", "show", "dev", dev, "ingress"]):
            out.append(subprocess.run(["tc", "-n", ns, *what], capture_output=True, text=True,
                                      check=True).stdout)
    return "\n".join(out)


@needs_bpf
def test_failed_attachment_is_rolled_back(ports):
    """p2 already has a filter of another kind where ours goes: the instance is refused, p1's
    attachment and the qdisc it added are removed again, p2's own qdisc and filter stay."""
    ns, _ = ports
    for cmd in (["qdisc", "add", "dev", "p2", "clsact"],
                ["filter", "add", "dev", "p2", "ingress", "pref", str(kernel.PRIORITY),
                 "protocol", "all", "u32", "match", "u32", "0", "0", "flowid", "1:1"]):
        subprocess.run(["tc", "-n", ns, *cmd], check=True)
    before = _tc_state(ns)
    table = kernel.KernelInstances()
    with pytest.raises(kernel.KernelError, match="p2: cannot attach at TC ingress"):
        table.start("k", "vnp", ns, "vnp_router", ["p1", "p2"], {})
    assert _tc_state(ns) == before and "u32" in before
    assert table.instances == {}
    inst = table.start("k", "vnp", ns, "vnp_router", ["p1"], {})
    assert "vnp_router" in _tc_state(ns) and inst.interfaces["p1"].created_qdisc
    table.stop("k")
    assert _tc_state(ns) == before
