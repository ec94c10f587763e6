"""The CLI in-process (importing torch/transformers per subprocess costs ~5 s)."""
from typer.testing import CliRunner

from unlearnkit.cli import app

runner = CliRunner()


def test_help_lists_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("finetune", "info", "demo"):
        assert cmd in res.output


def test_info_on_data():
    res = runner.invoke(app, ["info", "data=synthetic:forget,people=20"])
    assert res.exit_code == 0, res.output
    assert "records: 6" in res.output


def test_unknown_key_is_named():
    res = runner.invoke(app, ["finetune", "epochz=3"])
    assert res.exit_code == 2
    assert "epochz" in res.output


def test_bad_data_spec_is_reported(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    res = runner.invoke(app, ["finetune", "model=tiny", f"data={bad}", f"run={tmp_path / 'r'}"])
    assert res.exit_code == 2
    assert "bad.jsonl:1: missing field 'answer'" in res.output


def test_quick_demo_runs(tmp_path):
    res = runner.invoke(app, ["demo", "--quick", f"out={tmp_path}", "people=8", "methods=[ga,npo]",
                              "unlearn_steps=4", "max_new_tokens=12"])
    assert res.exit_code == 0, res.output
    assert "recall of the answers: before" in res.output and "| unlearn-npo |" in res.output and "| uipe-ga (α=" in res.output
    assert (tmp_path / "target" / "model" / "model.safetensors").is_file()
    for run in ("target", "oracle", "unlearn-ga", "uipe-ga", "unlearn-npo", "uipe-npo"):
        assert (tmp_path / run / "eval" / "tofu.json").is_file(), run
        assert (tmp_path / run / "eval" / "related.json").is_file(), run
        assert (tmp_path / run / "eval" / "recall.json").is_file(), run
    assert (tmp_path / "report" / "report.html").is_file()
    assert "Fine-tuning taught the target" in res.output and "The best base method" in res.output
    assert "[8/8] writing the report" in res.output and res.output.count(" s)\n") >= 8  # every phase says its time


def test_evaluate_oracle_then_forget_quality(tmp_path, tofu_dir, monkeypatch):
    """evaluate writes eval/tofu.json with definitions and counts; the oracle's stats feed forget quality."""
    import json

    from unlearnkit.train.finetune import FinetuneConfig, finetune

    monkeypatch.setenv("UNLEARNKIT_TOFU_DIR", str(tofu_dir))
    finetune(FinetuneConfig(model="tiny", data="synthetic:train,people=4", run=str(tmp_path / "m"), max_steps=3,
                            tiny_hidden=32, tiny_layers=1, tiny_vocab=400, precision="fp32", recall_max=-1))
    common = ["suite=tofu", "limit=6", "max_new_tokens=4", "template=plain"]
    res = runner.invoke(app, ["evaluate", f"run={tmp_path / 'm'}", "save_oracle_stats=true", *common])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m" / "eval" / "oracle_stats.json").is_file()
    missing = runner.invoke(app, ["evaluate", f"run={tmp_path / 'm'}", *common])
    assert missing.exit_code == 2 and "oracle" in missing.output
    res = runner.invoke(app, ["evaluate", f"run={tmp_path / 'm'}", f"oracle={tmp_path / 'm'}", *common])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "m" / "eval" / "tofu.json").read_text())
    fq = out["metrics"]["forget_quality"]
    assert fq["value"] == 1.0 and fq["n"] == 6 and fq["definition"]  # same model as its own oracle: identical samples
    for name, m in out["metrics"].items():
        assert m["definition"] and "n" in m, name
    assert "model_utility" in out["metrics"] and "forget_quality" in res.output


def test_unlearn_method_alone_trains_its_preset_and_records_it(tmp_path):
    """`unlearn method=npo` (no -c) trains NPO with the preset's retain NLL term; config.yaml records the preset,
    the resolved hyper-parameters and the keys set differently from it."""
    import json

    import yaml

    from unlearnkit.train.finetune import FinetuneConfig, finetune

    data = "synthetic:train,people=4"
    finetune(FinetuneConfig(model="tiny", data=data, run=str(tmp_path / "m"), max_steps=1, tiny_hidden=32,
                            tiny_layers=1, tiny_vocab=400, precision="fp32", recall_max=-1))
    run = tmp_path / "npo"
    res = runner.invoke(app, ["unlearn", "method=npo", f"model={tmp_path / 'm' / 'model'}", f"run={run}",
                              "forget=synthetic:forget,people=4", "retain=synthetic:retain,people=4",
                              "max_steps=1", "forget_batch_size=2", "grad_accum=1", "precision=fp32"])
    assert res.exit_code == 0, res.output
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["config"]["preset"] == "npo"
    assert record["config"]["params"] == {"beta": 0.1, "retain": "nll", "retain_weight": 1.0}
    assert record["config"]["warmup"] == 0.1 and record["config"]["retain_batch_size"] == 8
    assert record["inputs"]["objective"]["retain"] == "nll" and record["inputs"]["n_retain"] > 0
    preset = record["inputs"]["preset"]
    assert preset["file"] == "unlearnkit/presets/methods/npo.yaml"
    assert preset["overridden"]["grad_accum"] == {"preset": 4, "used": 1}
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("retain_loss" in row for row in logged)


# -- issue 21.9: bad input files are named errors (exit 2), not tracebacks ------------------------------------
def _exit2_naming(args, *needles):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "error:" in res.output and "Traceback" not in res.output
    for n in needles:
        assert n in res.output, (n, res.output)
    return res


