"""The command registry: vnetctl's sub-commands and requests built from it, the control
server's dispatch by it (refusals name the reason), access by its ``privileged`` marks, and
vnetctl staying import-light.  No root, no socket: the server's dispatch is called directly."""
import asyncio
import base64
import io
import json
import os
import subprocess
import sys

import pytest

from vnet_router.cli import vnetctl as ctl
from vnet_router.node import commands
from vnet_router.node.api import ControlServer, Peer, WithFds


def dispatch(server, **msg):
    return asyncio.run(server._dispatch(json.dumps(msg).encode() + b"\n",
                                        Peer(pid=1, uid=1000, gid=1000)))


def test_every_sub_command_has_a_printer_and_every_group_a_help():
    entries = [(c, cli) for c in commands.COMMANDS for cli in c.cli]
    assert len({cli.path for _, cli in entries}) == len(entries)
    for _, cli in entries:
        assert cli.output in ctl.PRINTERS, cli.path
        if len(cli.path) > 1:
            assert " ".join(cli.path[:-1]) in commands.GROUPS
    assert len(commands.BY_NAME) == len(commands.COMMANDS)


def test_help_lists_every_command_with_its_help():
    text = ctl.parser().format_help()
    for c in commands.COMMANDS:
        for cli in c.cli:
            if len(cli.path) == 1:
                assert f"    {cli.path[0]} " in text
            else:
                assert f"  {' '.join(cli.path)} " in text
            assert (cli.help or c.help).split()[0] in text
    # a command of one daemon says which; alloc is served by both (a host with [tm] too)
    assert "vnet-hostd: install a vNet" in text and "  alloc               rate allocations" in text


def test_host_opens_exactly_the_read_only_commands_to_everyone():
    open_ = {n for n, c in commands.served(commands.HOST).items() if not c.privileged}
    assert open_ == {"show", "ping", "tables", "instances", "endpoint", "alloc"}
    assert {n for n, c in commands.BY_NAME.items() if c.fds} == {"endpoint"}


def test_server_refuses_handlers_its_daemon_does_not_serve():
    with pytest.raises(ValueError, match="vnet_add"):
        ControlServer("/nonexistent/s", {"show": dict, "vnet_add": dict})
    with pytest.raises(ValueError, match="frobnicate"):
        ControlServer("/nonexistent/s", {"frobnicate": dict}, daemon=commands.HOST)


def test_server_says_why_it_cannot_serve_a_command():
    srv = ControlServer("/nonexistent/s", {"show": lambda: {"node": "x"}, "ping": lambda: "pong"})
    assert dispatch(srv, cmd="show") == {"ok": True, "result": {"node": "x"}}
    r = dispatch(srv, cmd="vnet_add", name="red", id=3)
    assert not r["ok"] and r["error"] == "vnet add is a command of vnet-hostd, not of vnet-router"
    r = dispatch(srv, cmd="alloc")
    assert not r["ok"] and "not available on this vnet-router" in r["error"] \
        and "[tm] or [vbm]" in r["error"]
    r = dispatch(srv, cmd="frobnicate")
    assert not r["ok"] and r["error"] == "unknown command 'frobnicate' (known: ping, show)"


def test_policy_guards_privileged_commands_and_peer_commands_get_credentials():
    asked, seen = [], []

    def policy(cmd, peer):
        asked.append(cmd)
        return f"permission denied: {cmd}"

    def endpoint(vnet, interface, peer=None):
        seen.append(peer)
        return {"vnet": vnet}
    srv = ControlServer("/nonexistent/s", {"show": lambda: 1, "vnet_del": lambda name: 2,
                                           "endpoint": endpoint},
                        daemon=commands.HOST, policy=policy)
    assert dispatch(srv, cmd="show") == {"ok": True, "result": 1}
    assert dispatch(srv, cmd="vnet_del", name="x") == {"ok": False,
                                                       "error": "permission denied: vnet_del"}
    # a client cannot pass credentials of its own choosing
    assert dispatch(srv, cmd="endpoint", vnet="v", interface="i", peer=0)["ok"]
    assert asked == ["vnet_del"] and seen == [Peer(pid=1, uid=1000, gid=1000)]


def test_descriptors_only_from_commands_that_return_them():
    r, w = os.pipe()
    srv = ControlServer("/nonexistent/s", {"show": lambda: WithFds({}, [r])})
    reply = dispatch(srv, cmd="show")
    assert not reply["ok"] and "descriptors" in reply["error"]
    with pytest.raises(OSError):
        os.fstat(r)                    # closed, not leaked
    os.close(w)


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def sent(monkeypatch):
    calls = []

    def request(path, cmd, /, timeout=None, **args):
        calls.append((cmd, args))
        return {"generation": 3, "changes": [], "name": "i", "pid": 7, "namespace": "n",
                "user": "u"}
    monkeypatch.setattr(ctl, "request", request)
    return calls


