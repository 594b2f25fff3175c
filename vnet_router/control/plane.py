"""The control plane of a running node: the control protocol, TM and VBM bound to the datapath.

Work is split like this:

* the node registers :meth:`ControlPlane.on_control` with the datapath's VLI 0 dispatcher
  (``datapath.dispatch``), ahead of the path-MTU service: it decodes every VLI 0 frame (one
  that does not decode is refused and the datapath counts it as the ``control`` drop) and hands
  PATH_MTU to the path-MTU service it made (``path_mtu``), which sends through :meth:`send`;
  our messages leave with ``Datapath.send_control``;
* ``transport`` numbers, retries and deduplicates; ``tm``/``vbm`` decide rates; this module
  maps their opaque peers to (substrate link, MAC), their keys to the virtual link table, and
  makes the meters follow (``Datapath.set_rate``);
* dynamic virtual links (``vnetctl vlink add``): the node asking is upstream of the link it
  will send on; it allocates its own input VLI (the reverse direction) and a TAP, sends
  VLINK_SETUP; the downstream node allocates its input VLI, creates its TAP and answers with
  the VLI.  TAPs are created through netlink in a worker thread (``Ports.create``: pyroute2
  cannot run inside the daemon's event loop); the datapath takes them in one loop step
  (``Datapath.reconfigure``), like a reload.  A reload keeps them (``Tables.dynamic``,
  ``Ports.dynamic``) and tells the control plane (:meth:`ControlPlane.reconfigured`).

Peers are ``(substrate link id, MAC bytes | None)``.  Timers run on the event loop every
``[tm].tick`` seconds.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from vnet_router.wire import substrate as wire
from vnet_router.model.config import LogicalInterface, NodeConfig, Rate, valid_ifname
from vnet_router.wire import control as m
from vnet_router.control.fsm import VlinkFSM, VlinkState
from vnet_router.control.guard import THROTTLED, Guard
from vnet_router.control import views
from vnet_router.control.members import Membership
from vnet_router.control.neighbours import Budget, Neighbours
from vnet_router.control.pmtu import node_id
from vnet_router.wire import auth
from vnet_router.control.transport import Requester, Responder
from vnet_router.control.kshaping import KernelShaping
from vnet_router.model.tables import IN, OUT
from vnet_router.control.tm import TrafficManager
from vnet_router.model.units import parse_rate
from vnet_router.control.vbm import VBM

log = logging.getLogger(__name__)


@dataclass
class Dynamic:
    """A run-time logical interface = virtual link pair made by the control protocol."""

    vnet: str
    name: str
    link: str
    peer: tuple
    in_vli: int
    out_vli: int
    min: int
    max: int
    upstream: bool            # we asked for it
    fsm: VlinkFSM
    member: bool = False      # a vNet membership (JOIN): control/members.py


class ControlPlane:
    def __init__(self, cfg: NodeConfig, tables, dp, ports, loop, *, clock=time.monotonic,
                 rng: random.Random | None = None, incarnation: int | None = None,
                 on_owned=None, path_mtu=None, answered=None):
        self.cfg, self.tables, self.dp, self.ports, self.loop = cfg, tables, dp, ports, loop
        self.clock = clock
        self.rng = rng or random.Random()
        tm_cfg = cfg.tm_settings            # the defaults when only [vbm] is configured
        self.tick_every = tm_cfg.tick
        self.hello_every = tm_cfg.hello_interval
        self.node_id = node_id(cfg, tables.facts)
        # increases across restarts (the node's state file): a neighbour that hears a new one
        # in our HELLO knows we restarted and forgot our run-time virtual links
        self.incarnation = self.rng.getrandbits(32) if incarnation is None else incarnation
        self.counters: dict[str, int] = {}
        # control messages by (type, outcome): sent, send_error, no_link, received, malformed,
        # error (the handler failed); what the protocol then did is in ``counters``
        self.messages: dict[tuple[str, str], int] = {}
        self.req = Requester(self.send, clock, node=self.node_id, incarnation=self.incarnation,
                             seq_start=self.rng.getrandbits(32), rng=self.rng,
                             counters=self.counters)
        window = tm_cfg.replay_window
        # ``answered``: what this node answered, kept across restarts (node/answered.py)
        self.resp = Responder(self.send, clock, node=self.node_id, window=window,
                              incarnation=self.incarnation, counters=self.counters,
                              floor=answered.floor if answered else None,
                              journal=answered.note if answered else None,
                              hold=answered.hold if answered else 0.0)
        self.guard = Guard(cfg.substrate_links, max_age=window,
                           signing_seed=cfg.vbm.signing_seed if cfg.vbm else None,
                           vbm_public=tm_cfg.vbm_public)
        self.vnet_ids = {v.name: v.id for v in cfg.vnets}
        self.vnet_names = {v.id: v.name for v in cfg.vnets}
        capacity = 0
        if tm_cfg.vbm_link:
            capacity = cfg.link(tm_cfg.vbm_link).capacity or 0
        self.tm = TrafficManager(
            self.req, clock, idle_interval=tm_cfg.idle_interval,
            report_interval=tm_cfg.report_interval, capacity=capacity,
            hold=max(0.5, 2 * self.tick_every), bounded=bool(tm_cfg.vbm_link),
            on_rate=self._on_rate, counters=self.counters)
        self.vbm = None
        if cfg.vbm is not None:
            self.vbm = VBM(clock, lan_capacity=cfg.vbm.capacity,
                           rebuild_time=cfg.vbm.rebuild_time, counters=self.counters,
                           node_ttl=cfg.vbm.node_ttl, max_nodes=cfg.vbm.max_nodes)
            for s in cfg.vbm.shares:
                self.vbm.admit(s.vnet, s.share)
        self.kshaping = KernelShaping(dp, loop, on_owned) if tm_cfg.kernel_shaping else None
        self.neighbours = Neighbours(dp, cfg.substrate_links, clock)
        self.budget = Budget(clock)             # refused frames checked per source
        self.dynamic: dict[tuple[str, str], Dynamic] = {}
        self.reserved: set[tuple[str, int]] = set()
        self.in_progress: dict[tuple, str] = {}     # VLINK_SETUPs being set up -> vNet
        self._obs: dict[tuple, tuple] = {}
        self.members = Membership(self)
        self.neighbour_timeout = tm_cfg.neighbour_timeout
        self._last_hello = -1e9
        self._timer = None
        self._tasks: set = set()
        # ``path_mtu(send=)`` makes the node's path MTU service (control.pmtu.PathMtu) sending
        # through ours; we hand it the PATH_MTU notices we receive
        self.pmtu = path_mtu(send=self.send) if path_mtu is not None else None

    # -- life cycle --------------------------------------------------------------------------

    def start(self):
        self._manage(self._static(self.cfg))
        self._shape_switches()
        self._timer = self.loop.call_soon(self._tick)
        self.guard.warn_unauthenticated()
        log.info("control plane: node id %08x incarnation %08x%s", self.node_id,
                 self.incarnation, f", VBM on {self.cfg.vbm.link}" if self.vbm else "")

    @staticmethod
    def _static(cfg: NodeConfig) -> dict:
        """Static managed virtual links of p2p substrate links:
        (direction, peer, VLI) -> (vNet id, min, max)."""
        vids = {v.name: v.id for v in cfg.vnets}
        out = {}
        for li in cfg.interfaces:
            link = cfg.link(li.substrate_link)
            if link.kind != "p2p":
                continue
            peer = (link.id, link.peer_mac)
            if li.rate.managed:
                out[("out", peer, li.out_vli)] = (vids[li.vnet], li.rate.min, li.rate.max)
            if li.in_rate.managed:
                out[("in", peer, li.in_vli)] = (vids[li.vnet], li.in_rate.min, li.in_rate.max)
        return out

    def _manage(self, links: dict):
        start_at = self.cfg.tm_settings.start_at
        for (direction, peer, vli), (vid, lo, hi) in links.items():
            add = self.tm.add_output if direction == "out" else self.tm.add_input
            add(peer, vli, vid, lo, hi, lo if start_at == "min" else hi)

    def reconfigured(self, cfg: NodeConfig):
        """A reload swapped in ``cfg`` (same ``[tm]``, ``[vbm]`` but its shares): follow its
        vNets, the VBM's shares and its static managed virtual links (new ones are managed,
        removed ones forgotten, changed bounds start over)."""
        old, new = self._static(self.cfg), self._static(cfg)
        self.cfg = cfg
        self.guard.set_links(cfg.substrate_links)
        self.neighbours.set_links(cfg.substrate_links)
        self.vnet_ids = {v.name: v.id for v in cfg.vnets}
        self.vnet_names = {v.id: v.name for v in cfg.vnets}
        for key in [k for k in old if old[k] != new.get(k)]:
            direction, peer, vli = key
            (self.tm.remove_output if direction == "out" else self.tm.remove_input)((peer, vli))
            self._obs.pop((peer, vli), None)
        self._manage({k: b for k, b in new.items() if old.get(k) != b})
        self._shape_switches()
        if self.vbm is not None and cfg.vbm is not None:    # run-time shares: the file's again
            self.vbm.set_shares({s.vnet: s.share for s in cfg.vbm.shares})

    def _shape_switches(self):
        for v in self.kshaping.switches(self.cfg) if self.kshaping is not None else ():
            self.spawn(self.kshaping.set_rate(v, v.rate.current))

    async def close(self):
        if self._timer is not None:
            self._timer.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self.kshaping is not None:
            try:
                await self.kshaping.close()
            except Exception:
                log.exception("removing the HTB qdiscs failed")

    def spawn(self, coro):
        """Run ``coro`` as a task of the plane (cancelled by :meth:`close`)."""
        t = self.loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # -- sending and receiving ---------------------------------------------------------------

    def count(self, name):
        """One more of event ``name`` in the protocol's counters (``status()['control']``)."""
        self.counters[name] = self.counters.get(name, 0) + 1

    def _message(self, kind: str, outcome: str):
        key = (kind, outcome)
        self.messages[key] = self.messages.get(key, 0) + 1

    def send(self, peer, msg: m.Message):
        """Send ``msg`` to ``peer`` (link id, MAC | None), sealed, counted by outcome."""
        link_id, mac = peer
        kind = msg.TYPE.name.lower()
        ctx = self.dp.snap.links.get(link_id)
        if ctx is None:
            self._message(kind, "no_link")
            return
        self.count(f"tx_{kind}")
        data = self.guard.seal(link_id, msg, ctx.local_mac if ctx.kind != "udp" else None)
        sent = self.dp.send_control(ctx, data, mac if ctx.kind == "multiaccess" else None)
        self._message(kind, "sent" if sent else "send_error")

    def on_control(self, ctx, view, start, length) -> bool:
        """A VLI 0 frame arrived on substrate link ``ctx``.  False = malformed or refused
        (the datapath counts it as the ``control`` drop; ``guard.refused`` says why)."""
        src = bytes(view[6:12]) if ctx.kind != "udp" else None
        if src is not None and src == ctx.local_mac:
            return True
        peer = (ctx.id, src)
        if not self.budget.allows(peer):        # refused too often: not checked again yet
            self.guard.note(THROTTLED, f"from {_peer_str(peer)}: too many refused")
            self._message("unknown", "refused")
            return False
        try:
            msg = self.guard.open(ctx.id, view[start:start + length], src)
        except auth.AuthError as e:
            self.budget.refused(peer)
            self.guard.note(e.auth_reason, f"from {_peer_str(peer)}: {e.message}")
            self._message("unknown", "refused")
            return False
        except m.ControlDecodeError:
            self.budget.refused(peer)
            self.count("malformed")
            self._message("unknown", "malformed")
            return False
        kind = msg.TYPE.name.lower()
        self.count(f"rx_{kind}")
        self._message(kind, "received")
        try:
            if isinstance(msg, m.Hello):
                self._hello(peer, msg)
            elif isinstance(msg, m.PathMtu):
                if self.pmtu is not None:
                    self.pmtu.on_message(peer[0], peer[1], msg)
            elif msg.IS_REPLY:
                self.req.on_reply(peer, msg)
            else:
                self.resp.handle(peer, msg, self._execute)
        except Exception:              # a bug must not stop forwarding
            log.exception("control message %s from %s failed", msg.TYPE.name, _peer_str(peer))
            self.count("errors")
            self._message(kind, "error")
        return True

    def _hello(self, peer, msg: m.Hello):
        old = self.neighbours.heard(peer, msg)
        if msg.role == m.Role.VBM and peer[0] == self.cfg.tm_settings.vbm_link:
            if self.tm.vbm_peer != peer or old is None or old["incarnation"] != msg.incarnation:
                log.info("VBM at %s: %s (%08x), incarnation %08x", _peer_str(peer), msg.name,
                         msg.node, msg.incarnation)
                self.tm.vbm_peer = peer
                for agg in self.tm.aggregates.values():
                    agg.last_report = -1e9          # report at once: a new VBM rebuilds
        if old is None:
            log.info("neighbour %s (%08x) on %s: %s", msg.name, msg.node, _peer_str(peer),
                     msg.role.name)
        elif old["incarnation"] != msg.incarnation:
            self.members.peer_restarted(peer, msg)

    def _execute(self, peer, msg):
        if isinstance(msg, (m.RateRequest, m.RateNotify)):
            return self.tm.handle(peer, msg)
        if isinstance(msg, m.AggRequest):
            if self.vbm is None or peer[0] != self.cfg.vbm.link:
                self.count("not_vbm")
                return m.AggAssign(status=m.Status.BAD_REQUEST, vnet=msg.vnet, rate=msg.current)
            return self.vbm.handle(peer, msg)
        if isinstance(msg, m.VlinkSetup):
            return self._setup_request(peer, msg)
        if isinstance(msg, m.VlinkTeardown):
            return self._teardown_request(peer, msg)
        if isinstance(msg, m.Join):
            return self.members.on_join(peer, msg)
        if isinstance(msg, m.Leave):
            return self.members.on_leave(peer, msg)
        self.count("unexpected")
        return None

    # -- timers ------------------------------------------------------------------------------

    def _tick(self):
        now = self.clock()
        try:
            self.req.tick(now)
            self._observe(now)
            self.tm.tick(now)
            for peer, n in self.neighbours.expire(now, self.neighbour_timeout):
                self.count("neighbours_lost")
                self.members.peer_lost(peer, n, now)
            if self.vbm is not None:
                self.vbm.tick(now)
            if now - self._last_hello >= self.hello_every:
                self._last_hello = now
                self._hellos()
        except Exception:
            log.exception("control plane tick failed")
        self._timer = self.loop.call_later(self.tick_every, self._tick)

    def _hellos(self):
        for s in self.cfg.substrate_links:
            role = m.Role.VBM if self.vbm is not None and s.id == self.cfg.vbm.link \
                else m.Role.NODE
            peer = (s.id, s.peer_mac if s.kind == "p2p" else None)
            self.send(peer, m.Hello(node=self.node_id, incarnation=self.incarnation,
                                     role=role, capacity=s.capacity or 0,
                                     name=self.cfg.node.name[:m.MAX_NAME]))

    def _observe(self, now):
        """Demand of the managed output virtual links, from the datapath's counters."""
        for key, out in self.tm.outputs.items():
            v = self.tables.vlinks.get((key[0][0], key[1], OUT))
            if v is None:
                continue
            qfull = v.drops.get("queue_full", 0) + v.drops.get("send_error", 0)
            last = self._obs.get(key)
            self._obs[key] = (now, v.packets, v.bytes, qfull)
            if last is None or now <= last[0]:
                continue
            dt = now - last[0]
            packets, nbytes, dropped = v.packets - last[1], v.bytes - last[2], qfull - last[3]
            depth = getattr(self.dp.meter_of(v.key), "depth", 0)
            cur = out.current
            measured = nbytes * 8 / dt
            if dropped > 0 or depth > 2 or (cur and measured >= 0.85 * cur):
                want = min(out.max, max(2 * cur, cur + 1_000_000))
                self.tm.set_demand(key, want, active=True)
            elif packets > 0 or depth:
                self.tm.set_demand(key, cur, active=True)
            else:
                self.tm.set_demand(key, None, active=False)

    def _on_rate(self, direction, key, rate):
        (link_id, _mac), vli = key
        v = self.tables.vlinks.get((link_id, vli, IN if direction == "in" else OUT))
        if v is None:
            return
        v.rate = v.rate.model_copy(update={"cur": rate})
        self.dp.set_rate(v)
        if self.kshaping is not None and v.direction == OUT:
            self.spawn(self.kshaping.set_rate(v, rate))
        log.debug("rate %s %s:%d -> %d bit/s", direction, link_id, vli, rate)

    # -- dynamic virtual links ---------------------------------------------------------------

    def _free_vli(self, link_id: str) -> int:
        """A free input VLI on ``link_id``.  The search starts at an offset of this node's
        own (its id), so neighbours on a LAN choosing their inputs for one upstream rarely
        choose the same one (the upstream refuses a VLI its output table already has)."""
        base = self.cfg.tm_settings.dynamic_vli_base
        span = wire.VLI_RESERVED - base
        start = self.node_id % min(span, 8192)
        for i in range(span):
            vli = base + (start + i) % span
            if self.tables.vli_free(link_id, vli) and (link_id, vli) not in self.reserved:
                return vli
        raise ValueError(f"no free VLI on substrate link {link_id!r}")

    async def _install(self, d: Dynamic, addresses=()) -> None:
        rate = Rate(min=d.min, max=d.max, cur=d.min)
        li = LogicalInterface(vnet=d.vnet, name=d.name, substrate_link=d.link, in_vli=d.in_vli,
                              out_vli=d.out_vli, rate=rate, in_rate=rate,
                              addresses=tuple(addresses))
        ctx = self.dp.snap.links[d.link]
        tap = await self.loop.run_in_executor(None, self.ports.create, self.cfg, li, ctx)
        try:
            self.tables.add_interface(li)
        except ValueError:
            tap.close()
            raise
        self.ports.adopt(self.cfg, li, tap)
        if ctx.kind == "multiaccess":       # unicast to the peer, never flooded to the LAN
            self.tables.output_vlink(d.link, d.out_vli).dst = d.peer[1]
        self.dp.reconfigure({(d.vnet, d.name): tap.fd}, [])
        vid = self.vnet_ids[d.vnet]
        self.tm.add_input(d.peer, d.in_vli, vid, d.min, d.max)
        self.tm.add_output(d.peer, d.out_vli, vid, d.min, d.max)
        self.dynamic[(d.vnet, d.name)] = d

    def uninstall(self, d: Dynamic):
        """Remove run-time virtual link pair ``d`` here (sends nothing to the peer)."""
        self.dynamic.pop((d.vnet, d.name), None)
        v = self.tables.vlinks.get((d.link, d.out_vli, OUT))
        if v is not None and self.kshaping is not None:
            self.spawn(self.kshaping.remove(v))
        self.tm.remove_input((d.peer, d.in_vli))
        self.tm.remove_output((d.peer, d.out_vli))
        self.tables.remove_interface(d.vnet, d.name)
        self.dp.reconfigure({}, [(d.vnet, d.name)])
        self.ports.remove(self.cfg, d.vnet, d.name)   # closing the TAP deletes it: no netlink

    def peer_for(self, link_id: str, peer_name: str | None, single: bool = False):
        """The peer on ``link_id``: its neighbour named ``peer_name`` on a multiaccess link
        (``single``: or, unnamed, the only neighbour heard there)."""
        s = self.cfg.link(link_id)
        if s.kind == "p2p":
            return (s.id, s.peer_mac)
        if s.kind == "udp":
            return (s.id, None)
        heard = {p: n["name"] for p, n in self.neighbours.items() if p[0] == link_id}
        if peer_name is None and single and len(heard) == 1:
            return next(iter(heard))
        for peer, name in heard.items():
            if name == peer_name:
                return peer
        raise LookupError(f"no neighbour {peer_name!r} heard on multiaccess link {link_id!r} "
                          f"(known: {', '.join(heard.values()) or 'none'})")

    async def request(self, to, msg: m.Message):
        """Send request ``msg`` to ``to``; its reply, or None once it timed out."""
        fut = self.loop.create_future()
        self.req.request(to, msg, lambda reply: fut.done() or fut.set_result(reply))
        return await fut

    async def vlink_add(self, link: str, vnet: str, name: str, min, max, addresses=(),
                        peer: str | None = None) -> dict:
        """``vnetctl vlink add``: set up a virtual link pair with the neighbour on ``link``."""
        if link not in {s.id for s in self.cfg.substrate_links}:
            raise LookupError(f"unknown substrate link {link!r}")
        if vnet not in self.vnet_ids:
            raise LookupError(f"unknown vNet {vnet!r}")
        if not valid_ifname(name) or len(name) > m.MAX_NAME:
            raise ValueError(f"bad interface name {name!r}")
        if any((li.vnet, li.name) == (vnet, name) for li in self.tables.interfaces):
            raise ValueError(f"interface {name!r} already exists in vNet {vnet!r}")
        lo, hi = parse_rate(min), parse_rate(max)
        if lo > hi or hi <= 0:
            raise ValueError(f"min {lo} above max {hi}")
        d = await self.setup_pair(self.peer_for(link, peer), vnet, name, name, lo, hi,
                                  addresses)
        return self.dynamic_view(d)

    async def setup_pair(self, to, vnet: str, name: str, remote: str, lo: int, hi: int,
                         addresses=()) -> Dynamic:
        """Set up a virtual link pair with ``to`` as its upstream: our logical interface
        ``name``, theirs ``remote``."""
        link = to[0]
        r = self._free_vli(link)
        self.reserved.add((link, r))
        try:
            reply = await self.request(to, m.VlinkSetup(
                vnet=self.vnet_ids[vnet], reverse_vli=r, min=lo, max=hi, name=remote))
            fsm = VlinkFSM(VlinkState.SETTING_UP)
            if reply is None:
                fsm.fire("timeout")
                raise TimeoutError(f"no answer to VLINK_SETUP from {_peer_str(to)}")
            if reply.status != m.Status.OK:
                fsm.fire("refused")
                raise ValueError(f"downstream refused the virtual link: {reply.status.name}")
            if (link, reply.vli, OUT) in self.tables.vlinks:
                fsm.fire("refused")
                raise ValueError(f"downstream chose VLI {reply.vli}, already used here")
            d = Dynamic(vnet, name, link, to, r, reply.vli, lo, hi, True, fsm)
            await self._install(d, addresses)
            fsm.fire("accepted")
        finally:
            self.reserved.discard((link, r))
        log.info("virtual link %s/%s up on %s: in VLI %d (ours), out VLI %d (chosen by %s)",
                 vnet, name, link, r, reply.vli, _peer_str(to))
        return d

    def _setup_request(self, peer, msg: m.VlinkSetup):
        link_id = peer[0]
        vnet = self.vnet_names.get(msg.vnet)
        if vnet is None:
            self.count("unknown_vnet")
            return m.VlinkSetupReply(status=m.Status.UNKNOWN_VNET)
        d = self.dynamic.get((vnet, msg.name))
        if d is not None:
            if d.peer == peer and d.out_vli == msg.reverse_vli:
                return m.VlinkSetupReply(status=m.Status.OK, vli=d.in_vli)    # idempotent
            return m.VlinkSetupReply(status=m.Status.NO_VLI)
        refusal = self.members.over_limit(peer, vnet)
        if refusal is not None:
            self.guard.note(refusal, f"VLINK_SETUP {vnet}/{msg.name} from {_peer_str(peer)}")
            self.count(refusal)
            return m.VlinkSetupReply(status=m.Status.NO_VLI)
        if not msg.name or not valid_ifname(msg.name) or msg.max == 0 or msg.min > msg.max \
                or not 1 <= msg.reverse_vli < wire.VLI_RESERVED \
                or (link_id, msg.reverse_vli, OUT) in self.tables.vlinks \
                or any((li.vnet, li.name) == (vnet, msg.name) for li in self.tables.interfaces):
            self.count("bad_setup")
            return m.VlinkSetupReply(status=m.Status.BAD_REQUEST)
        key = (peer, msg.node, msg.incarnation, msg.seq)
        if key in self.in_progress:
            return None
        self.in_progress[key] = vnet
        vli = self._free_vli(link_id)
        self.reserved.add((link_id, vli))
        d = Dynamic(vnet, msg.name, link_id, peer, vli, msg.reverse_vli, msg.min, msg.max,
                    False, VlinkFSM(VlinkState.UP))

        async def work():
            try:
                await self._install(d)
                reply = m.VlinkSetupReply(status=m.Status.OK, vli=vli)
                log.info("virtual link %s/%s up on %s: in VLI %d (chosen here), out VLI %d",
                         vnet, msg.name, link_id, vli, msg.reverse_vli)
            except Exception as e:
                log.error("virtual link %s/%s: set-up failed: %s", vnet, msg.name, e)
                reply = m.VlinkSetupReply(status=m.Status.BAD_REQUEST)
            finally:
                self.in_progress.pop(key, None)
                self.reserved.discard((link_id, vli))
            self.resp.complete(peer, msg, reply)

        self.spawn(work())
        return None

    async def vlink_del(self, vnet: str, name: str) -> dict:
        d = self.dynamic.get((vnet, name))
        if d is None:
            raise LookupError(f"no dynamic virtual link {vnet}/{name}")
        self.uninstall(d)
        d.fsm.fire("teardown")
        reply = await self.request(d.peer, m.VlinkTeardown(vli=d.out_vli, reverse_vli=d.in_vli))
        d.fsm.fire("acked" if reply is not None else "timeout")
        log.info("virtual link %s/%s on %s torn down (peer %s)", vnet, name, d.link,
                 "acked" if reply is not None else "did not answer")
        return {**self.dynamic_view(d), "peer_acked": reply is not None and
                reply.status == m.Status.OK}

    def _teardown_request(self, peer, msg: m.VlinkTeardown):
        for d in list(self.dynamic.values()):
            if d.peer == peer and d.in_vli == msg.vli and d.out_vli == msg.reverse_vli:
                self.uninstall(d)
                d.fsm.fire("remote_teardown")
                log.info("virtual link %s/%s on %s torn down by %s", d.vnet, d.name, d.link,
                         _peer_str(peer))
                return m.Ack(status=m.Status.OK)
        self.count("unknown_vlink")
        return m.Ack(status=m.Status.UNKNOWN_VLINK)

    # -- views (``views.py``) ----------------------------------------------------------------

    def dynamic_view(self, d: Dynamic) -> dict:
        """``d`` as ``alloc`` and ``vlink add`` show it."""
        return views.dynamic(d)

    def status(self) -> dict:
        """``status()['control']``: see ``views.status``."""
        return views.status(self)

    def allocations(self) -> dict:
        """``alloc``: see ``views.allocations``."""
        return views.allocations(self)


_peer_str = views.peer_str
