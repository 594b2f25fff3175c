"""Shared topology of the end-system tests: router r, hosts h1 and h2 running vnet-hostd.

Each host has a p2p substrate link "up" (VLAN 10) to r and the LAN's multiaccess link "lan".
r hosts vNet blue (a Linux bridge joins its TAPs t1, t2: VLI 100 in, 101 out per host) and
vNet green likewise (VLI 300 in, 301 out); hosts join them at run time with vnetctl.  More of
r's router config (e.g. the non-IP vNet's library endpoints) comes in ``router_parts`` (topo.py
parts) and ``router_commands``.  Host control sockets go in ``sock_dir`` (the fixture), where
unprivileged callers reach them.

No node here sends or takes path MTU notices (``path_mtu_interval = 0``): r's output virtual
links lead to hosts that join only at run time, so at start no neighbour carries them and every
start of r waited its full ``start_wait`` (2.25 s) for reports that could not come (and a
restarted host would wait as long for r's, were r's off alone); test_path_mtu.py is where
path MTU is tested.
"""
import topo as t
from harness import vnetctl

HOSTS = ("h1", "h2")
NO_PMTU = {"path_mtu_interval": 0}


def topology(sock_dir: str, router_parts=(), router_commands=(),
             vnets=(("blue", 1, 100), ("green", 2, 300))) -> t.Topo:
    links = [t.link(f"{h}:e0", "sw") for h in ("r",) + HOSTS]
    parts = [t.p2p(f"to-{h}", "e0", f"{h}:e0", vlan=10, priority=5) for h in HOSTS]
    parts += [t.vnet(name, vid) for name, vid, _ in vnets]
    parts += [t.iface(name, f"t{i}", f"to-{h}", base, base + 1)
              for name, _, base in vnets for i, h in enumerate(HOSTS, 1)]
    commands = []
    for name, _, _ in vnets:
        commands.append(("ip link add br0 type bridge", name))
        commands += [(f"ip link set dev t{i} master br0", name) for i in range(1, len(HOSTS) + 1)]
        commands.append(("ip link set dev br0 up", name))
    router = t.node("r", *parts, *router_parts, commands=[*commands, *router_commands],
                    settings=NO_PMTU)
    hosts = [t.node(h, t.p2p("up", "e0", "r:e0", vlan=10, priority=5), t.multiaccess("lan", "e0"),
                    daemon="host", addresses={"e0": [f"192.168.77.{i}/24"]},
                    settings={"control_socket": f"{sock_dir}/{h}.sock", **NO_PMTU})
             for i, h in enumerate(HOSTS, 1)]
    return t.topology(t.switch_node("sw"), *links, router, *hosts)


VNP_SOCKET = ("vnp", 5, 500, ("--kind", "socket", "--name", "vnp0", "--allow", "nobody"))


def join_all(lab, vnets=(("blue", 1, 100, ()), ("green", 2, 300, ())), hosts=HOSTS):
    """Every host joins each of ``vnets`` -- (name, id, base VLI, extra vnetctl args) -- over
    its p2p link with the router's VLIs (in base + 1, out base); a TAP without extra args gets
    10.0.0.N/24 (N: the host's place in ``hosts``)."""
    for i, h in enumerate(hosts, 1):
        for name, vid, base, extra in vnets:
            r = vnetctl(lab, h, "join", name, "--id", str(vid), "--link", "up", "--in-vli",
                        str(base + 1), "--out-vli", str(base),
                        *(extra or ("--address", f"10.0.0.{i}/24")))
            assert r.returncode == 0, r.stderr
