"""A running substrate node: life cycle, command API, status.

* ``lifecycle`` -- ``Node``: validate, build (namespaces, TAPs), run, reload, clean up;
* ``ports``     -- the logical interfaces on the system: namespaces, TAPs, library endpoints;
* ``api``       -- the Unix control socket: JSON requests, descriptor passing, the client;
* ``commands``  -- the command registry: each control command, its daemons, access, and
                   the ``vnetctl`` sub-commands that send it;
* ``status``    -- the status view ``vnetctl show`` and the metrics read;
* ``daemon``    -- the ``vnet-router`` command.
"""
