"""The daemon's command line: bad configs refused before anything is created; vnetctl show."""
import json
import os
import select
import subprocess
import sys
import time

import pytest

from vnet_router.model.toml import dump_toml
from vnet_router.ops import netlink

import topo as t
from harness import eventually, repo_env, vnetctl_at

pytestmark = pytest.mark.root


def _good(sock, ns, path_mtu=True) -> str:
    """A node with one p2p link and vNet blue (namespace NS-blue) on it.  Its peer runs no
    router: no path MTU notice ever comes, so a start waits its full start_wait (2.25 s);
    ``path_mtu=False`` (``path_mtu_interval = 0``) for tests that do not look at start-up."""
    settings = {"control_socket": str(sock)} | ({} if path_mtu else {"path_mtu_interval": 0})
    return dump_toml(t.router_config(t.p2p("p", "e0", peer_mac="02:00:00:00:00:02", vlan=10),
                                     t.vnet("blue", 1, namespace=f"{ns}-blue"),
                                     t.iface("blue", "blue0", "p", 10), settings=settings))


def _daemon(ns, cfg, **kw):
    return subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-m",
                             "vnet_router.node.daemon", "-c", str(cfg)], stderr=subprocess.PIPE,
                            text=True, **{"env": repo_env(), **kw})


@pytest.fixture
def node_ns():
    ns = f"vl{os.getpid()}cli"
    netlink.netns_create(ns)
    netlink.veth_create_between("e0", ns, "e1", ns)
    try:
        yield ns
    finally:
        netlink.netns_remove(ns)


def _run(ns, cfg_path, *args, timeout=20):
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-m",
                           "vnet_router.node.daemon", "-c", str(cfg_path), *args],
                          capture_output=True, text=True, timeout=timeout, env=repo_env())


@pytest.mark.parametrize("mutate, key", [             # bad files: one edit of the good one
    (lambda text: text.replace("vlan = 10", "vlan = 5000"), "substrate_link[0].vlan"),
    (lambda text: text.replace('interface = "e0"', 'interface = "nope0"'),
     "substrate_link[0].interface"),
    (lambda text: text.replace('substrate_link = "p"', 'substrate_link = "q"'),
     "interface[0].substrate_link"),
])
@pytest.mark.one_tier      # does not depend on the datapath tier
def test_bad_config_exits_2_with_one_line_and_creates_nothing(node_ns, tmp_path, mutate, key):
    cfg = tmp_path / "bad.toml"
    good = _good(tmp_path / "s.sock", node_ns)
    bad = mutate(good)
    assert bad != good
    cfg.write_text(bad)
    ours = lambda: [n for n in netlink.netns_list() if n.startswith(node_ns)]  # noqa: E731
    ns_before, links_before = ours(), netlink.link_names(node_ns)
    r = _run(node_ns, cfg)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(cfg) in lines[0] and key in lines[0], r.stderr
    assert ours() == ns_before == [node_ns]
    assert netlink.link_names(node_ns) == links_before
    assert not os.path.exists(tmp_path / "s.sock")


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_check_refuses_an_ambiguous_rate_with_exit_2(node_ns, tmp_path):
    """``rate = "10Mbps"`` (megabits, or tc's megabytes?) is refused; the line says both."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(_good(tmp_path / "s.sock", node_ns).replace(
        'in_vli = 10', 'in_vli = 10\nrate = "10Mbps"', 1))
    assert 'rate = "10Mbps"' in cfg.read_text()
    r = _run(node_ns, cfg, "--check")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"{cfg}: interface[0].rate: ambiguous rate '10Mbps'" in lines[0]
    assert "megabits" in lines[0] and "megabytes" in lines[0]
    assert '"10Mbit"' in lines[0] and '"10MB/s"' in lines[0]


def test_check_mode_and_show(node_ns, tmp_path):
    sock = tmp_path / "s.sock"
    cfg = tmp_path / "good.toml"
    cfg.write_text(_good(sock, node_ns, path_mtu=False))
    r = _run(node_ns, cfg, "--check")
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    assert not netlink.netns_exists(f"{node_ns}-blue")

    p = _daemon(node_ns, cfg)
    try:
        def up():
            assert p.poll() is None, f"the daemon exited ({p.returncode})"
            return sock.exists()
        eventually(up, 20, f"the daemon's control socket {sock}")
        text = vnetctl_at(sock, "show")
        js = vnetctl_at(sock, "show", "--json")
        assert text.returncode == 0 and js.returncode == 0, text.stderr + js.stderr
        st = json.loads(js.stdout)
        assert [s["id"] for s in st["substrate_links"]] == ["p"]
        assert "p  " in text.stdout and "blue/blue0" in text.stdout
        assert netlink.link_names(f"{node_ns}-blue") == ["lo", "blue0"]
        assert netlink.link_info("blue0", f"{node_ns}-blue")["mtu"] == 1500 - 4 - 14
    finally:
        p.terminate()
        _, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert "removed namespace" in err
    assert not netlink.netns_exists(f"{node_ns}-blue")
    assert not sock.exists()


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_unreachable_daemon_is_a_clear_error(tmp_path):
    r = vnetctl_at(tmp_path / "none", "show")
    assert r.returncode == 1 and "cannot reach daemon" in r.stderr


def test_systemd_notify_protocol(node_ns, tmp_path):
    """Type=notify: READY=1 once serving, RELOADING=1/READY=1 around a reload, STOPPING=1."""
    import socket as socket_mod
    sock = tmp_path / "s.sock"
    cfg = tmp_path / "good.toml"
    cfg.write_text(_good(sock, node_ns, path_mtu=False))
    notify = socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(15)
    p = _daemon(node_ns, cfg, env=repo_env(NOTIFY_SOCKET=str(tmp_path / "notify")))
    try:
        msgs = [notify.recv(4096).decode()]
        assert msgs[0].startswith("READY=1") and sock.exists()
        p.send_signal(1)                      # SIGHUP: reload
        msgs += [notify.recv(4096).decode(), notify.recv(4096).decode()]
        assert msgs[1].startswith("RELOADING=1\nMONOTONIC_USEC=") and msgs[2].startswith("READY=1")
    finally:
        p.terminate()
        p.communicate(timeout=10)
    assert notify.recv(4096).decode() == "STOPPING=1"
    assert p.returncode == 0


def _read_until(p, marker: str, timeout: float = 20.0) -> str:
    """The daemon's log up to and including the first line containing ``marker``. Reads the
    pipe's descriptor directly: a buffered readline() would hold lines select() cannot see."""
    seen, end = b"", time.monotonic() + timeout
    fd = p.stderr.fileno()
    while not any(marker.encode() in line for line in seen.split(b"\n")[:-1]):
        left = end - time.monotonic()
        assert left > 0 and select.select([fd], [], [], left)[0], \
            f"no log line with {marker!r} in {timeout} s: {seen.decode()[-2000:]}"
        chunk = os.read(fd, 65536)
        assert chunk, f"daemon ended before logging {marker!r}: {seen.decode()[-2000:]}"
        seen += chunk
    return seen.decode()