def test_invalid_yaml_in_a_config_file_names_file_and_line(tmp_path):
    bad = tmp_path / "npo.yaml"
    bad.write_text("lr: 1e-5\nparams:\n  beta: [0.1\nrun: x\n")
    _exit2_naming(["unlearn", "-c", str(bad)], f"{bad}:4", "invalid YAML")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"lr: 1e-5\nrun: caf\xe9\n")
    _exit2_naming(["finetune", "-c", str(latin)], f"{latin}:2", "not UTF-8")


def test_invalid_yaml_in_a_sweep_file_names_file_and_line(tmp_path):
    bad = tmp_path / "sweep.yaml"
    bad.write_text("command: unlearn\ngrid:\n  lr: [1e-5, 1e-4\n")
    _exit2_naming(["sweep", str(bad), "--dry-run"], f"{bad}:", "invalid YAML")


def test_non_utf8_data_file_names_file_and_line(tmp_path):
    data = tmp_path / "forget.jsonl"
    data.write_bytes(b'{"question": "q", "answer": "a"}\n{"question": "caf\xe9?", "answer": "a"}\n')
    _exit2_naming(["finetune", "model=tiny", f"data={data}", f"run={tmp_path / 'r'}"], f"{data}:2", "not UTF-8")


def test_truncated_safetensors_names_the_file(tmp_path, tiny_tokenizer):
    from unlearnkit.models import tiny_llama
    from unlearnkit.runs import save_model_atomically

    model = tiny_llama(len(tiny_tokenizer), hidden=32, layers=1, heads=2, intermediate=64)
    out = save_model_atomically(model, tiny_tokenizer, tmp_path / "model")
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])   # an interrupted copy
    _exit2_naming(["info", f"model={out}"], str(weights), "truncated or corrupt safetensors")
    weights.write_bytes(b"\x00garbage" * 4)
    _exit2_naming(["info", f"model={out}"], str(weights), "truncated or corrupt safetensors")


def test_truncated_gguf_names_the_file(tmp_path):
    import struct

    gguf = tmp_path / "model.gguf"   # header says 5 tensors and 3 metadata keys, then the file ends
    gguf.write_bytes(b"GGUF" + struct.pack("<IQQQ", 3, 5, 3, 20) + b"general.arch")
    _exit2_naming(["info", f"model={gguf}"], str(gguf), "could not read this GGUF file")


# -- issue 16 point 4: --help lists the settings; no bare arguments dropped silently ---------------------------
import dataclasses  # noqa: E402

import pytest  # noqa: E402


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command, target", [
    ("unlearn", "unlearnkit.train.unlearn:UnlearnConfig"),
    ("evaluate", "unlearnkit.eval.command:EvaluateConfig"),
    ("sweep", "unlearnkit.sweep:SweepConfig"),
])
def test_help_lists_every_setting_with_its_help(command, target):
    import importlib

    module, name = target.split(":")
    cls = getattr(importlib.import_module(module), name)
    res = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    out = _flat(res.output)
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help")
        assert help_text, f"{name}.{f.name} has no help metadata"
        assert f"{f.name} = " in out, f"{f.name} missing from `{command} --help`"
        assert _flat(help_text) in out, f"help of {f.name} missing from `{command} --help`"


def test_settings_help_flattens_nested_dataclasses_and_shows_defaults():
    from unlearnkit.cli import settings_help

    @dataclasses.dataclass
    class Inner:
        beta: float = dataclasses.field(default=0.1, metadata={"help": "inverse temperature"})

    @dataclasses.dataclass
    class Outer:
        name: str = dataclasses.field(default="", metadata={"help": "a name"})
        params: Inner = dataclasses.field(default_factory=Inner, metadata={"help": "nested"})

    lines = [line.strip() for line in settings_help(Outer)]
    assert lines == ['name = ""  a name', "params.beta = 0.1  inverse temperature"]


def test_settings_help_lists_a_commands_own_settings_before_its_base_class():
    from unlearnkit.cli import settings_help

    @dataclasses.dataclass
    class Base:
        lr: float = dataclasses.field(default=1e-5, metadata={"help": "learning rate"})

    @dataclasses.dataclass
    class Command(Base):
        model: str = dataclasses.field(default="default", metadata={"help": "the model"})

    names = [line.split()[0] for line in settings_help(Command)]
    assert names == ["model", "lr"]


@pytest.mark.parametrize("args, named", [
    (["info", "data=synthetic:forget,people=20", "oops"], "oops"),
    (["geffect-compare", "runs=a,b", "stray"], "stray"),
])
def test_bare_argument_is_rejected_and_named(args, named):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert named in res.output and "key=value" in res.output


def test_unknown_key_of_hand_parsed_commands_is_named():
    res = runner.invoke(app, ["info", "modle=tiny"])
    assert res.exit_code == 2 and "modle" in res.output


def test_report_rejects_a_bare_argument_that_is_no_directory(tmp_path):
    res = runner.invoke(app, ["report", str(tmp_path), "ttle=x"])
    assert res.exit_code == 2 and "ttle" in res.output
    res = runner.invoke(app, ["report", str(tmp_path), "no-such-run", f"out={tmp_path / 'r'}"])
    assert res.exit_code == 2, res.output
    assert "'no-such-run'" in res.output and "key=value" in res.output
