"""Moving frames: sockets, classification, meters, and the two engines that use them.

* ``packet_io``  -- AF_PACKET sockets, the substrate BPF filter, TPACKET_V2 rings;
* ``classify``   -- the demultiplexing rule: (interface, VLAN, sender, VLI) -> virtual link;
* ``meters``     -- token bucket (input policing) and shaper (output queue);
* ``core``       -- the Datapath: what both engines share, and the Engine interface;
* ``reference``  -- the pure-Python engine that defines the semantics;
* ``_fastpath``  -- the compiled (Cython) engine: same decisions, in C, on rings;
* ``select``     -- DatapathPy, DatapathC, and choose() (environment, config, fall-back).

Imports ``wire`` and ``model`` only; control, node and ops sit above it.
"""
