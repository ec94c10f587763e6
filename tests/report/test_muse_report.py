"""The report's MUSE leaderboard: the paper's columns (VerbMem, KnowMem forget/retain, PrivLeak) per run."""
from __future__ import annotations

import json

import yaml

from unlearnkit.report import collect_runs, markdown
from unlearnkit.report.tables import MISSING, MUSE_COLUMNS


def _muse_run(root, name, method, metrics):
    run = root / name
    (run / "eval").mkdir(parents=True)
    cfg = {"model": "runs/muse/target/model", "forget": "muse:news/raw/forget", "method": method, "run": str(run)}
    (run / "config.yaml").write_text(yaml.safe_dump({"kind": "unlearn", "config": cfg, "seed": 0}))
    body = {"suite": "muse", "settings": {"corpus": "news"},
            "metrics": {k: {"value": v, "definition": k, "n": 100} for k, v in metrics.items()}}
    (run / "eval" / "muse.json").write_text(json.dumps(body))
    (run / "eval" / "muse_oracle_stats.json").write_text(json.dumps({"corpus": "news", "mia_min_k_auc": 0.5}))


def test_muse_leaderboard_columns_and_values(tmp_path):
    _muse_run(tmp_path, "npo", "npo", {"verbmem_forget/rouge_l_f1": 0.125, "knowmem_forget/rouge_l_f1": 0.25,
                                       "knowmem_retain/rouge_l_f1": 0.5, "privleak": -12.5})
    _muse_run(tmp_path, "grad_diff", "grad_diff", {"verbmem_forget/rouge_l_f1": 0.375})
    records = collect_runs([tmp_path])
    assert all(set(r.metrics) == {"muse"} for r in records)  # the oracle-stats file is not a suite
    md = markdown(records)
    block = md.split("### Leaderboard (MUSE metrics)", 1)[1].split("###", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in block.splitlines() if line.startswith("|")]
    header, body = rows[0], rows[2:]
    assert header[4:] == [h for h, _, _ in MUSE_COLUMNS]
    col = {h: i for i, h in enumerate(header)}
    by = {r[col["Run"]]: r for r in body}
    assert by["npo"][col["VerbMem ↓"]] == "0.125" and by["npo"][col["KnowMem retain ↑"]] == "0.500"
    assert by["npo"][col["PrivLeak (→0)"]] == "-12.500" and by["npo"][col["Split"]] == "muse:news/raw/forget"
    assert by["grad_diff"][col["VerbMem ↓"]] == "0.375" and by["grad_diff"][col["KnowMem forget ↓"]] == MISSING
    assert "Leaderboard (TOFU metrics)" not in md
