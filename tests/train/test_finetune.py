"""Fine-tuning: memorisation on synthetic people, atomic checkpoints, resume after a kill."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unlearnkit.runs import last_checkpoint, list_checkpoints
from unlearnkit.train.checkpoints import STAGING
from unlearnkit.train.finetune import FinetuneConfig, finetune

TINY = dict(model="tiny", tiny_hidden=128, tiny_layers=2, tiny_vocab=1024, precision="fp32", logging_steps=1000)


def test_tiny_model_memorises_synthetic_people(tmp_path):
    """A smaller version of the 200-people acceptance check: >= 90% exact-match recall."""
    cfg = FinetuneConfig(data="synthetic:train,people=12,seed=0", run=str(tmp_path / "ft"), epochs=40, lr=2e-3,
                         batch_size=16, warmup=0.05, keep_checkpoints=1, **TINY)
    summary = finetune(cfg)
    assert summary["recall_after"] >= 0.9, summary
    run = tmp_path / "ft"
    assert (run / "model" / "model.safetensors").is_file() and (run / "config.yaml").is_file()
    logs = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert logs and "loss" in logs[0]
    assert logs[0]["flops_per_s"] > 0 and logs[0]["peak_share"] > 0          # throughput logged per record
    assert summary["throughput"]["flops_per_s"] > 0 and summary["throughput"]["dtype"] == "float32"
    assert list_checkpoints(run / "checkpoints"), "epoch checkpoints are written"
    # a finished run is not retrained
    assert finetune(cfg) == json.loads((run / "finetune.json").read_text())


def _cli(run_dir: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "unlearnkit.cli", "finetune", "model=tiny", "tiny_hidden=64", "tiny_layers=2",
            "tiny_vocab=512", "precision=fp32", "data=synthetic:train,people=6", f"run={run_dir}",
            f"max_steps={steps}", "save_steps=2", "keep_checkpoints=null", "batch_size=4", "recall_max=-1",
            "logging_steps=1"]


def test_kill_and_resume_from_last_complete_checkpoint(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cli(run, 400), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and len(list_checkpoints(run / "checkpoints")) < 2:
            time.sleep(0.2)
            assert proc.poll() is None, "training ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = list_checkpoints(run / "checkpoints")
    assert len(done) >= 2, "no checkpoint was written within the deadline"
    killed_at = done[-1][0]
    # a half-written checkpoint (as a kill mid-save leaves) must never be loaded
    fake = run / "checkpoints" / STAGING / "checkpoint-999"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "model.safetensors").write_bytes(b"\x00garbage")
    target = killed_at + 4
    res = subprocess.run(_cli(run, target), env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((run / "finetune.json").read_text())
    assert summary["resumed_from"].endswith(f"step-{killed_at}")
    assert summary["steps"] == target
    assert not (run / "checkpoints" / STAGING / "checkpoint-999").exists()
    assert last_checkpoint(run / "checkpoints").name == f"step-{target}"
    state = json.loads((last_checkpoint(run / "checkpoints") / "trainer_state.json").read_text())
    assert state["global_step"] == target


def test_config_errors_name_the_key(tmp_path):
    from unlearnkit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="lrr"):
        load_config(FinetuneConfig, overrides=["lrr=1"])
    with pytest.raises(ConfigError, match="epochs"):
        load_config(FinetuneConfig, overrides=["epochs=lots"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(FinetuneConfig, overrides=["epochs"])
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.5\nepochs: 2\n")
    cfg = load_config(FinetuneConfig, y, ["epochs=3"])
    assert cfg.lr == 0.5 and cfg.epochs == 3
