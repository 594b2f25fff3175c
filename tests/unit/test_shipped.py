"""The package data (vnet_router/data/) is an exact copy of the documented etc/ and systemd/:
the wheel carries what the commands need, and the two never drift apart."""
from vnet_router.lab import demo
from vnet_router.ops import shipped


def test_package_copies_equal_the_documented_files():
    diff = shipped.differences()
    assert not diff, "run python3 -m vnet_router.ops.shipped:\n" + "\n".join(diff)
    assert shipped.main(["--check"]) == 0


def test_a_drift_is_reported_and_sync_repairs_it(tmp_path, capsys):
    root, data = tmp_path / "root", tmp_path / "data"
    for d in shipped.DIRS:
        (root / d / "sub").mkdir(parents=True)
        (root / d / "sub" / "a.conf").write_text("a\n")
    shipped.sync(root, data)
    assert shipped.differences(root, data) == []
    (data / "systemd" / "sub" / "a.conf").write_text("edited by hand\n")
    (data / "etc" / "extra.toml").write_text("x\n")
    (root / "etc" / "new.toml").write_text("n\n")
    assert shipped.differences(root, data) == [
        f"etc/new.toml: missing from {data}",
        f"etc/extra.toml: in {data} but not in {root}",
        "systemd/sub/a.conf: differs"]
    shipped.sync(root, data)
    assert shipped.differences(root, data) == []


def test_the_demo_and_the_units_are_read_from_the_package():
    assert demo.DEMO_TOPOLOGY == shipped.path("etc/lab/demo.toml")
    assert "vnet_router/data/etc/lab" in demo.DEMO_TOPOLOGY.as_posix()
    assert shipped.names("systemd") == [
        "systemd/vnet-hostd.service", "systemd/vnet-router.service",
        "systemd/vnet-router@.service", "systemd/vnet-vbm.service"]
    assert "ExecStart=" in shipped.read_text("systemd/vnet-router.service")
