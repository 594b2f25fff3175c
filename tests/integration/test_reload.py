"""Live reconfiguration: a reload adds a virtual link and re-rates another while a ping flood
runs over a third -- which loses nothing; a broken file changes nothing and names the key."""
import ctypes
import json
import os
import struct
import subprocess

import pytest

from vnet_router.model.toml import dump_toml, parse_toml
from vnet_router.node.api import ControlError

import topo as t
from vnet_router.datapath.classifier import RX_QUEUES
from harness import eventually, vnetctl

pytestmark = pytest.mark.root


def _node(name, peer, octet, a_in, a_out, c_in, c_out):
    return t.node(
        name, t.p2p("p", "e0", f"{peer}:e0"), t.vnet("blue", 1), t.vnet("red", 2),
        t.iface("blue", "a0", "p", a_in, a_out, addresses=[f"10.0.1.{octet}/24"]),
        t.iface("red", "c0", "p", c_in, c_out, rate="10Mbit",
                addresses=[f"10.0.3.{octet}/24"]))


TOPO = (t.link("x:e0", "y:e0") + _node("x", "y", 1, 11, 10, 31, 30)
        + _node("y", "x", 2, 10, 11, 30, 31))

def _green(ns, link, b_in, b_out, octet):
    """vNet green and its interface b0, to add to a node's config."""
    return t.router_config(t.vnet("green", 3, namespace=ns),
                           t.iface("green", "b0", link, b_in, b_out,
                                   addresses=[f"10.0.2.{octet}/24"]))


def _config(lab, node) -> dict:
    return parse_toml((lab.workdir / f"{node}.toml").read_text())


def _extended(cfg, more) -> dict:
    """``cfg`` with the arrays of tables of ``more`` appended."""
    out = dict(cfg)
    for k, v in more.items():
        out[k] = [*cfg.get(k, []), *v]
    return out


def _rerated(cfg, rate) -> dict:
    """``cfg`` with red's interface c0 at ``rate``."""
    assert any(i["name"] == "c0" for i in cfg["interface"]), cfg
    return dict(cfg, interface=[dict(i, rate=rate) if i["name"] == "c0" else i
                                for i in cfg["interface"]])


def _new_config(lab, node, octet, b_in, b_out):
    cfg = _rerated(_config(lab, node), "30Mbit")
    ns = lab.prefix + f"{node}-green"
    return dump_toml(_extended(cfg, _green(ns, "p", b_in, b_out, octet)))


def _reload(lab, node, text):
    (lab.workdir / f"{node}.toml").write_text(text)
    r = vnetctl(lab, node, "reload")
    assert r.returncode == 0, r.stderr
    return r.stdout


def _vlink(st, vnet, direction):
    return next(v for v in st["virtual_links"] if v["vnet"] == vnet and v["direction"] == direction)


def _flood_under_way(lab, frames=50):
    """Wait until y has received ``frames`` more frames of vNet blue (the flood is running)."""
    start = _vlink(lab.control("y"), "blue", "in")["packets"]
    eventually(lambda: _vlink(lab.control("y"), "blue", "in")["packets"], 10,
               "the ping flood to reach y", step=0.05, until=lambda n: n - start >= frames)


def test_reload_adds_and_rerates_without_loss(make_lab):
    lab = make_lab(TOPO)
    assert lab.ping("x", "10.0.1.2", vnet="blue", count=2).received == 2
    gen = {n: lab.control(n)["generation"] for n in ("x", "y")}
    # 1,000 pings at 500/s: about two seconds, so both reloads happen in the middle of it
    flood = lab.popen("x", ["ping", "-q", "-c", "1000", "-i", "0.002", "-W", "1", "10.0.1.2"],
                      vnet="blue", stdout=subprocess.PIPE, text=True)
    _flood_under_way(lab)
    results = {}
    for node, octet, b_in, b_out in (("x", 1, 21, 20), ("y", 2, 20, 21)):
        results[node] = _reload(lab, node, _new_config(lab, node, octet, b_in, b_out))
    assert flood.poll() is None, "the ping flood ended before the reloads were done"
    out, _ = flood.communicate(timeout=60)
    assert flood.returncode == 0 and "1000 packets transmitted, 1000 received" in out, out
    for node in ("x", "y"):
        assert "logical interface b0" in results[node] and "interface changed: red/c0" in \
            results[node], results[node]
        st = lab.control(node)
        assert st["generation"] > gen[node]
        assert _vlink(st, "red", "out")["rate"]["max"] == 30_000_000
        assert _vlink(st, "blue", "in")["packets"] >= 1000       # counters survived the swap
    # the new virtual link B works end to end
    r = lab.run_in(lab.prefix + "x-green", ["ping", "-c", "3", "-i", "0.2", "10.0.2.2"])
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout


