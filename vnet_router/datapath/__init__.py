"""Moving frames: sockets, classification, meters, and the engines that use them.

* ``packet_io``  -- AF_PACKET sockets, the substrate BPF filter, TPACKET_V2 rings;
* ``classify``   -- the demultiplexing rule: (interface, VLAN, sender, VLI) -> virtual link;
* ``meters``     -- token bucket (input policing) and shaper (output queue);
* ``engine``     -- the Engine interface, the Capabilities engines declare, TapPort;
* ``core``       -- the Datapath: what every engine shares;
* ``reference``  -- the pure-Python engine that defines the semantics;
* ``_fastpath``  -- the compiled (Cython) engine: same decisions, in C, on rings;
* ``ktier``      -- the compiled engine with the kernel tier (an eBPF program at TC ingress);
* ``tapcap``     -- the TAP capture (an eBPF program at TC egress of the TAPs, its ring walked
  by the compiled engine);
* ``select``     -- DatapathPy, DatapathC, DatapathKernel, and choose() (environment, config,
  fall-back).

Imports ``wire`` and ``model``, and ``ops.ebpf`` (BPF loading) for the kernel tier and the
capture; control, node and the rest of ops sit above it.
"""
