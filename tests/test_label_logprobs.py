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


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_padded_batch_runs_as_one_packed_row_with_the_padded_numbers(tiny_model, tiny_tokenizer, people,
                                                                       plain_format, side, monkeypatch):
    """Rows packed back to back (one decoder row, no attention mask, per-row position ids) give the padded pass's
    log-probs and gradients: no row attends to another."""
    import unlearnkit.label_logprobs as ll
    from unlearnkit.label_logprobs import packed_rows, row_packing

    monkeypatch.setattr(ll, "packing_pays", lambda *a: True)     # the tiny model's sizes alone would not pack
    batch = _batch(tiny_tokenizer, people, plain_format, side, n=6)
    packed = packed_rows(batch, tiny_model.config)
    assert packed is not None and packed["input_ids"].shape == (1, int(batch["attention_mask"].sum()))
    assert packed["position_ids"][0, 0] == 0 and int((packed["position_ids"][0] == 0).sum()) == 6
    with row_packing(False):
        assert packed_rows(batch, tiny_model.config) is None
        padded = answer_logprobs(tiny_model, batch)
        (padded.sum.sum() + padded.mean.mean()).backward()
    g_padded = _grads(tiny_model)
    tiny_model.zero_grad(set_to_none=True)
    decoder = tiny_model.get_decoder()
    shapes = []
    monkeypatch.setattr(decoder, "forward", lambda *a, _f=decoder.forward, **k: shapes.append(k["input_ids"].shape)
                        or _f(*a, **k))
    fast = answer_logprobs(tiny_model, batch)
    (fast.sum.sum() + fast.mean.mean()).backward()
    assert shapes == [packed["input_ids"].shape]
    assert torch.equal(fast.mask, padded.mask)
    torch.testing.assert_close(fast.token_logprobs, padded.token_logprobs, rtol=1e-5, atol=1e-6)
    # a packed row that leaked attention across rows would move later rows' log-probs far beyond rounding
    g_fast = _grads(tiny_model)
    for name in g_padded:
        torch.testing.assert_close(g_fast[name], g_padded[name], rtol=1e-4, atol=1e-6, msg=name)


def test_packing_pays_where_the_padding_saved_outweighs_longer_attention():
    """SmolLM2-135M's sizes, hand-counted multiply-adds per token: blocks' linear layers 30·(2·576² + 2·576·192
    + 3·576·1536) = 106,168,320; attention 2·576·30 = 34,560 per position of the row."""
    from types import SimpleNamespace

    from unlearnkit.label_logprobs import packing_pays

    smollm2 = SimpleNamespace(hidden_size=576, num_hidden_layers=30, intermediate_size=1536,
                              num_attention_heads=9, num_key_value_heads=3)
    linear, attention = 106_168_320, 34_560
    # a TOFU step's batch: 636 real tokens in 8 rows of 95 → 636·(L + 636·A) < 760·(L + 95·A): pack
    assert 636 * (linear + 636 * attention) < 760 * (linear + 95 * attention)
    assert packing_pays(smollm2, 636, 8, 95)
    # two 1024-token windows, a quarter padding: 1536·(L + 1536·A) = 2.45e11 < 2048·(L + 1024·A) = 2.90e11: pack ...
    assert 1536 * (linear + 1536 * attention) < 2048 * (linear + 1024 * attention)
    assert packing_pays(smollm2, 1536, 2, 1024)
    # ... but 8 rows of 512 with 10% padding do not: the packed row's attention costs more than the padding
    assert 3686 * (linear + 3686 * attention) > 4096 * (linear + 512 * attention)
    assert not packing_pays(smollm2, 3686, 8, 512)
    assert not packing_pays(SimpleNamespace(hidden_size=576), 636, 8, 95)          # sizes unknown: never packed


def test_packing_is_skipped_where_it_would_not_pay_or_not_be_exact(tiny_model, tiny_tokenizer, people, plain_format,
                                                                  monkeypatch):
    import unlearnkit.label_logprobs as ll
    from unlearnkit.label_logprobs import packed_rows

    batch = _batch(tiny_tokenizer, people, plain_format, n=6)
    config = tiny_model.config
    monkeypatch.setattr(ll, "packing_pays", lambda *a: False)
    assert packed_rows(batch, config) is None                                                 # does not pay
    monkeypatch.setattr(ll, "packing_pays", lambda *a: True)
    assert packed_rows(batch, config) is not None
    assert packed_rows(batch) is None                                                         # no model config
    assert packed_rows({**batch, "position_ids": batch["attention_mask"].cumsum(-1)}, config) is None  # caller's positions
    assert packed_rows({k: v[:1] for k, v in batch.items()}, config) is None                  # one row
    odd = {k: v.clone() for k, v in batch.items()}
    row = int(odd["attention_mask"].sum(-1).argmin())
    odd["labels"][row, -1] = 5                                                                # label after padding
    assert packed_rows(odd, config) is None
