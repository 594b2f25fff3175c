"""What every test shares: waiting on observed state, running vnetctl, iperf3 runs.

``eventually(fn, timeout, what)`` is how a test waits: it calls ``fn`` (which looks at the
system: a counter, a log line, a socket, ``vnetctl show``, a metric) until the value it returns
is what the test waits for, and fails naming ``what`` and the last value seen.  The timeout is
an upper bound, never a wait; no test sleeps a fixed time to let something happen.  Besides the
poll step below, a test may sleep only to time its own input -- pace traffic, or send a signal
at a chosen moment (test_daemon_cli) -- with a comment saying so.

``vnetctl``/``vnetctl_at`` run the command line tool of this tree against a daemon's control
socket; the iperf3 helpers start a one-shot server (returning once it listens), a JSON client,
and read its result.  ``example`` makes a shipped example configuration (``etc/``) loadable
here, with key files of its own.  Lab fixtures (``make_lab``, ``sock_dir``) are in
``tests/integration/conftest.py``; topologies are built with ``tests/integration/topo.py``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

#: the tree under test: subprocesses (vnetctl, daemons started by hand) import it first
REPO = str(Path(__file__).resolve().parents[1])


def poll(fn, timeout: float, *, until=bool, step: float = 0.2, ignore: tuple = ()):
    """Call ``fn()`` until ``until(value)`` holds or ``timeout`` seconds have passed.

    Returns ``(True, value)`` as soon as it holds, else ``(False, last value)``.  Exceptions
    of the types in ``ignore`` count as "not yet" (the last one is returned as the value)."""
    end = time.monotonic() + timeout
    while True:
        try:
            value = fn()
        except ignore as e:                 # e.g. a socket that is not there yet
            value = e
        else:
            if until(value):
                return True, value
        if time.monotonic() >= end:
            return False, value
        time.sleep(step)                    # poll step of eventually(): not a wait for an event


def eventually(fn, timeout: float = 30.0, what: str | None = None, step: float = 0.2, *,
               until=bool, ignore: tuple = ()):
    """The value of ``fn()`` once ``until(value)`` holds (default: it is truthy).

    Fails (AssertionError) after ``timeout`` seconds naming ``what`` and the last value seen.
    ``fn`` may itself assert (e.g. that a process it waits on still runs): that fails at once.
    """
    ok, value = poll(fn, timeout, until=until, step=step, ignore=ignore)
    if not ok:
        shown = repr(value)
        if len(shown) > 2000:
            shown = shown[:2000] + "..."
        raise AssertionError(f"timed out after {timeout:g} s waiting for "
                             f"{what or getattr(fn, '__name__', 'a condition')}; "
                             f"last value seen: {shown}")
    return value


def repo_env(**extra) -> dict:
    """The environment for a subprocess that runs this tree's code."""
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


# -- vnetctl -----------------------------------------------------------------------------------

def vnetctl_at(sock, *args, user: int | None = None, timeout: float = 60):
    """Run ``vnetctl -s SOCK ARGS``; returns the CompletedProcess (text).  ``user``: as that
    uid/gid, with the system python (which that user can read: the pyenv python under /root
    is not)."""
    if user is None:
        argv = [sys.executable, "-m", "vnet_router.cli.vnetctl", "-s", str(sock), *args]
    else:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
                "/usr/bin/python3", "-m", "vnet_router.cli.vnetctl", "-s", str(sock), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=repo_env())


def vnetctl(lab, node: str, *args, user: int | None = None, timeout: float = 60):
    """Run vnetctl against the daemon of ``node`` in ``lab`` (router or host)."""
    return vnetctl_at(lab.socket(node), *args, user=user, timeout=timeout)


# -- raw frames ---------------------------------------------------------------------------------

_INJECTOR = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((sys.argv[1], 0))
data = sys.stdin.buffer.read()
n = 0
while data:
    size = int.from_bytes(data[:4], "big")
    s.send(data[4:4 + size]); n += 1
    data = data[4 + size:]
