"""The typed run record (`runs.read_run_record`): one reader for every consumer of a run's config.yaml."""
import json

import pytest
import yaml

from unlearnkit.runs import RunDir, read_run_record


def _unlearn_run(path, config=None, inputs=None, summary=None):
    cfg = {"model": "rel/model", "method": "npo", "params": {"beta": 0.2}, "forget": "tofu:forget05",
           "retain": "tofu:retain95", "template": "plain", "masking": "open-unlearning", "max_length": 128,
           "precision": "auto", **(config or {})}
    RunDir(path).write_config("unlearn", cfg, seed=3, extra={"inputs": {
        "theta_ini": "/abs/model", "method": "npo", "objective": {"beta": 0.2, "retain": "nll"}, "retain": "",
        "precision": "fp32", "preset": {"file": "npo.yaml"}, **(inputs or {})}})
    if summary is not None:
        (path / "unlearn.json").write_text(json.dumps(summary))
    return path


def test_unlearn_record_is_typed(tmp_path):
    rec = read_run_record(_unlearn_run(tmp_path, summary={"steps": 7}))
    assert rec.kind == "unlearn" and rec.seed == 3
    assert rec.theta_ini == "/abs/model"  # the trainer's resolved path wins over config.model
    assert rec.method == "npo" and dict(rec.params) == {"beta": 0.2} and rec.objective["retain"] == "nll"
    assert rec.forget == "tofu:forget05" and rec.forget_split == "forget05"
    assert rec.retain == "tofu:retain95" and rec.trained_retain == ""   # the method read no retain rows
    assert rec.precision == "fp32" and rec.preset == {"file": "npo.yaml"}
    fmt = rec.prompt_format()
    assert (fmt.template, fmt.masking, fmt.max_length) == ("plain", "open-unlearning", 128)
    assert rec.summary == {"steps": 7}
    with pytest.raises(Exception):
        rec.method = "ga"   # frozen


def test_record_fallbacks_and_missing_keys(tmp_path):
    RunDir(tmp_path).write_config("finetune", {"model": "tiny", "data": "synthetic:train"})
    rec = read_run_record(tmp_path)
    assert rec.kind == "finetune" and rec.theta_ini == "tiny" and rec.method is None
    assert rec.forget is None and rec.forget_split is None and rec.trained_retain == ""
    assert rec.prompt_settings == {} and rec.prompt_format(max_length=256).max_length == 256
    assert rec.summary == {}
    _unlearn_run(tmp_path / "u", config={"forget": "synthetic:forget,people=4"}, inputs={"retain": "x.jsonl"})
    u = read_run_record(tmp_path / "u")
    assert u.forget_split is None and u.trained_retain == "x.jsonl"


def test_missing_and_malformed_records(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        read_run_record(tmp_path)
    assert read_run_record(tmp_path, missing_ok=True).kind is None
    (tmp_path / "config.yaml").write_text("- a\n- list\n")
    with pytest.raises(ValueError, match="config.yaml: expected a mapping"):
        read_run_record(tmp_path)
    (tmp_path / "config.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(ValueError, match="config.yaml: not valid YAML"):
        read_run_record(tmp_path)


def test_layout_names_match_what_the_run_dir_writes(tmp_path):
    from unlearnkit import runs

    rd = RunDir(tmp_path)
    rd.write_config("x", {})
    rd.log({"step": 1})
    assert (tmp_path / runs.CONFIG_FILE).is_file() and (tmp_path / runs.LOG_FILE).is_file()
    assert rd.checkpoints.name == runs.CHECKPOINTS_DIR and rd.eval_dir.name == runs.EVAL_DIR
    assert yaml.safe_load((tmp_path / runs.CONFIG_FILE).read_text())["kind"] == "x"
