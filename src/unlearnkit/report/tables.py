"""Tables over collected runs: a TOFU-style leaderboard and one table per evaluation suite.

A table is `Table(title, headers, rows)` of display strings; `to_markdown()` renders it, and the HTML report
renders the same object. Missing values are shown as "–".
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from ..eval.metric_registry import leaderboard_columns, leaderboard_suites, suite_title
from ..markdown import markdown_table
from .collect import RunRecord

MISSING = "–"



def registry_columns(suite: str) -> tuple[tuple[str, str, str], ...]:
    """(column header, suite, metric key) of a suite's leaderboard, from the metric registry (arrows: which way
    is better)."""
    return tuple((m.header, m.suite, m.key) for m in leaderboard_columns(suite))


LEADERBOARD_COLUMNS = registry_columns("tofu")   # the TOFU benchmark's columns
MUSE_COLUMNS = registry_columns("muse")          # MUSE's six-way table (Shi et al. 2024)
#: `run_status` values whose numbers are not a finished run's: the leaderboard marks them after the method
#: (`unknown`, a kind without a summary file to tell, is left unmarked)
UNFINISHED = ("failed", "diverged", "interrupted", "running")
IGNORED_PARAM_KEYS = {"run", "method", "report_to", "forget", "data"}  # shown elsewhere (Method, Split)


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""
    text_columns: int = 1  # the first N columns are left-aligned text, the rest right-aligned numbers

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append(markdown_table([md_escape(h) for h in self.headers],
                                    [[md_escape(c) for c in row] for row in self.rows], self.text_columns))
        return "\n".join(lines) + "\n"


_MD_PUNCT = re.compile(r"([\\`*\[\]|~])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md_escape(text: Any) -> str:
    """Text shown as itself in a Markdown table cell or heading, whatever a run, method or setting is named:
    HTML is entity-escaped (no tag or script survives), Markdown's inline punctuation (links, code, emphasis,
    strike-through) and the cell separator `|` are backslash-escaped, and line breaks become spaces."""
    s = "".join(_HTML.get(ch, ch) for ch in str(text))
    return " ".join(_MD_PUNCT.sub(r"\\\1", s).splitlines())


def code_span(text: str) -> str:
    """`text` as inline code (shown literally, HTML included), or escaped text when it holds a backtick or a
    line break (which would end the span)."""
    return f"`{text}`" if text and not re.search(r"[`\r\n]", text) else md_escape(text)


def fmt(value: Optional[float], metric: str = "") -> str:
    """A metric value for display: "–" when missing; p-values (forget quality) in scientific notation when small."""
    if value is None:
        return MISSING
    v = float(value)
    if metric.endswith("forget_quality") and v != 0 and abs(v) < 0.01:
        return f"{v:.2e}"
    if abs(v) >= 1000 or (v != 0 and abs(v) < 1e-3):
        return f"{v:.2e}"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    return out


def varying_params(records: list[RunRecord]) -> list[str]:
    """Config keys whose values differ between runs of the same kind (lr, params.beta, seed, ...)."""
    keys: list[str] = []
    by_kind: dict[str, list[dict]] = {}
    for r in records:
        by_kind.setdefault(r.kind, []).append(_flat(r.config))
    for flats in by_kind.values():
        if len(flats) < 2:
            continue
        for k in dict.fromkeys(k for f in flats for k in f):
            if k in IGNORED_PARAM_KEYS or k in keys:
                continue
            if len({json.dumps(f[k], default=str) for f in flats if k in f}) > 1:
                keys.append(k)
    return keys


def _params(r: RunRecord, keys: list[str]) -> str:
    flat = _flat(r.config)
    parts = [f"{k.split('.')[-1] if k.startswith('params.') else k}={_short(flat[k])}" for k in keys if k in flat]
    return ", ".join(parts) or MISSING


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    s = str(v)
    return s if len(s) <= 32 else "…" + s[-31:]


def _sorted(records: list[RunRecord]) -> list[RunRecord]:
    return sorted(records, key=lambda r: (r.split, r.method, r.name))


def leaderboard(records: list[RunRecord], columns=LEADERBOARD_COLUMNS, title: str = "Leaderboard (TOFU metrics)") -> Table:
    """Benchmark layout (TOFU by default: forget quality, model utility, forget ROUGE, PrivLeak, ...; or
    `MUSE_COLUMNS`): method, split, run, settings, then the benchmark's columns, one row per run."""
    keys = varying_params(records)
    headers = ["Method", "Split", "Run", "Settings"] + [h for h, _, _ in columns]
    t = Table(title, headers, text_columns=4,
              note="One row per run; ↑/↓: higher/lower is better; PrivLeak: closer to 0 is better; "
                   "– : not measured; (failed), (diverged), (interrupted), (running): the run did not finish "
                   "(see Runs), its numbers are not a finished run's.")
    for r in _sorted(records):
        status = f" ({r.status})" if r.status in UNFINISHED else ""
        t.rows.append([r.method + status, r.split or MISSING, r.name, _params(r, keys)] +
                      [fmt(r.metric(suite, m), m) for _, suite, m in columns])
    return t


