"""`block_output` stops the forward after block ℓ: same activation and gradients as a full forward, less work."""
from __future__ import annotations

import torch

from unlearnkit.data import QADataset, pad_batch
from unlearnkit.logprobs import model_forward
from unlearnkit.objectives.reference import block_output, decoder_blocks


def _full_forward_capture(model, batch, layer):
    """open-unlearning's way: hook block ℓ, run the whole model."""
    got = []
    handle = decoder_blocks(model)[layer].register_forward_hook(lambda m, a, out: got.append(out[0] if isinstance(out, tuple) else out))
    model_forward(model, batch)
    handle.remove()
    return got[0]


def test_same_activation_and_gradients_without_the_later_blocks(tiny_model, tiny_tokenizer, people, plain_format):
    ds = QADataset(people.records(kinds=("target",))[:3], tiny_tokenizer, plain_format)
    batch = pad_batch([ds[i] for i in range(len(ds))], tiny_tokenizer.pad_token_id)
    later = []
    for module in (decoder_blocks(tiny_model)[1], tiny_model.get_output_embeddings()):
        module.register_forward_hook(lambda *a: later.append(1))
    fast = block_output(tiny_model, batch, layer=0)
    assert later == []                                   # block 1 and the LM head never ran
    fast.pow(2).mean().backward()
    g_fast = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
    tiny_model.zero_grad(set_to_none=True)
    full = _full_forward_capture(tiny_model, batch, 0)
    assert later == [1, 1]
    full.pow(2).mean().backward()
    g_full = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
    assert torch.equal(fast, full)
    assert g_fast.keys() == g_full.keys()
    for name in g_full:
        assert torch.equal(g_fast[name], g_full[name]), name
