"""In-memory back end, the per-tensor rule, selection / per-group α, dispatch errors."""
from __future__ import annotations

import pytest
import torch
from uipe_fixtures import make_model, perturbed

from unlearnkit.uipe import AlphaPlan, extrapolate, extrapolate_tensor, layer_pattern


def test_formula_by_hand():
    ini, un = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([2.0, 2.0, 1.0])
    assert torch.equal(extrapolate_tensor(ini, un, 0.5), torch.tensor([2.5, 2.0, 2.0]))
    assert torch.equal(extrapolate_tensor(ini, un, -1.0), ini)  # α = −1 goes back to θ_ini
    assert extrapolate_tensor(ini, un, 0.0) is un


def test_half_precision_is_computed_in_fp32_and_rounded_once():
    g = torch.Generator().manual_seed(0)
    ini = torch.randn(10_000, generator=g)
    un = ini + 0.01 * torch.randn(10_000, generator=g)
    for dtype in (torch.bfloat16, torch.float16):
        i, u = ini.to(dtype), un.to(dtype)
        got = extrapolate_tensor(i, u, 0.7)
        assert got.dtype == dtype
        ref = (u.double() + 0.7 * (u.double() - i.double())).to(dtype)  # exact, rounded once
        ulp = (ref.float().abs() * (2 ** -7 if dtype == torch.bfloat16 else 2 ** -10)).clamp_min(1e-30)
        assert ((got.float() - ref.float()).abs() <= ulp).all()


def test_integer_tensors_are_left_alone():
    ids = torch.arange(5)
    assert extrapolate_tensor(ids * 2, ids, 0.5) is ids


def test_plan_selection_groups_and_first_match():
    names = ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight",
             "model.layers.1.mlp.up_proj.weight", "model.layers.12.mlp.up_proj.weight", "lm_head.weight"]
    plan = AlphaPlan.build(0.3, select=r"\.mlp\.", group_alphas=[(layer_pattern(1, 11), 2.0), (r"up_proj", 9.0)])
    assert plan.assign(names) == {names[0]: 0.0, names[1]: 9.0, names[2]: 0.0, names[3]: 2.0, names[4]: 9.0,
                                  names[5]: 0.0}
    assert AlphaPlan.build(0.3, group_alphas={"lm_head": 1.0}).assign(names)[names[0]] == 0.3  # default α
    with pytest.raises(ValueError, match=r"decide no tensor"):
        AlphaPlan.build(0.3, select="nothing_like_this").assign(names)
    with pytest.raises(ValueError, match=r"\['up_proj'\]"):  # shadowed by an earlier group
        AlphaPlan.build(0.3, group_alphas=[("mlp", 1.0), ("up_proj", 2.0)]).assign(names)
    with pytest.raises(ValueError, match="not a valid regex"):
        AlphaPlan.build(0.3, select="(")
    with pytest.raises(ValueError, match="finite"):
        AlphaPlan.build(float("nan"))
    assert layer_pattern(10, 12) == r"\.layers\.(10|11|12)\."


def test_module_copy_inplace_and_state_dict_agree():
    base, un = make_model(0), perturbed(make_model(0))
    before = {k: v.clone() for k, v in un.state_dict().items()}
    sd = extrapolate(base.state_dict(), un.state_dict(), 0.8, select=r"layers\.1\.")
    copy = extrapolate(base, un, 0.8, select=r"layers\.1\.")
    assert copy is not un and all(torch.equal(v, before[k]) for k, v in un.state_dict().items())
    same = extrapolate(base, un, 0.8, select=r"layers\.1\.", inplace=True)
    assert same is un
    for k in sd:
        assert torch.equal(copy.state_dict()[k], sd[k]) and torch.equal(un.state_dict()[k], sd[k])
        if "layers.1." not in k:
            assert torch.equal(sd[k], before[k])


def test_tied_weights_are_extrapolated_once():
    base, un = make_model(0), perturbed(make_model(0))
    for m in (base, un):
        m.lm_head.weight = m.model.embed_tokens.weight
    want = extrapolate(base.state_dict(), un.state_dict(), 0.5)["model.embed_tokens.weight"]
    extrapolate(base, un, 0.5, inplace=True)
    assert torch.equal(un.model.embed_tokens.weight, want) and un.lm_head.weight is un.model.embed_tokens.weight


def test_dispatch_errors(tmp_path):
    base, un = make_model(0), make_model(1)
    with pytest.raises(ValueError, match="save_pretrained"):
        extrapolate(base, un, 0.5, out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="out_dir is required"):
        extrapolate(str(tmp_path), str(tmp_path), 0.5)
    with pytest.raises(TypeError, match="state dict"):
        extrapolate([1], un, 0.5)
