"""Authentication of control messages (wire/auth.py, model/keys.py), replay protection
(transport.Responder) and what the VBM trusts (issue 12)."""
import os

import pytest

from vnet_router.control.transport import Responder
from vnet_router.control.vbm import VBM
from vnet_router.model.keys import KeyFileError, load_keyring
from vnet_router.wire import auth
from vnet_router.wire import control as m

K1, K2 = bytes(range(32)), bytes(range(32, 64))
RING = auth.Keyring(1, {1: K1})
SRC = bytes.fromhex("020000000001")
NOW = 1_800_000_000.0


def _req(**kw):
    return m.RateRequest(node=5, incarnation=9, seq=3, vli=100, rate=5_000_000, **kw).pack()


def test_a_sealed_message_opens_to_the_same_message():
    sealed = auth.seal(_req(), RING, SRC, NOW)
    assert len(sealed) == len(_req()) + auth.TRAILER_LEN
    assert m.decode(auth.unseal(sealed, RING, SRC, NOW + 1, 30)) == m.decode(_req())
    # a node without a key takes it unverified; an unsealed one passes there as it is
    assert auth.unseal(sealed, None, SRC, NOW, 30) == _req()
    assert auth.unseal(_req(), None, SRC, NOW, 30) == _req()


@pytest.mark.parametrize("case, reason", [
    ("unsealed", "unauthenticated"), ("other key", "bad_mac"), ("unknown id", "unknown_key"),
    ("other sender", "bad_mac"), ("flipped body bit", "bad_mac"), ("old", "stale"),
    ("future", "stale"), ("short", "truncated")])
def test_what_does_not_verify_is_refused_with_its_reason(case, reason):
    good = auth.seal(_req(), RING, SRC, NOW)
    data, src, now = {
        "unsealed": (_req(), SRC, NOW),
        "other key": (auth.seal(_req(), auth.Keyring(1, {1: K2}), SRC, NOW), SRC, NOW),
        "unknown id": (auth.seal(_req(), auth.Keyring(7, {7: K1}), SRC, NOW), SRC, NOW),
        "other sender": (good, bytes.fromhex("020000000002"), NOW),
        "flipped body bit": (good[:20] + bytes([good[20] ^ 1]) + good[21:], SRC, NOW),
        "old": (good, SRC, NOW + 31),
        "future": (good, SRC, NOW - 31),
        "short": (good[:16] + good[-4:], SRC, NOW),
    }[case]
    with pytest.raises(auth.AuthError) as e:
        auth.unseal(data, RING, src, now, 30)
    assert e.value.auth_reason == reason


def test_two_keys_are_accepted_while_one_is_rotated():
    old, both = auth.Keyring(1, {1: K1}), auth.Keyring(2, {1: K1, 2: K2})
    assert auth.unseal(auth.seal(_req(), old, SRC, NOW), both, SRC, NOW, 30) == _req()
    assert auth.unseal(auth.seal(_req(), both, SRC, NOW), auth.Keyring(1, {1: K1, 2: K2}),
                       SRC, NOW, 30) == _req()


def _keyfile(tmp_path, text, mode=0o600):
    p = tmp_path / "k"
    p.write_text(text)
    os.chmod(p, mode)
    return str(p)


def test_key_files(tmp_path):
    ring = load_keyring(_keyfile(tmp_path, f"# rotation\n2 {K2.hex()}\n\n1 {K1.hex()}  # old\n"))
    assert ring.send == 2 and dict(ring.keys) == {1: K1, 2: K2} and hash(ring)
    assert K1.hex() not in repr(ring)
    for text, mode, msg in [(f"1 {K1.hex()}", 0o644, "mode 0644 lets group or others"),
                            (f"1 {K1.hex()[:30]}", 0o600, "secret of 15 bytes"),
                            ("1 zz", 0o600, "not hex"), ("", 0o600, "no key"),
                            (f"0 {K1.hex()}", 0o600, "out of range"),
                            (f"1 {K1.hex()}\n1 {K2.hex()}", 0o600, "key id 1 twice"),
                            ("one two three", 0o600, "want `ID SECRET`")]:
        with pytest.raises(KeyFileError, match=msg):
            load_keyring(_keyfile(tmp_path, text, mode))
    with pytest.raises(KeyFileError, match="No such file"):
        load_keyring(str(tmp_path / "absent"))


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def _responder(clock, sent):
    return Responder(lambda peer, msg: sent.append(msg), clock, node=1, incarnation=1,
                     window=30.0, max_peers=3)


