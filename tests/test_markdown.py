"""The one Markdown table renderer (unlearnkit.markdown), used by the report and the experiment summaries."""
from pathlib import Path

import unlearnkit
from unlearnkit.markdown import markdown_table


def test_markdown_table_layout_and_alignment():
    assert markdown_table(["a", "b"], [["x", 1]]) == "| a | b |\n| --- | --- |\n| x | 1 |"
    assert markdown_table(["name", "p", "q"], [], text_columns=1).splitlines()[1] == "| --- | ---: | ---: |"


def test_no_other_module_builds_table_rows():
    """A second renderer would drift (alignment, escaping); report/tables and experiments call this one."""
    users = [p.name for p in Path(unlearnkit.__file__).parent.rglob("*.py")
             if '" | ".join' in p.read_text() or '"---|"' in p.read_text() or "|---|" in p.read_text()]
    assert users == ["markdown.py"]
