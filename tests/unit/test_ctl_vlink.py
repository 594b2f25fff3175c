"""``vnetctl vlink add`` is one command for both daemons: given VLIs (--in-vli, vnet-hostd) or
VLIs negotiated with the neighbour (--max, the router's control plane).  The requests sent."""
import pytest

from vnet_router.cli import vnetctl as ctl


@pytest.fixture
def sent(monkeypatch):
    calls = []

    def request(path, cmd, timeout=None, **args):
        calls.append((cmd, args))
        if cmd == "vlink_add" and "link" in args:
            return {"vnet": args["vnet"], "name": args["name"], "substrate_link": args["link"],
                    "in_vli": 1024, "out_vli": 1025, "peer": "p", "min": 0, "max": 10**7}
        return {"generation": 2, "changes": ["x"]}
    monkeypatch.setattr(ctl, "request", request)
    return calls


def test_negotiated_with_link_positional_or_option(sent, capsys):
    assert ctl.main(["vlink", "add", "p", "blue", "dyn0", "--min", "2Mbit", "--max", "20Mbit",
                     "--address", "10.7.0.1/24"]) == 0
    assert ctl.main(["vlink", "add", "blue", "dyn0", "--link", "p", "--max", "20Mbit"]) == 0
    assert sent == [("vlink_add", {"link": "p", "vnet": "blue", "name": "dyn0", "min": "2Mbit",
                                   "max": "20Mbit", "addresses": ["10.7.0.1/24"], "peer": None}),
                    ("vlink_add", {"link": "p", "vnet": "blue", "name": "dyn0", "min": "0",
                                   "max": "20Mbit", "addresses": [], "peer": None})]
    assert "in VLI 1024" in capsys.readouterr().out


def test_given_vlis_go_to_hostd(sent, capsys):
    assert ctl.main(["vlink", "add", "blue", "b1", "--link", "lan", "--in-vli", "200",
                     "--kind", "socket"]) == 0
    assert sent == [("vlink_add", {"vnet": "blue", "name": "b1", "substrate_link": "lan",
                                   "in_vli": 200, "out_vli": None, "addresses": [],
                                   "kind": "socket"})]
    assert "generation 2" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["vlink", "add", "blue", "b1", "--link", "lan"],                        # neither mode
    ["vlink", "add", "blue", "b1", "--max", "1Mbit"],                       # no link
    ["vlink", "add", "lan", "blue", "b1", "--in-vli", "3", "--max", "1Mbit"],   # both modes
    ["vlink", "add", "lan", "blue", "b1", "--max", "1Mbit", "--rate", "1Mbit"],
    ["vlink", "add", "lan", "blue", "b1", "--link", "other", "--max", "1Mbit"],
    ["vlink", "add", "a", "b", "c", "d", "--max", "1Mbit"],
])
def test_ambiguous_forms_are_refused_before_sending(sent, argv, capsys):
    assert ctl.main(argv) == 2
    assert sent == []
    assert "vnetctl: vlink add" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["vlink", "add", "p", "blue", "dyn0", "--max", "10Mbps"],
    ["vlink", "add", "p", "blue", "dyn0", "--min", "1mbps", "--max", "10Mbit"],
    ["vlink", "add", "blue", "b1", "--link", "lan", "--in-vli", "200", "--rate", "10MBps"],
    ["join", "blue", "--id", "1", "--link", "lan", "--in-vli", "200", "--rate", "1Gbps"],
])
def test_a_rate_read_both_as_bits_and_bytes_is_refused_before_sending(sent, argv, capsys):
    with pytest.raises(SystemExit) as e:
        ctl.main(argv)
    assert e.value.code == 2
    assert sent == []
    err = capsys.readouterr().err
    assert "ambiguous rate" in err and "bits per second" in err and "bytes per second" in err