def test_a_request_replayed_after_the_dedup_window_is_refused_not_run_again():
    clock, sent, runs = Clock(), [], []
    r = _responder(clock, sent)

    def execute(peer, msg):
        runs.append(msg.seq)
        return m.RateReply(vli=msg.vli, rate=msg.rate)
    req = m.RateRequest(node=5, incarnation=100, seq=10, vli=1, rate=2)
    assert r.handle("p", req, execute) is not None
    assert r.handle("p", req, execute) is not None            # a retry: the cached reply
    assert runs == [10] and r.counters["duplicates"] == 1
    clock.t = 100.0
    r.handle("p", m.RateRequest(node=5, incarnation=100, seq=11, vli=1, rate=2), execute)
    assert r.handle("p", req, execute) is None                 # cache expired: a replay
    assert runs == [10, 11] and r.counters["replay"] == 1
    # an older incarnation (a capture from before the sender restarted) is refused
    assert r.handle("p", m.RateRequest(node=5, incarnation=99, seq=50, vli=1, rate=2),
                    execute) is None
    assert r.counters["old_incarnation"] == 1 and runs == [10, 11]
    # a newer one (the sender restarted) starts afresh
    assert r.handle("p", m.RateRequest(node=5, incarnation=101, seq=1, vli=1, rate=2),
                    execute) is not None


def test_the_responder_tracks_a_bounded_number_of_senders():
    clock, sent = Clock(), []
    r = _responder(clock, sent)
    for node in range(10):
        r.handle("p", m.RateRequest(node=node, incarnation=1, seq=1, vli=1, rate=2),
                 lambda p, msg: m.RateReply(vli=1, rate=2))
    assert len(r.newest) == 3 and r.counters["peers_evicted"] == 7


def test_the_vbm_trusts_its_configured_capacity_and_forgets_silent_nodes():
    clock = Clock()
    vbm = VBM(clock, lan_capacity=1_000_000_000, rebuild_time=0, node_ttl=60, max_nodes=2)
    vbm.admit(1, 0.5)
    vbm.tick()
    ask = lambda node, cap=0: vbm.handle(  # noqa: E731
        "p", m.AggRequest(node=node, vnet=1, current=0, want=100_000_000, minimum=0,
                          capacity=cap))
    assert ask(1, cap=1).rate == 100_000_000        # a report of capacity 1 changes nothing
    assert vbm.lan_capacity == 1_000_000_000 and vbm.pool(1) == 500_000_000
    assert ask(2).status == m.Status.OK
    assert ask(3).status == m.Status.DENIED and vbm.counters["table_full"] == 1
    clock.t = 61
    vbm.tick()
    assert vbm.allocated(1) == 0 and vbm.counters["expired"] == 2
    assert ask(3).status == m.Status.OK


def test_what_only_the_vbm_says_is_signed_and_checked():
    from vnet_router.control.guard import Guard
    from vnet_router.model.keys import load_seed, parse_public

    class Link:
        id, keyring = "lan", RING
    seed = bytes(range(200, 232))
    public = auth.public_bytes(auth.signing_key(seed))
    vbm = Guard([Link], max_age=30, signing_seed=seed, wallclock=lambda: NOW)
    node = Guard([Link], max_age=30, vbm_public=public, wallclock=lambda: NOW)
    insider = Guard([Link], max_age=30, signing_seed=bytes(32), wallclock=lambda: NOW)
    hello = m.Hello(node=1, incarnation=2, role=m.Role.VBM, capacity=5, name="v")
    assign = m.AggAssign(node=1, incarnation=2, seq=4, vnet=1, rate=10)
    for msg in (hello, assign):
        assert node.open("lan", vbm.seal("lan", msg, SRC), SRC) == msg
        with pytest.raises(auth.AuthError) as e:              # the LAN key alone
            node.open("lan", auth.seal(msg.pack(), RING, SRC, NOW), SRC)
        assert e.value.auth_reason == "vbm_unsigned"
        with pytest.raises(auth.AuthError) as e:              # signed by another key
            node.open("lan", insider.seal("lan", msg, SRC), SRC)
        assert e.value.auth_reason == "bad_signature"
    plain = m.RateRequest(node=1, incarnation=2, seq=5, vli=1, rate=1)
    assert node.open("lan", insider.seal("lan", plain, SRC), SRC) == plain   # not VBM-only
    assert parse_public(public.hex()) == public
    with pytest.raises(KeyFileError, match="64 hex digits"):
        parse_public("abc")


