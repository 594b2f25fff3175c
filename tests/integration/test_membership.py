"""Dynamic vNet membership end to end (issue 15): hosts join vNet blue at run time.

Router r hosts blue's virtual router (``[vnet.members]``: a bridge vr0 with 10.20.0.1/24) and
has no per-host configuration; hosts h1, h2, h3 run vnet-hostd with ``[tm]`` on the same
switched LAN and join with one ``vnetctl join`` each: their JOIN makes r set up a virtual
link pair with them (VLINK_SETUP) and attach its end to vr0.  The LAN's control messages are
authenticated (a LAN key on every node), as every control message is once keys are set.
"""
import signal
import subprocess

import pytest

import topo as t
from harness import eventually, vnetctl

pytestmark = pytest.mark.root

HOSTS = ("h1", "h2", "h3")
TM = {"tick": 0.1, "hello_interval": 0.3, "neighbour_timeout": 1.5, "idle_interval": 3}
ADDR = {h: f"10.20.0.1{i}" for i, h in enumerate(HOSTS, 1)}
KEY: dict = {}


@pytest.fixture(autouse=True)
def _lan_key(tmp_path_factory):
    f = tmp_path_factory.mktemp("keys") / "lan.key"
    f.write_text(f"1 {bytes(range(7, 39)).hex()}\n")
    f.chmod(0o600)
    KEY["lan"] = str(f)


def topology():
    members = {"bridge": "vr0", "addresses": ["10.20.0.1/24"], "min_rate": "2Mbit",
               "max_rate": "50Mbit"}
    lan = t.multiaccess("lan", "e0", key_file=KEY["lan"])
    router = t.node("r", lan, ("vnet", {"name": "blue", "id": 1,
                                                             "members": members}),
                    settings={"name": "r", "metrics": "127.0.0.1:9477"}, router={"tm": TM})
    hosts = [t.node(h, lan, daemon="host", settings={"name": h},
                    router={"tm": TM}) for h in HOSTS]
    return t.topology(t.switch_node("sw"), *(t.link(f"{n}:e0", "sw") for n in ("r",) + HOSTS),
                      router, *hosts)


def join(lab, h):
    """``vnetctl join`` on ``h``; the host's run-time links afterwards."""
    r = vnetctl(lab, h, "join", "blue", "--id", "1", "--link", "lan", "--peer", "r",
                "--address", f"{ADDR[h]}/24")
    assert r.returncode == 0, r.stdout + r.stderr + lab.log_tail(h) + lab.log_tail("r")
    return lab.control(h, "alloc")["dynamic"]


def leave(lab, h):
    r = vnetctl(lab, h, "leave", "blue")
    assert r.returncode == 0, r.stdout + r.stderr + lab.log_tail(h)
    return r.stdout


def members(lab):
    return sorted(m["node"].split()[0] for m in lab.control("r", "alloc")["members"]["blue"])


def r_ports(lab):
    out = lab.exec("r", ["ip", "-br", "link", "show", "master", "vr0"], vnet="blue").stdout
    return sorted(line.split()[0].split("@")[0] for line in out.splitlines())


def host_has_blue(lab, h):
    return lab.vnet_ns(h, "blue") in lab.namespaces()


