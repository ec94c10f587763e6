import pytest
import torch

from unlearnkit.models import LoraSettings, tiny_llama
from unlearnkit.reveal.olora import (add_round_adapter, lora_A_pairs, merge_rounds, orthogonality_penalty,
                                     round_adapters, round_orthogonality_penalty)

VOCAB = 128
SETTINGS = LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj"])


def _base():
    return tiny_llama(VOCAB, hidden=64, layers=2, heads=4, intermediate=128, seed=0, attn_implementation="eager")


def _two_rounds(seed=0):
    torch.manual_seed(seed)  # peft draws lora_A's init from the global generator
    pm = add_round_adapter(_base(), 0, SETTINGS)
    return add_round_adapter(pm, 1, SETTINGS)


def test_orthogonality_penalty_by_hand():
    a_prev = [torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    a_new = [torch.tensor([[0.0, 1.0, 1.0], [1.0, -1.0, 0.0]]), torch.tensor([[3.0, -4.0]])]
    # module 1: A_prev·A_newᵀ = [[2, -1]] -> |2| + |-1| = 3; module 2: [[3], [-4]] -> 7
    assert float(orthogonality_penalty(a_prev, a_new)) == pytest.approx(10.0)
    assert float(orthogonality_penalty([torch.eye(2)], [torch.tensor([[0.0, 0.0]])])) == 0.0
    with pytest.raises(ValueError, match="paired per module"):
        orthogonality_penalty(a_prev, a_new[:1])
    with pytest.raises(ValueError, match="same d_in"):
        orthogonality_penalty([torch.ones(1, 3)], [torch.ones(1, 2)])


def test_rounds_are_active_frozen_and_merge():
    pm = _two_rounds()
    assert round_adapters(pm) == ["round_0", "round_1"]
    assert pm.base_model.active_adapters == ["round_0", "round_1"] and pm.active_adapter == "round_1"
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert trainable and all(".round_1." in n for n in trainable)
    prev, new = lora_A_pairs(pm, "round_1")
    assert len(prev) == 4 and prev[0].shape == (4, 64) and new[0].requires_grad and not prev[0].requires_grad
    assert round_orthogonality_penalty(pm) > 0
    with torch.no_grad():  # give both rounds a visible effect (lora_B starts at zero)
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.2)
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        both = pm(input_ids=ids).logits
        pm.base_model.set_adapter("round_1")
        only_new = pm(input_ids=ids).logits
    assert (both - only_new).abs().max() > 1e-3           # round 0 contributes to the forward pass
    merged = merge_rounds(pm)
    assert type(merged).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, both, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="first round must be 0"):
        add_round_adapter(_base(), 1, SETTINGS)
    with pytest.raises(ValueError, match="add round 1 next"):
        add_round_adapter(add_round_adapter(_base(), 0, SETTINGS), 2, SETTINGS)


def _train_round_1(lam: float, steps: int = 8) -> float:
    """Train round 1 on next-token loss of fixed random tokens (+ lam · penalty); return the final penalty."""
    pm = _two_rounds(seed=0)
    ids = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    pm.train()
    for _ in range(steps):
        loss = pm(input_ids=ids, labels=ids).loss + lam * round_orthogonality_penalty(pm)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(round_orthogonality_penalty(pm))


def test_penalty_makes_new_round_more_orthogonal():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = float(round_orthogonality_penalty(_two_rounds(seed=0)).detach())
        without, with_penalty = _train_round_1(0.0), _train_round_1(1.0)
    finally:
        torch.set_num_threads(n)
    print(f"|A_prev A_new^T|_1: start {start:.3f}, trained without penalty {without:.3f}, with {with_penalty:.3f}")
    assert with_penalty < 0.5 * without
    assert without > 0.8 * start   # the task loss alone does not make the rounds orthogonal
