"""Kernel shaping: output virtual links shaped by Linux HTB instead of the user-space bucket.

Optional (``[tm] kernel_shaping = true``), for Ethernet substrate links whose interface has no
root qdisc of someone else's.  Per interface the node adds a root HTB qdisc (``default 0``:
traffic that is not ours -- legacy IP -- passes unshaped); per managed output virtual link a
leaf class whose rate = ceil = the Traffic Manager's current rate, and a send socket whose
SO_PRIORITY names that class (HTB classifies on skb->priority, no filter needed).  The
datapath then sends that virtual link's frames on its own socket and keeps no user-space
shaper for it (``Datapath.kernel_shaped``).  If HTB cannot be set up on an interface, its
links stay on the user-space bucket (logged once).

Netlink runs in one worker thread (pyroute2 cannot run inside the daemon's event loop); a
lock keeps changes in order.  ``close()`` removes the classes and the qdiscs we added.  Our
qdiscs carry a marker handle (``netlink.HTB_MAJOR``) and ``on_owned(ifnames)`` hears each one
added or removed, for the node's state file: a node started after a crash removes or replaces
what its previous run left.
"""
from __future__ import annotations

import asyncio
import logging
import socket
from concurrent.futures import ThreadPoolExecutor

from vnet_router.ops import netlink
from vnet_router.datapath import packet_io
from vnet_router.datapath.meters import default_burst

log = logging.getLogger(__name__)
MIN_RATE = 8000


class KernelShaping:
    def __init__(self, dp, loop, on_owned=None):
        self.dp, self.loop, self.on_owned = dp, loop, on_owned
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="vnet-tc")
        self.lock = asyncio.Lock()
        self.ifaces: dict[str, bool] = {}          # ifname -> HTB root is ours (False: unusable)
        self.minors: dict[tuple, tuple[str, int]] = {}   # (link, vli) -> (ifname, minor)
        self.next_minor: dict[str, int] = {}

    async def _run(self, fn, *args):
        return await self.loop.run_in_executor(self.pool, fn, *args)

    def switches(self, cfg) -> list:
        """The rated outputs of ``cfg``'s switches that HTB does not shape yet: the Traffic
        Manager does not manage them, their class stays at the configured rate."""
        vlinks = self.dp.tables.vlinks
        return [v for sw in cfg.switches
                if (v := vlinks.get((sw.out_link, sw.out_vli, "out"))) is not None
                and v.rate.max is not None and not self.dp.is_kernel_shaped(v.key)]

    async def set_rate(self, v, rate_bps: int) -> bool:
        """Shape output virtual link ``v`` at ``rate_bps`` in the kernel; False = cannot."""
        async with self.lock:
            ctx = self.dp.snap.links.get(v.link_id)
            if self.dp.tables.vlinks.get(v.key) is not v or ctx is None or ctx.kind == "udp":
                return False
            ifname = ctx.ifname
            if ifname not in self.ifaces:
                try:
                    self.ifaces[ifname] = await self._run(netlink.htb_init, ifname)
                except netlink.LinkError as e:
                    log.warning("%s", e)
                    self.ifaces[ifname] = False
                self._owned()
                if not self.ifaces[ifname]:
                    log.warning("kernel shaping: cannot use %s (a root qdisc of someone else's "
                                "or HTB refused); its virtual links use the user-space shaper",
                                ifname)
            if not self.ifaces[ifname]:
                return False
            key = (v.link_id, v.vli)
            if key not in self.minors:
                minor = self.next_minor.get(ifname, 2)
                self.next_minor[ifname] = minor + 1
                self.minors[key] = (ifname, minor)
            ifname, minor = self.minors[key]
            bps = max(rate_bps, MIN_RATE)
            await self._run(netlink.htb_class_set, ifname, minor, bps,
                            default_burst(bps, ctx.mtu))
            if not self.dp.is_kernel_shaped(v.key) and self.dp.tables.vlinks.get(v.key) is v:
                sock = packet_io.open_tx(ifname)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, netlink.HTB_MAJOR | minor)
                self.dp.kernel_shaped(v, sock)
                log.info("kernel shaping: %s:%d in HTB class %s on %s", v.link_id, v.vli,
                         netlink.htb_handle(minor), ifname)
            return True

    async def remove(self, v):
        async with self.lock:
            entry = self.minors.pop((v.link_id, v.vli), None)
            self.dp.kernel_unshaped(v)
            if entry is not None:
                await self._run(netlink.htb_class_delete, *entry)

    def _owned(self):
        if self.on_owned is not None:
            self.on_owned(sorted(i for i, ours in self.ifaces.items() if ours))

    def rates(self) -> dict:
        return {f"{k[0]}:{k[1]}": f"{ifname} {netlink.htb_handle(minor)}" for k, (ifname, minor)
                in self.minors.items()}

    async def close(self):
        async with self.lock:
            for ifname, ours in self.ifaces.items():
                if ours:
                    await self._run(netlink.htb_remove, ifname)
            self.ifaces.clear()
            self._owned()
            self.minors.clear()
        self.pool.shutdown(wait=False)
