"""Contract over the registry: every objective trains θ_ini a few steps and lowers the forget answers' likelihood."""
import copy
import math

import pytest
import torch

from unlearnkit.logprobs import sequence_logprobs
from unlearnkit.objectives import OBJECTIVES, FrozenModelReference, build_objective

# Only what the tiny 2-layer model needs; everything else runs on its defaults.
OVERRIDES = {"rmu": {"layer": 1}}


def forget_loglik(model, forget):
    with torch.no_grad():
        return sequence_logprobs(model.eval(), forget).sum  # (B,) log π(y|x) per forget answer


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_objective_trains_and_forgets(name, theta_ini, batch):
    obj = build_objective(name, OVERRIDES.get(name, {}))
    ref = FrozenModelReference(copy.deepcopy(theta_ini))
    obj.check_inputs(retain=True, idk=True, reference=True)
    before_params = [p.detach().clone() for p in theta_ini.parameters()]
    before = forget_loglik(theta_ini, batch.forget)

    opt = torch.optim.AdamW(theta_ini.parameters(), lr=1e-3)
    theta_ini.train()
    for _ in range(5):
        loss, logs = obj.loss(theta_ini, batch, ref)
        assert math.isfinite(loss.item())
        assert {"forget_loss", "loss"} <= set(logs) and all(math.isfinite(v) for v in logs.values())
        assert ("retain_loss" in logs) == obj.needs_retain
        opt.zero_grad()
        loss.backward()
        opt.step()

    after = forget_loglik(theta_ini, batch.forget)
    assert (after < before).all(), f"{name}: forget log-likelihoods {before.tolist()} -> {after.tolist()}"
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before_params, theta_ini.parameters()))
