"""The demo's verdicts: a check whose tool is not installed is SKIP (with the reason) and is
not run, never PASS; the summary counts skipped checks apart.  No lab, no root."""
import io

from vnet_router.lab import demo


def test_checks_whose_tools_are_missing_are_skipped_not_run(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))          # nothing installed
    out = io.StringIO()
    results = demo.run_checks(None, demo.CHECKS, out=out)   # lab=None: running one would fail
    assert [v for _, _, v in results] == [demo.SKIP] * len(demo.CHECKS)
    by_what = {c.what: res for c, res, _ in results}
    assert by_what["blue h1 -> r TCP rate (20Mbit)"] == "not run: no iperf3"
    assert by_what["blue frames on the LAN"] == "not run: no tcpdump, no ping"
    assert "PASS" not in out.getvalue()


class Fake:
    def __init__(self, what, tools, passed):
        self.what, self.tools, self.passed, self.expected = what, tools, passed, "ok"
        self.ran = False

    def run(self, lab):
        self.ran = True
        return "measured", self.passed


def test_a_skip_is_not_counted_as_passed(monkeypatch, tmp_path):
    (tmp_path / "here").write_text("#!/bin/sh\n")
    (tmp_path / "here").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    checks = [Fake("a", ("here",), True), Fake("b", ("not-installed-tool",), True),
              Fake("c", (), True)]
    results = demo.run_checks(None, checks, out=io.StringIO())
    assert [v for _, _, v in results] == [demo.PASS, demo.SKIP, demo.PASS]
    assert [c.ran for c in checks] == [True, False, True]
    assert demo.summary(results) == ("PASS: 2/3 checks as expected, 1 skipped "
                                     "(b: not run: no not-installed-tool)")
    failed = demo.run_checks(None, [Fake("d", (), False)], out=io.StringIO())
    assert demo.summary(results + failed).startswith("FAIL: 2/4 checks as expected")
    assert demo.summary(results, clean=False).startswith("FAIL:")


def test_report_table_shows_the_verdicts():
    from vnet_router.ops import render
    out = io.StringIO()
    results = demo.run_checks(None, [Fake("a", (), True), Fake("b", ("not-installed-tool",),
                                                                True)], out=io.StringIO())
    render.write(out, demo.report_table(results))
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["check", "expected", "result", "verdict"]
    assert lines[1].split()[-1] == "PASS" and lines[2].split()[-1] == "SKIP"
