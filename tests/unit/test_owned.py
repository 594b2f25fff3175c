"""The node's state file (node/owned.py): one node per file, the record a killed run leaves,
incarnations that increase across restarts."""
import json
import os
import subprocess
import sys

import pytest

from vnet_router.node.owned import StateError, StateFile, next_incarnation


def test_a_clean_stop_leaves_nothing_and_a_crash_leaves_the_record(tmp_path):
    path = str(tmp_path / "run" / "n.state")
    s = StateFile(path)
    assert s.acquire() == {}
    s.save(incarnation=7, namespaces=["n-blue"], qdiscs=["e0"])
    with open(path) as f:
        assert json.load(f) == {"incarnation": 7, "namespaces": ["n-blue"], "qdiscs": ["e0"],
                                "pid": os.getpid()}
    s.release(clean=False)                       # as a kill -9 leaves it (lock dropped)
    again = StateFile(path)
    assert again.acquire() == {"incarnation": 7, "namespaces": ["n-blue"], "qdiscs": ["e0"],
                               "pid": os.getpid()}
    again.release(clean=True)
    assert os.listdir(tmp_path / "run") == []


def test_a_second_node_on_the_same_file_is_refused_while_the_first_runs(tmp_path):
    path = str(tmp_path / "n.state")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from vnet_router.node.owned import StateFile; "
         f"s = StateFile({path!r}); s.acquire(); s.save(incarnation=1); print('held', "
         "flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert StateFile(path).in_use()
        with pytest.raises(StateError, match=rf"in use by a running node \(pid {holder.pid}\)"):
            StateFile(path).acquire()
    finally:
        holder.kill()
        holder.wait()
    s = StateFile(path)                          # the holder died: its lock went with it
    assert not s.in_use()
    assert s.acquire()["incarnation"] == 1
    s.release(clean=True)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"namespaces": "x", "qdiscs": [3]}'])
def test_an_unreadable_record_is_ignored_not_fatal(tmp_path, text):
    path = tmp_path / "n.state"
    path.write_text(text)
    s = StateFile(str(path))
    got = s.acquire()
    assert got.get("namespaces", []) == [] and got.get("qdiscs", []) == []
    s.release(clean=True)


def test_a_directory_that_cannot_be_made_names_the_key(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError, match=r"\[node\] state_file: cannot lock"):
        StateFile(str(tmp_path / "file" / "n.state")).acquire()


def test_incarnations_increase_across_restarts():
    assert next_incarnation(None, now=1_800_000_000) == 1_800_000_000
    assert next_incarnation(1_800_000_000, now=1_800_000_000) == 1_800_000_001   # same second
    assert next_incarnation(1_900_000_000, now=1_800_000_000) == 1_900_000_001   # clock back
