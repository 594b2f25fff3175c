"""Shipped Prometheus rules and Grafana dashboard: valid, and every vnet_* metric they use is
one the collector exports."""
import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from vnet_router.model import config
from vnet_router.datapath.select import DatapathPy as Datapath
from vnet_router.ops.metrics import Collector
from vnet_router.node.status import status
from vnet_router.model.tables import IfaceFacts, Tables

ETC = Path(__file__).resolve().parents[2] / "etc"


def exported_text() -> str:
    cfg = config.load(ETC / "router.toml")
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


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_alert_rules_pass_promtool():
    r = subprocess.run(["promtool", "check", "rules", str(ETC / "prometheus/vnet-alerts.yml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_rules_and_dashboard_use_exported_metrics():
    names = exported_names()
    rules = (ETC / "prometheus/vnet-alerts.yml").read_text()
    dash = json.loads((ETC / "grafana/vnet-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for used in used_names(rules) | used_names(exprs):
        assert used in names, f"{used} is not exported"
