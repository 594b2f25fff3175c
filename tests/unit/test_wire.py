import pytest

from vnet_router.wire import substrate as wire
from vnet_router.wire.substrate import DecodeError, EthFrame, VlanTag


def test_layout_of_a_tagged_frame():
    f = EthFrame(b"\x02" * 6, b"\x04" * 6, 0x1234, b"hello", VlanTag(vid=10, pcp=5))
    data = f.pack()
    assert data[12:14] == b"\x81\x00"
    assert data[14:16] == bytes([(5 << 5) | 0, 10])
    assert data[16:18] == b"\x88\xb5"
    assert data[18:22] == b"\x12\x34\x00\x05"
    assert data[22:] == b"hello"


def test_len_beyond_frame_is_bad_len():
    data = bytearray(EthFrame(b"\x02" * 6, b"\x04" * 6, 7, b"abc").pack())
    data[16:18] = (100).to_bytes(2, "big")
    with pytest.raises(DecodeError) as e:
        EthFrame.unpack(bytes(data))
    assert e.value.reason == "bad_len" and e.value.offset == 16


def test_other_ethertype_is_rejected():
    data = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + b"x" * 40
    with pytest.raises(DecodeError) as e:
        EthFrame.unpack(data)
    assert e.value.reason == "not_substrate"


@pytest.mark.parametrize("text", ["02:00:00:00:00", "zz:00:00:00:00:01", "0200.0000.0001", ""])
def test_bad_mac_text(text):
    with pytest.raises(ValueError, match="MAC"):
        wire.mac_to_bytes(text)


def test_mac_round_trip():
    assert wire.mac_to_str(wire.mac_to_bytes("02:AB:00:00:00:01")) == "02:ab:00:00:00:01"
