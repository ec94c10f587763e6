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
    res = runner.invoke(app, ["demo", "--quick", f"out={tmp_path}", "people=8"])
    assert res.exit_code == 0, res.output
    assert "recall after" in res.output
    assert (tmp_path / "target" / "model" / "model.safetensors").is_file()
