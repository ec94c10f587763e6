"""The open-unlearning comparison's pure parts: the agreement table, the hydra paths it overrides, plug-ins."""
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _load("vs_open_unlearning", REPO / "benchmarks" / "vs_open_unlearning.py")


def test_agreement_rows_and_worst_difference(bench):
    ou = {"forget_truth_ratio": {"agg_value": 0.5, "value_by_index": {"0": {"score": 0.4}, "1": {"score": 0.6}}},
          "model_utility": {"agg_value": 0.2},
          "privleak": {"agg_value": 10.0, "pre_compute": {"mia_min_k": {"agg_value": 0.7}}}}
    uk = {"metrics": {"forget/truth_ratio": {"value": 0.5001, "value_by_index": {"0": 0.4, "1": 0.6003}},
                      "model_utility": {"value": 0.2}, "mia/min_k": {"value": 0.7}, "privleak": {"value": float("nan")}}}
    rows = {r["aggregate"]: r for r in bench.agreement(ou, uk)}
    assert rows["forget_truth_ratio"]["diff"] == pytest.approx(1e-4)
    assert rows["forget_truth_ratio"]["rows"] == (pytest.approx(3e-4), 2)
    assert rows["mia_min_k"]["diff"] == 0.0  # found inside privleak's pre_compute
    assert rows["forget_Q_A_Prob"]["diff"] is None  # on neither side
    assert bench.worst_diff(list(rows.values())) == pytest.approx(1e-4)  # the NaN privleak is skipped


def test_ou_paths_finds_every_dataset_and_generation_node(bench, monkeypatch, tmp_path):
    job = ("[2026-11-29] [WARNING] deepspeed noise\n"
           "eval:\n  tofu:\n    metrics:\n      forget_Q_A_ROUGE:\n        datasets:\n          TOFU_QA_forget:\n"
           "            hf_args:\n              name: forget01_perturbed\n              split: train\n"
           "        generation_args:\n          max_new_tokens: 200\n")
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: type("R", (), {"stdout": job})())
    datasets, gens = bench.ou_paths(tmp_path, "forget01")
    assert datasets == ["eval.tofu.metrics.forget_Q_A_ROUGE.datasets.TOFU_QA_forget"]
    assert gens == ["eval.tofu.metrics.forget_Q_A_ROUGE.generation_args"]


def test_plugins_are_picked_up_and_broken_ones_skipped(bench, tmp_path, capsys):
    (tmp_path / "vs_open_unlearning_demo.py").write_text("def add_arguments(p): pass\ndef run(args): return 0\n")
    (tmp_path / "vs_open_unlearning_broken.py").write_text("raise RuntimeError('no')\n")
    found = bench._plugins(tmp_path)
    assert list(found) == ["demo"]
    assert "skipping vs_open_unlearning_broken.py" in capsys.readouterr().err
