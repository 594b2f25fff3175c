"""Everything the project does through netlink: namespaces, links, addresses.

The only module that imports pyroute2 (the router daemon, the host daemon and the lab all call
these functions), so swapping the library touches one place.  Functions take plain names;
``ns=None`` means the caller's own network namespace.

A named namespace is a bind mount on ``/run/netns/NAME``.  A process started by ``ip netns
exec`` (or ``unshare --mount``) runs in a mount namespace of its own: a mount it makes there
is not seen by the host, where ``/run/netns/NAME`` stays an empty file (``ip netns exec
NAME`` then fails with "Invalid argument").  So ``netns_create`` also mounts
the namespace in the mount namespace of the nearest ancestor process that sees the same
``/run/netns`` directory through another mount namespace (``outer_mount_ns``); removing the
file (``netns_remove``) takes that mount with it.  ``netns_hidden`` says why it could not.
"""
from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import signal
import threading

from pyroute2 import IPRoute, NetNS, config as _pyroute2_config, netns
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.process import ChildProcess

# NetNS forks a short-lived child that enters the namespace and hands back a socket, then
# stops it with SIGTERM.  Without this the child runs the *caller's* SIGTERM handler on a
# copy of the caller's stack -- and the daemon's or the lab's clean-up (removing namespaces!)
# ran in that child.  With it, the child resets SIGTERM/SIGINT to their defaults first.
_pyroute2_config.disable_mp_signal = True

NETNS_DIR = "/run/netns"


class LinkError(RuntimeError):
    pass


