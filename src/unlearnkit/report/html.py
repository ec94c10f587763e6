"""A self-contained HTML report: inline CSS, tables, plots embedded as base64 PNG data URIs; no network, no scripts.

Every table fits the page width (about 1300 px), so a printed page or a screenshot shows all of it: headers wrap
after `/`, `_` and spaces, settings and status cells wrap, and a table with more than `MAX_NUMBER_COLUMNS`
metric columns is shown as several tables of at most that many (each repeating the run's text columns). The
`.scroll` wrapper still scrolls horizontally if a narrow window cannot hold even that.
"""
from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path
from typing import Mapping

from .tables import MISSING, Table

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:24px auto;max-width:1320px;
color:#1d2330;background:#fff;padding:0 16px}
h1{font-size:1.6em;margin-bottom:2px}h2{font-size:1.25em;margin-top:30px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.meta{color:#667085;font-size:.9em}.note{color:#667085;font-size:.85em;margin:4px 0 8px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.86em;margin:8px 0 18px}
th,td{border:1px solid #dde2ea;padding:4px 9px;white-space:nowrap}
th{background:#f2f4f8;font-weight:600;text-align:left;white-space:normal;vertical-align:bottom;min-width:48px;max-width:96px}
td.wrap{white-space:normal;min-width:140px;max-width:260px;font-size:.92em;color:#3b4352}td.num{text-align:right;font-variant-numeric:tabular-nums}td.missing{color:#a0a7b4;text-align:center}
tr:nth-child(even) td{background:#fafbfc}
figure{margin:12px 0 24px}figure img{max-width:100%;border:1px solid #e5e8ee}
figcaption{color:#667085;font-size:.85em}
"""

WRAPPED = {"Settings", "Status"}
MAX_NUMBER_COLUMNS = 10  # metric columns per rendered table: 10 × ≤ 90 px + the text columns fit 1300 px
CAPTIONS = {
    "fq_vs_mu": "Forget quality (log scale) against model utility, one labelled point per run; stars: the "
                "fine-tuned reference models (target, retain oracle); dotted: p = 0.05.",
    "alpha_curves": "UIPE α search: every α evaluated. Left: the held-out retain utility the automatic α rule "
                    "evaluated (all its α); then the metrics of the α values fully evaluated; dashed: the chosen α.",
    "training": "Training curves from each run's log.jsonl, one row of panels per run kind and unlearning method "
                "(each on its own scale: fine-tuning, GA and NPO losses differ by orders of magnitude).",
    "geffect": "G-effects against training step (geffect/geffect.csv).",
    "muse_requests": "MUSE scalability (forget sets of growing size, each unlearned from the same model) and "
                     "sustainability (requests one after another, each from the previous request's model); star at "
                     "0: the model before the first request. KnowMem retain should hold while KnowMem forget and "
                     "VerbMem fall.",
    "reveal": "Reveal-and-Release: mean reveal score and self-generated forget rows per round (hollow: the round that stopped the loop).",
}


def column_groups(t: Table, max_numbers: int = MAX_NUMBER_COLUMNS) -> list[list[int]]:
    """Column indices of each rendered part: the text columns, then at most `max_numbers` number columns, the
    number columns shared out evenly (21 columns at most 10 a part: 7 + 7 + 7, not 10 + 10 + 1)."""
    text = list(range(min(t.text_columns, len(t.headers))))
    numbers = list(range(len(text), len(t.headers)))
    if not numbers:
        return [text]
    size = math.ceil(len(numbers) / math.ceil(len(numbers) / max_numbers))
    return [text + numbers[i:i + size] for i in range(0, len(numbers), size)]


def header_html(h: str) -> str:
    """A header that may wrap after `/` and `_` (metric names such as forget/rouge_l_recall have no spaces)."""
    return "".join(html.escape(ch) + ("<wbr>" if ch in "/_" else "") for ch in h)


def _cell(t: Table, i: int, c: str) -> str:
    cls = "missing" if c == MISSING else ("num" if i >= t.text_columns else "wrap" if t.headers[i] in WRAPPED else "")
    return f'<td class="{cls}">{html.escape(str(c))}</td>' if cls else f"<td>{html.escape(str(c))}</td>"


def table_html(t: Table, max_numbers: int = MAX_NUMBER_COLUMNS) -> str:
    """The table's heading, note and body; split into parts of at most `max_numbers` number columns."""
    e = html.escape
    groups = column_groups(t, max_numbers)
    parts = []
    for cols in groups:
        head = "".join(f"<th>{header_html(t.headers[i])}</th>" for i in cols)
        body = "".join("<tr>" + "".join(_cell(t, i, row[i]) for i in cols) + "</tr>" for row in t.rows)
        nums = [i - t.text_columns + 1 for i in cols if i >= t.text_columns]
        label = (f'<p class="note">metric columns {nums[0]}–{nums[-1]} of {len(t.headers) - t.text_columns}</p>'
                 if len(groups) > 1 else "")
        parts.append(f'{label}<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
                     f"</table></div>")
    note = f'<p class="note">{e(t.note)}</p>' if t.note else ""
    return f"<h2>{e(t.title.replace('`', ''))}</h2>{note}" + "".join(parts)


def png_data_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(tables: list[Table], plots: Mapping[str, str | Path], title: str = "unlearnkit report",
                sources: list[str] | None = None) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(title)}</title><style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>",
             f'<p class="meta">generated {e(time.strftime("%Y-%m-%d %H:%M:%S"))}'
             + (f" from {e(', '.join(sources))}" if sources else "") + "</p>"]
    parts += [table_html(t) for t in tables]
    if plots:
        parts.append("<h2>Plots</h2>")
        for name, path in plots.items():
            parts.append(f'<figure><img alt="{e(name)}" src="{png_data_uri(path)}">'
                         f"<figcaption>{e(CAPTIONS.get(name, name))}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