def suite_tables(records: list[RunRecord]) -> list[Table]:
    """One table per evaluation suite with every metric it reported (union over runs)."""
    suites = list(dict.fromkeys(s for r in records for s in r.metrics))
    tables = []
    for suite in suites:
        names = list(dict.fromkeys(m for r in records for m in r.metrics.get(suite, {})))
        t = Table(f"Suite {code_span(suite)}: all metrics", ["Method", "Run"] + names, text_columns=2)
        for r in _sorted([r for r in records if suite in r.metrics]):
            t.rows.append([r.method, r.name] + [fmt(r.metric(suite, m), m) for m in names])
        tables.append(t)
    return tables


def runs_table(records: list[RunRecord]) -> Table:
    """Every run: kind, method, seed, status, steps logged, final loss."""
    t = Table("Runs", ["Run", "Kind", "Method", "Seed", "Status", "Logged steps", "Final loss"], text_columns=5)
    for r in _sorted(records):
        losses = [x for x in r.log if isinstance(x.get("loss"), (int, float))]
        t.rows.append([r.name, r.kind, r.method, MISSING if r.seed is None else str(r.seed),
                       r.status + (f": {r.error}" if r.error else ""), str(len(losses)),
                       fmt(losses[-1]["loss"]) if losses else MISSING])
    return t


def all_tables(records: list[RunRecord]) -> list[Table]:
    """A leaderboard per registered suite that any run has metrics of (TOFU, MUSE, ...: `eval.metric_registry`),
    one table per suite, each with the lm-eval task accuracies the runs asked for appended (or their own
    leaderboard when no run has a registered suite), and the runs."""
    harness = lm_eval_columns(records)
    board = []
    for suite in leaderboard_suites():
        runs = [r for r in records if suite in r.metrics]
        if runs:
            board.append(leaderboard(records if suite == "tofu" else runs, registry_columns(suite) + harness,
                                     f"Leaderboard ({suite_title(suite)} metrics)"))
    if harness and not board:
        board.append(leaderboard([r for r in records if "lm_eval" in r.metrics], harness,
                                 "Leaderboard (lm-eval harness tasks)"))
    return [*board, *suite_tables(records), runs_table(records)]


# lm-eval harness columns: not in the metric registry, because they depend on the tasks each run asked for, and a
# task's direction on its role (WMDP: forget topic, lower is better, chance 0.25; MMLU: utility, higher is
# better), so the header names the task and the leaderboard note says which is which.
def lm_eval_columns(records: list[RunRecord]) -> tuple[tuple[str, str, str], ...]:
    """One `<task> acc` column per task a run asked the harness for (its `eval/lm_eval.json` settings' `tasks`,
    first-seen order) and that some run reports `acc` for."""
    tasks = dict.fromkeys(t for r in records for t in r.eval_settings.get("lm_eval", {}).get("tasks", []))
    return tuple((f"{t} acc", "lm_eval", f"{t}/acc") for t in tasks
                 if any(r.metric("lm_eval", f"{t}/acc") is not None for r in records))


def markdown(records: list[RunRecord], title: str = "unlearnkit report") -> str:
    """The whole Markdown report (what `build_report` writes to leaderboard.md)."""
    return f"# {md_escape(title)}\n\n" + "\n".join(t.to_markdown() for t in all_tables(records))
