"""Which model a run directory stands for: final model, else newest complete checkpoint, else the dir."""
import pytest

from unlearnkit.eval.suite import resolve_model_dir


def _model(d):
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    return d


def test_resolve_model_dir_order(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        resolve_model_dir(run.parent / "empty")
    _model(run / "checkpoints" / "step-2")
    newest = _model(run / "checkpoints" / "step-10")            # numeric, not lexical, order
    _model(run / "checkpoints" / ".staging" / "checkpoint-12")  # an interrupted save is not a checkpoint
    assert resolve_model_dir(run) == newest
    final = _model(run / "model")
    assert resolve_model_dir(run) == final
    plain = _model(tmp_path / "plain")
    assert resolve_model_dir(plain) == plain