print(n)
"""


def inject(lab, node: str, frames, ifname: str = "e0") -> None:
    """Send ``frames`` (whole Ethernet frames, forged as a test likes) out of ``ifname`` of
    ``node`` by raw socket, in order; asserts every one was sent."""
    blob = b"".join(len(f).to_bytes(4, "big") + f for f in frames)
    r = lab.exec(node, ["python3", "-c", _INJECTOR, ifname], input=blob, text=False)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == len(frames), r.stdout


# -- iperf3 ------------------------------------------------------------------------------------

def listening(lab, node: str, port: int, vnet: str | None = None, proto: str = "t") -> str:
    """``ss`` lines of sockets listening on ``port`` there (empty: none)."""
    r = lab.exec(node, ["ss", f"-Hl{proto}n", f"sport = :{port}"], vnet=vnet, timeout=20)
    return r.stdout.strip()


def iperf_server(lab, node: str, bind: str, port: int = 5201, vnet: str | None = None,
                 timeout: float = 30):
    """A one-shot iperf3 server on ``bind:port`` (in ``vnet`` of ``node``); returns its Popen
    once it listens."""
    server = lab.popen(node, ["iperf3", "-s", "-1", "-B", bind, "-p", str(port)], vnet=vnet,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready():
        assert server.poll() is None, f"iperf3 server on {node} exited ({server.returncode})"
        return listening(lab, node, port, vnet)
    eventually(ready, timeout, f"the iperf3 server on {node} to listen on {bind}:{port}")
    return server


def iperf_client(lab, node: str, dst: str, port: int = 5201, seconds: float = 5,
                 vnet: str | None = None, args=()):
    """An iperf3 client to ``dst:port`` in the background, JSON report, one interval a second."""
    return lab.popen(node, ["iperf3", "-c", dst, "-p", str(port), "-t", str(seconds), "-J",
                            "-i", "1", *args], vnet=vnet, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)


def iperf_result(client, server=None, timeout: float = 60) -> dict:
    """The JSON report of a finished client (waits for it, and for its server)."""
    out, err = client.communicate(timeout=timeout)
    if server is not None:
        server.wait(timeout=10)
    assert client.returncode == 0, f"iperf3 client failed ({client.returncode}): " \
                                   f"{out[-2000:]}{err}"
    return json.loads(out)


def iperf_run(lab, node: str, server_node: str, dst: str, port: int = 5201,
              seconds: float = 5, vnet: str | None = None, server_vnet: str | None = None,
              args=()) -> dict:
    """One iperf3 run ``node`` -> ``server_node`` (``dst``); its JSON report."""
    server = iperf_server(lab, server_node, dst, port, server_vnet or vnet)
    client = iperf_client(lab, node, dst, port, seconds, vnet, args)
    return iperf_result(client, server, timeout=seconds + 40)


def interval_rates(report: dict) -> list[float]:
    """Bits per second of each interval of an iperf3 JSON report."""
    return [iv["sum"]["bits_per_second"] for iv in report["intervals"]]


def received_rate(report: dict) -> float:
    """Bits per second the receiver saw over the whole run."""
    return report["end"]["sum_received"]["bits_per_second"]


# -- the shipped examples --------------------------------------------------------------------------

ETC = Path(REPO) / "etc"
_KEY_LINE = re.compile(r'^(key_file|signing_key_file) = "([^"]+)"[^\n]*\n', re.M)


def example(name: str, tmp_path: Path, keys: bool = True) -> Path:
    """A copy of the example ``etc/NAME`` in ``tmp_path``, loadable on this machine: the key
    files it names (``key_file``, ``signing_key_file``: /etc/vnet/...) are made fresh in
    ``tmp_path`` (by ``vnet-router keygen``'s writers) and named instead.  ``keys=False``
    leaves them out: an unauthenticated copy, for tests that feed a node unsealed frames."""
    from vnet_router.model import keys as keyfiles
    made: dict[str, str] = {}

    def one(m):
        if not keys:
            return ""
        kind, path = m.group(1), m.group(2)
        if path not in made:
            new = tmp_path / Path(path).name
            if kind == "signing_key_file":
                keyfiles.write_seed_file(new, force=True)
            else:
                keyfiles.write_key_file(new, force=True)
            made[path] = str(new)
        return f'{kind} = "{made[path]}"\n'
    out = tmp_path / name
    out.write_text(_KEY_LINE.sub(one, (ETC / name).read_text()))
    return out


def load_example(name: str, keys: bool = True):
    """The node configuration of ``example(name)`` (keys are read when it is loaded, so the
    temporary copy and its key files are gone afterwards)."""
    import tempfile
    from vnet_router.model import config
    with tempfile.TemporaryDirectory() as d:
        return config.load(example(name, Path(d), keys))
