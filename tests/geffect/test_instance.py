"""Per-instance G-effects: vmap == loop, sum rule, weights."""
from __future__ import annotations

import pytest
import torch

from unlearnkit.geffect import GEffectError, instance_geffects, instance_weights, nll_risk
from unlearnkit.logprobs import sequence_logprobs
from unlearnkit.objectives import FrozenModelReference, build_objective, npo_weights


def test_vmap_matches_loop(model_t, theta_ini, slices):
    """In float64 (so the comparison is not float32 summation-order noise, ~1e-4 relative here)."""
    model_t.double(), theta_ini.double()
    obj = build_objective("npo", {"beta": 0.5})
    ref = FrozenModelReference(theta_ini)
    a = instance_geffects(model_t, obj, slices.forget, slices.retain, ref, method="vmap")
    b = instance_geffects(model_t, obj, slices.forget, slices.retain, ref, method="loop")
    assert a.method == "vmap" and b.method == "loop"
    assert a.index == b.index == [0, 1, 2, 3]
    assert a.unlearn == pytest.approx(b.unlearn, rel=1e-9, abs=1e-12)
    assert a.retain == pytest.approx(b.retain, rel=1e-9, abs=1e-12)
    assert a.weight == b.weight
    c = instance_geffects(model_t, obj, slices.forget, slices.retain, ref, method="auto", max_bytes=1)
    assert c.method == "loop"


def test_sum_rule_against_risk_gradient(model_t, slices):
    """Σ_s pg_u(s) = ∇R(D_u)ᵀ ∇Σ_s log p(s): checked with one backward of the summed log-prob."""
    inst = instance_geffects(model_t, build_objective("ga"), slices.forget, slices.retain, method="vmap")
    f = slices.forget[0]
    params = list(model_t.parameters())
    g_lp = torch.autograd.grad(sequence_logprobs(model_t, f).sum.sum(), params)
    g_r = torch.autograd.grad(nll_risk(model_t, f)[0], params)
    want = sum(float((a.double() * b.double()).sum()) for a, b in zip(g_lp, g_r))
    assert sum(inst.unlearn) == pytest.approx(want, rel=1e-4)  # float32: per-sample vs batched sums
    assert all(u < 0 for u in inst.unlearn)  # raising log p lowers the NLL on the forget set
    assert inst.weight == [1.0] * 4


def test_weights(model_t, theta_ini, slices):
    f = slices.forget[0]
    ref = FrozenModelReference(theta_ini)
    w = instance_weights(build_objective("npo", {"beta": 0.5}), model_t, f, ref)
    with torch.no_grad():
        want = npo_weights(sequence_logprobs(model_t, f).sum, sequence_logprobs(theta_ini, f).sum, 0.5)
    assert torch.allclose(w, want)
    for name in ("wga", "tnpo", "wtnpo", "simnpo"):
        w = instance_weights(build_objective(name), model_t, f, ref)
        assert w.shape == (4,) and torch.all((w > 0) & (w <= 2))
    assert torch.isnan(instance_weights(build_objective("rmu"), model_t, f, ref)).all()


def test_objective_without_instance_weights_raises_not_nan(model_t, theta_ini, slices):
    """A new objective that does not say what its weight is fails by name instead of colouring with NaN; every
    registered objective says (a weight, or no_instance_weights)."""
    from unlearnkit.objectives import OBJECTIVES, NoInstanceWeightsError, Objective, no_instance_weights

    class Fresh(Objective):
        name = "fresh"

        def forget_loss(self, model, batch, ref):
            return sequence_logprobs(model, batch.forget).mean.mean(), {}

    f = slices.forget[0]
    with pytest.raises(NoInstanceWeightsError, match="objective 'fresh' .*does not define instance_weights"):
        instance_weights(Fresh(), model_t, f, FrozenModelReference(theta_ini))
    with pytest.raises(NoInstanceWeightsError):
        instance_geffects(model_t, Fresh(), [f], [slices.retain[0]], method="loop")
    for name, cls in OBJECTIVES.items():
        assert cls.instance_weights is not Objective.instance_weights, name
    assert [n for n, c in OBJECTIVES.items() if c.instance_weights is no_instance_weights] == \
        ["idk_dpo", "idk_nll", "rmu", "undial"]


def test_vmap_needs_eager(model_t, slices):
    model_t.config._attn_implementation = "sdpa"
    with pytest.raises(GEffectError, match="eager"):
        instance_geffects(model_t, build_objective("ga"), slices.forget, slices.retain, method="vmap")
