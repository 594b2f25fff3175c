"""A node restarted under a ping stream: its logical interfaces come back with the same MACs
(derived from node, vNet and interface names) and announce themselves, so the neighbour's ARP
cache is right at once and pings resume as soon as the node forwards again (issue 13)."""
import re
import signal
import subprocess
import time

import pytest

import topo as t
from harness import eventually

pytestmark = pytest.mark.root

TWO = (t.link("a:e0", "b:e0")
       + t.node("a", t.p2p("up", "e0", "b:e0"), t.vnet("blue", 1),
                t.iface("blue", "blue0", "up", 100, 101, addresses=["10.9.7.1/24"]))
       + t.node("b", t.p2p("up", "e0", "a:e0"), t.vnet("blue", 1),
                t.iface("blue", "blue0", "up", 101, 100, addresses=["10.9.7.2/24"])))

INTERVAL = 0.05
COUNT = 120            # 6 s of pings: the restart takes well under that


def _replies(out: str) -> list[tuple[int, float]]:
    """(icmp_seq, time received) of every reply in ``ping -D`` output."""
    return [(int(m.group(2)), float(m.group(1)))
            for m in re.finditer(r"^\[(\d+\.\d+)\].*icmp_seq=(\d+)", out, re.M)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill-9"])
def test_pings_resume_within_2_s_of_a_restart_with_the_same_macs(make_lab, sig):
    lab = make_lab(TWO)
    mac = lambda: lab.exec("b", ["cat", "/sys/class/net/blue0/address"],  # noqa: E731
                           vnet="blue").stdout.strip()
    before = mac()
    assert lab.ping("a", "10.9.7.2", vnet="blue", count=2).received == 2
    ping = lab.popen("a", ["ping", "-D", "-n", "-c", str(COUNT), "-i", str(INTERVAL),
                           "10.9.7.2"], vnet="blue",
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rx_path = "/sys/class/net/blue0/statistics/rx_packets"
    rx = lambda: int(lab.exec("b", ["cat", rx_path], vnet="blue").stdout.strip() or 0)  # noqa: E731
    eventually(lambda: rx() >= 10, 10, "the ping stream reaching b")
    t0 = time.monotonic()
    assert lab.kill_daemon("b", sig) == (0 if sig == signal.SIGTERM else -sig)
    lab.restart_daemon("b")
    restarted = time.monotonic() - t0
    after = mac()
    out, _ = ping.communicate(timeout=COUNT * INTERVAL + 30)
    got = _replies(out)
    assert len(got) > 10, out[-2000:]
    gaps = [b[1] - a[1] for a, b in zip(got, got[1:])]
    worst = max(gaps)
    assert before == after, (before, after)
    assert worst < 2.0 + restarted, (worst, restarted)
    # after the node forwards again, no reply is missing: the neighbour's cache was right
    seqs = [s for s, _ in got]
    resumed = next(i for i, g in enumerate(gaps) if g == worst) + 1
    assert seqs[resumed:] == list(range(seqs[resumed], seqs[resumed] + len(seqs) - resumed)), \
        f"replies missing after the restart: {seqs[resumed:][:50]}"
    print(f"restart took {restarted:.2f} s, longest gap {worst:.2f} s, MAC {after} kept, "
          f"{len(got)} replies")
