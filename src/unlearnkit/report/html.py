"""A self-contained HTML report: inline CSS, tables, plots embedded as base64 PNG data URIs; no network, no scripts.
"""
from __future__ import annotations

import base64
import html
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
th{background:#f2f4f8;font-weight:600;text-align:left}
td.wrap{white-space:normal;min-width:160px;max-width:320px;font-size:.92em;color:#3b4352}td.num{text-align:right;font-variant-numeric:tabular-nums}td.missing{color:#a0a7b4;text-align:center}
tr:nth-child(even) td{background:#fafbfc}
figure{margin:12px 0 24px}figure img{max-width:100%;border:1px solid #e5e8ee}
figcaption{color:#667085;font-size:.85em}
"""

WRAPPED = {"Settings", "Status"}
CAPTIONS = {
    "fq_vs_mu": "Forget quality (log scale) against model utility, per method.",
    "alpha_curves": "UIPE α search: metrics against the extrapolation coefficient α; dashed: the chosen α.",
    "training": "Training curves from each run's log.jsonl.",
    "geffect": "G-effects against training step (geffect/geffect.csv).",
    "reveal": "Reveal-and-Release: mean reveal score and self-generated forget rows per round (hollow: the round that stopped the loop).",
}


def table_html(t: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in t.headers)
    body = []
    for row in t.rows:
        cells = []
        for i, c in enumerate(row):
            cls = "missing" if c == MISSING else ("num" if i >= t.text_columns else
                                                  "wrap" if t.headers[i] in WRAPPED else "")
            cells.append(f'<td class="{cls}">{e(str(c))}</td>' if cls else f"<td>{e(str(c))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{e(t.note)}</p>' if t.note else ""
    return (f"<h2>{e(t.title.replace('`', ''))}</h2>{note}<div class=\"scroll\"><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


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
