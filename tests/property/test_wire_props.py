"""Codec properties: round trip, and arbitrary bytes only ever raise DecodeError; frames with
the substrate EtherType in place reach parse_substrate and decode as they were built."""
import struct
from collections import Counter
from dataclasses import dataclass

from hypothesis import event, given, settings, strategies as st

from vnet_router.wire.substrate import (ETH_HLEN, ETHERTYPE_SUBSTRATE, TPID_8021AD, TPID_8021Q,
                                        DecodeError, EthFrame, UdpFrame, VlanTag, parse_l2,
                                        parse_substrate)

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


# -- frames that reach parse_substrate ---------------------------------------------------------
# Arbitrary bytes almost never carry 0x88B5 where parse_l2 looks for it, so the decoder's
# second half (parse_substrate: VLI, LEN, payload) is fuzzed with frames built field by field:
# EtherType 0x88B5 at offset 12 (untagged) or 16 (behind an 802.1Q / 802.1ad tag), any VLI and
# LEN, a body that may be shorter or longer than LEN (padding), an out-of-band tag or none, and
# the whole cut short anywhere.  The model below says what each must decode to.

TPIDS = (None, TPID_8021Q, TPID_8021AD)


@dataclass(frozen=True)
class SubstrateCase:
    data: bytes
    dst: bytes
    src: bytes
    tpid: int | None            # inline tag's TPID, None: untagged
    tci: int                    # inline tag's TCI (if tpid)
    oob_tci: int | None         # out-of-band tag (PACKET_AUXDATA), None: none
    vli: int
    length: int                 # LEN as written, whatever the body


@st.composite
def substrate_frames(draw):
    dst, src = draw(macs), draw(macs)
    tpid = draw(st.sampled_from(TPIDS))
    tci = draw(st.integers(0, 0xFFFF))
    oob_tci = draw(st.none() | st.integers(0, 0xFFFF))
    vli = draw(st.integers(0, 0xFFFF))
    body = draw(st.binary(max_size=300))
    length = draw(st.just(len(body)) | st.integers(0, len(body))         # exact, padded
                  | st.integers(len(body), len(body) + 8) | st.integers(0, 0xFFFF))
    tag = b"" if tpid is None else struct.pack("!HH", tpid, tci)
    full = (dst + src + tag + struct.pack("!HHH", ETHERTYPE_SUBSTRATE, vli, length) + body)
    keep = draw(st.just(len(full)) | st.integers(0, len(full)))          # truncated anywhere
    return SubstrateCase(full[:keep], dst, src, tpid, tci, oob_tci, vli, length)


def expected_outcome(case: SubstrateCase) -> str:
    """What the decoder must do with ``case``: "l2_short" (cut inside the Ethernet header or
    tag), "substrate_short" (cut inside VLI/LEN), "bad_len" (LEN beyond what arrived), or
    "decoded" -- the last three are parse_substrate's."""
    n = len(case.data)
    if n < ETH_HLEN or (case.tpid is not None and n < ETH_HLEN + 4):
        return "l2_short"
    off = ETH_HLEN + (4 if case.tpid is not None else 0)           # where VLI starts
    if n < off + 4:
        return "substrate_short"
    if off + 4 + case.length > n:
        return "bad_len"
    return "decoded"


def check_substrate_case(case: SubstrateCase) -> str:
    """Decode ``case`` as the datapath does; assert it matches the model.  Returns the outcome."""
    want = expected_outcome(case)
    n = len(case.data)
    off = ETH_HLEN + (4 if case.tpid is not None else 0)
    oob = None if case.oob_tci is None else VlanTag.from_tci(case.oob_tci)
    try:
        got = EthFrame.unpack(case.data, vlan=oob)
    except DecodeError as e:
        assert isinstance(e, ValueError) and e.length == n
        assert (e.reason, want) in {("short", "l2_short"), ("short", "substrate_short"),
                                    ("bad_len", "bad_len")}, (e.reason, want, e)
        if want == "substrate_short":
            assert e.offset == off
        elif want == "bad_len":
            assert e.offset == off + 2          # at LEN
    else:
        assert want == "decoded", (want, got)
        assert (got.dst, got.src, got.vli) == (case.dst, case.src, case.vli)
        assert got.payload == case.data[off + 4:off + 4 + case.length]
        assert got.vlan == (VlanTag.from_tci(case.tci) if case.tpid is not None else oob)
        assert got.ethertype == ETHERTYPE_SUBSTRATE
    if want != "l2_short":                      # parse_substrate on its own, at the offset
        view = memoryview(case.data)
        assert parse_l2(view)[3] == off
        try:
            assert parse_substrate(view, off) == (case.vli, off + 4, case.length)
        except DecodeError as e:
            assert want != "decoded" and e.reason in ("short", "bad_len"), (want, e)
        else:
            assert want == "decoded"
    tagging = "untagged" if case.tpid is None else f"tpid 0x{case.tpid:04x}"
    event(f"{want} ({tagging}{', out-of-band tag' if oob else ''})")
    return want


@given(substrate_frames())
def test_substrate_frames_decode_as_generated_or_fail_with_a_known_reason(case):
    check_substrate_case(case)


def test_the_substrate_property_reaches_parse_substrate():
    """The generator above is not wasted on frames parse_l2 rejects: over a fixed run, every
    outcome of parse_substrate occurs, decoded frames tagged both ways and untagged."""
    seen = Counter()

    @settings(max_examples=300, derandomize=True, database=None)
    @given(substrate_frames())
    def run(case):
        outcome = check_substrate_case(case)
        seen[outcome] += 1
        if outcome == "decoded":
            seen[("decoded", case.tpid, case.oob_tci is not None)] += 1

    run()
    assert seen["decoded"] and seen["bad_len"] and seen["substrate_short"], seen
    for tpid in TPIDS:
        assert seen[("decoded", tpid, False)] or seen[("decoded", tpid, True)], (tpid, seen)
    assert seen[("decoded", None, True)], seen          # untagged, with an out-of-band tag
