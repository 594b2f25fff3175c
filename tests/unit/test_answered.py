"""The record of answered control requests (node/answered.py): written before a request is
executed, read back at the next start after a clean stop or a kill, bounded, and tolerant of
a damaged file."""
import json
import os

from vnet_router.node.answered import Answered

X = (("lan", bytes.fromhex("020000000001")), 0x1234)
U = (("tun", None), 7)


def test_what_was_noted_is_the_floor_of_the_next_run_even_without_a_clean_stop(tmp_path):
    path = str(tmp_path / "n.state.answered")
    a = Answered(path)
    assert a.load(30, uptime=1000) == {} and os.path.exists(path)   # a first start
    assert a.hold == 0
    a.note(X, 5, 100)
    a.note(U, 9, 1)
    a.note(X, 5, 101)
    # nothing closed (as after kill -9): the lines are in the file already
    b = Answered(path)
    assert b.load(30, uptime=500) == {X: (5, 101), U: (9, 1)} and b.hold == 0
    with open(path) as f:                                    # compacted: one line each
        assert len(f.readlines()) == 2
    b.note(X, 6, 1)                                          # the sender restarted
    b.close()
    assert Answered(path).load(30) == {X: (6, 1), U: (9, 1)}
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_a_damaged_record_keeps_its_good_lines_and_says_so(tmp_path, caplog):
    path = tmp_path / "n.answered"
    path.write_text(json.dumps(["lan", "020000000001", 0x1234, 5, 100]) + "\n"
                    + "garbage\n" + json.dumps({"a": 1}) + "\n"
                    + json.dumps(["lan", "02", 1, 2, 3]) + "\n"             # short MAC
                    + json.dumps(["lan", None, 1, -2, 3]) + "\n"            # out of range
                    + json.dumps(["tun", None, 7, 9, 1])[:-3])              # cut short
    a = Answered(str(path))
    assert a.load(30, uptime=1000) == {X: (5, 100)}
    assert f"{path}: 5 unreadable lines ignored" in caplog.text
    assert a.hold == 30 and "refused for 30.0 s" in caplog.text     # what else was lost?


def test_an_unreadable_record_is_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "n.answered"
    path.mkdir()                                # not a file: cannot be read nor replaced
    a = Answered(str(path))
    assert a.load(30, uptime=1000) == {} and a.hold == 30
    a.note(X, 1, 1)                             # the node goes on; one error, not one a line
    a.note(X, 1, 2)
    assert "cannot read the record" in caplog.text
    assert caplog.text.count("cannot write the record") == 1


def test_the_record_is_bounded_and_compacted(tmp_path):
    path = str(tmp_path / "n.answered")
    a = Answered(path, max_senders=3)
    a.load(30)
    for seq in range(1, 3000):
        a.note(X, 1, seq)
    with open(path) as f:
        assert len(f.readlines()) < 1100         # compacted as it grew
    for node in range(10):
        a.note((("lan", None), node), 1, 1)
    a.close()
    assert Answered(path, max_senders=3).load(30) == {(("lan", None), n): (1, 1)
                                                    for n in (7, 8, 9)}


def test_a_record_a_boot_may_have_emptied_holds_requests_until_replays_are_stale(tmp_path,
                                                                                 caplog):
    a = Answered(str(tmp_path / "n.answered"))
    assert a.load(30, uptime=12) == {} and a.hold == 18
    assert "missing, and the machine booted 12 s ago" in caplog.text
    a.note(X, 1, 1)
    a.close()
    b = Answered(str(tmp_path / "n.answered"))             # on a disk: unsynced lines lost?
    assert b.load(30, uptime=29) == {X: (1, 1)} and b.hold == 1