def test_requests_built_from_the_registry(sent, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "new.toml").write_text('[[substrate_link]]\nkey_file = "lan.key"\n'
                                       '[vbm]\nsigning_key_file = "/nonexistent/x"\n')
    (tmp_path / "lan.key").write_text("1 00112233445566778899aabbccddeeff\n")
    (tmp_path / "lan.key").chmod(0o600)
    assert ctl.main(["reload", "new.toml"]) == 2         # a key file it names is missing
    (tmp_path / "new.toml").write_text('[[substrate_link]]\nkey_file = "lan.key"\n')
    assert ctl.main(["join", "blue", "--id", "1", "--link", "up", "--in-vli", "101",
                     "--address", "10.0.0.1/24"]) == 0
    assert ctl.main(["vnet", "add", "red", "--id", "7", "--allow", "@vnet"]) == 0
    assert ctl.main(["reload"]) == 0
    assert ctl.main(["reload", "new.toml"]) == 0
    assert ctl.main(["instance", "start", "b", "--vnet", "blue", "--cap", "net_admin", "--",
                     "bird", "-f"]) == 0
    assert sent == [
        ("join", {"vnet": "blue", "id": 1, "name": None, "substrate_link": "up", "in_vli": 101,
                  "out_vli": None, "addresses": ["10.0.0.1/24"], "kind": "tap", "allow": []}),
        ("vnet_add", {"name": "red", "id": 7, "namespace": None, "allow": ["@vnet"]}),
        ("reload", {}),
        ("reload", {"path": str(tmp_path / "new.toml"),
                    "text": '[[substrate_link]]\nkey_file = "lan.key"\n',
                    "files": {"lan.key": {"text": "1 00112233445566778899aabbccddeeff\n",
                                          "mode": 0o100600}}}),
        ("instance_start", {"name": "b", "vnet": "blue", "user": None, "cpu_seconds": None,
                            "memory": None, "caps": ["net_admin"], "argv": ["bird", "-f"]})]


def test_instance_files_are_read_by_vnetctl_and_sent(sent, tmp_path, capsys):
    conf = tmp_path / "bird.conf"
    conf.write_bytes(b"router id 1.2.3.4;\n\x00binary too")
    assert ctl.main(["instance", "start", "b", "--vnet", "blue", "--file", str(conf),
                     "--file", f"{conf}:etc/b.conf", "--", "bird"]) == 0
    (_cmd, args), = sent
    data = base64.b64encode(conf.read_bytes()).decode()
    assert args["files"] == [{"path": "bird.conf", "data": data},
                             {"path": "etc/b.conf", "data": data}]
    conf.write_bytes(b"x" * (commands.FILE_MAX + 1))
    for bad, msg in ((str(conf), "larger than 32 KiB"),
                     (f"{tmp_path}/missing:x", "No such file or directory"), (":x", "no source")):
        with pytest.raises(SystemExit) as e:
            ctl.main(["instance", "start", "b", "--vnet", "blue", "--file", bad, "--", "bird"])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert len(sent) == 1


@pytest.mark.parametrize("argv, msg", [
    (["instance", "start", "b", "--vnet", "blue"], "instance start needs a command after --"),
    (["show", "--", "x"], "show takes nothing after --"),
])
def test_words_after_double_dash(sent, capsys, argv, msg):
    assert ctl.main(argv) == 2
    assert sent == [] and f"vnetctl: {msg}" in capsys.readouterr().err


