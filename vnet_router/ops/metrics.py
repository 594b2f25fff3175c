"""Prometheus metrics of a node, read at scrape time (the datapath only bumps plain ints).

``Collector`` turns the same status view ``vnetctl show --json`` prints into metric families,
so the two always agree.  With a control plane (``[tm]``/``[vbm]``) ``status()['control']``
adds the control messages by type and outcome, the protocol's event counters and the
allocations of the Traffic Manager and the VBM (``vnetctl alloc``).  ``serve(addr, port, status_fn, extra)`` starts prometheus-client's
HTTP server in a thread with a registry of its own (our collector + process metrics).

Rates are exported in Prometheus' base unit, bytes per second (``..._bytes_per_second``, as
node_exporter counts bytes), though the status view and the configuration speak bit/s:
``promtool check metrics`` refuses ``bits``.  Multiply by 8 in a query for bit/s.
"""
from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

VL_LABELS = ["link", "vli", "direction", "vnet", "action"]


def _bytes(bps):
    """Bytes per second (the exported unit) from the status view's bit/s."""
    return bps / 8


class Collector:
    def __init__(self, status_fn):
        self.status_fn = status_fn

    def describe(self):
        return []          # families are only known at scrape time

    def collect(self):
        st = self.status_fn()
        yield from self._node(st)
        yield from self._vbm_client(st)
        yield from self._links(st)
        yield from self._vlinks(st)
        yield from self._ports(st)
        if st.get("control"):
            yield from self._control(st["control"])

    @staticmethod
    def _node(st):
        info = GaugeMetricFamily("vnet_info", "Node identity: name, id (8 hex digits, as in "
                                 "vnetctl and the VBM's metrics) and datapath",
                                 labels=["node", "node_id", "datapath"])
        info.add_metric([st["node"], st.get("node_id", ""), st["datapath"]], 1)
        yield info
        fast = GaugeMetricFamily("vnet_fast_path_in_use", "1 if the Cython fast path forwards")
        fast.add_metric([], 1 if st["datapath"] in ("fast", "kernel") else 0)
        yield fast
        classified = GaugeMetricFamily("vnet_classifier_in_use", "1 if the eBPF classifier "
                                       "sorts substrate frames before the engine's rings")
        classified.add_metric([], st["datapath_stats"].get("classified", 0))
        yield classified
        kernel = CounterMetricFamily("vnet_kernel_tier_frames", "Frames the eBPF classifier "
                                     "ended in the kernel: forwarded (datapath = kernel) or "
                                     "dropped (fast and kernel)")
        kernel.add_metric([], st["datapath_stats"].get("kernel_frames", 0))
        yield kernel
        capture = CounterMetricFamily("vnet_tap_capture_frames", "Frames the TAP capture took "
                                      "at the TAPs' TC egress (tap_capture), by outcome",
                                      labels=["outcome"])
        for outcome in ("taken", "passed"):
            capture.add_metric([outcome], st["datapath_stats"].get(f"capture_{outcome}", 0))
        yield capture
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
        cs = st.get("control_socket")
        if cs:
            conns = GaugeMetricFamily("vnet_control_socket_connections",
                                      "Connections the control socket serves now")
            conns.add_metric([], cs["connections"])
            yield conns
            refused = CounterMetricFamily(
                "vnet_control_socket_refused", "Control socket connections and requests "
                "refused or closed, by reason (connections, per_uid, evicted, idle_timeout, "
                "request_timeout, too_long, too_deep)", labels=["reason"])
            for reason, n in cs["refused"].items():
                refused.add_metric([reason], n)
            yield refused
        drops = CounterMetricFamily("vnet_drops", "Frames dropped, by reason", labels=["reason"])
        for reason, n in st["drops"].items():
            drops.add_metric([reason], n)
        yield drops
        vnet_drops = CounterMetricFamily(
            "vnet_vnet_drops", "Frames of a virtual link dropped, by its vNet and reason "
            "(vnet \"-\": a VLI configured to drop)", labels=["vnet", "reason"])
        for vnet, reasons in st.get("vnet_drops", {}).items():
            for reason, n in reasons.items():
                vnet_drops.add_metric([vnet, reason], n)
        yield vnet_drops
        ignored = CounterMetricFamily(
            "vnet_ignored", "Frames not for this node, by reason (not_member: a vNet it does "
            "not host, flooded on a multiaccess LAN); no fault, not a drop", labels=["reason"])
        for reason, n in st.get("ignored", {}).items():
            ignored.add_metric([reason], n)
        yield ignored

    @staticmethod
    def _vbm_client(st):
        """Whether this node expects a VBM and hears it: exported by every node (0 without a
        control plane), so an alert can ask for a VBM only where one is expected."""
        a = (st.get("control") or {}).get("allocations") or {}
        configured = GaugeMetricFamily("vnet_vbm_configured", "1 if this node expects a VBM "
                                       "([tm] vbm_link names the LAN it serves)")
        configured.add_metric([], 1 if a.get("vbm_link") else 0)
        reachable = GaugeMetricFamily("vnet_vbm_reachable", "1 if the VBM this node expects "
                                      "was heard (its HELLO, within [tm] neighbour_timeout); "
                                      "0 if not, or if none is expected")
        reachable.add_metric([], 1 if a.get("vbm_link") and a.get("vbm_reachable") else 0)
        yield configured
        yield reachable

    @staticmethod
    def _links(st):
        labels = ["link", "kind"]
        fams = {k: CounterMetricFamily(f"vnet_substrate_link_{k}", f"Substrate link {k}",
                                       labels=labels)
                for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")}
        drops = CounterMetricFamily("vnet_substrate_link_drops", "Drops by substrate link",
                                    labels=["link", "reason"])
        ignored = CounterMetricFamily("vnet_substrate_link_ignored",
                                      "Frames not for this node by substrate link",
                                      labels=["link", "reason"])
        up = GaugeMetricFamily("vnet_substrate_link_up", "1 if the substrate link is up, 0 "
                               "while it waits for its underlay (a UDP link whose local "
                               "address or route is missing: retried)", labels=labels)
        down = GaugeMetricFamily("vnet_substrate_link_down_seconds", "How long the substrate "
                                 "link has been down (0: up)", labels=labels)
        for s in st["substrate_links"]:
            for k, fam in fams.items():
                fam.add_metric([s["id"], s["kind"]], s[k])
            up.add_metric([s["id"], s["kind"]], 0 if s.get("state") == "down" else 1)
            down.add_metric([s["id"], s["kind"]], s.get("down_seconds", 0))
            for reason, n in s["drops"].items():
                drops.add_metric([s["id"], reason], n)
            for reason, n in s.get("ignored", {}).items():
                ignored.add_metric([s["id"], reason], n)
        yield from fams.values()
        yield up
        yield down
        yield drops
        yield ignored

    @staticmethod
    def _vlinks(st):
        pk = CounterMetricFamily("vnet_virtual_link_packets", "Frames carried", labels=VL_LABELS)
        by = CounterMetricFamily("vnet_virtual_link_bytes", "Payload bytes carried",
                                 labels=VL_LABELS)
        dr = CounterMetricFamily("vnet_virtual_link_drops", "Drops by virtual link",
                                 labels=VL_LABELS + ["reason"])
        rates = {k: GaugeMetricFamily(f"vnet_virtual_link_rate_{k}_bytes_per_second",
                                      f"{k} rate of the virtual link (absent: unlimited)",
                                      labels=VL_LABELS) for k in ("min", "current", "max")}
        q = GaugeMetricFamily("vnet_virtual_link_queue_depth_packets",
                              "Frames waiting in the output shaper", labels=VL_LABELS)
        pmtu = GaugeMetricFamily("vnet_virtual_link_path_mtu_bytes",
                                 "Largest payload the output virtual link carries end to end, "
                                 "as its downstream node reported (absent: no report)",
                                 labels=VL_LABELS)
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
                    fam.add_metric(lv, _bytes(v["rate"][k]))
            q.add_metric(lv, v["queue_depth"])
            if v.get("path_mtu") is not None:
                pmtu.add_metric(lv, v["path_mtu"])
            acc = per_vnet.setdefault((v["vnet"], v["direction"]), [0, 0])
            acc[0] += v["packets"]
            acc[1] += v["bytes"]
        for (vnet, direction), (p, b) in per_vnet.items():
            vnet_pk.add_metric([vnet, direction], p)
            vnet_by.add_metric([vnet, direction], b)
        yield from (pk, by, dr, *rates.values(), q, pmtu, vnet_pk, vnet_by)

    @staticmethod
    def _ports(st):
        labels = ["vnet", "interface"]
        fams = {k: CounterMetricFamily(f"vnet_logical_interface_{k}",
                                       f"Logical interface {k} (rx: from the vNet, tx: to it)",
                                       labels=labels)
                for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")}
        entries = GaugeMetricFamily("vnet_logical_interface_learned_macs",
                                    "MACs in the learned-MAC table (multiaccess links)",
                                    labels=labels)
        limit = GaugeMetricFamily("vnet_logical_interface_learned_macs_max",
                                  "Most MACs the learned-MAC table holds ([[interface]]."
                                  "learned_max)", labels=labels)
        learned = {k: CounterMetricFamily(f"vnet_logical_interface_macs_{k}", text,
                                          labels=labels)
                   for k, text in (("learned", "MACs learned (entries added)"),
                                   ("expired", "Learned MACs removed after ageing"),
                                   ("overflow", "New MACs not learned because the table was "
                                    "full"))}
        for p in st["logical_interfaces"]:
            lv = [p["vnet"], p["name"]]
            for k, fam in fams.items():
                fam.add_metric(lv, p[k])
            t = p.get("learned")
            if t:
                entries.add_metric(lv, t["entries"])
                limit.add_metric(lv, t["max"])
                for k, fam in learned.items():
                    fam.add_metric(lv, t[k])
        yield from fams.values()
        yield from (entries, limit, *learned.values())


    @staticmethod
    def _control(c):
        msgs = CounterMetricFamily("vnet_control_messages", "Control protocol messages (VLI 0) "
                                   "by type and outcome (sent, send_error, no_link, received, "
                                   "malformed, error)", labels=["type", "outcome"])
        for kind, outcomes in c.get("messages", {}).items():
            for outcome, n in outcomes.items():
                msgs.add_metric([kind, outcome], n)
        yield msgs
        events = CounterMetricFamily("vnet_control_events", "Control protocol events (retries, "
                                     "timeouts, refusals, ...)", labels=["event"])
        for event, n in c.items():
            if isinstance(n, int) and not event.startswith(("tx_", "rx_")):
                events.add_metric([event], n)
        yield events
        refused = CounterMetricFamily(
            "vnet_control_refused", "Control messages refused, by reason (authentication: "
            "unauthenticated, unknown_key, bad_mac, stale, truncated; replay protection: "
            "replay, replay_restart, old_incarnation, bad_seq; admission: limit_peer, limit_vnet)",
            labels=["reason"])
        for reason, n in c.get("refused", {}).items():
            refused.add_metric([reason], n)
        yield refused
        plain = GaugeMetricFamily("vnet_control_links_unauthenticated",
                                  "Substrate links whose control messages are not "
                                  "authenticated (no key_file)")
        plain.add_metric([], len(c.get("unauthenticated_links", ())))
        yield plain
        a = c.get("allocations")
        if not a:
            return
        labels = ["link", "peer", "vli", "vnet"]
        fams = {}
        for direction, bounds in (("output", ("min", "current", "max", "demand")),
                                  ("input", ("min", "current", "max"))):
            for b in bounds:
                fams[(direction, b)] = GaugeMetricFamily(
                    f"vnet_tm_{direction}_{b}_bytes_per_second",
                    f"Traffic Manager: {b} rate of a managed {direction} virtual link",
                    labels=labels)
            for v in a[direction + "s"]:
                lv = [v["substrate_link"], v["peer"], str(v["vli"]), v["vnet"]]
                for b in bounds:
                    if v[b] is not None:
                        fams[(direction, b)].add_metric(lv, _bytes(v[b]))
        yield from fams.values()
        agg = {k: GaugeMetricFamily(f"vnet_tm_vnet_{k}_bytes_per_second",
                                    f"Traffic Manager: per-vNet input {k} of this node",
                                    labels=["vnet"]) for k in ("aggregate", "used", "minimum")}
        for vnet, x in a["aggregates"].items():
            for k, fam in agg.items():
                fam.add_metric([vnet], _bytes(x[k]))
        yield from agg.values()
        members = GaugeMetricFamily("vnet_vnet_members", "Nodes that joined a vNet this node "
                                    "hosts the virtual router of ([vnet.members])",
                                    labels=["vnet"])
        for vnet, joined in a.get("members", {}).items():
            members.add_metric([vnet], len(joined))
        yield members
        vbm = a.get("vbm")
        if not vbm:
            return
        active = GaugeMetricFamily("vnet_vbm_active", "1 if this node's VBM grants (0 while it "
                                   "rebuilds)")
        active.add_metric([], 1 if vbm["state"] == "ACTIVE" else 0)
        lan = GaugeMetricFamily("vnet_vbm_lan_capacity_bytes_per_second", "VBM: LAN bandwidth")
        if vbm["lan_capacity"] is not None:
            lan.add_metric([], _bytes(vbm["lan_capacity"]))
        share = GaugeMetricFamily("vnet_vbm_share_ratio", "VBM: share of the LAN admitted",
                                  labels=["vnet_id"])
        pool = GaugeMetricFamily("vnet_vbm_pool_bytes_per_second", "VBM: a vNet's LAN pool",
                                 labels=["vnet_id"])
        alloc = GaugeMetricFamily("vnet_vbm_allocated_bytes_per_second",
                                  "VBM: sum of a vNet's node aggregates", labels=["vnet_id"])
        # a node by its id and name (one name per id: no more series than nodes); not
        # "node", which scrape configurations commonly set on the target
        node = GaugeMetricFamily("vnet_vbm_node_aggregate_bytes_per_second",
                                 "VBM: aggregate assigned to a node for a vNet",
                                 labels=["vnet_id", "node_id", "node_name"])
        for vid, x in vbm["vnets"].items():
            share.add_metric([vid], x["share"])
            if x["pool"] is not None:
                pool.add_metric([vid], _bytes(x["pool"]))
            alloc.add_metric([vid], _bytes(x["allocated"]))
            for n, y in x["nodes"].items():
                node.add_metric([vid, n, y.get("name") or ""], _bytes(y["aggregate"]))
        yield from (active, lan, share, pool, alloc, node)


def serve(addr: str, port: int, status_fn):
    registry = CollectorRegistry()
    registry.register(Collector(status_fn))
    registry.register(ProcessCollector(registry=None))
    server, thread = start_http_server(port, addr=addr, registry=registry)
    log.info("metrics on http://%s:%d/metrics", addr if ":" not in addr else f"[{addr}]", port)
    return server, thread
