"""The node's model: typed configuration, the tables built from it, units.

* ``config`` -- TOML files validated into frozen objects (router, host, lab schemas);
* ``tables`` -- the substrate link and virtual link tables and their compiled snapshot;
* ``units``  -- rates and sizes with units.

No I/O beyond reading a config file.  Imports only ``vnet_router.wire``.
"""
