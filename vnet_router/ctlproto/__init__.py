"""The substrate control protocol (DESIGN section 5), carried on VLI 0 of a substrate link.

One module per concern, all free of I/O (clocks, randomness and sending are injected):

* ``messages``  -- typed, versioned message codecs (header + one body per type);
* ``transport`` -- sequence numbers, request/reply matching, retry with backoff, time-outs,
  and the responder's duplicate cache that makes every request idempotent;
* ``fsm``       -- the state machines (virtual link set-up, pending request), as ``IntEnum``
  states with explicit transition tables.

The Traffic Manager (``vnet_router.tm``) and the vNet Bandwidth Manager (``vnet_router.vbm``)
sit on top; ``vnet_router.controlplane`` binds all of it to a running daemon.
"""
