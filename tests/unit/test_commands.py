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
    assert last[2].split() == ["tun", "7", "in", "blue", "blue/blue0", "100", "80", "kbit/s",
                               "unlimited", "0", "0"]


def test_top_json_is_one_object_per_sample(samples):
    out = io.StringIO()
    assert ctl.top("s", 1.0, 2, out=out, as_json=True) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    last = json.loads(lines[-1])
    assert (last["node"], last["seconds"]) == ("y", 1.0)
    assert last["virtual_links"] == [{
        "substrate_link": "tun", "vli": 7, "direction": "in", "vnet": "blue",
        "owner": "blue/blue0", "packets_per_second": 100.0, "bits_per_second": 80000.0,
        "max": None, "queue_depth": 0, "drops_per_second": 0.0}]


@pytest.mark.parametrize("bps, shown", [(19_986_100, "19.99 Mbit/s"), (20_000_000, "20 Mbit/s"),
                                        (1_500_000_000, "1.5 Gbit/s"), (80_000, "80 kbit/s"),
                                        (999, "999 bit/s"), (None, "unlimited")])
def test_measured_rates_are_shown_with_two_decimals_and_a_unit(bps, shown):
    from vnet_router.model.units import format_bitrate
    assert format_bitrate(bps) == shown


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


# -- run-time verbs, output polish (issue 26) ---------------------------------------------------

def test_vlink_rate_and_vbm_share_requests(sent):
    for argv in (["vlink", "rate", "blue", "a0", "--min", "5Mbit", "--max", "20Mbit"],
                 ["vlink", "rate", "blue", "a0", "--rate", "30Mbit", "--in"],
                 ["vlink", "rate", "blue", "a0", "--max", "8Mbit"],
                 ["vbm", "share", "blue", "0.3"]):
        assert ctl.main(argv + ["--json"]) == 0
    assert sent == [
        ("vlink_rate", {"vnet": "blue", "name": "a0", "direction": "out", "min": "5Mbit",
                        "max": "20Mbit"}),
        ("vlink_rate", {"vnet": "blue", "name": "a0", "direction": "in", "min": "30Mbit",
                        "max": "30Mbit"}),
        ("vlink_rate", {"vnet": "blue", "name": "a0", "direction": "out", "max": "8Mbit"}),
        ("vbm_share", {"vnet": "blue", "share": 0.3})]


@pytest.mark.parametrize("argv, msg", [
    (["vlink", "rate", "blue", "a0"], "give --max (and --min), or --rate"),
    (["vlink", "rate", "blue", "a0", "--rate", "1Mbit", "--max", "2Mbit"], "not both"),
])
def test_vlink_rate_usage_errors(sent, capsys, argv, msg):
    assert ctl.main(argv) == 2
    assert sent == [] and msg in capsys.readouterr().err


def _printed(capsys, printer, result, **args):
    ns = type("Args", (), {"json": False, **args})()
    ctl.PRINTERS[printer](result, ns)
    return capsys.readouterr().out


def test_run_time_changes_say_they_are_run_time_only(capsys):
    note = "run-time only: a plain `vnetctl reload` ... edit /etc/vnet/r.toml to keep it"
    out = _printed(capsys, "runtime", {
        "generation": 4, "changes": [], "vnet": "blue", "name": "a0", "direction": "out",
        "rate": {"min": 5_000_000, "max": 20_000_000}, "was": {"min": 2_000_000,
                                                              "max": 10_000_000},
        "file": "/etc/vnet/r.toml", "runtime_only": True, "note": note})
    assert out.splitlines() == [
        "blue/a0 output (rate): 2Mbit..10Mbit -> 5Mbit..20Mbit (generation 4)", f"note: {note}"]
    out = _printed(capsys, "runtime", {"vnet": 1, "share": 0.3, "was": 0.5, "pool": 30_000_000,
                                       "note": note})
    assert out.splitlines()[0] == "vNet 1: share of the LAN 0.5 -> 0.3 (pool 30Mbit)"


def test_vlink_del_says_removed(capsys):
    d = {"vnet": "blue", "name": "dyn0", "substrate_link": "p", "peer": "p", "in_vli": 1024,
         "out_vli": 1100, "min": 2_000_000, "max": 20_000_000}
    assert _printed(capsys, "vlink", {**d, "peer_acked": True}) == \
        "blue/dyn0 on p removed (in VLI 1024, out VLI 1100)\n"
    assert _printed(capsys, "vlink", {**d, "peer_acked": False}).endswith(
        "removed (in VLI 1024, out VLI 1100); p did not confirm\n")
    assert _printed(capsys, "vlink", d).startswith("blue/dyn0 on p: in VLI 1024, out VLI 1100")


INSTANCES = {"running": [{"name": "bird", "vnet": "blue", "pid": 42, "user": "vnet-inst",
                          "argv": ["bird", "-f"], "cpu_seconds_used": 1.5,
                          "cpu_seconds_limit": 60, "memory_bytes": 8 << 20,
                          "memory_limit": 64 << 20, "processes": 2, "pids_limit": 64,
                          "uptime_seconds": 12.3}],
             "stopped": {"exited": 1}, "events": [
                 {"instance": "hog", "vnet": "blue", "reason": "memory", "status": -9,
                  "cpu_seconds_used": 0.2, "memory_peak_bytes": 64 << 20, "oom_kills": 1,
                  "at": 0.0}],
             "kernel": [{"name": "vnpk", "vnet": "vnp", "program": "vnp_router",
                         "interfaces": {"p1": {}, "p2": {}}, "counters": {"forwarded": 10,
                                                                          "dropped": 0}}],
             "kernel_stopped": {}}


