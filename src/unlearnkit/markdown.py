"""`markdown_table`: the one GitHub-Markdown table renderer (report tables, experiment summaries, logs).

It lays out cells that are already display strings; escaping is the caller's business (report/tables
escapes run and method names, experiments print their own numbers), so this module has no dependencies.
"""
from __future__ import annotations

from typing import Sequence


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int | None = None) -> str:
    """Header, separator and one line per row, without a trailing newline.

    `text_columns`: None leaves every column with the default alignment (`---`); N left-aligns the first N
    columns and right-aligns the rest (`---:`), the layout of a table of names followed by numbers."""
    n = len(headers)
    aligns = ["---" if text_columns is None or i < text_columns else "---:" for i in range(n)]
    lines = [headers, aligns, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)