def test_vnetctl_imports_no_daemon_libraries():
    heavy = ("pyroute2", "pytun", "uvloop", "prometheus_client", "pydantic")
    code = ("import sys, vnet_router.cli.vnetctl; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__))))).stdout
    assert out.strip() == "[]"


@pytest.fixture
def samples(monkeypatch):
    """``show`` answers with 100 more frames of 100 bytes each second (a fake clock)."""
    shows = iter([{"node": "y", "generation": 1, "virtual_links": [
        {"substrate_link": "tun", "vli": 7, "direction": "in", "vnet": "blue",
         "owner": "blue/blue0", "packets": 100 * k, "bytes": 10_000 * k,
         "rate": {"max": None}, "queue_depth": 0, "drops": {}}]} for k in range(1, 4)])
    monkeypatch.setattr(ctl, "request", lambda path, cmd, timeout=None: next(shows))
    monkeypatch.setattr(ctl.time, "sleep", lambda s: None)
    clock = iter([0.0, 1.0, 2.0, 3.0])
    monkeypatch.setattr(ctl.time, "monotonic", lambda: next(clock))


def test_top_on_a_terminal_redraws_in_place(samples):
    out = Tty()
    assert ctl.top("s", 1.0, 2, out=out) == 0
    text = out.getvalue()
    assert "\x1b[1m" in text and "\x1b[2K" in text          # bold header; lines redrawn
    assert text.count("node y") >= 2                   # each sample (Live redraws the last)
    assert text.endswith("\x1b[?25h")                   # the cursor is given back


def test_top_into_a_pipe_is_plain_blocks(samples):
    out = io.StringIO()
    assert ctl.top("s", 1.0, 2, out=out) == 0
    text = out.getvalue()
    assert "\x1b" not in text
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 2
    last = blocks[-1].splitlines()
    assert last[0].startswith("node y") and last[1].split()[:3] == ["link", "vli", "dir"]
    assert last[2].split() == ["tun", "7", "in", "blue", "blue/blue0", "100", "80kbit",
                               "unlimited", "0", "0"]


def test_show_into_a_pipe_is_not_wrapped_and_a_terminal_gets_styles():
    from vnet_router.ops import render
    long = "x" * 300
    out = io.StringIO()
    render.write(out, "title", render.table(["a", "b"], [[long, "[tm] not markup"]], "t"))
    lines = out.getvalue().splitlines()
    assert lines == ["title", "t", "a" + " " * 301 + "b", long + "  [tm] not markup"]
    tty = Tty()
    render.write(tty, render.table(["a"], [["1"]], "t"))
    assert "\x1b[1m" in tty.getvalue()


def _show_result(learned_list: bool) -> dict:
    table = {"entries": 2, "max": 4096, "ageing_seconds": 300.0, "learned": 9, "expired": 7,
             "overflow": 3}
    if learned_list:
        table["macs"] = [{"mac": "02:00:00:00:00:0a", "outer": "02:00:00:00:01:01",
                          "age_seconds": 4.25},
                         {"mac": "02:00:00:00:00:0b", "outer": "02:00:00:00:01:02",
                          "age_seconds": 120.0}]
    port = {"vnet": "green", "name": "green0", "namespace": "vnet-green", "rx_packets": 5,
            "tx_packets": 6}
    return {"node": "h1", "config": "h1.toml", "generation": 1, "datapath": "fast",
            "uptime_seconds": 3.0, "substrate_links": [], "virtual_links": [], "drops": {},
            "logical_interfaces": [{**port, "learned": table},
                                   {**port, "vnet": "blue", "name": "blue0", "learned": None}]}


@pytest.mark.parametrize("flag", [False, True], ids=["count", "learned"])
def test_show_prints_the_learned_count_and_lists_entries_on_request(monkeypatch, capsys, flag):
    """``show`` asks for the list only with ``--learned``; without it a multiaccess interface
    shows how many MACs it learned (and refused), others ``-``."""
    calls = []

    def request(path, cmd, /, timeout=None, **args):
        calls.append((cmd, args))
        return _show_result(args["learned"])
    monkeypatch.setattr(ctl, "request", request)
    assert ctl.main(["show"] + (["--learned"] if flag else [])) == 0
    assert calls == [("show", {"learned": flag})]
    lines = capsys.readouterr().out.splitlines()
    rows = lines[lines.index("logical interfaces") + 2:][:2]
    assert rows[0].split() == ["green", "green0", "vnet-green", "5", "6", "2", "(overflow",
                               "3)"]
    assert rows[1].split()[-1] == "-"
    listed = "learned MACs of green/green0" in lines
    assert listed == flag
    if flag:
        i = lines.index("learned MACs of green/green0")
        assert lines[i + 1].split() == ["mac", "outer", "age"]
        assert lines[i + 2].split() == ["02:00:00:00:00:0a", "02:00:00:00:01:01", "4s"]
        assert lines[i + 3].split() == ["02:00:00:00:00:0b", "02:00:00:00:01:02", "120s"]


def test_top_does_not_ask_for_learned_macs(monkeypatch):
    calls = []

    def request(path, cmd, /, timeout=None, **args):
        calls.append((cmd, args))
        raise KeyboardInterrupt
    monkeypatch.setattr(ctl, "request", request)
    with pytest.raises(KeyboardInterrupt):
        ctl.main(["top", "-n", "1"])
    assert calls == [("show", {})]


def test_reload_file_is_read_by_vnetctl_bounded_and_adopted_only_when_asked(sent, tmp_path,
                                                                           capsys):
    cfg = tmp_path / "r.toml"
    cfg.write_text("[node]\n")
    assert ctl.main(["reload", str(cfg), "--adopt"]) == 0
    assert sent[-1] == ("reload", {"path": str(cfg), "text": "[node]\n", "adopt": True})
    assert ctl.main(["reload", "--adopt"]) == 2
    assert "reload: --adopt needs FILE" in capsys.readouterr().err
    cfg.write_text("#" * (60 * 1024 + 1))
    assert ctl.main(["reload", str(cfg)]) == 2
    assert "larger than 61440 bytes" in capsys.readouterr().err
    cfg.write_text("x = '" + '"' * 40000 + "'\n")         # JSON doubles it: too long a request
    assert ctl.main(["reload", str(cfg)]) == 2
    assert "make a request of" in capsys.readouterr().err
    cfg.write_bytes(b"\xff\xfe")
    assert ctl.main(["reload", str(cfg)]) == 2 and "not UTF-8" in capsys.readouterr().err
    assert len(sent) == 1                                   # nothing else was sent


def test_reload_max_fits_a_request():
    from vnet_router.node import api
    from vnet_router.node.commands import RELOAD_MAX
    assert RELOAD_MAX + 1024 <= api.MAX_REQUEST
