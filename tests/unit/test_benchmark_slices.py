"""benchmarks.common.slice_pings: B's pings split into the slices A flooded and did not."""
import pytest

from benchmarks.common import slice_pings


def _ping(lines, sent):
    return "\n".join(lines) + f"\n--- x ---\n{sent} packets transmitted, {len(lines)} received\n"


def _reply(t_recv, seq, ms):
    return f"[{t_recv:.6f}] 64 bytes from 10.9.2.2: icmp_seq={seq} ttl=64 time={ms} ms"


def test_each_ping_counts_in_the_slice_it_was_sent_in_and_none_in_the_settling_time():
    # slices: alone from t=100, beside from t=100.5, alone again from t=101
    switches = [(100.0, False), (100.5, True), (101.0, False)]
    # one ping every 0.1 s from t=100.02: sent at 100.02, 100.12, ... (reply time - RTT)
    lines = [_reply(100.02 + 0.1 * i + 0.001, i + 1, 1.0) for i in range(15)]
    del lines[7]            # seq 8, sent at 100.72 (beside A), lost
    alone, beside = slice_pings(_ping(lines, 15), switches, settle=0.05)
    # 100.02 (settling) is left out; 100.52 and 101.02 too
    assert alone == {"sent": 8, "received": 8, "rtts": [1000.0] * 8}
    assert beside == {"sent": 4, "received": 3, "rtts": [1000.0] * 3}


def test_output_without_a_summary_or_replies_is_an_error_naming_it():
    with pytest.raises(RuntimeError, match="ping: connect: Network is unreachable"):
        slice_pings("ping: connect: Network is unreachable\n", [(0.0, False)], 0.05)
    with pytest.raises(RuntimeError, match="0 replies of 10"):
        slice_pings(_ping([], 10), [(0.0, False)], 0.05)
