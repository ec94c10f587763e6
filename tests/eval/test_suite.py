"""The TOFU and related-knowledge suites on the tiny model and a small TOFU slice; errors and warnings."""
import json

import pytest

from unlearnkit.data import PromptFormat, QARecord
from unlearnkit.eval import OracleStatsMissing, evaluate_run, format_summary, run_related, run_tofu
from unlearnkit.eval.metric_registry import METRICS
from unlearnkit.eval.tofu import load_tofu_sets

METRICS_OF = lambda suite: [m for _, m in METRICS.items() if m.suite == suite]
FMT = PromptFormat(template="plain", max_length=384)
FAST = dict(limit=3, max_new_tokens=4, batch_size=16)
TOFU_KEYS = {f"{s}/{m}" for s in ("forget", "retain", "real_authors", "world_facts")
             for m in ("probability", "rouge_l_recall", "truth_ratio")} | {
    "forget/exact_memorization", "forget/extraction_strength", "forget_quality", "model_utility",
    "mia/loss", "mia/zlib", "mia/min_k", "mia/min_k_plus_plus", "privleak"}


def test_oracle_stats_then_full_suite(tmp_path, tiny_model, tiny_tokenizer, tofu_dir):
    oracle_dir, run_dir = tmp_path / "oracle", tmp_path / "run"
    oracle_dir.mkdir(), run_dir.mkdir()
    with pytest.warns(UserWarning, match="privleak"):
        evaluate_run(oracle_dir, "tofu", "forget01", model=tiny_model, tokenizer=tiny_tokenizer, fmt=FMT,
                     save_oracle_stats=True, source=tofu_dir, **FAST)
    stats = json.loads((oracle_dir / "eval" / "oracle_stats.json").read_text())
    assert stats["forget"] == "forget01" and len(stats["truth_ratios"]) == 3 and stats["mia_min_k_auc"] is not None

    metrics = evaluate_run(run_dir, "tofu", "forget01", model=tiny_model, tokenizer=tiny_tokenizer, fmt=FMT,
                           oracle_stats=oracle_dir, source=tofu_dir, **FAST)
    written = json.loads((run_dir / "eval" / "tofu.json").read_text())
    assert written["metrics"] == metrics and written["suite"] == "tofu"
    assert set(metrics) == TOFU_KEYS
    assert {m.key for m in METRICS_OF("tofu")} <= set(metrics)   # the registry names what the suite writes
    for name, m in metrics.items():
        assert m["definition"] and m["n"] >= 1 and set(m) >= {"value", "definition", "n"}, name
    assert metrics["forget/probability"]["n"] == 3 and metrics["model_utility"]["n"] == 9
    assert metrics["forget_quality"]["value"] == pytest.approx(1.0)  # same model as its own oracle
    assert metrics["privleak"]["value"] == pytest.approx(0.0)
    table = format_summary(metrics)
    assert "forget_quality" in table and "model_utility" in table


def test_forget_quality_without_oracle_says_how(tiny_model, tiny_tokenizer):
    with pytest.raises(OracleStatsMissing, match="save_oracle_stats=true"):
        run_tofu(tiny_model, tiny_tokenizer, "forget01", None, FMT, records={})


def test_oracle_stats_must_match_variant(tmp_path, tiny_model, tiny_tokenizer):
    from unlearnkit.eval import OracleStats

    stats = OracleStats("forget01", "arithmetic", [1.0, 2.0])
    with pytest.raises(ValueError, match="same variant"):
        run_tofu(tiny_model, tiny_tokenizer, "forget01", stats, FMT, records={})
    with pytest.raises(ValueError, match="forget05"):
        run_tofu(tiny_model, tiny_tokenizer, "forget05", OracleStats("forget01", "geometric", [1.0]), FMT, records={})


def test_set_without_perturbed_answers_warns_and_skips(tiny_model, tiny_tokenizer):
    recs = {"retain": [QARecord("Who wrote it?", "Alia wrote it."), QARecord("Where?", "In Rome.")]}
    with pytest.warns(UserWarning, match="'retain'.*truth ratio is skipped"):
        res = run_tofu(tiny_model, tiny_tokenizer, records=recs, sets=("retain",), fmt=FMT, forget_quality=False,
                       mia_attacks=False, max_new_tokens=3)
    assert "retain/truth_ratio" not in res.metrics and "retain/probability" in res.metrics


