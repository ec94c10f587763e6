"""Fault injection (issue 21): runs that never lie.

NaN gradients behind a finite loss, non-finite weights, a second command on a locked run, a rerun with other
settings, a crash after a step was logged, a kill during the final save, failed commands. Each test injects the
fault through a hook (a patched Trainer method or callback) or a helper process, and checks what the run
directory holds afterwards. Fast (tiny θ_ini, a few steps); the real two-process race is marked slow.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from unlearnkit.runs import RunDir, RunLockedError
from unlearnkit.runs import list_checkpoints
from unlearnkit.train.hf_glue import DivergenceError, JsonlLogCallback
from unlearnkit.train.rerun import RunMismatchError
from unlearnkit.train.unlearn import UnlearnConfig, UnlearnTrainer, unlearn

FORGET = "synthetic:forget,people=20,forget_fraction=0.2"   # 12 rows: 3 steps per epoch at batch 4
QUICK = dict(forget=FORGET, retain="", method="ga", max_steps=4, save_steps=2, forget_batch_size=4, grad_accum=1,
             lr=1e-3, precision="fp32", logging_steps=1)


def _cfg(theta_ini: str, run: Path, **kw) -> UnlearnConfig:
    return UnlearnConfig(model=theta_ini, run=str(run), **{**QUICK, **kw})


def _strict_log(run: Path) -> list[dict]:
    """log.jsonl parsed as strict JSON (a bare NaN / Infinity fails)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return [json.loads(line, parse_constant=refuse) for line in (run / "log.jsonl").read_text().splitlines()]


def _steps(run: Path) -> list[int]:
    return [r["step"] for r in _strict_log(run) if "learning_rate" in r]


def _all_finite(checkpoint: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(checkpoint / "model.safetensors").values())


# -- point 1: the divergence guard never keeps a NaN checkpoint -------------------------------------------
def test_nan_gradient_behind_a_finite_loss_stops_before_the_update(theta_ini, tmp_path, monkeypatch):
    original = UnlearnTrainer.compute_loss

    def nan_gradient_from_step_3(self, model, inputs, *a, **k):
        loss = original(self, model, inputs, *a, **k)
        if self.state.global_step + 1 >= 3:
            w = next(model.parameters())
            loss = loss + torch.sqrt(((w - w.detach()) ** 2).sum())   # adds 0 to the loss, NaN to the gradient
        return loss

    monkeypatch.setattr(UnlearnTrainer, "compute_loss", nan_gradient_from_step_3)
    run = tmp_path / "nan_grad"
    with pytest.raises(DivergenceError, match=r"step 3: gradient norm=nan.*last good checkpoint kept at .*step-2"):
        unlearn(_cfg(theta_ini, run, max_steps=6, save_steps=1))
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [1, 2]
    assert _all_finite(run / "checkpoints" / "step-2")
    last = _strict_log(run)[-1]
    assert last["diverged"] is True and last["step"] == 3 and last["grad_norm"] == "NaN"
    assert math.isnan(RunDir(run).read_log()[-1]["grad_norm"])


@pytest.mark.slow
def test_ga_at_a_huge_learning_rate_keeps_only_finite_checkpoints(theta_ini, tmp_path):
    """The issue's probe: GA at lr 1e3, save_steps=1 (the grad norm turns NaN while the loss is finite)."""
    run = tmp_path / "ga"
    with pytest.raises(DivergenceError, match="last good checkpoint kept"):
        unlearn(_cfg(theta_ini, run, lr=1e3, save_steps=1, max_steps=30))
    checkpoints = list_checkpoints(run / "checkpoints")
    assert checkpoints and all(_all_finite(p) for _, p in checkpoints)
    _strict_log(run)   # no bare NaN


def test_non_finite_weights_are_never_checkpointed(theta_ini, tmp_path, monkeypatch):
    def poison_after_step_2(self, args, state, control, model=None, **kw):
        if state.global_step == 2:
            with torch.no_grad():
                next(model.parameters())[0, 0] = float("inf")

    monkeypatch.setattr(JsonlLogCallback, "on_step_end", poison_after_step_2, raising=False)
    run = tmp_path / "inf_weight"
    with pytest.raises(DivergenceError, match="step 2: the parameters are not all finite; its checkpoint was not"):
        unlearn(_cfg(theta_ini, run, save_steps=1))
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [1]


