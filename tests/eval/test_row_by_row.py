"""Row-by-row results and oracle interoperability: `value_by_index` in eval/<suite>.json (forget quality and the
AUCs recomputable from it), oracle statistics that record and check their settings, open-unlearning's
TOFU_EVAL.json as an oracle."""
import json

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from unlearnkit.data import PromptFormat, QARecord
from unlearnkit.eval import OracleStats, evaluate_run, run_tofu

FMT = PromptFormat(template="plain", max_length=128)
QUICK = dict(sets=("forget",), max_new_tokens=2, batch_size=16)


@pytest.fixture()
def records(people):
    recs = [r for r in people.records(kinds=("target",)) if r.perturbed_answers]
    return {"forget": recs[:5], "holdout": recs[5:9]}


def test_eval_json_keeps_every_row_and_forget_quality_recomputes(tmp_path, tiny_model, tiny_tokenizer, records):
    import torch

    oracle_dir, run_dir = tmp_path / "oracle", tmp_path / "run"
    oracle_dir.mkdir(), run_dir.mkdir()
    evaluate_run(oracle_dir, model=tiny_model, tokenizer=tiny_tokenizer, fmt=FMT, save_oracle_stats=True,
                 records=records, **QUICK)
    with torch.no_grad():  # another model: perturb the weights
        for p in tiny_model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    evaluate_run(run_dir, model=tiny_model, tokenizer=tiny_tokenizer, fmt=FMT, oracle_stats=oracle_dir,
                 records=records, **QUICK)
    oracle = json.loads((oracle_dir / "eval" / "oracle_stats.json").read_text())
    assert oracle["index"] == [0, 1, 2, 3, 4]
    assert oracle["settings"] == {"masking": "exact", "template": "plain", "max_length": 128, "precision": "fp32"}
    m = json.loads((run_dir / "eval" / "tofu.json").read_text())["metrics"]
    rows = [str(i) for i in range(5)]
    for name in ("forget/probability", "forget/rouge_l_recall", "forget/truth_ratio", "forget/exact_memorization",
                 "forget/extraction_strength", "mia/min_k", "mia/loss"):
        assert list(m[name]["value_by_index"]) == rows, name
    ratios = np.array([m["forget/truth_ratio"]["value_by_index"][i] for i in rows])
    assert m["forget/truth_ratio"]["value"] == pytest.approx(np.minimum(ratios, 1 / ratios).mean())
    assert m["forget_quality"]["value"] == pytest.approx(ks_2samp(ratios, oracle["truth_ratios"]).pvalue)
    members = list(m["mia/min_k"]["value_by_index"].values())
    others = list(m["mia/min_k"]["holdout_value_by_index"].values())
    auc = roc_auc_score([1] * len(members) + [0] * len(others), members + others)
    assert m["mia/min_k"]["value"] == pytest.approx(auc)


def test_rows_without_perturbed_answers_keep_their_indices(tiny_model, tiny_tokenizer, records):
    forget = list(records["forget"][:3])
    forget[1] = QARecord(forget[1].question, forget[1].answer)  # no perturbed answers
    with pytest.warns(UserWarning, match="1 of 3 records have no perturbed"):
        res = run_tofu(tiny_model, tiny_tokenizer, fmt=FMT, records={"forget": forget}, forget_quality=False,
                       mia_attacks=False, **QUICK)
    assert list(res.metrics["forget/truth_ratio"].value_by_index()) == ["0", "2"]
    assert list(res.metrics["forget/probability"].value_by_index()) == ["0", "1", "2"]


def _settings(**over):
    return {"masking": "exact", "template": "plain", "max_length": 128, "precision": "fp32", **over}


@pytest.mark.parametrize("key,value", [("masking", "open-unlearning"), ("template", "chat"), ("max_length", 512),
                                       ("precision", "bf16")])
def test_oracle_made_with_other_settings_is_refused(tiny_model, tiny_tokenizer, records, key, value):
    stats = OracleStats("forget01", "geometric", [1.0, 0.5], settings=_settings(**{key: value}))
    with pytest.raises(ValueError, match=f"oracle stats were made with {key}={value!r}"):
        run_tofu(tiny_model, tiny_tokenizer, oracle_stats=stats, fmt=FMT, records=records, **QUICK)


def test_oracle_without_recorded_settings_warns(tiny_model, tiny_tokenizer, records):
    stats = OracleStats("forget01", "geometric", [1.0, 0.5, 2.0])
    with pytest.warns(UserWarning, match="do not record"):
        res = run_tofu(tiny_model, tiny_tokenizer, oracle_stats=stats, fmt=FMT, records=records, mia_attacks=False,
                       **QUICK)
    assert "forget_quality" in res.metrics


def _open_unlearning_eval(path, n=40, dtype="float32"):
    """A TOFU_EVAL.json shaped as open-unlearning writes it (rows out of order, scores under "score")."""
    rng = np.random.default_rng(0)
    ratios = {str(i): {"score": float(r)} for i, r in zip(rng.permutation(n), rng.uniform(0.2, 2.0, n))}
    data = {"forget_truth_ratio": {"agg_value": 0.5, "value_by_index": ratios},
            "forget_quality": {"agg_value": None}, "mia_min_k": {"agg_value": 0.625}}
    path.write_text(json.dumps(data))
    if dtype:
        (path.parent / "ref_eval_meta.json").write_text(json.dumps({"forget_split": "forget01", "dtype": dtype}))
    return {int(i): v["score"] for i, v in ratios.items()}


def test_open_unlearning_tofu_eval_is_an_oracle(tmp_path, tiny_model, tiny_tokenizer, records):
    ratios = _open_unlearning_eval(tmp_path / "TOFU_EVAL.json")
    stats = OracleStats.load(tmp_path / "TOFU_EVAL.json")
    assert stats.forget == "forget01" and stats.truth_ratio_mean == "geometric" and stats.mia_min_k_auc == 0.625
    assert stats.index == list(range(40)) and stats.truth_ratios == [ratios[i] for i in range(40)]
    assert stats.settings == {"masking": "open-unlearning", "template": "plain", "max_length": 512, "precision": "fp32"}
    with pytest.raises(ValueError, match="masking='open-unlearning'"):
        run_tofu(tiny_model, tiny_tokenizer, oracle_stats=tmp_path, fmt=FMT, records=records, **QUICK)
    ou = PromptFormat(template="plain", masking="open-unlearning", max_length=512)
    res = run_tofu(tiny_model, tiny_tokenizer, oracle_stats=tmp_path / "TOFU_EVAL.json", fmt=ou, records=records,
                   **QUICK)
    mine = res.metrics["forget/truth_ratio"].per_item
    assert res.metrics["forget_quality"].value == pytest.approx(ks_2samp(mine, stats.truth_ratios).pvalue)
    assert res.metrics["privleak"].extra["auc_oracle"] == 0.625


def test_open_unlearning_split_from_row_count_and_bad_file(tmp_path):
    _open_unlearning_eval(tmp_path / "TOFU_EVAL.json", n=200, dtype=None)
    stats = OracleStats.load(tmp_path / "TOFU_EVAL.json")
    assert stats.forget == "forget05" and stats.settings["precision"] is None
    (tmp_path / "bad.json").write_text(json.dumps({"forget_truth_ratio": {"value_by_index": {"0": 1.0}}}))
    with pytest.raises(ValueError, match="forget_truth_ratio.value_by_index"):
        OracleStats.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"forget": "forget01"}))
    with pytest.raises(ValueError, match="missing key"):
        OracleStats.load(tmp_path / "other.json")
