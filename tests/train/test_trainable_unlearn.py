"""unlearn with trainable=: only the selected tensors move (WMDP's RMU setting), the rest stay θ_ini's."""
from __future__ import annotations

import pytest
from safetensors.torch import load_file

from unlearnkit.models.trainable import down_proj_patterns
from unlearnkit.train.unlearn import UnlearnConfig, unlearn

FORGET = "synthetic:forget,people=20,forget_fraction=0.2"
RETAIN = "synthetic:retain_targets,people=20"


def test_rmu_trains_only_the_down_projections(theta_ini, tmp_path):
    cfg = UnlearnConfig(model=theta_ini, method="rmu", params={"layer": 1, "steering_coeff": 5.0},
                        trainable=down_proj_patterns(1, depth=2), forget=FORGET, retain=RETAIN, max_steps=3,
                        forget_batch_size=4, grad_accum=1, lr=1e-2, precision="fp32", run=str(tmp_path / "r"),
                        weight_decay=0.0)
    summary = unlearn(cfg)
    assert summary["trainable"] == 2
    before = load_file(f"{theta_ini}/model.safetensors")
    after = load_file(str(tmp_path / "r" / "model" / "model.safetensors"))
    moved = sorted(k for k in before if not before[k].equal(after[k]))
    assert moved == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]


def test_trainable_and_lora_are_exclusive(theta_ini):
    with pytest.raises(ValueError, match="trainable= and lora=true"):
        UnlearnConfig(model=theta_ini, method="rmu", lora=True, trainable=["model.layers.0.mlp.down_proj.weight"])
