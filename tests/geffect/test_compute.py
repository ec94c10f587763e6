"""e_u / e_r against brute force (flattened full gradients), finite differences, errors."""
from __future__ import annotations

import math

import pytest
import torch

from unlearnkit.geffect import (EMA, EvalSlices, GEffectError, SharedForward, compute_geffect, make_slices,
                                nll_risk, parameter_groups)
from unlearnkit.objectives import FrozenModelReference, UnlearnBatch, build_objective


def flat_grad(model, loss):
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                      for g, p in zip(grads, params)])


def brute_force(model, objective, slices, ref):
    """Authors-style: separate passes, full flattened gradients, one big dot product."""
    f, r, reg = slices.forget[0], slices.retain[0], slices.regulariser[0]
    loss, _ = objective.loss(model, UnlearnBatch(forget=f, retain=reg if objective.needs_retain else None), ref)
    g_l = flat_grad(model, loss)
    g_u = flat_grad(model, nll_risk(model, f)[0])
    g_r = flat_grad(model, nll_risk(model, r)[0])
    return float(g_u @ g_l), float(g_r @ g_l)


@pytest.mark.parametrize("name,cfg", [("ga", {}), ("npo", {"beta": 0.5}), ("grad_diff", {}), ("wga", {"beta": 2.0}),
                                      ("tnpo", {})])
def test_group_sum_equals_full_dot_product(model_t, theta_ini, slices, name, cfg):
    obj = build_objective(name, cfg)
    ref = FrozenModelReference(theta_ini)
    eff = compute_geffect(model_t, obj, slices, ref)
    want_u, want_r = brute_force(model_t, obj, slices, ref)
    groups = [g for g in eff.unlearn if g != "total"]
    assert sum(eff.unlearn[g] for g in groups) == pytest.approx(eff.unlearn["total"], rel=1e-12)
    assert eff.unlearn["total"] == pytest.approx(want_u, rel=1e-5, abs=1e-9)
    assert eff.retain["total"] == pytest.approx(want_r, rel=1e-5, abs=1e-9)
    assert all(p.grad is None for p in model_t.parameters())  # nothing left behind


def test_per_group_matches_brute_force(model_t, theta_ini, slices):
    obj = build_objective("ga")
    groups = parameter_groups(model_t, blocks="each")
    eff = compute_geffect(model_t, obj, slices, groups=groups)
    f = slices.forget[0]
    loss, _ = obj.loss(model_t, UnlearnBatch(forget=f))
    names = [n for n, _ in model_t.named_parameters()]
    gl = dict(zip(names, torch.autograd.grad(loss, list(model_t.parameters()))))
    gu = dict(zip(names, torch.autograd.grad(nll_risk(model_t, f)[0], list(model_t.parameters()))))
    for g in groups.names:
        want = sum(float((gl[n].double() * gu[n].double()).sum()) for n in groups.members(g))
        assert eff.unlearn[g] == pytest.approx(want, rel=1e-5, abs=1e-10), g
    assert set(eff.unlearn) == set(groups.names) | {"total"}


def test_forward_is_shared(model_t, slices):
    calls = []
    h = model_t.register_forward_hook(lambda *a: calls.append(1))
    try:
        compute_geffect(model_t, build_objective("ga"), slices)
    finally:
        h.remove()
    assert len(calls) == 2  # one forget forward (objective + R(D_u)), one retain forward


def test_regulariser_rows_are_a_separate_forward(model_t, slices):
    calls = []
    h = model_t.register_forward_hook(lambda *a: calls.append(1))
    try:
        compute_geffect(model_t, build_objective("grad_diff"), slices)
    finally:
        h.remove()
    assert len(calls) == 3  # forget (shared by L_u's two terms and R(D_u)), regulariser rows, measured retain


def test_retain_effect_identity_with_disjoint_regulariser(model_t, slices):
    """e(total) = ∇Rᵀ(γ∇L_f + α∇NLL(D_reg)) with D_reg disjoint from the measured D_r; e(forget) = ∇Rᵀγ∇L_f."""
    gamma, alpha = 1.5, 0.7
    obj = build_objective("grad_diff", {"forget_weight": gamma, "retain_weight": alpha})
    eff = compute_geffect(model_t, obj, slices)
    f, r, reg = slices.forget[0], slices.retain[0], slices.regulariser[0]
    g_f = flat_grad(model_t, gamma * obj.forget_loss(model_t, UnlearnBatch(forget=f), None)[0])
    g_reg = flat_grad(model_t, nll_risk(model_t, reg)[0])
    g_u, g_r = flat_grad(model_t, nll_risk(model_t, f)[0]), flat_grad(model_t, nll_risk(model_t, r)[0])
    assert eff.forget_retain["total"] == pytest.approx(float(g_r @ g_f), rel=1e-5)
    assert eff.forget_unlearn["total"] == pytest.approx(float(g_u @ g_f), rel=1e-5)
    assert eff.retain["total"] == pytest.approx(float(g_r @ (g_f + alpha * g_reg)), rel=1e-5)
    assert eff.unlearn["total"] == pytest.approx(float(g_u @ (g_f + alpha * g_reg)), rel=1e-5)
    # what the measured slice as regulariser would have added: α‖∇R(D_r)‖² ≥ 0, here far from the true share
    bias = alpha * float(g_r @ g_r)
    assert abs(bias - alpha * float(g_r @ g_reg)) > 1e-3 * bias
    kinds = {row["kind"] for row in eff.rows()}
    assert kinds == {"unlearn", "retain", "unlearn_forget", "retain_forget"}
    assert eff.loss == pytest.approx(eff.loss_forget + alpha * nll_risk(model_t, reg)[0].item(), rel=1e-5)


