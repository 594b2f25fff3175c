"""The control plane's gate: authentication of every VLI 0 message, refusals counted and logged.

Per substrate link a keyring (``key_file``) or none.  ``seal`` authenticates what the node
sends on a link with a key (``wire.auth``); ``open`` checks what arrives and returns the bytes
``control.decode`` takes, or raises ``auth.AuthError``.  ``refused`` counts refusals by reason
-- the authentication reasons and the control plane's own (``replay``, ``old_incarnation``,
``limit_peer`` ...) -- and ``note`` logs a reason at most once per ``LOG_EVERY`` seconds with
how many were held back, so a flood of forged frames cannot flood the log.
"""
from __future__ import annotations

import logging
import time

from vnet_router.wire import auth

log = logging.getLogger(__name__)
LOG_EVERY = 10.0


class Guard:
    def __init__(self, links, *, max_age: float, wallclock=time.time, clock=time.monotonic):
        self.max_age, self.wallclock, self.clock = max_age, wallclock, clock
        self.keyrings: dict = {}
        self.refused: dict[str, int] = dict.fromkeys(auth.REASONS, 0)
        self._logged: dict[str, tuple[float, int]] = {}
        self.set_links(links)

    def set_links(self, links):
        """Take the keyrings of ``links`` (substrate links; at start and on every reload, so
        a changed key file takes effect at ``vnetctl reload``)."""
        self.keyrings = {s.id: s.keyring for s in links}

    def unauthenticated(self) -> list[str]:
        return sorted(link for link, ring in self.keyrings.items() if ring is None)

    def warn_unauthenticated(self):
        links = self.unauthenticated()
        if links:
            log.warning("control messages on substrate link%s %s are NOT authenticated (no "
                        "key_file): any station there can send them; see docs/security.md",
                        "s" if len(links) > 1 else "", ", ".join(links))

    def seal(self, link_id: str, packed: bytes, src: bytes | None) -> bytes:
        ring = self.keyrings.get(link_id)
        return packed if ring is None else auth.seal(packed, ring, src, self.wallclock())

    def open(self, link_id: str, data, src: bytes | None) -> bytes:
        return auth.unseal(data, self.keyrings.get(link_id), src, self.wallclock(),
                           self.max_age)

    def note(self, reason: str, what: str):
        """Count a refusal; log it unless that reason was logged less than LOG_EVERY ago."""
        self.refused[reason] = self.refused.get(reason, 0) + 1
        now = self.clock()
        last, held = self._logged.get(reason, (-1e18, 0))
        if now - last < LOG_EVERY:
            self._logged[reason] = (last, held + 1)
            return
        self._logged[reason] = (now, 0)
        log.warning("control message refused (%s): %s%s", reason, what,
                    f" ({held} more refused for this reason since the last message)"
                    if held else "")