@contextlib.contextmanager
def _forking():
    """Ctrl-C held back while pyroute2 forks (NetNS, netns.create, ChildProcess), then raised.

    ``os.fork`` runs the at-fork handlers, logging's among them: the parent takes the logging
    lock before the fork and releases it after.  A KeyboardInterrupt raised in that handler,
    before the release, left the lock held by the main thread for good, and the next fork of
    any other thread (the lab's spawner, whose preexec_fn runs the same handlers) waited for
    it while the main thread waited for the spawner: `vnet-lab up` hung on a Ctrl-C while it
    built (tests/integration/test_lab_procs.py, 5 times in 25).  Only where SIGINT raises
    KeyboardInterrupt (Python's default handler) in the main thread; a daemon's own handler
    is left alone."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if held:
            raise KeyboardInterrupt


@contextlib.contextmanager
def _ipr(ns: str | None = None):
    if ns:
        with _forking():
            ipr = NetNS(ns)
    else:
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


# -- namespaces -------------------------------------------------------------------------------

def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def netns_list() -> list[str]:
    return sorted(netns.listnetns())


def netns_create(name: str) -> None:
    """Create namespace ``name`` (loopback up), seen from the host however this process was
    started (module docstring).  LinkError, and nothing left, if it cannot be."""
    with _forking():
        netns.create(name)
    try:
        _lo_up(name)
        pid = outer_mount_ns()
        if pid is not None:
            try:
                _in_child(_mount_outside, pid, name)
            except OSError as e:
                raise LinkError(f"namespace {name}: cannot mount it where the host sees it "
                                f"(the mount namespace of pid {pid}): {e}") from e
    except BaseException:
        netns_remove(name)
        raise


def _lo_up(name: str) -> None:
    with _ipr(name) as ipr:
        lo = ipr.link_lookup(ifname="lo")
        if lo:
            ipr.link("set", index=lo[0], state="up")


def netns_remove(name: str) -> None:
    """Unmount and remove ``/run/netns/NAME``.  Every mount of it in this mount namespace goes
    (one may have come back from the host's by propagation); unlinking the file then detaches
    its mounts in the other mount namespaces (the host's, when this process made one there)."""
    path = os.path.join(NETNS_DIR, name)
    if not os.path.lexists(path):
        return
    for _ in range(8):
        if _libc().umount2(path.encode(), _MNT_DETACH) != 0:
            break
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- the host's view of the namespaces (module docstring) ------------------------------------

_CLONE_NEWNS = 0x00020000
_MS_BIND, _MS_REC, _MS_SHARED = 0x1000, 0x4000, 1 << 20
_MNT_DETACH = 2
_CAP_SYS_CHROOT, _CAP_SYS_ADMIN = 18, 21


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _mnt_ns(pid) -> int:
    return os.stat(f"/proc/{pid}/ns/mnt").st_ino


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("PPid:"):
                return int(line.split()[1])
    return 0


def outer_mount_ns() -> int | None:
    """The pid of the nearest ancestor that runs in another mount namespace and sees the same
    ``/run/netns`` directory (so it would see our namespaces' files, not their mounts): the
    shell that ran ``ip netns exec``.  None when this process shares its ancestors' mount
    namespace, or when the other one has a ``/run`` of its own (a container's): nothing to do
    then.  Ancestors this process may not inspect are passed over (the kernel's ptrace check:
    e.g. pid 1 for a process whose capabilities are not a superset of its own)."""
    path = NETNS_DIR if os.path.isdir(NETNS_DIR) else os.path.dirname(NETNS_DIR)
    try:
        own, here = _mnt_ns("self"), os.stat(path)
        pid = os.getpid()
        while pid > 1:
            pid = _parent(pid)
            if pid <= 0:
                return None
            try:
                if _mnt_ns(pid) == own:
                    continue
                there = os.stat(f"/proc/{pid}/root{path}")
            except OSError:
                continue
            return pid if (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino) else None
    except OSError:
        pass
    return None


def _cap_eff() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def netns_hidden() -> str | None:
    """Why the namespaces this process creates would not be seen from the host (its mount
    namespace is private and it may not mount them in the host's), or None if they would."""
    pid = outer_mount_ns()
    if pid is None:
        return None
    missing = [n for n, bit in (("CAP_SYS_ADMIN", _CAP_SYS_ADMIN),
                                ("CAP_SYS_CHROOT", _CAP_SYS_CHROOT)) if not _cap_eff() >> bit & 1]
    if missing:
        return (f"it has no {' and '.join(missing)} to enter the mount namespace of pid {pid}, "
                f"where the host sees {NETNS_DIR}")
    try:
        os.close(os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY))
    except OSError as e:
        return f"it cannot open the mount namespace of pid {pid}: {e.strerror}"
    return None


def _in_child(fn, *args) -> None:
    """Run ``fn(*args)`` in a forked child (pyroute2's, as netns.create does): a mount namespace
    can only be entered by a process with a single thread."""
    with _forking():
        proc = ChildProcess(target=fn, args=list(args))
        proc.run()
        try:
            proc.communicate()
        finally:
            proc.stop(kill=True)
            proc.close()


def _mount_outside(pid: int, name: str) -> None:
    """In a forked child: mount namespace ``name`` (as this process sees it) on
    ``/run/netns/NAME`` in the mount namespace of ``pid``, ``/run/netns`` shared there as
    ``ip netns add`` makes it.  Nothing to do if it is there already (shared propagation)."""
    libc = _libc()
    path = os.path.join(NETNS_DIR, name)
    ns = os.open(path, os.O_RDONLY)
    mnt = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
    if libc.setns(mnt, _CLONE_NEWNS) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")
    want = os.fstat(ns)
    os.makedirs(NETNS_DIR, exist_ok=True)
    d = NETNS_DIR.encode()
    if libc.mount(b"", d, b"none", _MS_SHARED | _MS_REC, None) != 0:
        if libc.mount(d, d, b"none", _MS_BIND | _MS_REC, None) != 0 or \
                libc.mount(b"", d, b"none", _MS_SHARED | _MS_REC, None) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"making {NETNS_DIR} a shared mount: {os.strerror(e)}")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        st = os.stat(path)
    if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
        return
    if st.st_dev != os.stat(NETNS_DIR).st_dev:
        raise OSError(17, f"{path} is another namespace there")
    if libc.mount(f"/proc/self/fd/{ns}".encode(), path.encode(), b"none", _MS_BIND, None) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount: {os.strerror(e)}")


