"""Reference providers: frozen model, peft with adapters disabled, and the per-index cache."""
import copy

import pytest
import torch

from unlearnkit.logprobs import sequence_logprobs
from unlearnkit.models.lora import LoraSettings, apply_lora
from unlearnkit.objectives.reference import block_output, decoder_blocks
from unlearnkit.objectives import (CachedReference, DisabledAdapterReference, FrozenModelReference, UnlearnBatch,
                                   build_objective, precompute_token_logprobs)


@pytest.fixture()
def peft_model(tiny_model):
    model = apply_lora(copy.deepcopy(tiny_model), LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():  # non-zero B so the adapter changes the outputs
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    return model


def test_disabled_adapter_equals_base_model(tiny_model, peft_model, batch):
    ref, base = DisabledAdapterReference(peft_model), FrozenModelReference(tiny_model)
    with torch.no_grad():
        adapted = sequence_logprobs(peft_model, batch.forget).sum
    assert not torch.allclose(adapted, base.forget_logprobs(batch.forget).sum, atol=1e-3)
    assert torch.allclose(ref.forget_logprobs(batch.forget).sum, base.forget_logprobs(batch.forget).sum, atol=1e-5)
    assert torch.allclose(ref.retain_logits(batch.retain), base.retain_logits(batch.retain), atol=1e-5)
    assert torch.allclose(ref.hidden_states(batch.retain, 1), base.hidden_states(batch.retain, 1), atol=1e-5)
    with torch.no_grad():  # adapters are back on afterwards
        assert torch.allclose(sequence_logprobs(peft_model, batch.forget).sum, adapted)
    assert not ref.forget_logprobs(batch.forget).token_logprobs.requires_grad


def test_disabled_adapter_needs_peft(tiny_model):
    with pytest.raises(TypeError, match="needs a peft model"):
        DisabledAdapterReference(tiny_model)


def test_frozen_reference_outputs_are_detached(tiny_model, batch):
    ref = FrozenModelReference(tiny_model)
    assert not ref.forget_logprobs(batch.forget).sum.requires_grad
    assert not ref.retain_logits(batch.retain).requires_grad


def test_cached_reference_matches_frozen(ref_model, datasets, collate_fn, batch):
    frozen = FrozenModelReference(ref_model)
    cache = precompute_token_logprobs(frozen, [batch.forget])
    assert set(cache) == {0, 1, 2}
    # served into a batch padded on the other side, rows in another order
    other = collate_fn(datasets["forget"], side="left", order=[2, 0, 1])
    cached = CachedReference(forget=cache).forget_logprobs(other)
    direct = frozen.forget_logprobs(other)
    assert torch.equal(cached.mask, direct.mask)
    assert torch.allclose(cached.token_logprobs, direct.token_logprobs, atol=1e-5)


def test_cached_reference_gives_same_npo_loss(tiny_model, ref_model, batch):
    frozen = FrozenModelReference(ref_model)
    cached = CachedReference(forget=precompute_token_logprobs(frozen, [batch.forget]), fallback=frozen)
    npo = build_objective("npo", {"retain": "kl"})
    assert npo.loss(tiny_model, batch, cached)[0].item() == pytest.approx(npo.loss(tiny_model, batch, frozen)[0].item(),
                                                                          rel=1e-5)


def test_cached_reference_errors(ref_model, batch):
    cache = precompute_token_logprobs(FrozenModelReference(ref_model), [batch.forget])
    stale = dict(cache)
    stale[1] = stale[1][:-1]
    with pytest.raises(ValueError, match="index 1 has .* cached answer tokens but the batch has .* stale"):
        CachedReference(forget=stale).forget_logprobs(batch.forget)
    with pytest.raises(ValueError, match="no cached forget log-probs for index 2"):
        CachedReference(forget={0: cache[0], 1: cache[1]}).forget_logprobs(batch.forget)
    no_index = {k: v for k, v in batch.forget.items() if k != "index"}
    with pytest.raises(ValueError, match="'index' column"):
        CachedReference(forget=cache).forget_logprobs(no_index)
    with pytest.raises(ValueError, match="no cache for retain_logits and no fallback"):
        CachedReference(forget=cache).retain_logits(batch.retain)


def test_npo_trains_lora_with_disabled_adapter_reference(peft_model, batch):
    ref = DisabledAdapterReference(peft_model)
    obj = build_objective("npo", {"beta": 0.1})
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    with torch.no_grad():
        before = sequence_logprobs(peft_model, batch.forget).sum.sum().item()
    for _ in range(3):
        loss, _ = obj.loss(peft_model, UnlearnBatch(forget=batch.forget), ref)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = sequence_logprobs(peft_model, batch.forget).sum.sum().item()
    assert after < before


@pytest.mark.parametrize("layer", [0, 1])
def test_block_output_is_the_hooked_output_of_model_layers(tiny_model, peft_model, batch, layer):
    """Layer ℓ means model.layers[ℓ] (WMDP / open-unlearning), not outputs.hidden_states[ℓ] (its input)."""
    seen = []
    handle = tiny_model.model.layers[layer].register_forward_hook(lambda _m, _a, out: seen.append(out))
    with torch.no_grad():
        out = tiny_model(input_ids=batch.forget["input_ids"], attention_mask=batch.forget["attention_mask"],
                         output_hidden_states=True)
    handle.remove()
    hooked = seen[0][0] if isinstance(seen[0], tuple) else seen[0]
    mask = batch.forget["attention_mask"].bool()
    got = FrozenModelReference(tiny_model).hidden_states(batch.forget, layer)
    assert torch.allclose(got[mask], hooked[mask], atol=1e-5)
    assert not torch.allclose(got[mask], out.hidden_states[layer][mask], atol=1e-3)  # the old, off-by-one read
    with torch.no_grad():  # through peft wrappers too, and with gradients when asked for
        lora_off = DisabledAdapterReference(peft_model).hidden_states(batch.forget, layer)
    assert torch.allclose(lora_off[mask], hooked[mask], atol=1e-5)
    assert block_output(tiny_model, batch.forget, layer).requires_grad
    assert decoder_blocks(peft_model) is peft_model.base_model.model.model.layers


def test_block_output_refuses_a_layer_past_the_last(tiny_model, batch):
    with pytest.raises(ValueError, match=r"layer=2: the model has 2 decoder layers.*model.layers\[ℓ\]"):
        block_output(tiny_model, batch.forget, 2)
