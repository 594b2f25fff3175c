"""The TAP capture (``[node] tap_capture``, default ``auto``): frames a vNet sends into its TAP
reach the compiled engine through the capture ring, taken at the TAP's TC egress; TCP segments
of the vNet's own stack (checksum not finished yet) go by the TAP's queue and ``read()``.

a --p2p-- r1 --p2p-- r2 --p2p-- b as in test_passthrough: a's and b's TAPs are captured.
"""
import pytest

from harness import eventually, iperf_run
from test_passthrough import PASSTHROUGH

pytestmark = pytest.mark.root

UDP_DATAGRAMS = 4000            # 2 s at 20 Mbit/s, 1000-byte datagrams: ~5000


def _egress(lab, node):
    return lab.run_in(lab.vnet_ns(node, "blue"), ["tc", "filter", "show", "dev", "blue0",
                                                 "egress"], check=True).stdout


def _port(st, name="blue0"):
    return next(p for p in st["logical_interfaces"] if p["name"] == name)


def test_udp_and_icmp_by_the_capture_tcp_by_the_tap(make_lab, monkeypatch):
    monkeypatch.delenv("VNET_TAP_CAPTURE", raising=False)
    lab = make_lab(PASSTHROUGH)
    assert "tap_capture" in _egress(lab, "a") and "tap_capture" in _egress(lab, "b")
    before = {n: lab.control(n) for n in ("a", "b")}
    assert before["a"]["datapath_stats"]["capture_ring_full"] == 0

    ping = lab.ping("a", "10.9.2.2", vnet="blue", count=200, interval=0.005)
    assert ping.received == 200, ping.output
    udp = iperf_run(lab, "a", "b", "10.9.2.2", 5202, 2, vnet="blue",
                    args=("-u", "-b", "20M", "-l", "1000"))
    lost = udp["end"]["sum"]["lost_packets"]
    sent = udp["end"]["sum"]["packets"]
    assert sent >= UDP_DATAGRAMS and lost == 0, udp["end"]["sum"]

    # a's echo requests and datagrams, b's replies: taken from the ring, counted on the port
    def moved(node):
        st = lab.control(node)
        return (st["datapath_stats"]["capture_taken"]
                - before[node]["datapath_stats"]["capture_taken"], st)
    taken, st = eventually(lambda: moved("a"), what="a's capture counters",
                           until=lambda r: r[0] >= 200 + UDP_DATAGRAMS)
    assert st["datapath_stats"]["capture_frames"] == st["datapath_stats"]["capture_taken"]
    assert _port(st)["rx_packets"] - _port(before["a"])["rx_packets"] >= taken
    taken_b, _ = eventually(lambda: moved("b"), what="b's capture counters",
                            until=lambda r: r[0] >= 200)

    # TCP from the vNet's stack: every segment left to the TAP (passed; a GSO packet counts
    # once), read by read(): the port's bytes cover iperf3's, the capture took next to none
    passed, taken = st["datapath_stats"]["capture_passed"], st["datapath_stats"]["capture_taken"]
    rx = _port(st)["rx_bytes"]
    tcp = iperf_run(lab, "a", "b", "10.9.2.2", 5203, 2, vnet="blue")
    sent = tcp["end"]["sum_received"]["bytes"]          # all of it crossed a's port
    assert sent > 1_000_000
    after = eventually(lambda: lab.control("a"), what="a's port counters to cover iperf3's bytes",
                       until=lambda s: _port(s)["rx_bytes"] - rx >= sent)
    assert after["datapath_stats"]["capture_passed"] - passed >= 50
    # segments of 1448 bytes: what the capture took (the connection's pure ACKs, ARP) is
    # far fewer than what crossed
    assert after["datapath_stats"]["capture_taken"] - taken < sent // 1448 // 2
    for node in ("a", "r1", "r2", "b"):
        drops = {k: n for k, n in lab.control(node)["drops"].items() if n}
        assert not drops, (node, drops)


def test_off_reads_every_tap_frame(make_lab, monkeypatch):
    monkeypatch.setenv("VNET_TAP_CAPTURE", "off")
    lab = make_lab(PASSTHROUGH)
    assert "tap_capture" not in _egress(lab, "a")
    ping = lab.ping("a", "10.9.2.2", vnet="blue", count=5)
    assert ping.received == 5, ping.output
    st = lab.control("a")
    assert "capture_taken" not in st["datapath_stats"], st["datapath_stats"]
    assert _port(st)["rx_packets"] >= 5
