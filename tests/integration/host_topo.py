"""Shared topology of the end-system tests: router r, hosts h1 and h2 running vnet-hostd.

Each host has a p2p substrate link "up" (VLAN 10) to r and the LAN's multiaccess link "lan".
r hosts vNet blue (a Linux bridge joins its TAPs t1, t2: VLI 100 in, 101 out per host) and
vNet green likewise (VLI 300 in, 301 out); hosts join them at run time with vnetctl.  Extra
router config (e.g. the non-IP vNet's library endpoints) is appended with ``router_extra``.
"""
import os
import subprocess
import sys
import tempfile

HOSTS = ("h1", "h2")


def sockdir() -> str:
    """A directory any user can traverse (the lab's work dir under pytest's tmp is 0700),
    for host control sockets that unprivileged callers use."""
    d = tempfile.mkdtemp(prefix=f"vnet-host-{os.getpid()}-")
    os.chmod(d, 0o755)
    return d


def topology(sock_dir: str, router_extra: str = "", host_extra: str = "",
             vnets=(("blue", 1, 100), ("green", 2, 300))) -> str:
    parts = ['[[switch]]\nname = "sw"\n']
    for h in ("r",) + HOSTS:
        parts.append(f'[[link]]\na = "{h}:e0"\nb = "sw"\n')
    r = ['[[node]]\nname = "r"\n[node.router]\n']
    for h in HOSTS:
        r.append(f'[[node.router.substrate_link]]\nid = "to-{h}"\nkind = "p2p"\n'
                 f'interface = "e0"\npeer_mac = "{{mac:{h}:e0}}"\nvlan = 10\npriority = 5\n')
    for name, vid, _ in vnets:
        r.append(f'[[node.router.vnet]]\nname = "{name}"\nid = {vid}\n')
    for name, vid, base in vnets:
        for i, h in enumerate(HOSTS, 1):
            r.append(f'[[node.router.interface]]\nvnet = "{name}"\nname = "t{i}"\n'
                     f'substrate_link = "to-{h}"\nin_vli = {base}\nout_vli = {base + 1}\n')
    r.append(router_extra)
    for name, _, _ in vnets:
        r.append(f'[[node.commands]]\nvnet = "{name}"\nrun = "ip link add br0 type bridge"\n')
        for i in range(1, len(HOSTS) + 1):
            r.append(f'[[node.commands]]\nvnet = "{name}"\nrun = "ip link set dev t{i} master br0"\n')
        r.append(f'[[node.commands]]\nvnet = "{name}"\nrun = "ip link set dev br0 up"\n')
    parts.append("".join(r))
    for i, h in enumerate(HOSTS, 1):
        parts.append(f"""
[[node]]
name = "{h}"
daemon = "host"
addresses = {{ e0 = ["192.168.77.{i}/24"] }}
[node.router]
node = {{ control_socket = "{sock_dir}/{h}.sock" }}
[[node.router.substrate_link]]
id = "up"
kind = "p2p"
interface = "e0"
peer_mac = "{{mac:r:e0}}"
vlan = 10
priority = 5
[[node.router.substrate_link]]
id = "lan"
kind = "multiaccess"
interface = "e0"
{host_extra}
""")
    return "\n".join(parts)


def vnetctl(lab, node, *args, user=None, timeout=60):
    """Run vnetctl against a host's daemon; ``user``: as that uid/gid (system python, which
    that user can read: the pyenv python under /root is not)."""
    sock = lab.socket(node)
    if user is None:
        argv = [sys.executable, "-m", "vnet_router.cli.vnetctl", "-s", sock, *args]
    else:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
                "/usr/bin/python3", "-m", "vnet_router.cli.vnetctl", "-s", sock, *args]
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
