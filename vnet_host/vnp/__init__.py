"""VNP: a small non-IP network protocol that runs on the vnet protocol library.

Its own addressing (32-bit addresses written ``NET.HOST``, 16 bits each), its own header
(``wire.py``), a virtual router (``router.py``: learns hosts from HELLO, static prefix routes,
TTL) and an application (``app.py``: echo server / client, chat).  Nothing of IP is used.
"""