def test_regulariser_must_be_disjoint_and_present(model_t, slices):
    with pytest.raises(GEffectError, match="both in the measured retain slice and in the regulariser"):
        EvalSlices(forget=slices.forget, retain=slices.retain, regulariser=slices.retain)
    no_reg = EvalSlices(forget=slices.forget, retain=slices.retain)
    with pytest.raises(GEffectError, match="needs its rows: pass EvalSlices\\(regulariser="):
        compute_geffect(model_t, build_objective("grad_diff"), no_reg)
    forget_only = compute_geffect(model_t, build_objective("grad_diff"), no_reg, term="forget")
    assert forget_only.forget_unlearn is None and not math.isnan(forget_only.retain["total"])


def test_several_batches_equal_one(model_t, theta_ini, qa, tiny_tokenizer):
    obj = build_objective("npo", {"beta": 0.5})
    ref = FrozenModelReference(theta_ini)
    items = lambda ds: [ds[i] for i in range(4)]
    one = compute_geffect(model_t, obj, make_slices(items(qa["forget"]), items(qa["retain"]), tiny_tokenizer.pad_token_id), ref)
    two = compute_geffect(model_t, obj, make_slices(items(qa["forget"]), items(qa["retain"]), tiny_tokenizer.pad_token_id,
                                                    batch_size=2), ref)
    for kind in ("unlearn", "retain"):
        for g, v in getattr(one, kind).items():
            assert getattr(two, kind)[g] == pytest.approx(v, rel=1e-5, abs=1e-10), (kind, g)


def test_finite_difference(model_t, theta_ini, slices):
    """R(θ − η∇L_u) − R(θ) ≈ −η·e for small η (sign and size)."""
    obj = build_objective("npo", {"beta": 0.5})
    ref = FrozenModelReference(theta_ini)
    eff = compute_geffect(model_t, obj, slices, ref)
    f, r = slices.forget[0], slices.retain[0]
    loss, _ = obj.loss(model_t, UnlearnBatch(forget=f), ref)
    grads = torch.autograd.grad(loss, list(model_t.parameters()))
    gnorm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    eta = 1e-3 / gnorm
    with torch.no_grad():
        r_u0, r_r0 = nll_risk(model_t, f)[0].double(), nll_risk(model_t, r)[0].double()
        for p, g in zip(model_t.parameters(), grads):
            p.sub_(eta * g)
        d_u = float(nll_risk(model_t, f)[0].double() - r_u0)
        d_r = float(nll_risk(model_t, r)[0].double() - r_r0)
    assert eff.unlearn["total"] < 0 and d_u > 0
    assert d_u == pytest.approx(-eta * eff.unlearn["total"], rel=0.05)
    assert d_r == pytest.approx(-eta * eff.retain["total"], rel=0.05, abs=1e-3 * abs(d_u))


def test_no_grad_fn_is_an_error(model_t, slices):
    for p in model_t.parameters():
        p.requires_grad_(False)
    model_t.lm_head.weight.requires_grad_(True)
    obj = build_objective("ga")
    with torch.no_grad():
        with pytest.raises(GEffectError, match="no grad_fn"):
            compute_geffect(model_t, obj, slices)


def test_unreached_group_nan_with_warning_or_error_when_selected(model_t, theta_ini, slices):
    obj = build_objective("rmu", {"layer": 1, "retain": "none"})  # blocks above 1, norm, lm_head get no gradient
    groups = parameter_groups(model_t, blocks="each")
    with pytest.warns(RuntimeWarning, match="no gradient"):
        eff = compute_geffect(model_t, obj, slices, groups=groups)
    assert math.isnan(eff.unlearn["lm_head"]) and math.isnan(eff.retain["norm"]) and math.isnan(eff.unlearn["block_02"])
    assert not math.isnan(eff.unlearn["block_00"]) and not math.isnan(eff.unlearn["total"])
    assert "lm_head.weight" in eff.no_grad and "model.embed_tokens.weight" not in eff.no_grad
    with pytest.raises(GEffectError, match="'lm_head' \\(selected\\) receives no gradient"):
        compute_geffect(model_t, obj, slices, groups=groups, select=["block_00", "lm_head"])


def test_grads_and_mode_restored(model_t, slices):
    model_t.train()
    for p in model_t.parameters():
        p.grad = torch.ones_like(p)
    compute_geffect(model_t, build_objective("ga"), slices)
    assert model_t.training
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model_t.parameters())


def test_ema():
    ema = EMA(0.6)
    assert ema("k", 1.0) == 1.0
    assert ema("k", 2.0) == pytest.approx(0.6 * 1.0 + 0.4 * 2.0)
    with pytest.raises(ValueError):
        EMA(1.0)


def test_shared_forward_passes_other_calls_through(model_t, slices):
    f = slices.forget[0]
    proxy = SharedForward(model_t, [f])
    a = proxy(input_ids=f["input_ids"], attention_mask=f["attention_mask"])
    b = proxy(input_ids=f["input_ids"], attention_mask=f["attention_mask"], output_hidden_states=True)
    assert a is b and proxy.hits == 1
    c = proxy(input_ids=f["input_ids"].clone())
    assert c is not a
    assert proxy.config is model_t.config


def test_empty_slices_rejected():
    with pytest.raises(GEffectError, match="forget"):
        EvalSlices(forget=[], retain=[{}])
