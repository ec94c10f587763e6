"""configs/experiments/wmdp_rmu.yaml: a valid sweep (RMU on WMDP corpora, harness evaluation), clear offline failure."""
from __future__ import annotations

from pathlib import Path

import pytest

from unlearnkit.data import wmdp
from unlearnkit.data.records import DataError
from unlearnkit.data.specs import load_records
from unlearnkit.sweep import load_sweep, plan

PRESET = Path(__file__).resolve().parents[2] / "configs" / "experiments" / "wmdp_rmu.yaml"


def test_preset_plans_reference_and_all_parameter_runs(tmp_path):
    spec = load_sweep(PRESET)
    runs = plan(spec, tmp_path)
    assert [r.settings["trainable"] for r in runs] == [["model.layers.[567].mlp.down_proj.weight"], []]
    assert [r.name for r in runs] == ["rmu-down-proj", "rmu-all-params"]
    assert [r.dir.name for r in runs] == [f"{r.name}-{r.hash}" for r in runs]
    assert all(r.settings["method"] == "rmu" and r.settings["params"]["layer"] == 7 for r in runs)
    assert spec.evaluate["suite"] == "lm_eval" and spec.evaluate["tasks"] == "wmdp_bio,wmdp_cyber,mmlu"


def test_preset_data_offline_says_gated_and_how_to_go_local(monkeypatch):
    monkeypatch.setattr(wmdp, "_hub_rows", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    monkeypatch.delenv(wmdp.ENV_VAR, raising=False)
    with pytest.raises(DataError, match=r"wmdp:bio-forget.*gated.*source=<folder>"):
        load_records(load_sweep(PRESET).base["forget"])


def test_sweeps_evaluate_with_the_harness_suite(tmp_path):
    from unlearnkit.config import ConfigError
    from unlearnkit.sweep import check_evaluate, emit_commands

    lines = emit_commands(load_sweep(PRESET, [f"out={tmp_path}"]))
    assert len(lines) == 2 and all("evaluate" in l and "suite=lm_eval" in l and "tasks=wmdp_bio,wmdp_cyber,mmlu" in l
                                   for l in lines)
    with pytest.raises(ConfigError, match="needs tasks="):
        check_evaluate({"suite": "lm_eval"})
