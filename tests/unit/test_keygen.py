"""`vnet-router keygen`: a key file the configuration's key_file takes (mode 0600 however the
umask is set), never overwritten without --force; --add (rotation) and --signing (the VBM)."""
import os
import stat

import pytest

from vnet_router.model import keys
from vnet_router.node import daemon
from vnet_router.wire import auth


def keygen(capsys, *args):
    rc = daemon.main(["keygen", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def open_umask():
    old = os.umask(0)              # the mode must not depend on the caller's umask
    yield
    os.umask(old)


def test_keygen_writes_a_private_key_file_the_config_reads(tmp_path, capsys, open_umask):
    path = tmp_path / "lan.key"
    rc, out, err = keygen(capsys, path)
    assert (rc, err) == (0, "")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = keys.load_keyring(str(path))
    assert ring.send == 1 and [i for i, _ in ring.keys] == [1] and len(ring.get(1)) == 32
    assert f"wrote {path}" in out and f'key_file = "{path}"' in out
    assert [p.name for p in tmp_path.iterdir()] == ["lan.key"]      # no temporary left


def test_the_config_line_names_the_file_absolute(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, _ = keygen(capsys, "lan.key")
    assert rc == 0 and f'key_file = "{tmp_path}/lan.key"' in out


def test_an_existing_file_is_not_overwritten_without_force(tmp_path, capsys):
    path = tmp_path / "lan.key"
    assert keygen(capsys, path)[0] == 0
    before = path.read_text()
    rc, out, err = keygen(capsys, path)
    assert rc == 1 and out == ""
    assert f"{path}: exists; not overwritten (--force" in err
    assert path.read_text() == before
    assert keygen(capsys, path, "--force")[0] == 0
    assert path.read_text() != before and keys.load_keyring(str(path)).send == 1


def test_keys_differ_between_runs(tmp_path, capsys):
    for name in ("a.key", "b.key"):
        keygen(capsys, tmp_path / name)
    a, b = (keys.load_keyring(str(tmp_path / n)).get(1) for n in ("a.key", "b.key"))
    assert a != b


def test_add_appends_the_next_key_accepted_not_signing(tmp_path, capsys, open_umask):
    path = tmp_path / "lan.key"
    keygen(capsys, path)
    first = keys.load_keyring(str(path)).get(1)
    rc, out, err = keygen(capsys, "--add", path)
    assert (rc, err) == (0, "") and "added key 2" in out
    ring = keys.load_keyring(str(path))
    assert ring.send == 1 and ring.get(1) == first and len(ring.get(2)) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rc, _, err = keygen(capsys, "--add", tmp_path / "absent.key")
    assert rc == 1 and "absent.key: No such file or directory" in err


def test_signing_writes_the_vbm_seed_and_prints_its_public_key(tmp_path, capsys):
    path = tmp_path / "vbm.key"
    rc, out, _ = keygen(capsys, "--signing", path)
    assert rc == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
    public = auth.public_bytes(auth.signing_key(keys.load_seed(str(path)))).hex()
    assert f'vbm_public_key = "{public}"' in out and f'signing_key_file = "{path}"' in out
    assert keygen(capsys, "--signing", path)[0] == 1


def test_a_directory_that_cannot_be_written_is_a_clear_error(tmp_path, capsys):
    rc, out, err = keygen(capsys, tmp_path / "no" / "such" / "dir.key")
    assert rc == 1 and "dir.key: No such file or directory" in err and out == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
def test_add_keeps_the_owner_the_daemon_reads_it_as(tmp_path, capsys):
    path = tmp_path / "lan.key"
    keygen(capsys, path)
    os.chown(path, 65534, 65534)            # e.g. chown vnet: (nobody here)
    assert keygen(capsys, "--add", path)[0] == 0
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o600)
