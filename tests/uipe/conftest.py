"""Tiny sharded checkpoints for the UIPE tests: θ_ini (seed 0) and θ_un = θ_ini + small noise."""
from __future__ import annotations

import pytest
import torch
from uipe_fixtures import make_model, perturbed


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """{dtype name: (base_dir, unlearned_dir)} saved with several shards (max_shard_size=100KB)."""
    root = tmp_path_factory.mktemp("uipe_ckpt")
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        base, un = make_model(0).to(dtype), perturbed(make_model(0)).to(dtype)
        dirs = []
        for tag, m in (("base", base), ("un", un)):
            d = root / f"{name}-{tag}"
            m.save_pretrained(d, max_shard_size="100KB")
            dirs.append(d)
        assert len(list(dirs[1].glob("model-*.safetensors"))) >= 3, "expected several shards"
        out[name] = tuple(dirs)
    return out
