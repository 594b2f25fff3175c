"""State machines of the control protocol: IntEnum states + explicit transition tables.

``Machine`` is the small guard every machine shares: ``fire(event)`` moves along the table
or raises :class:`TransitionError` (a bug, never a network input: inputs that do not fit the
current state are refused and counted by the callers before they reach ``fire``).
"""
from __future__ import annotations

from enum import IntEnum


class TransitionError(RuntimeError):
    pass


class Machine:
    TABLE: dict = {}

    def __init__(self, state):
        self.state = state

    def can(self, event: str) -> bool:
        return (self.state, event) in self.TABLE

    def fire(self, event: str):
        try:
            self.state = self.TABLE[(self.state, event)]
        except KeyError:
            raise TransitionError(f"{type(self).__name__}: no transition from "
                                  f"{self.state.name} on {event!r}") from None
        return self.state


class PendingState(IntEnum):
    """One outstanding request of ``transport.Requester``."""

    WAITING = 1        # sent, waiting for the reply; retried with backoff
    DONE = 2           # reply arrived
    TIMED_OUT = 3      # no reply after the last try: the caller falls back to a safe state
    CANCELLED = 4


class PendingFSM(Machine):
    TABLE = {
        (PendingState.WAITING, "retry"): PendingState.WAITING,
        (PendingState.WAITING, "reply"): PendingState.DONE,
        (PendingState.WAITING, "expire"): PendingState.TIMED_OUT,
        (PendingState.WAITING, "cancel"): PendingState.CANCELLED,
    }


class VlinkState(IntEnum):
    """A dynamically created virtual link (pair), as seen by the node that asked for it."""

    SETTING_UP = 1     # VLINK_SETUP sent, our input VLI reserved
    UP = 2             # downstream chose its VLI; both directions installed
    TEARING_DOWN = 3   # VLINK_TEARDOWN sent; already removed locally
    DOWN = 4           # gone (torn down, refused, or set-up timed out: nothing left installed)


class VlinkFSM(Machine):
    TABLE = {
        (VlinkState.SETTING_UP, "accepted"): VlinkState.UP,
        (VlinkState.SETTING_UP, "refused"): VlinkState.DOWN,
        (VlinkState.SETTING_UP, "timeout"): VlinkState.DOWN,
        (VlinkState.UP, "teardown"): VlinkState.TEARING_DOWN,
        (VlinkState.UP, "remote_teardown"): VlinkState.DOWN,
        (VlinkState.TEARING_DOWN, "acked"): VlinkState.DOWN,
        (VlinkState.TEARING_DOWN, "timeout"): VlinkState.DOWN,
    }


class RateState(IntEnum):
    """Current-rate negotiation of one output virtual link (upstream side)."""

    STABLE = 1         # current rate agreed with the downstream TM
    REQUESTING = 2     # RATE_REQUEST outstanding
    UNSYNCED = 3       # a decrease timed out: applied locally, to be re-sent


class RateFSM(Machine):
    TABLE = {
        (RateState.STABLE, "request"): RateState.REQUESTING,
        (RateState.UNSYNCED, "request"): RateState.REQUESTING,
        (RateState.REQUESTING, "reply"): RateState.STABLE,
        (RateState.REQUESTING, "timeout"): RateState.UNSYNCED,
        (RateState.REQUESTING, "abandon"): RateState.STABLE,
        (RateState.STABLE, "notified"): RateState.STABLE,
        (RateState.UNSYNCED, "notified"): RateState.UNSYNCED,
        (RateState.REQUESTING, "notified"): RateState.REQUESTING,
    }


class VbmState(IntEnum):
    """The VBM after a (re)start rebuilds its view from the nodes before it grants increases."""

    REBUILDING = 1
    ACTIVE = 2


class VbmFSM(Machine):
    TABLE = {
        (VbmState.REBUILDING, "rebuilt"): VbmState.ACTIVE,
    }