def test_broken_reload_changes_nothing(make_lab):
    lab = make_lab(TOPO)
    before = lab.control("x")
    path = lab.workdir / "x.toml"
    good = path.read_text()
    path.write_text(good.replace("vlan = 10", "vlan = 4095"))
    r = vnetctl(lab, "x", "reload")
    assert r.returncode == 1
    assert "substrate_link[0].vlan" in r.stderr and "4095" in r.stderr, r.stderr
    # a file naming an interface the node lacks: refused too, nothing created
    path.write_text(good.replace('interface = "e0"', 'interface = "e9"'))
    with pytest.raises(ControlError, match=r"substrate_link\[0\].interface"):
        lab.control("x", "reload")
    path.write_text(good + "\n" + dump_toml(_green(lab.prefix + "x-green", "p", 21, 20, 1))
                    + '\n[[interface]]\nvnet = "green"\nname = "b0"\nsubstrate_link = "p"\n'
                      'in_vli = 22\n')
    with pytest.raises(ControlError, match=r"interface\[3\].name"):
        lab.control("x", "reload")
    assert not [n for n in lab.namespaces() if n.endswith("x-green")]
    after = lab.control("x")
    assert after["generation"] == before["generation"]
    assert [v["rate"] for v in after["virtual_links"]] == [v["rate"] for v in before["virtual_links"]]
    assert after["config_state"]["reloads"] == {"ok": 0, "refused": 3}
    assert lab.ping("x", "10.0.1.2", vnet="blue", count=2).received == 2
    # SIGHUP reloads too (file fixed meanwhile)
    path.write_text(dump_toml(_rerated(parse_toml(good), "40Mbit")))
    lab.daemons["x"].send_signal(1)
    eventually(lambda: lab.control("x")["config_state"]["reloads"], 10, "the SIGHUP reload",
               until=lambda reloads: reloads["ok"] == 1)
    st = lab.control("x")
    assert st["config_state"]["reloads"]["ok"] == 1
    assert _vlink(st, "red", "out")["rate"]["max"] == 40_000_000


# A reload that adds a substrate interface, and one that removes it again: the fast path's ring
# thread is stopped and started on the new set of rings each time (it must never walk a ring
# being unmapped); the flood over the first interface loses nothing meanwhile.
IFACE_TOPO = (t.link("x:e0", "y:e0") + t.link("x:e1", "y:e1")
              + _node("x", "y", 1, 11, 10, 31, 30) + _node("y", "x", 2, 10, 11, 30, 31))

def _second_link(peer_mac):
    return t.router_config(t.p2p("q", "e1", peer_mac=peer_mac, vlan=20))


def test_reload_adds_and_removes_a_substrate_interface_under_traffic(make_lab):
    lab = make_lab(IFACE_TOPO)
    assert lab.ping("x", "10.0.1.2", vnet="blue", count=2).received == 2
    first = {n: (lab.workdir / f"{n}.toml").read_text() for n in ("x", "y")}
    flood = lab.popen("x", ["ping", "-q", "-c", "1500", "-i", "0.002", "-W", "1", "10.0.1.2"],
                      vnet="blue", stdout=subprocess.PIPE, text=True)
    _flood_under_way(lab)
    for node, peer, octet in (("x", "y", 1), ("y", "x", 2)):
        more = _extended(_second_link(lab.mac(peer, "e1")),
                         _green(lab.prefix + f"{node}-green", "q", 40, 40, octet))
        out = _reload(lab, node, dump_toml(_extended(parse_toml(first[node]), more)))
        assert "substrate link added: q" in out, out
    r = lab.run_in(lab.prefix + "x-green", ["ping", "-c", "3", "-i", "0.2", "10.0.2.2"])
    assert r.returncode == 0 and " 0% packet loss" in r.stdout, r.stdout
    for node in ("x", "y"):
        assert any(l["id"] == "q" for l in lab.control(node)["substrate_links"])
        _reload(lab, node, first[node])
    assert flood.poll() is None, "the ping flood ended before the reloads were done"
    out, _ = flood.communicate(timeout=60)
    assert flood.returncode == 0 and "1500 packets transmitted, 1500 received" in out, out
    for node in ("x", "y"):
        st = lab.control(node)
        assert [l["id"] for l in st["substrate_links"]] == ["p"]
        assert st["datapath"] == (os.environ.get("VNET_DATAPATH") or "fast")  # rings kept
    assert lab.ping("x", "10.0.1.2", vnet="blue", count=3).received == 3
    starts = [l.split("msg=")[1] for l in lab.log_path("x").read_text().splitlines()
              if "ring thread reads" in l]
    reads = '"fast path: ring thread reads %s, 0 udp socket(s), %d TAP capture ring(s)%s"'
    rings = " ({} rings: one per vNet queue)" if lab.control("x")["datapath_stats"].get(
        "classified") else ""
    vnets = len(lab.control("x")["vnets"])      # each with a TAP: a capture ring each ...
    # ... and green's, added with e1, stays when green goes (a ring lives as long as the
    # capture: a vNet that comes back finds it)
    assert starts == [reads % ("1 substrate interface(s): e0", vnets, rings.format(RX_QUEUES)),
                      reads % ("2 substrate interface(s): e0 e1", vnets + 1,
                               rings.format(2 * RX_QUEUES)),
                      reads % ("1 substrate interface(s): e0", vnets + 1,
                               rings.format(RX_QUEUES))], starts


