"""The label-position LM head gives `sequence_logprobs`' numbers and gradients (whole runs: tests/train/test_label_head_runs.py)."""
from __future__ import annotations

import pytest
import torch

from unlearnkit.data import QADataset, pad_batch
from unlearnkit.label_logprobs import answer_logprobs, label_head, supports_label_head
from unlearnkit.logprobs import sequence_logprobs


def _batch(tok, people, fmt, side="right", n=5):
    ds = QADataset(people.records(kinds=("target", "related"))[:n], tok, fmt)
    return pad_batch([ds[i] for i in range(len(ds))], tok.pad_token_id, side)   # mixed lengths


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("side", ["right", "left"])
def test_same_logprobs_and_gradients_as_the_full_head(tiny_model, tiny_tokenizer, people, plain_format, side):
    batch = _batch(tiny_tokenizer, people, plain_format, side)
    assert supports_label_head(tiny_model)
    full = sequence_logprobs(tiny_model, batch)
    (full.sum.sum() + full.mean.mean()).backward()
    g_full = _grads(tiny_model)
    tiny_model.zero_grad(set_to_none=True)
    fast = answer_logprobs(tiny_model, batch)
    (fast.sum.sum() + fast.mean.mean()).backward()
    assert torch.equal(fast.mask, full.mask)
    assert fast.token_logprobs.shape == full.token_logprobs.shape
    assert bool((fast.token_logprobs[~fast.mask] == 0).all())
    torch.testing.assert_close(fast.token_logprobs, full.token_logprobs, rtol=1e-5, atol=1e-6)
    g_fast = _grads(tiny_model)
    assert g_fast.keys() == g_full.keys()
    for name in g_full:
        torch.testing.assert_close(g_fast[name], g_full[name], rtol=1e-4, atol=1e-6, msg=name)


def test_falls_back_where_the_head_is_not_plain_or_when_switched_off(tiny_model, tiny_tokenizer, people,
                                                                     plain_format, monkeypatch):
    import unlearnkit.label_logprobs as ll

    batch = _batch(tiny_tokenizer, people, plain_format)
    calls = []
    monkeypatch.setattr(ll, "label_nll", lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    with label_head(False):
        answer_logprobs(tiny_model, batch)
    tiny_model.config.final_logit_softcapping = 30.0      # soft-capped logits: the model's own forward is used
    answer_logprobs(tiny_model, batch)
    assert calls == []
    tiny_model.config.final_logit_softcapping = None
    with pytest.raises(AssertionError):                   # a plain Llama head: the label-position path runs
        answer_logprobs(tiny_model, batch)
    assert calls == [1]
    assert not supports_label_head(object())             # not a module (e.g. the G-effect's forward cache)