def test_instance_list_is_a_table_and_json_on_request(monkeypatch, capsys):
    monkeypatch.setattr(ctl, "request", lambda path, cmd, /, timeout=None, **a: INSTANCES)
    assert ctl.main(["instance", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "instances"
    assert lines[2].split() == ["bird", "blue", "42", "vnet-inst", "1.5/60s", "8/64M", "2/64",
                                "12s", "bird", "-f"]
    assert "instances stopped: exited=1" in lines
    i = lines.index("kernel instances (eBPF at TC ingress)")
    assert lines[i + 2].split() == ["vnpk", "vnp", "vnp_router", "p1", "p2", "forwarded=10"]
    i = lines.index("last stops")
    assert lines[i + 2].split()[:5] == ["hog", "blue", "memory", "-9", "0.2s"]
    assert ctl.main(["instance", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == INSTANCES


ALLOC = {"node": "v", "node_id": "32c2d184", "vbm_peer": None,
         "vbm_node": {"id": "32c2d184", "name": "v", "here": True},
         "outputs": [{"substrate_link": "lan", "peer": "lan/02:00:00:00:00:02",
                      "peer_id": "0a0b0c0d", "peer_name": "x", "vli": 1100, "vnet": "blue",
                      "min": 1, "current": 1, "max": 2, "demand": None, "state": "STABLE"}],
         "inputs": [], "aggregates": {}, "dynamic": [], "members": {},
         "neighbours": [{"peer": "lan/02:00:00:00:00:02", "name": "x", "node": "0a0b0c0d",
                         "role": "NODE", "incarnation": 255}],
         "vbm": {"state": "ACTIVE", "lan_capacity": 100_000_000, "vnets": {"1": {
             "share": 0.5, "pool": 50_000_000, "allocated": 2_000_000, "nodes": {
                 "0a0b0c0d": {"aggregate": 2_000_000, "minimum": 1_000_000, "name": "x"}}}},
                 "counters": {}},
         "counters": {}}


def test_alloc_names_every_node_by_name_and_hex_id():
    out = io.StringIO()
    from vnet_router.ops import render
    render.write(out, *ctl.alloc_view(ALLOC))
    lines = out.getvalue().splitlines()
    # on the VBM node the header says so (it said "VBM unknown" above an ACTIVE VBM)
    assert lines[0] == "node v (32c2d184)  VBM this node (ACTIVE)"
    i = lines.index("output virtual links")
    assert lines[i + 2].split()[3:5] == ["x", "(0a0b0c0d)"]
    i = lines.index("neighbours (their HELLOs)")
    assert lines[i + 2].split() == ["x", "0a0b0c0d", "NODE", "lan/02:00:00:00:00:02",
                                    "000000ff"]
    i = next(n for n, line in enumerate(lines) if line.startswith("VBM: ACTIVE"))
    assert lines[i + 2].split()[4:6] == ["x", "(0a0b0c0d)"]
    heard = {**ALLOC, "vbm": None, "vbm_peer": "lan/02:00:00:00:00:09", "vbm_link": "lan",
             "vbm_reachable": True, "vbm_node": {"id": "0000abcd", "name": "v", "here": False}}
    assert ctl.alloc_view(heard)[0] == \
        "node v (32c2d184)  VBM v (0000abcd) at lan/02:00:00:00:00:09"
    assert ctl.alloc_view({**heard, "vbm_reachable": False})[0] == \
        "node v (32c2d184)  VBM v (0000abcd) at lan/02:00:00:00:00:09 (not heard lately)"
    assert ctl.alloc_view({**heard, "vbm_peer": None, "vbm_node": None,
                           "vbm_reachable": False})[0] == \
        "node v (32c2d184)  VBM on lan: not heard"
    assert ctl.alloc_view({**heard, "vbm_peer": None, "vbm_node": None, "vbm_link": None,
                           "vbm_reachable": False})[0] == \
        "node v (32c2d184)  no VBM expected ([tm] vbm_link unset)"


def test_show_header_has_the_node_id_and_the_run_time_changes():
    st = {**_show_result(False), "node_id": "32c2d184"}
    view = ctl.show_view(st)
    assert view[0].startswith("node h1 (32c2d184)  config h1.toml") and view[1] == ""
    st["config_state"] = {"runtime_changes": ["vlink rate blue/a0 out: 2Mbit -> 5Mbit"]}
    assert ctl.show_view(st)[1] == ("run-time changes not in h1.toml (a plain reload undoes "
                                    "them): vlink rate blue/a0 out: 2Mbit -> 5Mbit")


def test_tables_is_a_table_and_json_on_request(monkeypatch, capsys):
    t = {"node": "h", "generation": 2, "vnets": [{"name": "blue", "id": 1,
                                                   "namespace": "vnet-blue"}],
         "interfaces": [{"vnet": "blue", "name": "b0", "kind": "tap", "substrate_link": "up",
                         "in_vli": 10, "out_vli": 10, "addresses": ["10.0.0.1/24"],
                         "mtu": 1486}]}
    monkeypatch.setattr(ctl, "request", lambda path, cmd, /, timeout=None, **a: t)
    assert ctl.main(["tables"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "node h  generation 2"
    i = lines.index("logical interfaces")
    assert lines[i + 2].split() == ["blue", "b0", "tap", "up", "10", "10", "1486",
                                    "10.0.0.1/24"]
    assert ctl.main(["tables", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == t


def test_every_table_view_has_json():
    """A sub-command whose answer is printed as tables takes --json (for machines)."""
    tabular = {"show", "alloc", "top", "instances", "tables"}
    for c in commands.COMMANDS:
        for cli in c.cli:
            if cli.output in tabular:
                assert any("--json" in a.flags for a in cli.args), cli.path