NOBODY = 65534
SECRET = "root:$6$notforyou$abcdefghijklmnop:19000:0:99999:7:::\n"     # like /etc/shadow


def _open_watch(path):
    """An inotify descriptor that sees every open of ``path`` (IN_OPEN)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0 and libc.inotify_add_watch(fd, str(path).encode(), 0x20) >= 0
    return fd


def _opens(fd) -> int:
    try:
        data = os.read(fd, 65536)
    except BlockingIOError:
        return 0
    n = 0
    while data:                         # struct inotify_event: wd, mask, cookie, len, name
        n, data = n + 1, data[16 + struct.unpack_from("I", data, 12)[0]:]
    return n


RAW = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
print(s.makefile().readline())
"""


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_reload_file_is_read_by_the_client_never_by_the_daemon(make_lab, sock_dir):
    """A member of the socket's group (uid nobody, group nogroup here) cannot make the root
    daemon read a file: ``vnetctl reload FILE`` reads FILE itself (and is refused by the
    kernel), and a request naming a path, or a key file, without its content is refused
    unopened (inotify watches the file).  FILE is applied once unless --adopt, which only
    root (or the daemon's user) may give."""
    # unkeyed: nobody reloads a copy of x's file, which must then name no key file nobody
    # cannot read (the lab's key is root's: vnetctl would refuse to read it, rightly); no path
    # MTU notices (e runs no router: x's start waited 2.25 s for its report)
    lab = make_lab(t.topology(
        t.lab(keys=False), t.link("x:e0", "e:e0"), t.node("e"),
        t.node("x", t.p2p("p", "e0", "e:e0"), t.vnet("blue", 1),
               t.iface("blue", "a0", "p", 11, 10),
               settings={"control_socket": f"{sock_dir}/x.sock", "path_mtu_interval": 0})))
    sock, own = lab.socket("x"), str(lab.workdir / "x.toml")
    os.chown(sock, -1, NOBODY)                  # nobody's group owns the socket (mode 0660)
    secret = os.path.join(sock_dir, "secret")
    with open(secret, "w") as f:
        f.write(SECRET)
    os.chmod(secret, 0o600)
    watch = _open_watch(secret)
    try:
        gen = lab.control("x")["generation"]
        r = vnetctl(lab, "x", "reload", secret, user=NOBODY)
        assert r.returncode == 2 and f"reload: {secret}: Permission denied" in r.stderr, r
        assert "notforyou" not in r.stdout + r.stderr
        key_cfg = ('[[substrate_link]]\nid = "p"\nkind = "p2p"\ninterface = "e0"\n'
                   f'peer_mac = "02:00:00:00:00:01"\nvlan = 1\nkey_file = "{secret}"\n')
        for request, says in (({"cmd": "reload", "path": secret}, "reads no file on a client"),
                              ({"cmd": "reload", "path": "/x.toml", "text": key_cfg},
                               f"{secret}: not sent with the configuration")):
            out = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                  "--clear-groups", "/usr/bin/python3", "-c", RAW, sock,
                                  json.dumps(request)], capture_output=True, text=True,
                                 timeout=30)
            reply = json.loads(out.stdout)
            assert not reply["ok"] and says in reply["error"], reply
            assert "notforyou" not in reply["error"]
        assert _opens(watch) == 0               # the daemon never opened it ...
        with open(secret):
            pass
        assert _opens(watch) == 1               # ... as the watch would have seen
        assert lab.control("x")["generation"] == gen

        # a file nobody can read: applied once; --adopt is not nobody's to give
        mine = os.path.join(sock_dir, "mine.toml")
        with open(own) as f, open(mine, "w") as g:
            g.write(f.read().replace('name = "a0"', 'name = "a0"\nmtu = 1400', 1))
        os.chmod(mine, 0o644)
        r = vnetctl(lab, "x", "reload", mine, user=NOBODY)
        assert r.returncode == 0 and f"the file in use stays {own}" in r.stdout, r
        st = lab.control("x")
        assert st["generation"] > gen and st["config"] == mine
        assert st["config_state"]["file"] == own
        r = vnetctl(lab, "x", "reload", "--adopt", mine, user=NOBODY)
        assert r.returncode == 1 and "only root or the daemon's own user" in r.stderr, r
        r = vnetctl(lab, "x", "reload")                 # plain: the daemon's own file again
        assert r.returncode == 0 and lab.control("x")["config"] == own, r
        r = vnetctl(lab, "x", "reload", "--adopt", mine)          # root may
        assert r.returncode == 0 and "applied once" not in r.stdout, r
        assert lab.control("x")["config_state"]["file"] == mine
    finally:
        os.close(watch)
