"""Shipped Prometheus rules and Grafana dashboard: valid, and every vnet_* metric they use is
one the collector exports.  The alert rules have promtool unit tests (vnet-alerts.test.yml),
run here: every rule fires where it should and stays quiet where it should not."""
import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from vnet_router.datapath.select import DatapathPy as Datapath
from vnet_router.ops.metrics import Collector
from vnet_router.node.status import status
from vnet_router.model.tables import IfaceFacts, Tables

from harness import load_example

ETC = Path(__file__).resolve().parents[2] / "etc"
RULES = ETC / "prometheus/vnet-alerts.yml"
RULE_TESTS = ETC / "prometheus/vnet-alerts.test.yml"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed (Debian's prometheus)")


def exported_text() -> str:
    cfg = load_example("router.toml")
    tables = Tables(cfg, {"eth0": IfaceFacts(2, b"\x02" * 6, 1500)})
    dp = Datapath(tables, asyncio.new_event_loop())
    dp.install(tables.compile())
    tables.drops["short"] = 3
    for v in tables.vlinks.values():
        dp.drop("policed", None, v)          # by virtual link and by vNet

    def st():
        s = status(cfg, tables, dp, 0.0)
        s["config_state"] = {"loaded_at": 1.0, "reloads": {"ok": 1, "refused": 0}}
        s["_control_requests"] = {("show", "ok"): 1}
        return s
    reg = CollectorRegistry()
    reg.register(Collector(st))
    return generate_latest(reg).decode()


def exported_names() -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exported_text().splitlines()
            if line and not line.startswith("#")}


def used_names(text: str) -> set[str]:
    return set(re.findall(r"\bvnet_[a-z_]+", text)) - {"vnet_vbm"}


def test_collector_follows_naming_conventions():
    names = exported_names()
    assert "vnet_virtual_link_packets_total" in names
    assert "vnet_virtual_link_rate_max_bytes_per_second" in names
    for n in names:
        assert re.fullmatch(r"vnet_[a-z_]+", n)
        assert not n.endswith("_total_total")
        assert "_bits" not in n, f"{n}: Prometheus' base unit is bytes"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_exported_metrics_pass_promtool_without_lint():
    r = subprocess.run(["promtool", "check", "metrics"], input=exported_text(),
                       capture_output=True, text=True)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def alert_names() -> list[str]:
    return [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"]
            for r in g["rules"] if "alert" in r]


@needs_promtool
def test_alert_rules_pass_promtool():
    r = subprocess.run(["promtool", "check", "rules", str(RULES)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in r.stdout


@needs_promtool
def test_alert_rules_pass_their_promtool_unit_tests():
    r = subprocess.run(["promtool", "test", "rules", str(RULE_TESTS)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "FAILED" not in r.stdout + r.stderr


def test_every_alert_rule_is_tested_firing_and_quiet():
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    fires, quiet = set(), set()
    for group in tests["tests"]:
        for t in group["alert_rule_test"]:
            (fires if t["exp_alerts"] else quiet).add(t["alertname"])
    assert alert_names()
    for name in alert_names():
        assert name in fires, f"no promtool test where {name} fires"
        assert name in quiet, f"no promtool test where {name} stays quiet"


def test_a_deployment_without_vbm_raises_nothing():
    """The acceptance case of the old VBM rule's false alarm: no node expects a VBM, every
    rule is evaluated, none fires."""
    groups = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    group = next(g for g in groups if g["name"] == "no VBM configured, nothing fires")
    series = {s["series"]: s["values"] for s in group["input_series"]}
    configured = [v for k, v in series.items() if k.startswith("vnet_vbm_configured{")]
    assert configured and all(set(v.split("x")[0]) == {"0"} for v in configured)
    assert not any("vbm" in k.split("{")[1].split(",")[0] for k in series)   # no VBM job
    checked = {t["alertname"] for t in group["alert_rule_test"] if t["exp_alerts"] == []}
    assert checked == set(alert_names())
    assert all(t["exp_alerts"] == [] for t in group["alert_rule_test"])


def test_alert_rules_name_no_scrape_job():
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        for r in g["rules"]:
            assert not re.search(r"\bjob\s*(=|!=|=~|!~)", r["expr"]), (r["alert"], r["expr"])


def test_rule_tests_feed_metrics_the_collector_exports():
    names = exported_names()
    for used in used_names(RULE_TESTS.read_text()):
        assert used in names, f"{used} is not exported"


def test_rules_and_dashboard_use_exported_metrics():
    names = exported_names()
    rules = (ETC / "prometheus/vnet-alerts.yml").read_text()
    dash = json.loads((ETC / "grafana/vnet-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for used in used_names(rules) | used_names(exprs):
        assert used in names, f"{used} is not exported"
