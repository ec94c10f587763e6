"""`unlearnkit evaluate` takes the forget split and prompt format from the run record when not given."""
import json
import logging

from unlearnkit.eval.command import EvaluateConfig, resolve_from_run, run_evaluate
from unlearnkit.runs import RunDir, save_model_atomically


def _run(path, **config):
    RunDir(path).write_config("unlearn", {"model": "m", "method": "ga", "forget": "tofu:forget05",
                                          "template": "plain", "masking": "open-unlearning", **config})
    return path


def test_unset_settings_come_from_the_run(tmp_path):
    cfg = resolve_from_run(EvaluateConfig(run=str(_run(tmp_path))))
    assert (cfg.forget, cfg.template, cfg.masking) == ("forget05", "plain", "open-unlearning")
    assert cfg.max_length == 512   # not inherited: evaluation truncation is the benchmark's, not training's


def test_explicit_settings_win_with_a_warning_naming_both(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="unlearnkit.eval.command"):
        cfg = resolve_from_run(EvaluateConfig(run=str(_run(tmp_path)), forget="forget01", masking="open-unlearning"))
    assert (cfg.forget, cfg.template, cfg.masking) == ("forget01", "plain", "open-unlearning")
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "forget='forget01'" in msgs[0] and "forget='forget05'" in msgs[0]


def test_runs_without_a_record_or_a_tofu_split_fall_back(tmp_path):
    cfg = resolve_from_run(EvaluateConfig(run=str(tmp_path)))   # no config.yaml: a bare model folder
    assert (cfg.forget, cfg.template, cfg.masking) == ("forget01", "auto", "exact")
    synth = _run(tmp_path / "s", forget="synthetic:forget,people=4")
    assert resolve_from_run(EvaluateConfig(run=str(synth))).forget == "forget01"
    muse = resolve_from_run(EvaluateConfig(run=str(_run(tmp_path / "m")), suite="muse"))
    assert muse.forget == "forget01" and muse.template == "plain"   # no TOFU split for another suite


def test_evaluate_uses_the_runs_split_end_to_end(tmp_path, tofu_dir, monkeypatch, tiny_model, tiny_tokenizer):
    monkeypatch.setenv("UNLEARNKIT_TOFU_DIR", str(tofu_dir))
    run = _run(tmp_path, masking="exact")
    save_model_atomically(tiny_model, tiny_tokenizer, run / "model")
    run_evaluate(EvaluateConfig(run=str(run), save_oracle_stats=True, limit=2, retain_limit=2, max_new_tokens=2,
                                batch_size=4))
    settings = json.loads((run / "eval" / "tofu.json").read_text())["settings"]
    assert settings["forget"] == "forget05" and settings["template"] == "plain"
    assert json.loads((run / "eval" / "oracle_stats.json").read_text())["forget"] == "forget05"
