"""`build_report(paths, out)`: run directories → runs.csv (+ parquet), leaderboard.md, plots/*.png, report.html.

    unlearnkit report runs/sweep-npo runs/oracle out=runs/report
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from ..runs import atomic_write_text
from .collect import collect_runs, flat_rows, write_table
from .html import render_html
from .plots import all_plots
from .tables import all_tables, markdown

log = logging.getLogger(__name__)


def build_report(paths: Iterable[str | Path], out: str | Path | None = None,
                 title: str = "unlearnkit report") -> dict[str, Path]:
    """Collect every run at or below `paths` and write the report into `out` (default: `<first path>/report`).

    Returns the written paths: csv, parquet (if pyarrow imports), markdown, html and plot names.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("report: give at least one run directory (or a folder of run directories)")
    out = Path(out) if out is not None else paths[0] / "report"
    records = collect_runs(paths)
    if not records:
        raise FileNotFoundError(f"no run directories (folders with config.yaml) under {', '.join(map(str, paths))}")
    written: dict[str, Path] = dict(write_table(flat_rows(records), out))
    tables = all_tables(records)
    written["markdown"] = out / "leaderboard.md"
    atomic_write_text(written["markdown"], markdown(records, title))
    plots = all_plots(records, out / "plots")
    written.update({f"plot:{k}": v for k, v in plots.items()})
    written["html"] = out / "report.html"
    atomic_write_text(written["html"], render_html(tables, plots, title, [str(p) for p in paths]))
    log.info("report of %d runs in %s", len(records), out)
    return written