def can_enter_namespaces() -> bool:
    """True if this process may create and enter network namespaces (CAP_SYS_ADMIN).  A
    daemon run with only CAP_NET_ADMIN + CAP_NET_RAW (the systemd units) may not: a privileged
    helper step (``vnet-router --prepare / --configure``) does that part."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 21))
    except OSError:
        pass
    return os.geteuid() == 0


# -- links ------------------------------------------------------------------------------------

def link_index(ifname: str, ns: str | None = None) -> int | None:
    with _ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        return found[0] if found else None


def link_info(ifname: str, ns: str | None = None) -> dict | None:
    """{'index', 'mac' (bytes), 'mtu', 'up'} of a link, or None if it does not exist."""
    with _ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        msg = ipr.get_links(found[0])[0]
        mac = msg.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00"
        return {"index": found[0], "mac": bytes.fromhex(mac.replace(":", "")),
                "mtu": msg.get_attr("IFLA_MTU"), "up": bool(msg["flags"] & 1)}


def route_mtu(dst: str, src: str | None = None, ns: str | None = None) -> int | None:
    """MTU of the route from ``src`` towards ``dst``: the route's own (an ``mtu`` metric, or a
    path MTU the kernel learned) or else its output device's; None if there is no route."""
    with _ipr(ns) as ipr:
        try:
            msg = ipr.route("get", dst=dst, **({"src": src} if src else {}))[0]
        except (NetlinkError, IndexError):
            return None
        metrics = msg.get_attr("RTA_METRICS")
        mtu = metrics.get_attr("RTAX_MTU") if metrics is not None else None
        if mtu:
            return mtu
        oif = msg.get_attr("RTA_OIF")
        if oif is None:
            return None
        links = ipr.get_links(oif)
        return links[0].get_attr("IFLA_MTU") if links else None


def link_by_alias(alias: str, ns: str | None = None) -> str | None:
    """Name of the link whose IFLA_IFALIAS is ``alias``, or None."""
    with _ipr(ns) as ipr:
        for m in ipr.get_links():
            if m.get_attr("IFLA_IFALIAS") == alias:
                return m.get_attr("IFLA_IFNAME")
    return None


def link_names(ns: str | None = None) -> list[str]:
    with _ipr(ns) as ipr:
        return [m.get_attr("IFLA_IFNAME") for m in ipr.get_links()]


def link_set(ifname: str, ns: str | None = None, *, up: bool | None = None, mtu: int | None = None,
             mac: str | None = None, rename: str | None = None, alias: str | None = None,
             netns_to: str | None = None) -> None:
    """Change a link; ``netns_to`` moves it into another namespace (applied last)."""
    with _ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise LinkError(f"no interface {ifname!r} in namespace {ns or '(own)'}")
        idx = found[0]
        try:
            if mtu is not None:
                ipr.link("set", index=idx, mtu=mtu)
            if mac is not None:
                ipr.link("set", index=idx, address=mac)
            if rename is not None:
                ipr.link("set", index=idx, ifname=rename)
            if alias is not None:
                ipr.link("set", index=idx, ifalias=alias)
            if up is not None:
                ipr.link("set", index=idx, state="up" if up else "down")
            if netns_to is not None:
                ipr.link("set", index=idx, net_ns_fd=netns_to)
        except NetlinkError as e:
            raise LinkError(f"cannot change {ifname}: {e}") from None


def link_delete(ifname: str, ns: str | None = None) -> bool:
    with _ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        try:
            ipr.link("del", index=found[0])
        except NetlinkError:
            return False
        return True


def addr_add(ifname: str, cidr: str, ns: str | None = None) -> None:
    iface = ipaddress.ip_interface(cidr)
    with _ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise LinkError(f"no interface {ifname!r} in namespace {ns or '(own)'}")
        kw = {}
        if iface.version == 6:
            kw["IFA_FLAGS"] = 0x02            # IFA_F_NODAD: usable at once in labs and tests
        try:
            ipr.addr("add", index=found[0], address=str(iface.ip),
                     prefixlen=iface.network.prefixlen, **kw)
        except NetlinkError as e:
            if e.code != 17:          # EEXIST
                raise LinkError(f"cannot add {cidr} to {ifname}: {e}") from None


def addr_del(ifname: str, cidr: str, ns: str | None = None) -> None:
    iface = ipaddress.ip_interface(cidr)
    with _ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise LinkError(f"no interface {ifname!r} in namespace {ns or '(own)'}")
        try:
            ipr.addr("del", index=found[0], address=str(iface.ip),
                     prefixlen=iface.network.prefixlen)
        except NetlinkError as e:
            if e.code != 99:          # EADDRNOTAVAIL: already gone
                raise LinkError(f"cannot remove {cidr} from {ifname}: {e}") from None