# -- point 2: one command per run directory --------------------------------------------------------------
HOLD = "import sys, time\nfrom unlearnkit.runs import locked_run\nwith locked_run(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n"


def test_a_second_command_on_a_locked_run_fails_naming_the_holder(theta_ini, tmp_path):
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    run = tmp_path / "busy"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"{run} is in use by another command \(pid {holder.pid} "):
            unlearn(_cfg(theta_ini, run))
        res = CliRunner().invoke(app, ["unlearn", f"model={theta_ini}", f"forget={FORGET}", "retain=''", "method=ga",
                                       f"run={run}", "max_steps=1"])
        assert res.exit_code == 2 and f"pid {holder.pid}" in res.output, res.output
        assert sorted(p.name for p in run.iterdir()) == [".lock"], "the refused commands wrote nothing"
    finally:
        holder.kill()
        holder.wait()
    assert unlearn(_cfg(theta_ini, run, max_steps=1, save_steps=1))["steps"] == 1, "free once the holder is gone"


@pytest.mark.slow
def test_two_identical_commands_at_once_one_runs_one_is_refused(theta_ini, tmp_path):
    run = tmp_path / "race"
    cmd = [sys.executable, "-m", "unlearnkit.cli", "unlearn", f"model={theta_ini}", f"forget={FORGET}", "retain=''",
           "method=ga", f"run={run}", "max_steps=6", "save_steps=1", "forget_batch_size=4", "grad_accum=1",
           "precision=fp32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    assert "is in use by another command (pid" in [err for rc, err in results if rc == 2][0]
    assert _steps(run) == [1, 2, 3, 4, 5, 6], "every step logged once"


# -- point 3: a rerun with other settings is refused, not silently resumed ------------------------------
def _interrupted(theta_ini: str, run: Path) -> None:
    """A GA run killed after its last checkpoint: checkpoints, no final model or summary."""
    unlearn(_cfg(theta_ini, run))
    for name in ("model", "unlearn.json"):
        p = run / name
        subprocess.run(["rm", "-rf", str(p)], check=True)


def test_rerun_with_other_settings_is_refused_unless_forced_or_overwritten(theta_ini, tmp_path):
    run = tmp_path / "ga"
    _interrupted(theta_ini, run)
    with pytest.raises(RunMismatchError, match=r"unfinished run with other settings \(lr: 0\.001 → 0\.0001; "
                                               r"method: 'ga' → 'npo'\).*overwrite=true.*resume=force"):
        unlearn(_cfg(theta_ini, run, method="npo", lr=1e-4))
    assert yaml.safe_load((run / "config.yaml").read_text())["config"]["method"] == "ga", "config.yaml untouched"
    # resume=force continues despite the difference, and says so in config.yaml
    forced = unlearn(_cfg(theta_ini, run, lr=2e-3, max_steps=6, resume="force"))
    assert forced["resumed_from"].endswith("step-4") and forced["steps"] == 6
    assert yaml.safe_load((run / "config.yaml").read_text())["resumed_despite"] == ["lr: 0.001 → 0.002"]
    # a finished run rerun with other settings does not answer with the old summary; output-only keys may differ
    with pytest.raises(RunMismatchError, match=r"finished run with other settings \(lr: 0\.002 → 0\.001\)"):
        unlearn(_cfg(theta_ini, run, max_steps=6))
    assert unlearn(_cfg(theta_ini, run, lr=2e-3, max_steps=6, logging_steps=5)) == forced
    # overwrite=true starts fresh
    fresh = unlearn(_cfg(theta_ini, run, method="npo", overwrite=True))
    assert "resumed_from" not in fresh and fresh["method"] == "npo" and fresh["steps"] == 4
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2, 4]
    assert _steps(run) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="overwrite=true and resume=force contradict"):
        _cfg(theta_ini, run, overwrite=True, resume="force")