# Start-up phases, in the order the daemon logs them: the stop signal goes out as soon as the
# phase's line appears (None: at once, before Python has set anything up).
PHASES = [None, "created namespace", "logical interface", "ring thread", "datapath:", "ready"]


@pytest.mark.parametrize("phase", PHASES, ids=[str(m) for m in PHASES])
def test_sigterm_at_any_moment_of_start_up_stops_cleanly(node_ns, tmp_path, phase):
    """A stop signal during set-up is held back, never lost: the daemon stops at once when
    set-up is done, and removes what it created.  The start's wait for path MTU notices
    (none come: the peer runs no router) is no set-up: a stop before or during it ends it."""
    sock = tmp_path / "s.sock"
    cfg = tmp_path / "good.toml"
    cfg.write_text(_good(sock, node_ns))
    p = _daemon(node_ns, cfg)
    try:
        if phase is not None:
            _read_until(p, phase)
    finally:
        p.terminate()                           # also when the phase never came: no orphan
    _, err = p.communicate(timeout=20)
    assert p.returncode in (0, -15), err        # -15: killed before Python set up anything
    assert not netlink.netns_exists(f"{node_ns}-blue"), err
    assert not sock.exists()
    if phase not in (None, "ready"):
        assert "a stop came during the start's wait" in err, err


def _read_sysctl(ns: str, path: str) -> str:
    r = subprocess.run(["ip", "netns", "exec", ns, "cat", f"/proc/sys/{path}"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else f"<{r.stderr.strip()}>"


def test_a_restarted_node_keeps_its_logical_interface_macs_and_announces_them(node_ns, tmp_path):
    """The TAP's MAC is derived from node, vNet and interface names: a stop and a start give
    the same MAC (neighbours' ARP caches stay right); coming up, the kernel sends a gratuitous
    ARP and an unsolicited neighbour advertisement (arp_notify, ndisc_notify set)."""
    sock = tmp_path / "s.sock"
    cfg = tmp_path / "good.toml"
    cfg.write_text(_good(sock, node_ns, path_mtu=False))
    seen = []
    for _ in range(2):
        p = _daemon(node_ns, cfg)
        try:
            eventually(lambda: p.poll() is None and sock.exists(), 20, "the control socket")
            info = netlink.link_info("blue0", f"{node_ns}-blue")
            seen.append((info["mac"], info["up"],
                         _read_sysctl(f"{node_ns}-blue", "net/ipv4/conf/blue0/arp_notify"),
                         _read_sysctl(f"{node_ns}-blue", "net/ipv6/conf/blue0/ndisc_notify")))
        finally:
            p.terminate()
            _, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
        assert not netlink.netns_exists(f"{node_ns}-blue")
    assert seen[0] == seen[1], seen
    mac, up, arp, ndisc = seen[0]
    assert mac[0] & 0x03 == 0x02                       # locally administered, unicast
    assert up and arp == "1" and ndisc == "1", seen
