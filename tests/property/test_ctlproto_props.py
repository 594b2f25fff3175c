"""Control message codecs: every type round-trips; arbitrary bytes only raise the decode error."""
import pytest
from hypothesis import assume, given, strategies as st

from vnet_router.wire import auth, substrate as wire
from vnet_router.wire import control as m

u16, u32, u64 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, (1 << 64) - 1)
names = st.text(alphabet="abcXYZ019_-", max_size=32)
KIND = {"u8": st.integers(0, 255), "u16": u16, "u64": u64, "status": st.sampled_from(m.Status),
        "role": st.sampled_from(m.Role), "name": names,
        "mtus": st.lists(st.tuples(u16, u16), max_size=20).map(tuple)}


def strategy(cls):
    body = {name: KIND[kind] for name, kind in cls.BODY}
    return st.builds(cls, node=u32, incarnation=u32, seq=u32, **body)


@pytest.mark.parametrize("cls", list(m.MESSAGES.values()), ids=lambda c: c.TYPE.name)
@given(data=st.data())
def test_round_trip(cls, data):
    msg = data.draw(strategy(cls))
    raw = msg.pack()
    assert m.decode(raw) == msg
    assert m.decode(b"pre" + raw, 3) == msg


@pytest.mark.parametrize("cls", list(m.MESSAGES.values()), ids=lambda c: c.TYPE.name)
@given(data=st.data())
def test_truncated_or_extended_is_a_decode_error(cls, data):
    raw = data.draw(strategy(cls)).pack()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(m.ControlDecodeError):
        m.decode(raw[:cut])
    with pytest.raises(m.ControlDecodeError):
        m.decode(raw + data.draw(st.binary(min_size=1, max_size=8)))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_decode_error(raw):
    try:
        msg = m.decode(raw)
    except m.ControlDecodeError as e:
        assert isinstance(e, wire.DecodeError) and e.reason == "control"
    else:
        assert m.decode(msg.pack()) == msg


@given(st.sampled_from(list(m.MESSAGES.values())), st.binary(min_size=1, max_size=60))
def test_valid_header_garbage_body(cls, body):
    raw = m.HEADER.pack(m.VERSION, cls.TYPE, 0, 1, 2, 3) + body
    try:
        m.decode(raw)
    except m.ControlDecodeError:
        pass


# -- the datapath's check (``plausible``): what it drops no receiver would take ------------------

RING = auth.Keyring(send=1, keys={1: b"k" * 32})
SIGNER = auth.signing_key(b"s" * 32)
SRC, NOW = b"\x02\x00\x00\x00\x00\x01", 1.7e9
headerish = st.builds(lambda v, t, f, rest: bytes([v, t]) + f.to_bytes(2, "big") + rest,
                      st.integers(0, 2), st.integers(0, m.MAX_TYPE + 2), st.integers(0, 7),
                      st.binary(max_size=80))


@pytest.mark.parametrize("cls", list(m.MESSAGES.values()), ids=lambda c: c.TYPE.name)
@given(data=st.data(), signed=st.booleans(), sealed=st.booleans())
def test_every_message_a_node_sends_is_plausible(cls, data, signed, sealed):
    raw = data.draw(strategy(cls)).pack()
    if signed:
        raw = auth.sign(raw, SIGNER)
    if sealed:
        raw = auth.seal(raw, RING, SRC, NOW)
    assert m.plausible(raw) and m.plausible(memoryview(raw))


@given(st.one_of(headerish, st.binary(max_size=80)), st.booleans())
def test_what_is_not_plausible_no_receiver_takes(raw, keyed):
    assume(not m.plausible(raw))
    with pytest.raises((auth.AuthError, m.ControlDecodeError)):
        plain = auth.unseal(raw, RING if keyed else None, SRC, NOW, 60.0)
        m.decode(auth.split_signature(plain)[0])