def veth_create(name: str, peer: str, ns: str | None = None, peer_ns: str | None = None,
                mac: str | None = None, peer_mac: str | None = None, mtu: int | None = None) -> None:
    """Create a veth pair in the caller's namespace, then move each end where it belongs."""
    with _ipr() as ipr:
        try:
            ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer})
        except NetlinkError as e:
            raise LinkError(f"cannot create veth {name}/{peer}: {e}") from None
    for ifname, target, addr in ((name, ns, mac), (peer, peer_ns, peer_mac)):
        link_set(ifname, mtu=mtu, mac=addr)
        if target:
            link_set(ifname, netns_to=target)
        link_set(ifname, target, up=True)


def bridge_create(name: str, ns: str | None = None) -> None:
    with _ipr(ns) as ipr:
        try:
            ipr.link("add", ifname=name, kind="bridge")
        except NetlinkError as e:
            raise LinkError(f"cannot create bridge {name}: {e}") from None
        idx = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=idx, state="up")


def bridge_attach(ifname: str, bridge: str, ns: str | None = None) -> None:
    with _ipr(ns) as ipr:
        br = ipr.link_lookup(ifname=bridge)[0]
        idx = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=idx, master=br, state="up")


# -- lab helpers (added for vnet_router.lab) --------------------------------------------------

def veth_create_between(name: str, ns: str, peer: str, peer_ns: str, *, mac: str | None = None,
                        peer_mac: str | None = None, mtu: int | None = None) -> None:
    """Create a veth pair directly inside namespace ``ns`` with its peer in ``peer_ns``.

    Unlike :func:`veth_create` no name is ever used in the caller's namespace, so ends may be
    called ``eth0`` without clashing with the host's own interfaces.  Both ends end up up.
    """
    with _ipr(ns) as ipr:
        try:
            ipr.link("add", ifname=name, kind="veth",
                     peer={"ifname": peer, "net_ns_fd": peer_ns})
        except NetlinkError as e:
            raise LinkError(f"cannot create veth {ns}:{name} <-> {peer_ns}:{peer}: {e}") from None
    for ifname, where, addr in ((name, ns, mac), (peer, peer_ns, peer_mac)):
        link_set(ifname, where, mtu=mtu, mac=addr)
        link_set(ifname, where, up=True)


def addr_list(ifname: str, ns: str | None = None) -> list[str]:
    """Addresses of an interface as CIDR strings ('10.0.0.1/24'), [] if it has none."""
    with _ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise LinkError(f"no interface {ifname!r} in namespace {ns or '(own)'}")
        return [f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}"
                for m in ipr.get_addr(index=found[0])]


def bridge_ports(bridge: str, ns: str | None = None) -> list[str]:
    """Names of the interfaces enslaved to ``bridge``."""
    with _ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            raise LinkError(f"no bridge {bridge!r} in namespace {ns or '(own)'}")
        return sorted(m.get_attr("IFLA_IFNAME") for m in ipr.get_links()
                      if m.get_attr("IFLA_MASTER") == found[0])


# -- traffic control: HTB for kernel shaping of output virtual links ---------------------------
# The root HTB qdisc (default 0 = unclassified traffic goes out unshaped, so legacy traffic is
# untouched) gets one leaf class MAJOR:MINOR per output virtual link.  Frames are put in their
# class by the sending socket's SO_PRIORITY (= HTB_MAJOR | MINOR): HTB matches skb->priority
# against its class ids before any filter, so no tc filter is needed.  The major number is the
# node's marker: a root HTB with handle 564e: ("VN") is one a vnet node made -- a node started
# after a crash takes it over instead of treating it as someone else's.

HTB_MAJOR = 0x564E0000
_TC_H_ROOT = 0xFFFFFFFF
_FOREIGN_OK = ("noqueue", "pfifo_fast", "fq_codel", "mq", "pfifo", "fq", None)


def htb_handle(minor: int | None = None) -> str:
    """The tc spelling of our qdisc (``564e:``) or of class ``minor`` (``564e:2``)."""
    return f"{HTB_MAJOR >> 16:x}:" + ("" if minor is None else f"{minor:x}")


