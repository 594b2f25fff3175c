import io
import logging

from vnet_router.ops import logs


def test_logfmt_one_line_per_event():
    buf = io.StringIO()
    logs.setup("info", buf)
    log = logging.getLogger("vnet_router.test")
    log.info('reloaded %s: "x"\nsecond line', "r1.toml")
    log.debug("not shown")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("ts=") and " level=info logger=vnet_router.test " in lines[0]
    assert 'msg="reloaded r1.toml: \\"x\\"\\nsecond line"' in lines[0]
    assert "level=error" in lines[1] and "exc=" in lines[1] and "ValueError: boom" in lines[1]
    logging.getLogger().handlers[:] = []
