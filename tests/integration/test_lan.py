"""Two vNets on one switched LAN (the paper's Fig. 4), both using 10.0.0.0/24.

blue: each host has a p2p (VLAN 10) substrate link to router r; r joins blue's three logical
interfaces with a Linux bridge in blue's namespace.  green: the hosts' multiaccess substrate
link (untagged, VLI 200).  Legacy IP (192.168.77.0/24) runs on the same veths.
"""
import json

import dpkt
import pytest

import topo as t
from harness import eventually, poll, vnetctl

pytestmark = [pytest.mark.root, pytest.mark.one_tier]

HOSTS = ("h1", "h2", "h3")


def lan_topology(learned_max: int | None = None) -> t.Topo:
    """``learned_max``: the cap of the hosts' green learned-MAC tables (default: the config's)."""
    parts = [t.switch_node("sw")] + [t.link(f"{h}:e0", "sw") for h in ("r",) + HOSTS]
    router = [t.p2p(f"to-{h}", "e0", f"{h}:e0", priority=5) for h in HOSTS]
    router.append(t.vnet("blue", 1))
    router += [t.iface("blue", f"t{i}", f"to-{h}", 100, 101) for i, h in enumerate(HOSTS, 1)]
    commands = [("ip link add br0 type bridge", "blue")]
    commands += [(f"ip link set dev t{i} master br0", "blue") for i in range(1, 4)]
    commands += [("ip link set dev br0 up", "blue")]
    parts.append(t.node("r", *router, commands=commands))
    for i, h in enumerate(HOSTS, 1):
        parts.append(t.node(
            h, t.p2p("up", "e0", "r:e0", priority=5), t.multiaccess("lan", "e0"),
            t.vnet("blue", 1), t.vnet("green", 2),
            t.iface("blue", "blue0", "up", 101, 100, addresses=[f"10.0.0.{i}/24"]),
            t.iface("green", "green0", "lan", 200, addresses=[f"10.0.0.{i}/24"],
                    learned_max=learned_max),
            addresses={"e0": [f"192.168.77.{i}/24"]}))
    return t.topology(*parts)


@pytest.fixture(params=["fast", "reference", "kernel"])
def lan(make_lab, monkeypatch, request):
    """The LAN with each datapath: the daemons inherit VNET_DATAPATH."""
    monkeypatch.setenv("VNET_DATAPATH", request.param)
    lab = make_lab(lan_topology())
    assert {lab.control(n)["datapath"] for n in lab.daemons} == {request.param}
    return lab


def _capture(lab, node, vnet, ifname, path):
    """tcpdump on ``ifname`` into ``path``, returned once it captures (it says "listening")."""
    log = path.with_suffix(".log")
    p = lab.popen(node, ["tcpdump", "-i", ifname, "-U", "-n", "-w", str(path)], vnet=vnet,
                  stdout=open("/dev/null", "w"), stderr=open(log, "w"))

    def listening():
        assert p.poll() is None, f"tcpdump on {node}/{ifname} exited: {log.read_text()}"
        return "listening on" in log.read_text()
    eventually(listening, 20, f"tcpdump on {node}/{ifname} to start capturing")
    return p


def _frames(path):
    with open(path, "rb") as f:
        return [bytes(buf) for _ts, buf in dpkt.pcap.Reader(f)]


def _frames_so_far(path):
    """The frames of a capture still being written (a record may be half there)."""
    try:
        return _frames(path)
    except (ValueError, dpkt.NeedData):
        return []


def test_two_vnets_share_a_subnet_and_never_see_each_other(lan, tmp_path):
    lab = lan
    caps = {(h, v): tmp_path / f"{h}-{v}.pcap" for h in ("h2", "h3") for v in ("blue", "green")}
    procs = [_capture(lab, h, v, f"{v}0", p) for (h, v), p in caps.items()]
    blue_pattern, green_pattern = "b1eeb1ee", "9ee09ee0"
    for h, dst in (("h1", "10.0.0.2"), ("h1", "10.0.0.3"), ("h2", "10.0.0.3")):
        b = lab.exec(h, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-p", blue_pattern, dst],
                     vnet="blue")
        assert b.returncode == 0, f"blue {h}->{dst}: {b.stdout}"
        g = lab.exec(h, ["ping", "-c", "3", "-i", "0.2", "-W", "2", "-p", green_pattern, dst],
                     vnet="green")
        assert g.returncode == 0, f"green {h}->{dst}: {g.stdout}"
    bb, gb = bytes.fromhex(blue_pattern), bytes.fromhex(green_pattern)
    for (h, vnet), path in caps.items():     # the captures have written the pings out
        mine = bb if vnet == "blue" else gb
        poll(lambda path=path: _frames_so_far(path), 10,
             until=lambda fs, mine=mine: any(mine in f for f in fs))
    for p in procs:
        p.terminate()
        p.wait(timeout=5)
    for (h, vnet), path in caps.items():
        frames = _frames(path)
        mine, other = (bb, gb) if vnet == "blue" else (gb, bb)
        assert any(mine in f for f in frames), f"{h}/{vnet}: capture saw none of its own pings"
        assert not any(other in f for f in frames), f"{h}/{vnet}: saw the other vNet's frames"
    # ARP went through green's multiaccess link: the hosts learned each other's outer MACs
    st = lab.control("h1", learned=True)
    green = next(p for p in st["logical_interfaces"] if p["vnet"] == "green")["learned"]
    assert {m["outer"] for m in green["macs"]} == {lab.mac("h2", "e0"), lab.mac("h3", "e0")}
    assert green["entries"] == len(green["macs"]) and green["overflow"] == 0