def test_the_vbm_seed_file(tmp_path):
    from vnet_router.model.keys import load_seed
    assert load_seed(_keyfile(tmp_path, bytes(range(32)).hex() + "  # vbm\n")) == bytes(range(32))
    for text, mode, msg in [("ab" * 32, 0o640, "mode 0640"), ("ab" * 31, 0o600, "64 hex"),
                            ("zz" * 32, 0o600, "64 hex"), ("ab" * 32 + " x", 0o600, "64 hex")]:
        with pytest.raises(KeyFileError, match=msg):
            load_seed(_keyfile(tmp_path, text, mode))


def test_garbage_is_left_for_the_decoder_to_refuse_as_malformed():
    garbage = b"\x07garbage" * 4                 # its "flags" bytes happen to have SIGNED set
    assert auth.unseal(garbage, None, SRC, NOW, 30) == garbage
    assert auth.unsign(garbage, None) == (garbage, False)
    with pytest.raises(m.ControlDecodeError):
        m.decode(garbage)


def test_a_neighbour_timeout_shorter_than_two_hellos_is_refused():
    from vnet_router.model import config
    from vnet_router.model.schema import ConfigError
    with pytest.raises(ConfigError, match=r"tm.neighbour_timeout: 1.5 s is less than two "
                       r"hello_intervals \(1 s\)"):
        config.loads('[tm]\nneighbour_timeout = 1.5\n')


def test_a_configuration_sent_by_a_client_opens_no_key_file(tmp_path):
    """``vnetctl reload FILE``: the key files come with the text, as the client read them;
    one not sent is refused -- even one the daemon could read -- and a loose mode too."""
    from vnet_router.model.config import loads_sent
    from vnet_router.model.schema import ConfigError
    real = _keyfile(tmp_path, f"1 {K1.hex()}\n")            # there, readable: not opened
    text = ('[[substrate_link]]\nid = "lan"\nkind = "multiaccess"\ninterface = "eth0"\n'
            f'key_file = "{real}"\n')
    with pytest.raises(ConfigError, match="not sent with the configuration"):
        loads_sent(text, "/home/u/r.toml", {})
    cfg = loads_sent(text, "/home/u/r.toml", {real: {"text": f"7 {K2.hex()}\n",
                                                       "mode": 0o100600}})
    assert cfg.path == "/home/u/r.toml" and dict(cfg.substrate_links[0].keyring.keys) == {7: K2}
    for mode, msg in ((0o100640, "mode 0640 lets group"), (0o060600, "not a regular file")):
        with pytest.raises(ConfigError, match=msg):
            loads_sent(text, "r.toml", {real: {"text": f"7 {K2.hex()}\n", "mode": mode}})
    assert load_keyring(real).send == 1                  # outside: read from disk as before


def test_vnetctl_finds_every_key_file_the_schema_has():
    """vnetctl cannot import the schema (pydantic): its list of key-file keys is checked here."""
    from vnet_router.model.config import SubstrateLink, VBMSection
    from vnet_router.node.commands import _key_files
    assert [n for n in SubstrateLink.model_fields if n.endswith("_file")] == ["key_file"]
    assert [n for n in VBMSection.model_fields if n.endswith("_file")] == ["signing_key_file"]
    text = ('[[substrate_link]]\nkey_file = "a"\n[[substrate_link]]\nkey_file = "b"\n'
            '[[substrate_link]]\nkey_file = "a"\n[vbm]\nsigning_key_file = "c"\n')
    assert _key_files(text) == ["a", "b", "c"] and _key_files("not = toml =") == []