def htb_init(ifname: str, ns: str | None = None) -> bool:
    """Put a root HTB qdisc on ``ifname``.  False (nothing changed) if another non-default
    root qdisc is there: that interface is not ours to shape.  Our own (the marker handle,
    left by a node that was killed) is replaced by a fresh one, without its old classes."""
    with _ipr(ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        for q in ipr.get_qdiscs(index=idx):
            if q["parent"] != _TC_H_ROOT or q.get_attr("TCA_KIND") in _FOREIGN_OK:
                continue
            if q.get_attr("TCA_KIND") != "htb" or q["handle"] != HTB_MAJOR:
                return False
            try:
                ipr.tc("del", index=idx, handle=HTB_MAJOR, parent=_TC_H_ROOT)
            except NetlinkError as e:
                raise LinkError(f"cannot replace the HTB qdisc a previous run left on "
                                f"{ifname}: {e}") from None
        try:
            ipr.tc("add", "htb", idx, HTB_MAJOR, default=0)
        except NetlinkError as e:
            raise LinkError(f"cannot add an HTB qdisc to {ifname}: {e}") from None
        return True


def htb_class_set(ifname: str, minor: int, rate_bps: int, burst: int,
                  ns: str | None = None) -> None:
    """Create or change leaf class MAJOR:MINOR to ``rate_bps`` (rate = ceil)."""
    with _ipr(ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        handle = HTB_MAJOR | minor
        exists = any(c["handle"] == handle for c in ipr.get_classes(index=idx))
        try:
            ipr.tc("change-class" if exists else "add-class", "htb", idx, handle,
                   parent=HTB_MAJOR, rate=f"{rate_bps}bit", ceil=f"{rate_bps}bit", burst=burst)
        except NetlinkError as e:
            raise LinkError(f"cannot set HTB class {htb_handle(minor)} on {ifname}: {e}") from None


def htb_class_delete(ifname: str, minor: int, ns: str | None = None) -> None:
    with _ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if found:
            try:
                ipr.tc("del-class", index=found[0], handle=HTB_MAJOR | minor, parent=HTB_MAJOR)
            except NetlinkError:
                pass


def htb_classes(ifname: str, ns: str | None = None) -> dict[int, dict]:
    """minor -> {'rate' (bit/s), 'bytes', 'packets', 'drops', 'backlog'} of our HTB classes."""
    out = {}
    with _ipr(ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)[0]
        for c in ipr.get_classes(index=idx):
            if c["handle"] & 0xFFFF0000 != HTB_MAJOR:
                continue
            opts = c.get_attr("TCA_OPTIONS")
            params = opts.get_attr("TCA_HTB_PARMS") if opts else None
            stats = c.get_attr("TCA_STATS2")
            basic = stats.get_attr("TCA_STATS_BASIC") if stats else {}
            queue = stats.get_attr("TCA_STATS_QUEUE") if stats else {}
            rate = params["rate"] * 8 if params else 0
            out[c["handle"] & 0xFFFF] = {"rate": rate, "bytes": basic.get("bytes", 0),
                                         "packets": basic.get("packets", 0),
                                         "drops": queue.get("drops", 0),
                                         "backlog": queue.get("backlog", 0)}
    return out


def htb_remove(ifname: str, ns: str | None = None) -> bool:
    """Remove our root HTB qdisc (the marker handle) from ``ifname``; never anyone else's.
    True if there was one."""
    with _ipr(ns) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        if not any(q["parent"] == _TC_H_ROOT and q["handle"] == HTB_MAJOR
                   and q.get_attr("TCA_KIND") == "htb" for q in ipr.get_qdiscs(index=found[0])):
            return False
        try:
            ipr.tc("del", index=found[0], handle=HTB_MAJOR, parent=_TC_H_ROOT)
        except NetlinkError:
            return False
        return True


_CLONE_NEWNET = 0x40000000


def sysctl_set(ns: str, settings: dict[str, object], missing_ok: bool = False) -> None:
    """Write ``settings`` (paths under /proc/sys, e.g. ``net/ipv4/conf/blue0/arp_notify``) in
    named namespace ``ns``; ``missing_ok``: skip a setting the kernel does not have there
    (IPv6 off).  /proc/sys/net answers for the namespace of the thread that opens it, so a
    short-lived thread enters ``ns`` (setns is per thread) and writes them there."""
    errors: list[BaseException] = []

    def work():
        try:
            fd = os.open(f"{NETNS_DIR}/{ns}", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            finally:
                os.close(fd)
            for path, value in settings.items():
                try:
                    with open(f"/proc/sys/{path}", "w") as f:
                        f.write(f"{value}\n")
                except FileNotFoundError:
                    if not missing_ok:
                        raise
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=work, name="vnet-sysctl")
    t.start()
    t.join()
    if errors:
        raise LinkError(f"{ns}: sysctl {', '.join(settings)}: {errors[0]}")
