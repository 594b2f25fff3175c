"""Metrics: a real Prometheus server (Debian's) scrapes the routers of a lab; its HTTP API
shows counters matching the packets the test sent and the configured rates; `vnetctl show
--json` agrees with the /metrics endpoint; the shipped alert rules load, name no job, and stay
quiet on healthy nodes without a VBM."""
import json
import shutil
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import topo as t
from harness import eventually

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("prometheus") is None,
                                 reason="Debian's prometheus is not installed (run.sh installs it)")]


RULES = Path(__file__).resolve().parents[2] / "etc" / "prometheus" / "vnet-alerts.yml"


def _node(name, peer, octet, b_in, b_out):
    return t.node(
        name, t.p2p("p", "e0", f"{peer}:e0"), t.vnet("blue", 1),
        t.iface("blue", "blue0", "p", b_in, b_out, rate={"min": "5Mbit", "max": "20Mbit"},
                addresses=[f"10.0.0.{octet}/24"]),
        addresses={"e0": [f"192.168.60.{octet}/24"]}, settings={"metrics": "0.0.0.0:9477"})


TOPO = t.link("x:e0", "y:e0") + _node("x", "y", 1, 11, 10) + _node("y", "x", 2, 10, 11)

PROM_CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: vnet
    static_configs:
      - targets: ["127.0.0.1:9477"]
        labels: {node: y}
      - targets: ["192.168.60.1:9477"]
        labels: {node: x}
"""

GET = """
import sys, urllib.request, urllib.parse
url = sys.argv[1]
print(urllib.request.urlopen(url, timeout=5).read().decode())
"""


def _get(lab, node, url):
    r = lab.exec(node, ["python3", "-c", GET, url], timeout=20)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _query(lab, expr):
    from urllib.parse import quote
    out = json.loads(_get(lab, "y", f"http://127.0.0.1:9090/api/v1/query?query={quote(expr)}"))
    assert out["status"] == "success", out
    return {tuple(sorted(r["metric"].items())): float(r["value"][1])
            for r in out["data"]["result"]}


def _one(lab, expr):
    res = _query(lab, expr)
    assert len(res) == 1, (expr, res)
    return next(iter(res.values()))


def _up(lab, timeout=60):
    """Prometheus answers its API (it starts slowly on a loaded machine)."""
    eventually(lambda: lab.exec("y", ["python3", "-c", GET, "http://127.0.0.1:9090/-/ready"],
                                timeout=20), timeout, "Prometheus to become ready", step=0.5,
               until=lambda r: r.returncode == 0)


def _wait_scrape(lab, expr, predicate, timeout=20):
    """The value of ``expr`` once it has one series and ``predicate(value)`` holds."""
    res = eventually(lambda: _query(lab, expr), timeout, f"{expr} to be scraped", step=0.5,
                     until=lambda res: len(res) == 1 and predicate(next(iter(res.values()))))
    return next(iter(res.values()))


def _scrapes(lab, node, n):
    """Wait until Prometheus has scraped ``node`` ``n`` more times (the timestamp of its
    ``up`` sample moved on ``n`` times)."""
    at = f'timestamp(up{{node="{node}"}})'
    last = _wait_scrape(lab, at, lambda v: True)
    for _ in range(n):
        last = _wait_scrape(lab, at, lambda v, last=last: v > last)


def test_prometheus_scrapes_counters_and_rates(make_lab, tmp_path):
    lab = make_lab(TOPO)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(PROM_CONFIG)
    prom = lab.popen("y", ["prometheus", f"--config.file={cfg}",
                           f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                           "--web.listen-address=127.0.0.1:9090"],
                     stdout=open(tmp_path / "prom.log", "w"), stderr=open(tmp_path / "prom.err", "w"))
    in_y = 'vnet_virtual_link_packets_total{node="y",vnet="blue",direction="in"}'
    _up(lab)
    _wait_scrape(lab, in_y, lambda v: True, timeout=40)
    _scrapes(lab, "y", 2)                    # the baseline: after start-up's own frames
    base = _one(lab, in_y)
    sent = 1000
    r = lab.exec("x", ["ping", "-q", "-c", str(sent), "-i", "0.002", "10.0.0.2"], vnet="blue",
                 timeout=60)
    assert f"{sent} received" in r.stdout, r.stdout
    got = _wait_scrape(lab, in_y, lambda v: v - base >= sent) - base
    _scrapes(lab, "y", 2)                    # two more scrapes: nothing else counted
    got = _one(lab, in_y) - base
    assert abs(got - sent) <= sent * 0.01, f"Prometheus saw {got} frames into y, sent {sent}"
    out_x = _one(lab, 'vnet_virtual_link_packets_total{node="x",vnet="blue",direction="out"}')
    assert out_x >= sent
    for node in ("x", "y"):
        sel = f'{{node="{node}",vnet="blue",direction="out"}}'
        assert _one(lab, f"vnet_virtual_link_rate_max_bytes_per_second{sel}") == 20e6 / 8
        assert _one(lab, f"vnet_virtual_link_rate_min_bytes_per_second{sel}") == 5e6 / 8
        assert _one(lab, f'vnet_info{{node="{node}"}}') == 1
    prom.terminate()
    prom.wait(timeout=20)


def test_show_json_matches_metrics_endpoint(make_lab):
    lab = make_lab(TOPO)
    assert lab.ping("x", "10.0.0.2", vnet="blue", count=20, interval=0.01).received == 20

    def read():
        """show and /metrics, if no frame was counted in between (else None: read again)"""
        st = lab.control("y")
        text = _get(lab, "y", "http://127.0.0.1:9477/metrics")
        return (st, text) if lab.control("y")["virtual_links"] == st["virtual_links"] else None

    def pings_counted(got):
        return got and any(v["vnet"] == "blue" and v["direction"] == "in" and v["packets"] >= 20
                           for v in got[0]["virtual_links"])
    st, text = eventually(read, 20, "y to count the pings, and a /metrics read with no frame "
                          "counted meanwhile", until=pings_counted)
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    for v in st["virtual_links"]:
        labels = tuple(sorted({"link": v["substrate_link"], "vli": str(v["vli"]),
                               "direction": v["direction"], "vnet": v["vnet"],
                               "action": v["action"]}.items()))
        assert samples[("vnet_virtual_link_packets_total", labels)] == v["packets"]
        assert samples[("vnet_virtual_link_bytes_total", labels)] == v["bytes"]
    for s in st["substrate_links"]:
        labels = (("kind", s["kind"]), ("link", s["id"]))
        assert samples[("vnet_substrate_link_rx_packets_total", labels)] == s["rx_packets"]
        assert samples[("vnet_substrate_link_tx_bytes_total", labels)] == s["tx_bytes"]
    assert samples[("vnet_config_generation", ())] == st["generation"]
    assert v["packets"] >= 20


ALERTS_CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["%s"]
scrape_configs:
  - job_name: lab-routers
    static_configs:
      - targets: ["127.0.0.1:9477"]
        labels: {node: y}
      - targets: ["192.168.60.1:9477"]
        labels: {node: x}
""" % RULES


