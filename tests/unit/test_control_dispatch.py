"""VLI 0's one dispatcher (``datapath/dispatch.py``): handlers are asked in order, fallbacks
last, the first that takes or refuses a frame decides, and a frame nobody takes is the
``control`` drop -- through both engines."""
import pytest

from test_datapath_diff import IF0, IF1, IMPLS, ME0, ME1, P1, Q, Rig, ctl, sub
from vnet_router.datapath.dispatch import ControlDispatch
from vnet_router.wire import control, substrate as wire


def handler(name, calls, answer):
    def h(ctx, view, start, length):
        calls.append((name, ctx.id, bytes(view[start:start + length])))
        return answer(bytes(view[start:start + length])) if callable(answer) else answer
    return h


class Ctx:
    id = "p1"


def test_order_fallbacks_last_first_answer_wins():
    calls = []
    d = ControlDispatch()
    d.register(handler("pmtu", calls, False), fallback=True)     # registered first, asked last
    d.register(handler("a", calls, None))
    d.register(handler("b", calls, lambda p: True if p == b"take" else None))
    d.register(handler("c", calls, True))
    frame = memoryview(b"take")
    assert d(Ctx(), frame, 0, 4) is True
    assert [c[0] for c in calls] == ["a", "b"]                  # c and the fallback not asked
    calls.clear()
    assert d(Ctx(), memoryview(b"other"), 0, 5) is True
    assert [c[0] for c in calls] == ["a", "b", "c"]
    assert [getattr(h, "__name__") for h in d.handlers] == ["h"] * 4


def test_a_refusal_ends_the_walk_and_nobody_taking_is_a_refusal():
    calls = []
    d = ControlDispatch()
    d.register(handler("plane", calls, lambda p: False if p == b"bad" else None))
    d.register(handler("pmtu", calls, None), fallback=True)
    assert d(Ctx(), memoryview(b"bad"), 0, 3) is False
    assert [c[0] for c in calls] == ["plane"]                   # the fallback never saw it
    calls.clear()
    assert d(Ctx(), memoryview(b"ok"), 0, 2) is False           # nobody took it
    assert [c[0] for c in calls] == ["plane", "pmtu"]
    assert ControlDispatch()(Ctx(), memoryview(b"x"), 0, 1) is False


def test_unregister():
    calls = []
    d = ControlDispatch()
    plane = handler("plane", calls, True)
    off = d.register(plane)
    d.register(handler("pmtu", calls, True), fallback=True)
    off()
    off()                                                        # idempotent
    assert d(Ctx(), memoryview(b"x"), 0, 1) is True
    assert [c[0] for c in calls] == ["pmtu"]
    assert len(d.handlers) == 1


@pytest.mark.parametrize("mod", IMPLS)
def test_frames_nobody_takes_are_the_control_drop(mod):
    """Through a datapath: taken frames are not counted, refused and unclaimed ones are
    the ``control`` drop, and the handlers see the frames in order; a payload that is no
    control message (``control.plausible``) is the ``control`` drop before any handler."""
    calls = []
    d = ControlDispatch()
    d.register(handler("first", calls, lambda p: {b"\x01": True, b"\x02": False}.get(tag(p))))
    d.register(handler("fallback", calls, lambda p: True if tag(p) == b"\x03" else None),
               fallback=True)
    rig = Rig(mod, on_control=d)
    t10 = wire.VlanTag(10, 5)
    try:
        for payload in (ctl(b"\x01take" * 4), ctl(b"\x02refuse" * 4), ctl(b"\x03fallback" * 4),
                        b"\x01junk" * 8, ctl(b"\x04nobody" * 4)):
            rig.eth(IF0, sub(ME0, P1, 0, payload, t10), None)
        rig.eth(IF1, sub(ME1, Q, 0, ctl(b"\x04nobody" * 4)), 30)
        cnt = rig.counters()
    finally:
        rig.close()
    assert [(who, link, tag(p)) for who, link, p in calls] == [
        ("first", "p1", b"\x01"), ("first", "p1", b"\x02"), ("first", "p1", b"\x03"),
        ("fallback", "p1", b"\x03"), ("first", "p1", b"\x04"), ("fallback", "p1", b"\x04"),
        ("first", "q", b"\x04"), ("fallback", "q", b"\x04")]
    assert cnt["drops"]["control"] == 4              # junk, refused once, unclaimed twice


def tag(payload):
    """What the test's handlers decide on: the first byte after the control header."""
    return payload[control.HEADER_LEN:control.HEADER_LEN + 1]