def test_hosts_join_ping_and_leave_on_both_sides(make_lab):
    lab = make_lab(topology())
    eventually(lambda: len(lab.control("r", "alloc")["neighbours"]) == 3, 10,
               "r to hear the three hosts")
    assert lab.control("r", "alloc")["counters"].get("tx_hello")
    for h in HOSTS:
        dyn = join(lab, h)
        assert [(d["vnet"], d["name"], d["upstream"]) for d in dyn] == [("blue", "blue0", False)]
    assert members(lab) == ["h1", "h2", "h3"]
    assert r_ports(lab) == ["m-h1", "m-h2", "m-h3"]
    for h in HOSTS:                                 # each host reaches the router and the others
        for dst in ["10.20.0.1"] + [ADDR[o] for o in HOSTS if o != h]:
            assert lab.ping(h, dst, vnet="blue", count=2).received == 2, (h, dst)
    # the Traffic Manager manages each member's pair from its minimum
    outs = [o for o in lab.control("r", "alloc")["outputs"] if o["vnet"] == "blue"]
    assert len(outs) == 3 and all(o["min"] == 2_000_000 and o["max"] == 50_000_000
                                  for o in outs), outs
    assert len(lab.control("r")["control"]["allocations"]["members"]["blue"]) == 3
    text = vnetctl(lab, "r", "alloc").stdout                 # membership in vnetctl ...
    assert "vNet members" in text and all(f"m-{h}" in text for h in HOSTS), text
    metrics = lab.exec("r", ["python3", "-c", "import urllib.request; print(urllib.request."
                             "urlopen('http://127.0.0.1:9477/metrics', timeout=5).read()"
                             ".decode())"]).stdout            # ... and in the metrics
    assert 'vnet_vnet_members{vnet="blue"} 3.0' in metrics, metrics[-3000:]

    done = leave(lab, "h3")
    assert "left vNet blue: removed blue0 (the router acknowledged)" in done, done
    assert members(lab) == ["h1", "h2"] and r_ports(lab) == ["m-h1", "m-h2"]
    assert not host_has_blue(lab, "h3")
    assert not lab.control("h3", "alloc")["dynamic"]
    assert lab.ping("h1", ADDR["h2"], vnet="blue", count=2).received == 2
    for n in ("r",) + HOSTS:                   # every message verified with the LAN key
        c = lab.control(n)["control"]
        assert not any(c["refused"].values()) and not c["unauthenticated_links"], (n, c)


def test_twenty_join_leave_cycles_under_a_ping_stream_leave_nothing(make_lab):
    lab = make_lab(topology())
    eventually(lambda: len(lab.control("r", "alloc")["neighbours"]) == 3, 10,
               "r to hear the three hosts")
    join(lab, "h1")
    join(lab, "h2")
    ping = lab.popen("h1", ["ping", "-n", "-q", "-i", "0.05", "-w", "600", ADDR["h2"]],
                     vnet="blue", stdout=subprocess.PIPE, text=True)
    for i in range(20):
        join(lab, "h3")
        assert lab.ping("h3", "10.20.0.1", vnet="blue", count=1).received == 1, i
        leave(lab, "h3")
    ping.send_signal(signal.SIGINT)
    out, _ = ping.communicate(timeout=30)
    print(out.strip().splitlines()[-2])
    assert " 0% packet loss" in out, out
    assert members(lab) == ["h1", "h2"] and r_ports(lab) == ["m-h1", "m-h2"]
    assert not host_has_blue(lab, "h3") and not lab.control("h3", "alloc")["dynamic"]
    r_links = lab.exec("r", ["ip", "-br", "link"], vnet="blue").stdout.split("\n")
    assert len([ln for ln in r_links if ln.strip()]) == 4, r_links   # lo, vr0, m-h1, m-h2
    c = lab.control("r")["control"]
    assert c["members_joined"] == 22 and c["members_left"] == 20, c


def test_a_host_that_disappears_is_removed_after_the_neighbour_timeout(make_lab):
    lab = make_lab(topology())
    eventually(lambda: len(lab.control("r", "alloc")["neighbours"]) == 3, 10,
               "r to hear the three hosts")
    for h in HOSTS:
        join(lab, h)
    lab.kill_daemon("h3", signal.SIGKILL)
    eventually(lambda: members(lab) == ["h1", "h2"], 10, "r to remove the silent h3")
    assert r_ports(lab) == ["m-h1", "m-h2"]
    assert lab.control("r")["control"]["vlinks_peer_lost"] == 1
    assert lab.ping("h1", ADDR["h2"], vnet="blue", count=2).received == 2
