"""The substrate control protocol (DESIGN section 5) and the managers built on it.

Free of I/O (clocks, randomness and sending are injected), except ``plane`` and ``kshaping``:

* ``transport`` -- sequence numbers, request/reply matching, retry with backoff, time-outs,
  and the responder's duplicate cache that makes every request idempotent;
* ``fsm``       -- the state machines (virtual link set-up, pending request, VBM), as
  ``IntEnum`` states with explicit transition tables;
* ``tm``        -- the Traffic Manager: per-virtual-link and per-vNet rates, negotiation;
* ``vbm``       -- the vNet Bandwidth Manager: the LAN's bandwidth split between vNets;
* ``sim``       -- a deterministic simulation of nodes and a VBM on one LAN (tests, benchmark);
* ``kshaping``  -- output shaping by Linux HTB classes instead of the user-space shaper;
* ``plane``     -- binds all of it to a running node (its datapath, tables and timers).

The message codecs are in ``vnet_router.wire.control``.
"""
