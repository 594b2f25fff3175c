"""Wire formats, and nothing else of ours: bytes in, typed values out (and back).

* ``substrate`` -- the substrate header (Ethernet + optional 802.1Q tag + EtherType 0x88B5 +
  VLI + LEN; UDP tunnel: VLI + payload), MAC helpers, the project's decode error;
* ``control``   -- the VLI-0 control messages: a versioned header and one body per type.

This package imports no other package of ``vnet_router``; every layer above may use it.
"""
