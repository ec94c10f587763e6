"""Reports over run directories: one table of every run's config and metrics, a TOFU-style leaderboard, plots
and a self-contained HTML page (`build_report`, CLI `unlearnkit report runs/... out=...`)."""
from .build import build_report
from .collect import RunRecord, collect_runs, find_runs, flat_rows, read_run, write_table
from .tables import Table, leaderboard, markdown, suite_tables

__all__ = ["build_report", "RunRecord", "collect_runs", "find_runs", "flat_rows", "read_run", "write_table",
           "Table", "leaderboard", "markdown", "suite_tables"]