# -- point 4: resuming at the last step trains nothing -----------------------------------------------------
def test_killed_during_the_final_save_resumes_without_training(theta_ini, tmp_path):
    run = tmp_path / "ga"
    first = unlearn(_cfg(theta_ini, run))
    final = load_file(run / "model" / "model.safetensors")
    subprocess.run(["rm", "-rf", str(run / "model"), str(run / "unlearn.json")], check=True)
    (run / ".model.tmp-killed").mkdir()   # what a kill inside save_model_atomically leaves
    (run / ".model.tmp-killed" / "model.safetensors").write_bytes(b"\x00half")
    (run / ".unlearn.json.tmp4242").write_text("{")
    again = unlearn(_cfg(theta_ini, run))
    assert again["steps"] == 4 and again["resumed_from"].endswith("step-4")
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2, 4], "no step 5"
    resumed = load_file(run / "model" / "model.safetensors")
    assert all(torch.equal(final[k], resumed[k]) for k in final), "the model is the step-4 weights, bitwise"
    assert not list(run.glob(".*.tmp*")), "stale temp folders cleaned"
    assert _steps(run) == [1, 2, 3, 4]
    assert again["train_loss"] == pytest.approx(first["train_loss"], rel=1e-6)


# -- point 10: the log and summary of a resumed run --------------------------------------------------------
def test_crash_after_a_logged_step_resumes_with_each_step_logged_once(theta_ini, tmp_path, monkeypatch):
    original = JsonlLogCallback.on_log

    def crash_after_logging_step_3(self, args, state, control, logs=None, **kw):
        original(self, args, state, control, logs=logs, **kw)
        if state.global_step == 3:
            raise KeyboardInterrupt("killed after step 3 was logged, before the step-4 checkpoint")

    run = tmp_path / "crashed"
    monkeypatch.setattr(JsonlLogCallback, "on_log", crash_after_logging_step_3)
    with pytest.raises(KeyboardInterrupt):
        unlearn(_cfg(theta_ini, run))
    monkeypatch.setattr(JsonlLogCallback, "on_log", original)
    assert _steps(run) == [1, 2, 3]
    resumed = unlearn(_cfg(theta_ini, run))
    assert resumed["resumed_from"].endswith("step-2")
    assert _steps(run) == [1, 2, 3, 4], "step 3 logged once, not once per attempt"
    losses = [r["loss"] for r in _strict_log(run) if "learning_rate" in r]
    assert resumed["train_loss"] == pytest.approx(sum(losses) / 4, rel=1e-6), "the mean over steps 1-4, not 0.0"


def test_failed_commands_leave_no_run_folder(theta_ini, tmp_path):
    from unlearnkit.data.records import DataError
    from unlearnkit.train.finetune import FinetuneConfig, finetune

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError):
        unlearn(_cfg(theta_ini, tmp_path / "u", forget=str(empty)))
    with pytest.raises((DataError, FileNotFoundError)):
        finetune(FinetuneConfig(model="tiny", data=str(tmp_path / "missing.jsonl"), run=str(tmp_path / "f")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]


def test_finetune_rerun_with_other_settings_is_refused(tmp_path):
    from unlearnkit.train.finetune import FinetuneConfig, finetune

    base = dict(model="tiny", tiny_hidden=32, tiny_layers=1, tiny_vocab=300, precision="fp32",
                data="synthetic:train,people=3", run=str(tmp_path / "ft"), max_steps=2, save_steps=1,
                batch_size=4, recall_max=-1)
    first = finetune(FinetuneConfig(**base))
    assert finetune(FinetuneConfig(**base)) == first
    with pytest.raises(RunMismatchError, match=r"lr: 0\.0001 → 0\.001"):
        finetune(FinetuneConfig(**{**base, "lr": 1e-3}))


def test_promoted_checkpoint_carries_portable_configs(tmp_path):
    """A Trainer checkpoint is rewritten like a saved model: transformers 4.x cannot load `TokenizersBackend`
    and reads `rope_theta` only at the top of config.json."""
    import json

    from unlearnkit.train.checkpoints import promote

    staged = tmp_path / "staging"
    staged.mkdir()
    (staged / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend"}))
    (staged / "config.json").write_text(json.dumps({"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}))
    (tmp_path / "checkpoints").mkdir()
    final = promote(staged, tmp_path / "checkpoints", 3)
    assert final.name == "step-3" and not staged.exists()
    assert json.loads((final / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert json.loads((final / "config.json").read_text())["rope_theta"] == 100000.0