def test_tofu_config_passes_whole(tiny_model, tiny_tokenizer):
    """A `TofuConfig` passed whole gives what the same settings as keywords give; keywords override it; an
    unknown setting or a bad truth-ratio mean is refused before anything is scored."""
    from unlearnkit.eval.tofu import TofuConfig

    recs = {"retain": [QARecord("Who wrote it?", "Alia wrote it."), QARecord("Where?", "In Rome.")]}
    quiet = dict(sets=("retain",), forget_quality=False, mia_attacks=False)
    with pytest.warns(UserWarning):
        whole = run_tofu(tiny_model, tiny_tokenizer, records=recs,
                         config=TofuConfig(fmt=FMT, max_new_tokens=3, batch_size=1, **quiet))
        loose = run_tofu(tiny_model, tiny_tokenizer, fmt=FMT, records=recs, max_new_tokens=3, batch_size=1, **quiet)
        over = run_tofu(tiny_model, tiny_tokenizer, "forget05", records=recs,
                        config=TofuConfig(fmt=FMT, max_new_tokens=3, **quiet), max_new_tokens=2)
    assert whole.to_json() == loose.to_json() and whole.settings == loose.settings
    assert over.settings["max_new_tokens"] == 2 and over.settings["forget"] == "forget05"
    with pytest.raises(TypeError, match="unknown setting.*'max_new_tokenz'"):
        run_tofu(tiny_model, tiny_tokenizer, records=recs, max_new_tokenz=3)
    with pytest.raises(ValueError, match="truth_ratio_mean='median'"):
        TofuConfig(truth_ratio_mean="median")


def test_retain_limit_and_holdout(tofu_dir):
    sets = load_tofu_sets("forget01", retain_limit=400, source=tofu_dir)
    assert len(sets["retain"]) == 400 and len(sets["forget"]) == 40 and len(sets["holdout"]) == 40
    assert len(sets["real_authors"]) == 100 and len(sets["world_facts"]) == 117


def test_related_probe_reports_kinds_separately(tiny_model, tiny_tokenizer, people):
    res = run_related(tiny_model, tiny_tokenizer, people, [18, 19], FMT, max_new_tokens=3)
    for kind in ("target", "related", "multihop", "unrelated"):
        for m in ("probability", "rouge_l_recall", "truth_ratio"):
            assert f"{kind}/{m}" in res
    assert res["target/probability"].n == 6  # 3 linked categories x 2 people


def test_precision_is_applied_and_recorded(tmp_path, tiny_model, tiny_tokenizer):
    """bf16 autocast scores within bf16 rounding of fp32 and says so in the settings; a bad name fails early."""
    fp32 = evaluate_run(tmp_path, "related", model=tiny_model, tokenizer=tiny_tokenizer, fmt=FMT, related_people=6,
                        max_new_tokens=3)
    assert json.loads((tmp_path / "eval" / "related.json").read_text())["settings"]["precision"] == "fp32"
    bf16 = evaluate_run(tmp_path, "related", model=tiny_model, tokenizer=tiny_tokenizer, fmt=FMT, related_people=6,
                        max_new_tokens=3, precision="bf16")
    assert json.loads((tmp_path / "eval" / "related.json").read_text())["settings"]["precision"] == "bf16"
    assert {m.key for m in METRICS_OF("related")} <= set(fp32)   # the registry names what the suite writes
    p32, p16 = fp32["target/probability"]["value"], bf16["target/probability"]["value"]
    assert p16 == pytest.approx(p32, rel=0.05) and p16 != p32   # close, but really computed in bf16
    with pytest.raises(ValueError, match="precision"):
        evaluate_run(tmp_path, "related", model=tiny_model, tokenizer=tiny_tokenizer, precision="fp8")


def test_an_evaluation_only_folder_records_its_model_and_is_reported(tmp_path, tiny_model, tiny_tokenizer):
    """`evaluate model=<spec> run=<new folder>` (a baseline no command made) creates the folder, records the model
    last (kind `evaluate`), is listed by `report` as finished, and a later `evaluate run=<it>` finds the model."""
    from unlearnkit.report.collect import read_run

    spec = tmp_path / "baseline_model"
    tiny_model.save_pretrained(spec)
    tiny_tokenizer.save_pretrained(spec)
    run = tmp_path / "baseline"
    kw = dict(fmt=FMT, related_people=6, max_new_tokens=3)
    with pytest.raises(FileNotFoundError, match="does not exist"):      # no model given: the folder must exist
        evaluate_run(run, "related", **kw)
    first = evaluate_run(run, "related", model=str(spec), **kw)
    record = read_run(run)
    assert (record.kind, record.config, record.status, record.method) == ("evaluate", {"model": str(spec)},
                                                                         "finished", "evaluate")
    assert record.metrics["related"]
    (run / "eval" / "related.json").unlink()
    again = evaluate_run(run, "related", **kw)                          # the recorded model, loaded again
    assert again == first
    assert json.loads((run / "eval" / "related.json").read_text())["model"] == str(spec)
