"""Moving frames: sockets, classification, meters, and the two engines that use them.

* ``packet_io``  -- AF_PACKET sockets, the substrate BPF filter, TPACKET_V3 rings;
* ``classify``   -- the demultiplexing rule: (interface, VLAN, sender, VLI) -> virtual link;
* ``meters``     -- token bucket (input policing) and shaper (output queue);
* ``reference``  -- the pure-Python datapath that defines the semantics;
* ``_fastpath``  -- the compiled (Cython) engine: same decisions, in C, on rings;
* ``select``     -- picks one of the two (environment, config, fall-back).

Imports ``wire`` and ``model`` only; control, node and ops sit above it.
"""
