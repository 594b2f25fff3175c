"""VNP codec: round trip; arbitrary bytes never escape the decoder as anything but VnpError."""
from hypothesis import given, strategies as st

from vnet_host.vnp.wire import DATA, HELLO, Packet, VnpError

addrs = st.integers(0, 0xFFFFFFFF)


@given(st.sampled_from([HELLO, DATA]), addrs, addrs, st.binary(max_size=300),
       st.integers(0, 255))
def test_round_trip(t, dst, src, payload, ttl):
    p = Packet(t, dst, src, payload, ttl)
    assert Packet.unpack(p.pack()) == p
    assert Packet.unpack(b"xx" + p.pack() + b"pad", 2) == p


@given(st.binary(max_size=64))
def test_arbitrary_bytes(data):
    try:
        Packet.unpack(data)
    except VnpError as e:
        assert isinstance(e, ValueError) and e.length == len(data)
