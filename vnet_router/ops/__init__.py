"""Operating-system and operations glue, each module the one owner of what it wraps.

* ``netlink``  -- links, addresses, namespaces, tc (the only user of pyroute2);
* ``tap``      -- TAP devices (the only user of python-pytun);
* ``metrics``  -- the Prometheus endpoint (the only user of prometheus-client);
* ``logs``     -- logfmt logging;
* ``sdnotify`` -- systemd's readiness protocol;
* ``loop``     -- the daemons' event loop (the only user of uvloop);
* ``render``   -- tables for people: vnetctl, the lab demo (the only user of rich).

Imports nothing above ``model``; node, control and the lab use it.
"""