def _api(lab, path):
    out = json.loads(_get(lab, "y", f"http://127.0.0.1:9090/api/v1/{path}"))
    assert out["status"] == "success", out
    return out["data"]


@pytest.mark.one_tier      # does not depend on the datapath tier
def test_shipped_alerts_stay_quiet_without_vbm_and_see_a_node_go_down(make_lab, tmp_path):
    """The rules under a job not called "vnet": all load and evaluate; on two healthy nodes
    without a VBM no alert is even pending (the old VBM rule was, at once); a killed node is
    seen by VnetNodeDown (pending: its ``for`` is 1 min)."""
    lab = make_lab(TOPO)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(ALERTS_CONFIG)
    prom = lab.popen("y", ["prometheus", f"--config.file={cfg}",
                           f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                           "--web.listen-address=127.0.0.1:9090"],
                     stdout=open(tmp_path / "prom.log", "w"),
                     stderr=open(tmp_path / "prom.err", "w"))
    _up(lab)
    _wait_scrape(lab, 'vnet_vbm_configured{node="x"}', lambda v: v == 0, timeout=40)
    _wait_scrape(lab, 'vnet_vbm_configured{node="y"}', lambda v: v == 0, timeout=40)
    _scrapes(lab, "x", 3)

    def rules():
        return [r for g in _api(lab, "rules")["groups"] for r in g["rules"]]
    evaluated = eventually(rules, 20, "every rule evaluated after x and y were scraped",
                           until=lambda rs: rs and all(r["lastEvaluation"] > "2000"
                                                        for r in rs))
    names = sorted(r["name"] for r in evaluated)
    print(f"{len(names)} rules loaded: {names}")
    assert "VnetVBMUnreachable" in names and "VnetNodeDown" in names
    assert [r for r in evaluated if r["health"] != "ok"] == []
    _scrapes(lab, "x", 3)                                 # a few more evaluations
    assert _api(lab, "alerts")["alerts"] == []
    lab.kill_daemon("x")
    pending = eventually(lambda: _api(lab, "alerts")["alerts"], 30,
                         "VnetNodeDown for x once its scrapes fail", until=bool)
    assert [(a["labels"]["alertname"], a["labels"]["node"], a["labels"]["job"], a["state"])
            for a in pending] == [("VnetNodeDown", "x", "lab-routers", "pending")], pending
    prom.terminate()
    prom.wait(timeout=20)
