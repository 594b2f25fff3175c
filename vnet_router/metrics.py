"""Prometheus metrics of a node, read at scrape time (the datapath only bumps plain ints).

``Collector`` turns the same status view ``vnetctl show --json`` prints into metric families,
so the two always agree.  ``serve(addr, port, status_fn, extra)`` starts prometheus-client's
HTTP server in a thread with a registry of its own (our collector + process metrics).
"""
from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

VL_LABELS = ["link", "vli", "direction", "vnet", "action"]


class Collector:
    def __init__(self, status_fn):
        self.status_fn = status_fn

    def describe(self):
        return []          # families are only known at scrape time

    def collect(self):
        st = self.status_fn()
        yield from self._node(st)
        yield from self._links(st)
        yield from self._vlinks(st)
        yield from self._ports(st)

    @staticmethod
    def _node(st):
        info = GaugeMetricFamily("vnet_info", "Node identity", labels=["node", "datapath"])
        info.add_metric([st["node"], st["datapath"]], 1)
        yield info
        fast = GaugeMetricFamily("vnet_fast_path_in_use", "1 if the Cython fast path forwards")
        fast.add_metric([], 1 if st["datapath"] == "fast" else 0)
        yield fast
        gen = GaugeMetricFamily("vnet_config_generation", "Generation of the tables in use")
        gen.add_metric([], st["generation"])
        yield gen
        cfg = st.get("config_state", {})
        loaded = GaugeMetricFamily("vnet_config_load_timestamp_seconds",
                                   "When the configuration in use was loaded (Unix time)")
        loaded.add_metric([], cfg.get("loaded_at", 0))
        yield loaded
        reloads = CounterMetricFamily("vnet_config_reloads", "Reload attempts by outcome",
                                      labels=["outcome"])
        for outcome, n in cfg.get("reloads", {}).items():
            reloads.add_metric([outcome], n)
        yield reloads
        req = CounterMetricFamily("vnet_control_requests", "Control socket requests",
                                  labels=["command", "outcome"])
        for (cmd, outcome), n in st.get("_control_requests", {}).items():
            req.add_metric([cmd, outcome], n)
        yield req
        drops = CounterMetricFamily("vnet_drops", "Frames dropped, by reason", labels=["reason"])
        for reason, n in st["drops"].items():
            drops.add_metric([reason], n)
        yield drops

    @staticmethod
    def _links(st):
        labels = ["link", "kind"]
        fams = {k: CounterMetricFamily(f"vnet_substrate_link_{k}", f"Substrate link {k}",
                                       labels=labels)
                for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")}
        drops = CounterMetricFamily("vnet_substrate_link_drops", "Drops by substrate link",
                                    labels=["link", "reason"])
        for s in st["substrate_links"]:
            for k, fam in fams.items():
                fam.add_metric([s["id"], s["kind"]], s[k])
            for reason, n in s["drops"].items():
                drops.add_metric([s["id"], reason], n)
        yield from fams.values()
        yield drops

    @staticmethod
    def _vlinks(st):
        pk = CounterMetricFamily("vnet_virtual_link_packets", "Frames carried", labels=VL_LABELS)
        by = CounterMetricFamily("vnet_virtual_link_bytes", "Payload bytes carried",
                                 labels=VL_LABELS)
        dr = CounterMetricFamily("vnet_virtual_link_drops", "Drops by virtual link",
                                 labels=VL_LABELS + ["reason"])
        rates = {k: GaugeMetricFamily(f"vnet_virtual_link_rate_{k}_bits_per_second",
                                      f"{k} rate of the virtual link (absent: unlimited)",
                                      labels=VL_LABELS) for k in ("min", "current", "max")}
        q = GaugeMetricFamily("vnet_virtual_link_queue_depth_packets",
                              "Frames waiting in the output shaper", labels=VL_LABELS)
        vnet_pk = CounterMetricFamily("vnet_vnet_packets", "Frames of a vNet",
                                      labels=["vnet", "direction"])
        vnet_by = CounterMetricFamily("vnet_vnet_bytes", "Payload bytes of a vNet",
                                      labels=["vnet", "direction"])
        per_vnet: dict = {}
        for v in st["virtual_links"]:
            lv = [v["substrate_link"], str(v["vli"]), v["direction"], v["vnet"], v["action"]]
            pk.add_metric(lv, v["packets"])
            by.add_metric(lv, v["bytes"])
            for reason, n in v["drops"].items():
                dr.add_metric(lv + [reason], n)
            for k, fam in rates.items():
                if v["rate"][k] is not None:
                    fam.add_metric(lv, v["rate"][k])
            q.add_metric(lv, v["queue_depth"])
            acc = per_vnet.setdefault((v["vnet"], v["direction"]), [0, 0])
            acc[0] += v["packets"]
            acc[1] += v["bytes"]
        for (vnet, direction), (p, b) in per_vnet.items():
            vnet_pk.add_metric([vnet, direction], p)
            vnet_by.add_metric([vnet, direction], b)
        yield from (pk, by, dr, *rates.values(), q, vnet_pk, vnet_by)

    @staticmethod
    def _ports(st):
        labels = ["vnet", "interface"]
        fams = {k: CounterMetricFamily(f"vnet_logical_interface_{k}",
                                       f"Logical interface {k} (rx: from the vNet, tx: to it)",
                                       labels=labels)
                for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")}
        for p in st["logical_interfaces"]:
            for k, fam in fams.items():
                fam.add_metric([p["vnet"], p["name"]], p[k])
        yield from fams.values()


def serve(addr: str, port: int, status_fn):
    registry = CollectorRegistry()
    registry.register(Collector(status_fn))
    registry.register(ProcessCollector(registry=None))
    server, thread = start_http_server(port, addr=addr, registry=registry)
    log.info("metrics on http://%s:%d/metrics", addr if ":" not in addr else f"[{addr}]", port)
    return server, thread
