"""The report's Runs status and UIPE α plot on run folders written in the commands' real formats (issue 20):
finished / interrupted / diverged / running / failed, and every α the automatic rule evaluated."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from unlearnkit.report import build_report, collect_runs
from unlearnkit.runs import SUMMARY_FILES as FINISHED_MARKERS
from unlearnkit.report.html import column_groups, table_html
from unlearnkit.report.plots import HELDOUT_UTILITY, alpha_points, plot_alpha_curves, training_panels
from unlearnkit.report.tables import Table
from unlearnkit.runs import RunDir, locked_run, write_json

AUTO_ALPHAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 6.0)   # the demo's automatic-α sequence (8 evaluations)


def _run(root: Path, name: str, kind: str, method: str, losses=(3.0, 2.0, 1.0), **extra) -> RunDir:
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    run.write_config(kind, {"method": method, "forget": "synthetic:forget", "run": str(run.path), "lr": 1e-4},
                     seed=0, extra={"inputs": {"method": method}} if kind == "unlearn" else None)
    for step, loss in enumerate(losses, start=1):
        run.log({"step": step, "loss": loss, "learning_rate": 1e-4, "grad_norm": 1.0})
    for k, v in extra.items():
        write_json(run.path / k, v)
    return run


def _alpha_search(run: RunDir, method: str, chosen: float) -> None:
    """uipe/alpha_search.json as `uipe.search.alpha_search` writes it with alphas=(0,) and auto=True: full metrics at
    α = 0 and at the chosen α, the held-out utility at every α the automatic rule tried."""
    points = [{"checkpoint": "final", "alpha": a, "auto": a == chosen,
               "metrics": {"forget/target/probability": 0.9 - 0.1 * a, "utility": 0.99 - 0.01 * a}}
              for a in (0.0, chosen)]
    auto = {"alpha": chosen, "base_utility": 0.99, "threshold": 0.94, "stopped": "evaluations",
            "evaluations": [{"alpha": a, "utility": 0.99 - 0.005 * a * a} for a in AUTO_ALPHAS]}
    write_json(run.path / "uipe" / "alpha_search.json",
               {"base_run": str(run.path), "method": method, "suite": "related", "checkpoints": ["final"],
                "points": points, "auto_by_checkpoint": {"final": auto}, "auto": auto})


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "runs"
    _run(root, "target", "finetune", "finetune", losses=(13.8, 6.0, 0.5), **{"finetune.json": {"steps": 3}})
    for method, chosen in (("ga", 6.0), ("npo", 4.0)):
        _alpha_search(_run(root, f"unlearn-{method}", "unlearn", method, **{"unlearn.json": {"steps": 3}}),
                      method, chosen)
    _run(root, "uipe-ga", "extrapolate", "ga", losses=(), **{"uipe.json": {"alpha": 6.0}})
    killed = _run(root, "killed", "unlearn", "npo")          # checkpoints and a log, no summary: interrupted
    (killed.checkpoints / "step-2").mkdir(parents=True)
    nan = _run(root, "nan", "unlearn", "ga")                 # the divergence guard's row, as hf_glue writes it
    nan.log({"step": 4, "diverged": True, "loss": math.nan, "message": "training diverged at step 4: loss=nan"})
    _run(root, "crashed", "unlearn", "ga", **{"sweep_error.json": {"error": "RuntimeError: out of memory"}})
    _run(root, "live", "unlearn", "npo")
    return root


def _runs_table(md: str) -> dict[str, dict[str, str]]:
    block = md.split("### Runs", 1)[1]
    lines = [l for l in block.splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    return {row[0]: dict(zip(header, row)) for row in
            ([c.strip() for c in l.strip("|").split(" | ")] for l in lines[2:])}


def test_runs_table_status_from_what_the_run_folders_record(tree, tmp_path):
    with locked_run(tree / "live"):   # a command is writing this run now
        out = build_report([tree], tmp_path / "rep")
    status = {name: row["Status"] for name, row in _runs_table(out["markdown"].read_text()).items()}
    assert status == {"target": "finished", "unlearn-ga": "finished", "unlearn-npo": "finished",
                      "uipe-ga": "finished", "killed": "interrupted",
                      "nan": "diverged: training diverged at step 4: loss=nan",
                      "crashed": "failed: RuntimeError: out of memory", "live": "running"}
    # once the command is gone, its lock file no longer means "running"
    assert {r.name: r.status for r in collect_runs([tree])}["live"] == "interrupted"
    assert "unknown" not in out["html"].read_text()


def test_leaderboard_flags_every_run_that_did_not_finish(tree, tmp_path):
    """A run that failed, diverged, was interrupted or is still running has TOFU numbers (an evaluation of its last
    model) that are not a finished run's: its Method cell says so; a finished run's does not."""
    from unlearnkit.report.tables import LEADERBOARD_COLUMNS, leaderboard

    _, suite, metric = LEADERBOARD_COLUMNS[0]
    for name in ("unlearn-ga", "killed", "nan", "crashed", "live"):   # eval/<suite>.json as evaluate writes it
        write_json(tree / name / "eval" / f"{suite}.json",
                   {"suite": suite, "model": str(tree / name), "settings": {"forget": "forget01"},
                    "metrics": {metric: {"value": 0.5, "definition": "fixture", "n": 40}}})
    with locked_run(tree / "live"):
        board = leaderboard([r for r in collect_runs([tree]) if suite in r.metrics])
    method = {row[2]: row[0] for row in board.rows}
    assert method == {"unlearn-ga": "ga", "killed": "npo (interrupted)", "nan": "ga (diverged)",
                      "crashed": "ga (failed)", "live": "npo (running)"}


def test_alpha_plot_has_every_alpha_evaluated_per_method(tree, tmp_path):
    records = {r.method: r for r in collect_runs([tree]) if r.alpha_search}
    assert set(records) == {"ga", "npo"}
    for method, r in records.items():
        panels = alpha_points(r.alpha_search)
        assert [a for a, _ in panels[HELDOUT_UTILITY]] == sorted(AUTO_ALPHAS)           # 8 points, in α order
        assert len({a for pts in panels.values() for a, _ in pts}) == 8
        assert [a for a, _ in panels["forget/target/probability"]] == [0.0, r.alpha_search["auto"]["alpha"]]
    assert plot_alpha_curves(list(records.values()), tmp_path / "alpha.png").stat().st_size > 0


def test_training_rows_keep_each_scale_apart(tree):
    panels = training_panels(collect_runs([tree]))
    assert list(panels) == ["finetune", "unlearn · ga", "unlearn · npo"]   # NPO ~13.9 never shares GA's axis
    assert panels["finetune"] == ["loss", "grad_norm", "learning_rate"]


def test_wide_tables_are_split_into_page_wide_parts():
    t = Table("Suite tofu: all metrics", ["Method", "Run"] + [f"set/metric_{i}" for i in range(21)],
              rows=[["ga", "run-1"] + [f"{i / 10:.3f}" for i in range(21)]], text_columns=2)
    groups = column_groups(t, max_numbers=10)
    assert [len(g) - 2 for g in groups] == [7, 7, 7] and all(g[:2] == [0, 1] for g in groups)
    page = table_html(t, max_numbers=10)
    assert page.count("<table>") == 3 and page.count("<th>Run</th>") == 3
    headers = re.findall(r"<th>(.*?)</th>", page)
    assert sorted(h.replace("<wbr>", "") for h in headers if h.startswith("set/")) == sorted(t.headers[2:])
    assert "set/<wbr>metric_<wbr>0" in page   # long metric names may wrap
    assert "metric columns 15–21 of 21" in page
    narrow = Table("Runs", ["Run", "Status", "Final loss"], rows=[["a", "finished", "0.1"]], text_columns=2)
    assert table_html(narrow).count("<table>") == 1


def test_finished_markers_are_the_commands_summary_files():
    from unlearnkit.reveal import loop
    from unlearnkit.train import finetune, unlearn

    assert FINISHED_MARKERS["finetune"] == finetune.SUMMARY and FINISHED_MARKERS["unlearn"] == unlearn.SUMMARY
    assert FINISHED_MARKERS["reveal"] == loop.SUMMARY