def _rx(lab, h):
    st = lab.control(h)
    return sum(s["rx_packets"] for s in st["substrate_links"]), dict(st["drops"])


def test_legacy_traffic_is_untouched(lan):
    lab = lan
    before = {h: _rx(lab, h) for h in HOSTS}
    for h, dst in (("h1", "192.168.77.2"), ("h3", "192.168.77.1")):
        r = lab.ping(h, dst, count=5)
        assert r.received == 5, r.output
    flood = lab.exec("h2", ["ping", "-f", "-c", "500", "-s", "1400", "192.168.77.3"])
    assert flood.returncode == 0 and " 0% packet loss" in flood.stdout, flood.stdout
    after = {h: _rx(lab, h) for h in HOSTS}
    # >= 1000 legacy frames crossed h2's and h3's interfaces; the substrate sockets saw none
    # of them (only the vNets' own background frames: IPv6 router solicitations, DAD, and the
    # announcements of logical interfaces coming up -- a gratuitous ARP, an unsolicited
    # neighbour advertisement per address -- a few dozen in the first seconds), and no frame
    # of another EtherType was ever classified and dropped.
    for h in HOSTS:
        assert after[h][0] - before[h][0] < 200, (h, before[h], after[h])
        assert after[h][1] == before[h][1], (h, before[h], after[h])
    assert all(status is None for status in lab.alive().values())


CAP = 64
FLOOD = 1000


@pytest.fixture(params=["fast", "reference", "kernel"])
def small_lan(make_lab, monkeypatch, request):
    """The LAN with green's learned-MAC tables capped at CAP entries, with each datapath."""
    monkeypatch.setenv("VNET_DATAPATH", request.param)
    return make_lab(lan_topology(learned_max=CAP))


def _green_table(lab, h, learned=False) -> dict:
    st = lab.control(h, learned=learned)
    return next(p for p in st["logical_interfaces"] if p["vnet"] == "green")["learned"]


def test_a_source_mac_flood_fills_the_table_only_to_its_cap(small_lan):
    """A tenant on h2 writes frames with FLOOD distinct source MACs into its green TAP; h1 and
    h3 learn CAP of them and count the rest as overflow, and green still works."""
    lab = small_lan
    flood = ("import socket\n"
             "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
             "s.bind(('green0', 0))\n"
             f"for i in range({FLOOD}):\n"
             "    s.send(b'\\xff' * 6 + bytes([2, 0xee, 0, 0, i >> 8, i & 255]) + "
             "b'\\x88\\xb6' + bytes(46))\n")
    r = lab.exec("h2", ["python3", "-c", flood], vnet="green")
    assert r.returncode == 0, r.stderr
    for h in ("h1", "h3"):
        table = eventually(lambda h=h: _green_table(lab, h), 30,
                           f"{h}'s green table to fill and refuse",
                           until=lambda x: x["entries"] == CAP and x["overflow"] > 0)
        print(f"{h}: {table}")
        assert table["max"] == CAP and table["learned"] == CAP and table["expired"] == 0
        assert table["overflow"] <= FLOOD
    listed = _green_table(lab, "h1", learned=True)
    assert len(listed["macs"]) == CAP
    assert {m["outer"] for m in listed["macs"] if m["mac"].startswith("02:ee:")} == \
        {lab.mac("h2", "e0")}
    # vnetctl show prints the count; --learned the entries; --json has the counters
    text = vnetctl(lab, "h1", "show")
    assert text.returncode == 0, text.stderr
    row = next(line.split() for line in text.stdout.splitlines()
               if line.split()[:2] == ["green", "green0"])
    assert row[5] == str(CAP) and row[6] == "(overflow", row
    text = vnetctl(lab, "h1", "show", "--learned")
    assert "learned MACs of green/green0" in text.stdout
    assert sum(1 for line in text.stdout.splitlines() if line.startswith("02:ee:")) <= CAP
    js = json.loads(vnetctl(lab, "h1", "show", "--json").stdout)
    green = next(p for p in js["logical_interfaces"] if p["vnet"] == "green")["learned"]
    assert green["entries"] == CAP and "macs" not in green
    # the hosts' own MACs may have been refused (the flood came first): unicast to them is
    # then broadcast, and green still carries traffic
    ping = lab.exec("h1", ["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.3"], vnet="green")
    assert ping.returncode == 0, ping.stdout
    assert all(status is None for status in lab.alive().values())
