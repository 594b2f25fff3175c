"""Dynamic vNet membership over the substrate: JOIN, LEAVE, and neighbours that go away.

Router side (a vNet with ``[vnet.members]``): a JOIN from a neighbour makes the node set up a
virtual link pair with it (it is the upstream: ``ControlPlane.setup_pair`` sends VLINK_SETUP,
each side choosing its input VLI), attach its end to the vNet's virtual router (the bridge
``Ports`` made at start) and only then acknowledge the JOIN; the Traffic Manager manages both
links from the members' minimum rate, and reports them to the VBM with the node's aggregate.
A LEAVE removes the member's links here and is acknowledged; the host removes its own end when
it gets the acknowledgement.  A neighbour whose HELLOs stop for ``[tm] neighbour_timeout``
loses every run-time virtual link it had with this node (members or not), counted
``vlinks_peer_lost``; one that restarted (a new incarnation) is handled by the plane.

Host side (``vnetctl join VNET`` on ``vnet-hostd`` without VLIs): :meth:`join` sends JOIN to
the router on a substrate link and returns once the router's VLINK_SETUP has made the local
logical interface and the JOIN is acknowledged; :meth:`leave` sends LEAVE and removes the local
end.  Both requests are the transport's (retried, deduplicated, authenticated like every
control message).
"""
from __future__ import annotations

import logging

from vnet_router.wire import control as m

log = logging.getLogger(__name__)


