"""LoRA back end: rescaling lora_B by (1+α) equals extrapolating the merged models."""
from __future__ import annotations

import json

import pytest
import torch
from uipe_fixtures import load_dir, make_model

from unlearnkit.uipe import extrapolate, extrapolate_checkpoint, extrapolate_state_dict
from unlearnkit.uipe.lora import check_lora_config

TARGETS = ["q_proj", "v_proj", "up_proj", "embed_tokens"]


def _peft_model(seed: int = 3):
    """A LoRA 'unlearning run': adapter on a tiny Llama with random non-zero A and B."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(make_model(0), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def _merged(peft_model) -> dict[str, torch.Tensor]:
    import copy

    return {k: v.clone() for k, v in copy.deepcopy(peft_model).merge_and_unload().state_dict().items()}


def _close(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def _load_adapter(path):
    from peft import PeftModel

    return PeftModel.from_pretrained(make_model(0), str(path)).eval()


@pytest.mark.parametrize("kw", [{}, {"select": r"self_attn", "group_alphas": [(r"layers\.0\.", 2.0)]}],
                         ids=["all", "select+groups"])
def test_lora_equals_merge_then_extrapolate(tmp_path, kw):
    pm = _peft_model()
    theta_ini, theta_un = make_model(0).state_dict(), _merged(pm)
    want = extrapolate_state_dict(theta_ini, theta_un, 0.6, **kw)
    # in memory → model
    _close(_merged(extrapolate(None, pm, 0.6, **kw)), want)
    # in memory → adapter dir; and adapter dir on disk → adapter dir
    mem_dir = extrapolate(None, pm, 0.6, out_dir=tmp_path / "mem", **kw)
    pm.save_pretrained(tmp_path / "adapter")
    disk_dir = extrapolate_checkpoint(None, tmp_path / "adapter", tmp_path / "disk", 0.6, **kw)
    assert sorted(p.name for p in disk_dir.iterdir()) == ["README.md", "adapter_config.json",
                                                          "adapter_model.safetensors", "uipe.json"]
    a, b = load_dir(mem_dir), load_dir(disk_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    _close(_merged(_load_adapter(disk_dir)), want)
    # only B changed, A untouched
    src = load_dir(tmp_path / "adapter")
    for k in src:
        if "lora_A" in k or "lora_embedding_A" in k or "base_layer" in k:
            assert torch.equal(src[k], b[k]), k
    assert json.loads((disk_dir / "uipe.json").read_text())["backend"] == "lora"


def test_lora_alpha_zero_and_inplace(tmp_path):
    pm = _peft_model()
    pm.save_pretrained(tmp_path / "adapter")
    out = extrapolate_checkpoint(None, tmp_path / "adapter", tmp_path / "same", 0.0)
    a, b = load_dir(tmp_path / "adapter"), load_dir(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    b_name = next(n for n, _ in pm.named_parameters() if "lora_B" in n)
    before = dict(pm.named_parameters())[b_name].detach().clone()
    assert extrapolate(None, pm, 1.0, inplace=True) is pm
    assert torch.allclose(dict(pm.named_parameters())[b_name], 2 * before)


def test_lora_refusals(tmp_path):
    pm = _peft_model()
    with pytest.raises(ValueError, match="base=None"):
        extrapolate(make_model(0), pm, 0.5)
    ok = {"peft_type": "LORA", "bias": "none", "init_lora_weights": True}
    check_lora_config(ok, "x")
    for bad, needle in (({"use_dora": True}, "DoRA"), ({"bias": "all"}, "bias"),
                        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
                        ({"init_lora_weights": "pissa"}, "path_initial_model_for_weight_conversion")):
        with pytest.raises(ValueError, match=needle):
            check_lora_config({**ok, **bad}, "adapter")
