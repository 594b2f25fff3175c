"""VLI 0 of a datapath: the one dispatcher that hands control frames to those who take them.

A datapath is built with it (``Datapath(..., on_control=dispatch)``); both engines call it, through
the core's ``on_control``, for every frame on VLI 0 of a substrate link.  Parts above the
datapath register a handler ``handler(link ctx, frame view, payload start, length)`` that
answers

* ``True``: taken;
* ``False``: refused (malformed, not authentic ...): no later handler sees the frame;
* ``None``: not its frame: the next handler is asked.

Handlers are asked in order of registration, fallbacks (``fallback=True``) after all others;
the first answer that is not ``None`` decides.  A frame that nobody takes is refused, and the
datapath counts every refused frame as the ``control`` drop (as without any handler).

The node registers the control plane (``control/plane.py``, with ``[tm]`` or ``[vbm]``), which
decodes every message and never answers ``None`` (it hands PATH_MTU to the path-MTU service
itself), and the path-MTU service (``control/pmtu.py``, on every node) as the fallback, which
takes PATH_MTU notices and refuses the rest: so with a control plane every frame is the
plane's, without one only PATH_MTU is taken.
"""
from __future__ import annotations

from typing import Callable, Optional

Handler = Callable[..., Optional[bool]]     # (ctx, view, start, length) -> True | False | None


class ControlDispatch:
    """Handlers of VLI 0 frames, asked in order (see the module docstring)."""

    def __init__(self):
        self._first: tuple[Handler, ...] = ()
        self._fallbacks: tuple[Handler, ...] = ()
        self._order: tuple[Handler, ...] = ()      # what a frame walks (replaced, never changed)

    @property
    def handlers(self) -> tuple[Handler, ...]:
        """The handlers in the order a frame is offered to them."""
        return self._order

    def register(self, handler: Handler, *, fallback: bool = False) -> Callable[[], None]:
        """Offer VLI 0 frames to ``handler`` (``fallback``: after every other handler).
        Returns the function that takes it off again (for an exit stack)."""
        if fallback:
            self._fallbacks += (handler,)
        else:
            self._first += (handler,)
        self._order = self._first + self._fallbacks
        return lambda: self.unregister(handler)

    def unregister(self, handler: Handler) -> None:
        """``handler`` takes no more frames (no-op if it is not registered)."""
        self._first = tuple(h for h in self._first if h != handler)
        self._fallbacks = tuple(h for h in self._fallbacks if h != handler)
        self._order = self._first + self._fallbacks

    def __call__(self, ctx, view, start: int, length: int) -> bool:
        """The datapath's ``on_control``: True if a handler took the frame."""
        for handler in self._order:
            verdict = handler(ctx, view, start, length)
            if verdict is not None:
                return bool(verdict)
        return False
