"""A fixture of hand-made run directories: what finetune / unlearn / evaluate / geffect / UIPE write."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

TOFU = {  # run name -> (method, lr, forget_quality, model_utility, forget ROUGE, privleak)
    "ga-lr1e-05-aaaa0001": ("ga", 1e-5, 1.2e-5, 0.61, 0.42, -55.0),
    "npo-lr1e-05-bbbb0002": ("npo", 1e-5, 0.031, 0.58, 0.35, -20.5),
    "npo-lr3e-05-cccc0003": ("npo", 3e-5, 0.27, 0.52, None, 3.25),  # forget ROUGE missing → "–"
}


def _write_run(path: Path, kind: str, config: dict, seed: int = 0, inputs: dict | None = None) -> Path:
    path.mkdir(parents=True)
    record = {"kind": kind, "config": config, "seed": seed, "versions": {"python": "3.11"}, "git_commit": None,
              "created": "2025-01-01T00:00:00"}
    if inputs:
        record["inputs"] = inputs
    (path / "config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    return path


def _eval(path: Path, suite: str, metrics: dict, settings: dict) -> None:
    (path / "eval").mkdir(exist_ok=True)
    body = {"suite": suite, "model": str(path / "model"), "settings": settings,
            "metrics": {k: {"value": v, "definition": f"{k}: fixture", "n": 40} for k, v in metrics.items()}}
    (path / "eval" / f"{suite}.json").write_text(json.dumps(body))


@pytest.fixture(scope="module")
def run_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report_fixture") / "runs"
    for i, (name, (method, lr, fq, mu, rouge, pl)) in enumerate(TOFU.items()):
        cfg = {"model": "runs/target/model", "forget": "tofu:forget01", "retain": "tofu:retain99", "method": method,
               "params": {"beta": 0.1}, "lr": lr, "run": str(root / name), "seed": 0}
        run = _write_run(root / name, "unlearn", cfg, inputs={"method": method, "forget": "tofu:forget01"})
        metrics = {"forget_quality": fq, "model_utility": mu, "forget/rouge_l_recall": rouge, "privleak": pl,
                   "forget/probability": 0.1 * (i + 1), "mia/min_k": 0.5 + 0.1 * i}
        _eval(run, "tofu", metrics, {"forget": "forget01", "limit": None})
        (run / "eval" / "oracle_stats.json").write_text(json.dumps({"forget": "forget01", "truth_ratios": [0.5]}))
        with (run / "log.jsonl").open("w") as fh:
            for step in range(1, 6):
                fh.write(json.dumps({"step": step, "epoch": step / 5, "loss": 3.0 - 0.3 * step * (i + 1),
                                     "forget_loss": 3.0 - 0.3 * step, "retain_loss": 1.0 + 0.01 * step,
                                     "learning_rate": lr * (1 - step / 5), "grad_norm": 2.0 + step}) + "\n")
            fh.write('{"step": 6, "loss": 1.')  # a killed run's half-written last line
        (run / "sweep_done.json").write_text("{}")
    # G-effect on the first run
    gdir = root / "ga-lr1e-05-aaaa0001" / "geffect"
    gdir.mkdir()
    with (gdir / "geffect.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["checkpoint", "step", "group", "kind", "value"])
        for step in (2, 4, 6):
            for group in ("total", "layers.0", "layers.1"):
                for kind, sign in (("unlearn", -1), ("retain", 1)):
                    w.writerow([f"step-{step}", step, group, kind, sign * 0.1 * step])
    # UIPE α search on the second run
    udir = root / "npo-lr1e-05-bbbb0002" / "uipe"
    udir.mkdir()
    (udir / "alpha_search.json").write_text(json.dumps({
        "base_run": str(root / "npo-lr1e-05-bbbb0002"), "method": "npo", "auto": {"alpha": 0.5},
        "points": [{"alpha": a, "metrics": {"utility": 0.6 - 0.2 * a, "forget_rouge": 0.4 - 0.3 * a}}
                   for a in (0.0, 0.25, 0.5, 1.0)]}))
    # a fine-tuned target with the related suite only, and a failed run without any eval
    t = _write_run(root / "target", "finetune", {"model": "tiny", "data": "synthetic:train,people=8", "lr": 1e-3,
                                                 "run": str(root / "target")})
    _eval(t, "related", {"target/probability": 0.9, "target/rouge_l_recall": 0.75}, {"people": 8})
    (t / "finetune.json").write_text("{}")   # its summary: a finished fine-tune
    f = _write_run(root / "failed-dddd0004", "unlearn", {"method": "rmu", "forget": "tofu:forget05", "lr": 1e-5,
                                                          "run": str(root / "failed-dddd0004")})
    (f / "sweep_error.json").write_text(json.dumps({"error": "RuntimeError: boom", "traceback": "..."}))
    # a Reveal-and-Release run: two trained rounds, then one that stopped the loop
    rv = _write_run(root / "reveal-eeee0005", "reveal", {"target": "entity:Ann Lee", "method": "npo",
                                                         "run": str(root / "reveal-eeee0005")})
    for k, (score, n, trained) in enumerate([(0.6, 12, True), (0.3, 5, True), (0.01, 0, False)]):
        (rv / "rounds" / f"round-{k}").mkdir(parents=True)
        (rv / "rounds" / f"round-{k}" / "round.json").write_text(json.dumps(
            {"round": k, "mean_score": score, "n_forget": n, "trained": trained}))
    (rv / "reveal.json").write_text("{}")    # the loop's summary: it finished
    # things that are not runs: a checkpoint with a config.yaml inside a run, a stray folder
    (root / "ga-lr1e-05-aaaa0001" / "checkpoints" / "step-2").mkdir(parents=True)
    (root / "ga-lr1e-05-aaaa0001" / "checkpoints" / "step-2" / "config.yaml").write_text("kind: nope\n")
    (root / "notes").mkdir()
    return root


@pytest.fixture(scope="module")
def report(run_tree, tmp_path_factory) -> dict:
    """The report of the whole fixture tree, built once (paths by name: csv, parquet, markdown, html, plot:*)."""
    from unlearnkit.report import build_report

    return build_report([run_tree], tmp_path_factory.mktemp("report") / "rep")
