"""Integration fixtures: throwaway labs of network namespaces running real daemons.

``make_lab(topology)`` starts a lab from a topology built with ``topo.py`` (or TOML text) and
stops it (removing everything) after the test; ``sock_dir`` is a directory for control sockets
that unprivileged callers use.  The helpers every test shares (``eventually``, ``vnetctl``,
iperf3) are in ``tests/harness.py``.
"""
import os
import shutil
import tempfile

import pytest

from vnet_router.lab import topology
from vnet_router.lab.lab import Lab

import topo as t

UNKEYED = "are NOT authenticated (no key_file)"     # control.guard's warning at start


@pytest.fixture
def make_lab(tmp_path):
    """make_lab(topology) -> a started Lab; ``topology`` is a ``topo.Topo`` (tables) or TOML
    text.  Every lab is stopped (and removed) afterwards; a keyed one (the default) whose daemons
    warned about an unauthenticated link fails the test."""
    labs = []

    def make(topo) -> Lab:
        text = topo if isinstance(topo, str) else t.text(topo)
        path = tmp_path / f"topology{len(labs)}.toml"
        path.write_text(text)                   # kept with the test's tmp dir, for a look
        lab = Lab(topology.loads(text, str(path)), workdir=tmp_path / f"lab{len(labs)}")
        labs.append(lab)
        lab.start()
        return lab

    yield make
    for lab in reversed(labs):
        lab.stop()
    # labs are keyed by default (docs/lab.md): then no daemon may have run a link unkeyed
    unkeyed = {f"{lab.workdir.name}/{log.name}" for lab in labs if lab.topo.lab.keys
               for log in lab.workdir.glob("*.log") if UNKEYED in log.read_text(errors="replace")}
    assert not unkeyed, f"a keyed lab's daemons warned about unauthenticated links: {unkeyed}"


@pytest.fixture
def sock_dir():
    """A directory any user can traverse (the lab's work dir under pytest's tmp is 0700), for
    control sockets that unprivileged callers use; removed afterwards."""
    d = tempfile.mkdtemp(prefix=f"vnet-sock-{os.getpid()}-")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
