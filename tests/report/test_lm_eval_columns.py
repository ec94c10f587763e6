"""lm-eval task accuracies in the report: next to the TOFU columns, or their own leaderboard."""
from __future__ import annotations

import json

import yaml

from unlearnkit.report import collect_runs, markdown
from unlearnkit.report.tables import MISSING


def _run(root, name, suites: dict):
    run = root / name
    (run / "eval").mkdir(parents=True)
    cfg = {"model": "m", "forget": "wmdp:bio-forget", "method": name, "run": str(run)}
    (run / "config.yaml").write_text(yaml.safe_dump({"kind": "unlearn", "config": cfg, "seed": 0}))
    for suite, (metrics, settings) in suites.items():
        body = {"suite": suite, "settings": settings,
                "metrics": {k: {"value": v, "definition": k, "n": 10, "stderr": 0.01} for k, v in metrics.items()}}
        (run / "eval" / f"{suite}.json").write_text(json.dumps(body))
    (run / "eval" / "lm_eval_results.json").write_text(json.dumps({"results": {}}))  # the harness's own file


def _board(md: str, title: str) -> dict:
    block = md.split(f"### {title}", 1)[1].split("###", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in block.splitlines() if line.startswith("|")]
    return {r[rows[0].index("Run")]: dict(zip(rows[0], r)) for r in rows[2:]}


HARNESS = ({"wmdp_bio/acc": 0.3, "mmlu/acc": 0.5, "mmlu_anatomy/acc": 0.4}, {"tasks": ["wmdp_bio", "mmlu"]})


def test_task_accuracies_sit_next_to_tofu_columns(tmp_path):
    _run(tmp_path, "rmu", {"tofu": ({"forget_quality": 0.5}, {}), "lm_eval": HARNESS})
    _run(tmp_path, "npo", {"tofu": ({"forget_quality": 0.25}, {})})
    records = collect_runs([tmp_path])
    assert all(set(r.metrics) <= {"tofu", "lm_eval"} for r in records)  # the harness's file is not a suite
    board = _board(markdown(records), "Leaderboard (TOFU metrics)")
    assert board["rmu"]["wmdp_bio acc"] == "0.300" and board["rmu"]["mmlu acc"] == "0.500"
    assert board["npo"]["wmdp_bio acc"] == MISSING
    assert "mmlu_anatomy acc" not in board["rmu"]  # subtasks stay in the suite table


def test_harness_only_runs_get_their_own_leaderboard(tmp_path):
    _run(tmp_path, "rmu", {"lm_eval": HARNESS})
    board = _board(markdown(collect_runs([tmp_path])), "Leaderboard (lm-eval harness tasks)")
    assert board["rmu"]["wmdp_bio acc"] == "0.300"
