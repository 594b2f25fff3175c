"""The control plane's gate: authentication of every VLI 0 message, refusals counted and logged.

Per substrate link a keyring (``key_file``) or none.  ``seal`` authenticates what the node
sends on a link with a key (``wire.auth``); ``open`` checks what arrives and returns the bytes
``control.decode`` takes, or raises ``auth.AuthError``.  ``refused`` counts refusals by reason
-- the authentication reasons and the control plane's own (``replay``, ``old_incarnation``,
``limit_peer`` ...) -- and ``note`` logs a reason at most once per ``LOG_EVERY`` seconds with
how many were held back, so a flood of forged frames cannot flood the log.

The VBM's role is proven by signature, not by the shared key: a VBM with a signing key signs
what only it may send (``must_sign``); a node with the VBM's public key takes those messages
only signed by it (``vbm_unsigned`` otherwise).
"""
from __future__ import annotations

import logging
import time

from vnet_router.wire import auth
from vnet_router.wire import control as m

log = logging.getLogger(__name__)
LOG_EVERY = 10.0
THROTTLED = "throttled"     # refused unchecked: its source's budget is spent (neighbours.py)


class Guard:
    def __init__(self, links, *, max_age: float, wallclock=time.time, clock=time.monotonic,
                 signing_seed: bytes | None = None, vbm_public: bytes | None = None):
        self.max_age, self.wallclock, self.clock = max_age, wallclock, clock
        self.signer = auth.signing_key(signing_seed) if signing_seed else None
        self.vbm_key = auth.verify_key(vbm_public) if vbm_public else None
        self.keyrings: dict = {}
        self.refused: dict[str, int] = dict.fromkeys(auth.REASONS + (THROTTLED,), 0)
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

    @staticmethod
    def vbm_only(msg) -> bool:
        """What only the VBM says: a HELLO with role VBM, an AGG_ASSIGN."""
        return isinstance(msg, m.AggAssign) or (isinstance(msg, m.Hello)
                                                 and msg.role == m.Role.VBM)

    def seal(self, link_id: str, msg, src: bytes | None) -> bytes:
        packed = msg.pack()
        if self.signer is not None and self.vbm_only(msg):
            packed = auth.sign(packed, self.signer)
        ring = self.keyrings.get(link_id)
        return packed if ring is None else auth.seal(packed, ring, src, self.wallclock())

    def open(self, link_id: str, data, src: bytes | None):
        """The decoded message; raises auth.AuthError (or control.ControlDecodeError).  The
        cheap checks come first: header, key id, the HMAC (then freshness), the decoding, and
        last the VBM's signature (Ed25519, the dearest)."""
        plain = auth.unseal(data, self.keyrings.get(link_id), src, self.wallclock(),
                            self.max_age)
        plain, body, sig = auth.split_signature(plain)
        msg = m.decode(plain)           # cheap: what does not decode costs no verification
        signed = auth.verify_signature(body, sig, self.vbm_key)
        if self.vbm_key is not None and not signed and self.vbm_only(msg):
            raise auth.AuthError("vbm_unsigned", f"{msg.TYPE.name} not signed by the VBM")
        return msg

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
