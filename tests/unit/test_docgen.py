"""The key tables of docs/ are what the schema generates (``vnet_router.model.docgen``)."""
import pytest

from vnet_router.model import docgen


@pytest.mark.parametrize("name", docgen.DOCS)
def test_doc_tables_are_generated_from_the_schema(name):
    text = (docgen.ROOT / name).read_text()
    assert "<!-- schema: " in text
    assert docgen.render(text) == text, \
        f"{name} is out of date: run python3 -m vnet_router.model.docgen"


def test_a_stale_table_is_rewritten_and_check_reports_it(tmp_path, monkeypatch, capsys):
    stale = ("intro\n<!-- schema: vnet_router.model.config.VNet -->\n| key | meaning |\n"
             "| `name` | old text |\n<!-- /schema -->\noutro\n")
    (tmp_path / "doc.md").write_text(stale)
    monkeypatch.setattr(docgen, "ROOT", tmp_path)
    monkeypatch.setattr(docgen, "DOCS", ("doc.md",))
    assert docgen.main(["--check"]) == 1
    assert (tmp_path / "doc.md").read_text() == stale            # --check writes nothing
    assert docgen.main([]) == 0
    new = (tmp_path / "doc.md").read_text()
    assert new.startswith("intro\n") and new.endswith("<!-- /schema -->\noutro\n")
    assert "| `namespace` | name | `vnet-NAME` |" in new and "old text" not in new
    assert docgen.main(["--check"]) == 0
    assert "doc.md: out of date" in capsys.readouterr().out
