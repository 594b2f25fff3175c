"""Codec properties: round trip, and arbitrary bytes only ever raise DecodeError."""
from hypothesis import given, strategies as st

from vnet_router.wire.substrate import DecodeError, EthFrame, UdpFrame, VlanTag

macs = st.binary(min_size=6, max_size=6)
vlans = st.none() | st.builds(VlanTag, vid=st.integers(0, 4095), pcp=st.integers(0, 7),
                              dei=st.integers(0, 1))
eth_frames = st.builds(EthFrame, dst=macs, src=macs, vli=st.integers(0, 0xFFFF),
                       payload=st.binary(max_size=2000), vlan=vlans)


@given(eth_frames)
def test_eth_round_trip(frame):
    assert EthFrame.unpack(frame.pack()) == frame


@given(eth_frames, st.binary(max_size=64))
def test_eth_padding_is_stripped_by_len(frame, pad):
    assert EthFrame.unpack(frame.pack() + pad) == frame


@given(eth_frames, st.integers(0, 0xFFF))
def test_out_of_band_tag_is_used_when_frame_is_untagged(frame, tci):
    untagged = EthFrame(frame.dst, frame.src, frame.vli, frame.payload)
    got = EthFrame.unpack(untagged.pack(), vlan=VlanTag.from_tci(tci))
    assert got.vlan == VlanTag.from_tci(tci) and got.payload == frame.payload


@given(st.builds(UdpFrame, vli=st.integers(0, 0xFFFF), payload=st.binary(max_size=2000)))
def test_udp_round_trip(frame):
    assert UdpFrame.unpack(frame.pack()) == frame


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_decode_error(data):
    for decode in (EthFrame.unpack, UdpFrame.unpack):
        try:
            decode(data)
        except DecodeError as e:
            assert isinstance(e, ValueError) and e.reason in ("short", "bad_len", "not_substrate")


@given(eth_frames, st.integers(1, 40))
def test_truncated_frames_are_rejected(frame, cut):
    data = frame.pack()
    if cut > len(data):
        return
    try:
        got = EthFrame.unpack(data[:-cut])
    except DecodeError as e:
        assert e.reason in ("short", "bad_len")
    else:       # only possible when the cut removed nothing of the payload
        raise AssertionError(f"truncated frame decoded as {got}")