class Membership:
    def __init__(self, cp):
        self.cp = cp
        self.joining: set[tuple] = set()       # JOIN requests being worked on

    # -- router side -------------------------------------------------------------------------

    def members(self, vnet: str | None = None) -> list:
        return [d for d in self.cp.dynamic.values() if d.member
                and (vnet is None or d.vnet == vnet)]

    def over_limit(self, peer, vnet: str) -> str | None:
        """Admission of one more run-time virtual link from ``peer`` in ``vnet``: None, or
        the refusal's reason."""
        tm = self.cp.cfg.tm_settings
        per_peer, per_vnet = tm.max_dynamic_per_peer, tm.max_dynamic_per_vnet
        busy = [(key[0], v) for key, v in self.cp.in_progress.items()]
        links = [(d.peer, d.vnet) for d in self.cp.dynamic.values()] + busy
        if sum(1 for p, _ in links if p == peer) >= per_peer:
            return "limit_peer"
        if sum(1 for _, v in links if v == vnet) >= per_vnet:
            return "limit_vnet"
        return None

    def on_join(self, peer, msg: m.Join):
        cp = self.cp
        vnet = cp.vnet_names.get(msg.vnet)
        v = cp.cfg.vnet(vnet) if vnet is not None else None
        if v is None or v.members is None:
            cp.count("join_unknown_vnet")
            return m.Ack(status=m.Status.UNKNOWN_VNET)
        if any(d.peer == peer for d in self.members(vnet)):
            return m.Ack(status=m.Status.OK)                    # already a member
        key = (peer, msg.node, msg.incarnation, msg.seq)
        if key in self.joining:
            return None                                         # a retry: still working
        if len(self.members(vnet)) + len(self.joining) >= v.members.max_members:
            cp.guard.note("limit_members", f"JOIN {vnet} from {_who(cp, peer)}")
            cp.count("limit_members")
            return m.Ack(status=m.Status.NO_VLI)
        self.joining.add(key)
        remote = msg.name or f"{vnet[:14]}0"
        cp.spawn(self._admit(peer, msg, key, vnet, v, remote))
        return None

    async def _admit(self, peer, msg, key, vnet, v, remote):
        cp = self.cp
        d = None
        try:
            local = self._local_name(vnet, peer)
            d = await cp.setup_pair(peer, vnet, local, remote, v.members.min_rate,
                                    v.members.max_rate)
            d.member = True
            await cp.loop.run_in_executor(None, cp.ports.attach, cp.cfg, vnet, local)
            reply = m.Ack(status=m.Status.OK)
            cp.count("members_joined")
            log.info("vnet %s: %s joined (%s here, %s there, on %s)", vnet, _who(cp, peer),
                     local, remote, d.link)
        except Exception as e:                  # refused by the host, timed out, netlink ...
            log.error("vnet %s: JOIN of %s failed: %s", vnet, _who(cp, peer), e)
            if d is not None and (d.vnet, d.name) in cp.dynamic:
                cp.uninstall(d)
            reply = m.Ack(status=m.Status.BAD_REQUEST)
        finally:
            self.joining.discard(key)
        cp.resp.complete(peer, msg, reply)

    def _local_name(self, vnet: str, peer) -> str:
        base = "m-" + "".join(c for c in self.cp.neighbours.get(peer, {}).get("name", "")
                              if c.isalnum() or c in "-_")[:11] or "m-host"
        taken = {li.name for li in self.cp.tables.interfaces if li.vnet == vnet}
        name, i = base, 1
        while name in taken:
            name, i = f"{base[:12]}{i}", i + 1
        return name

    def on_leave(self, peer, msg: m.Leave):
        cp = self.cp
        vnet = cp.vnet_names.get(msg.vnet)
        gone = [d for d in self.members(vnet) if d.peer == peer] if vnet else []
        if not gone:
            cp.count("unknown_member")
            return m.Ack(status=m.Status.UNKNOWN_VLINK)
        for d in gone:
            cp.uninstall(d)
            d.fsm.fire("remote_teardown")
        cp.count("members_left")
        log.info("vnet %s: %s left", vnet, _who(cp, peer))
        return m.Ack(status=m.Status.OK)

    def peer_lost(self, peer, n: dict, now: float):
        """Neighbour ``peer`` was not heard for the timeout (``neighbours.expire`` removed
        it): its run-time virtual links go."""
        cp = self.cp
        gone = [d for d in cp.dynamic.values() if d.peer == peer]
        for d in gone:
            cp.uninstall(d)
            d.fsm.fire("remote_teardown")
            cp.count("vlinks_peer_lost")
        names = ", ".join(f"{d.vnet}/{d.name}" for d in gone)
        log.warning("neighbour %s not heard for %.1f s: gone%s", _who(cp, peer, n),
                    now - n["seen"], f"; removed {names}" if gone else "")

    def peer_restarted(self, peer, msg: m.Hello):
        """A neighbour restarted (a new incarnation in its HELLO): it forgot the run-time
        virtual links it had with us, so ours go too -- never half-open."""
        cp = self.cp
        cp.count("peer_restarts")
        gone = [d for d in cp.dynamic.values() if d.peer == peer]
        for d in gone:
            cp.uninstall(d)
            d.fsm.fire("remote_teardown")
            cp.count("vlinks_peer_restarted")
        log.warning("neighbour %s restarted (incarnation %08x)%s", _who(cp, peer),
                    msg.incarnation, f": removed the run-time virtual links it had forgotten: "
                    f"{', '.join(f'{d.vnet}/{d.name}' for d in gone)}" if gone else "")

    def view(self) -> dict:
        out: dict[str, list] = {v.name: [] for v in self.cp.cfg.vnets if v.members}
        for d in self.members():
            out.setdefault(d.vnet, []).append({"node": _who(self.cp, d.peer),
                                               "interface": d.name, "in_vli": d.in_vli,
                                               "out_vli": d.out_vli})
        return out

    # -- host side ---------------------------------------------------------------------------

    async def join(self, link: str, vnet: str, name: str, peer: str | None = None) -> dict:
        cp = self.cp
        to = cp.peer_for(link, peer, single=True)
        reply = await cp.request(to, m.Join(vnet=cp.vnet_ids[vnet], name=name))
        if reply is None:
            raise TimeoutError(f"no answer to JOIN from {_who(cp, to)}")
        if reply.status != m.Status.OK:
            raise ValueError(f"{_who(cp, to)} refused JOIN {vnet}: {reply.status.name}")
        d = cp.dynamic.get((vnet, name))
        if d is None:
            raise ValueError(f"{_who(cp, to)} acknowledged JOIN {vnet} without setting up "
                             f"{name}")
        d.member = True
        return cp.dynamic_view(d)

    async def leave(self, vnet: str) -> dict:
        cp = self.cp
        mine = self.members(vnet)
        acked = True
        for to in {d.peer for d in mine}:
            reply = await cp.request(to, m.Leave(vnet=cp.vnet_ids[vnet]))
            acked = acked and reply is not None and reply.status == m.Status.OK
        for d in mine:
            if (d.vnet, d.name) in cp.dynamic:
                cp.uninstall(d)
        return {"vnet": vnet, "left": [d.name for d in mine], "router_acked": acked}


def _who(cp, peer, n=None) -> str:
    n = n or cp.neighbours.get(peer)
    link, mac = peer
    return f"{n['name']} ({n['node']:08x} on {link})" if n else \
        f"{link}/{mac.hex(':') if mac else '-'}"
