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


def _count_decoder_calls(model, monkeypatch) -> list:
    decoder = model.get_decoder()
    shapes = []
    monkeypatch.setattr(decoder, "forward", lambda *a, _f=decoder.forward, **k: shapes.append(k["input_ids"].shape)
                        or _f(*a, **k))
    return shapes


@pytest.mark.parametrize("kind", ["segments", "mask"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_a_padded_batch_runs_as_one_packed_row_with_the_padded_numbers(tiny_model, tiny_tokenizer, people,
                                                                       plain_format, side, kind, monkeypatch):
    """Rows packed back to back (one decoder row, per-row position ids) give the padded pass's log-probs and
    gradients, whether rows are kept apart by attention per row (sdpa) or by a block-diagonal mask."""
    import unlearnkit.packing as rp

    monkeypatch.setattr(rp, "packing_pays", lambda *a, **k: True)     # the tiny model's sizes alone would not pack
    monkeypatch.setattr(rp, "attention_kind", lambda model: kind)
    batch = _batch(tiny_tokenizer, people, plain_format, side, n=6)
    with rp.row_packing(False):
        assert rp.packed_hidden(tiny_model, [batch]) is None
        padded = answer_logprobs(tiny_model, batch)
        (padded.sum.sum() + padded.mean.mean()).backward()
    g_padded = _grads(tiny_model)
    tiny_model.zero_grad(set_to_none=True)
    shapes = _count_decoder_calls(tiny_model, monkeypatch)
    fast = answer_logprobs(tiny_model, batch)
    (fast.sum.sum() + fast.mean.mean()).backward()
    assert shapes == [(1, int(batch["attention_mask"].sum()))]
    assert torch.equal(fast.mask, padded.mask)
    torch.testing.assert_close(fast.token_logprobs, padded.token_logprobs, rtol=1e-5, atol=1e-6)
    # a packed row that leaked attention across rows would move later rows' log-probs far beyond rounding
    g_fast = _grads(tiny_model)
    for name in g_padded:
        torch.testing.assert_close(g_fast[name], g_padded[name], rtol=1e-4, atol=1e-6, msg=name)


def test_rows_kept_apart_per_row_leak_nothing_when_the_split_is_wrong(tiny_model, tiny_tokenizer, people,
                                                                       plain_format, monkeypatch):
    """The per-row attention really is what keeps rows apart: attention over the packed row as one causal
    sequence (what a missing split would do) moves the later rows' log-probs."""
    import unlearnkit.packing as rp

    from transformers import AttentionInterface

    monkeypatch.setattr(rp, "packing_pays", lambda *a, **k: True)
    monkeypatch.setattr(rp, "attention_kind", lambda model: "segments")
    batch = _batch(tiny_tokenizer, people, plain_format, n=6)
    padded = sequence_logprobs(tiny_model, batch)
    with torch.no_grad():
        right = answer_logprobs(tiny_model, batch)
        n = int(batch["attention_mask"].sum())
        real = AttentionInterface._global_mapping[rp.SEGMENT_ATTENTION]
        monkeypatch.setitem(AttentionInterface._global_mapping, rp.SEGMENT_ATTENTION,
                            lambda *a, packed_lengths=None, **k: real(*a, packed_lengths=(n,), **k))
        leaked = answer_logprobs(tiny_model, batch)
    torch.testing.assert_close(right.token_logprobs, padded.token_logprobs, rtol=1e-5, atol=1e-6)
    assert float((leaked.token_logprobs - padded.token_logprobs).abs().max()) > 1e-2     # rows 2..6 saw rows before


@pytest.mark.parametrize("kind", ["segments", "mask"])
def test_batches_in_one_pass_get_their_own_numbers_from_one_decoder_call(tiny_model, tiny_tokenizer, people,
                                                                          plain_format, kind, monkeypatch):
    """`one_pass`: two batches (different widths, one left-padded) scored from one decoder call and one head give
    each batch's own log-probs and the summed gradients of two separate passes; computed only when asked."""
    import unlearnkit.packing as rp
    from unlearnkit.label_logprobs import one_pass

    a = _batch(tiny_tokenizer, people, plain_format, "right", n=5)
    ds = QADataset(people.records(kinds=("target", "related"))[5:8], tiny_tokenizer, plain_format)
    b = pad_batch([ds[i] for i in range(len(ds))], tiny_tokenizer.pad_token_id, "left")
    with rp.row_packing(False):
        sep_a, sep_b = answer_logprobs(tiny_model, a), answer_logprobs(tiny_model, b)
        (sep_a.sum.sum() + 2 * sep_b.mean.sum()).backward()
    g_sep = _grads(tiny_model)
    tiny_model.zero_grad(set_to_none=True)
    monkeypatch.setattr(rp, "packing_pays", lambda *a, **k: True)
    monkeypatch.setattr(rp, "attention_kind", lambda model: kind)
    shapes = _count_decoder_calls(tiny_model, monkeypatch)
    with one_pass(tiny_model, [a, None, b]):
        assert shapes == []                                        # nothing is computed before it is asked for
        one_a = answer_logprobs(tiny_model, a)
        one_b = answer_logprobs(tiny_model, b)
        with torch.no_grad():                                      # another grad mode: its own pass
            answer_logprobs(tiny_model, b)
    (one_a.sum.sum() + 2 * one_b.mean.sum()).backward()
    n_real = int(a["attention_mask"].sum() + b["attention_mask"].sum())
    assert shapes == [(1, n_real), (1, int(b["attention_mask"].sum()))]
    for sep, one in ((sep_a, one_a), (sep_b, one_b)):
        assert torch.equal(sep.mask, one.mask)
        torch.testing.assert_close(one.token_logprobs, sep.token_logprobs, rtol=1e-5, atol=1e-6)
    g_one = _grads(tiny_model)
    for name in g_sep:
        torch.testing.assert_close(g_one[name], g_sep[name], rtol=1e-4, atol=1e-6, msg=name)
    with one_pass(tiny_model, [a]):                                # one batch: nothing to share
        answer_logprobs(tiny_model, a)
    assert len(shapes) == 3


def test_packing_pays_where_the_padding_saved_outweighs_the_attention():
    """SmolLM2-135M's sizes, hand-counted multiply-adds per token: blocks' linear layers 30·(2·576² + 2·576·192
    + 3·576·1536) = 106,168,320; attention 2·576·30 = 34,560 per (query, key) pair."""
    from types import SimpleNamespace

    from unlearnkit.packing import packing_pays

    smollm2 = SimpleNamespace(hidden_size=576, num_hidden_layers=30, intermediate_size=1536,
                              num_attention_heads=9, num_key_value_heads=3)
    linear, attention = 106_168_320, 34_560
    # a TOFU batch: rows of 70, 80, 85, 95 real tokens padded to 95
    rows, width = [70, 80, 85, 95], 95
    padded = 4 * 95 * (linear + 95 * attention)
    per_row = 330 * linear + attention * (70**2 + 80**2 + 85**2 + 95**2)
    square = 330 * linear + attention * 330**2
    assert per_row < square < padded
    assert packing_pays(smollm2, rows, [width] * 4, segmented=True)
    assert packing_pays(smollm2, rows, [width] * 4, segmented=False)
    # 8 rows of 512 with 10% padding: per-row attention packs them, one masked square would not pay
    rows = [461] * 8
    assert 3688 * linear + attention * 8 * 461**2 < 8 * 512 * (linear + 512 * attention) < \
        3688 * linear + attention * 3688**2
    assert packing_pays(smollm2, rows, [512] * 8, segmented=True)
    assert not packing_pays(smollm2, rows, [512] * 8, segmented=False)
    assert not packing_pays(smollm2, [95, 95], [95, 95], segmented=True)                 # no padding: no gain
    assert not packing_pays(SimpleNamespace(hidden_size=576), [70, 95], [95, 95], True)   # sizes unknown: never


def test_packing_is_skipped_where_it_would_not_pay_or_not_be_exact(tiny_model, tiny_tokenizer, people, plain_format,
                                                                  monkeypatch):
    import unlearnkit.packing as rp

    batch = _batch(tiny_tokenizer, people, plain_format, n=6)
    monkeypatch.setattr(rp, "packing_pays", lambda *a, **k: False)
    assert rp.packed_hidden(tiny_model, [batch]) is None                                      # does not pay
    monkeypatch.setattr(rp, "packing_pays", lambda *a, **k: True)
    assert rp.packed_hidden(tiny_model, [batch]) is not None
    assert rp.packable({**batch, "position_ids": batch["attention_mask"].cumsum(-1)}) is None   # caller's positions
    assert rp.packable({k: v for k, v in batch.items() if k != "attention_mask"}) is None       # no mask
    odd = {k: v.clone() for k, v in batch.items()}
    row = int(odd["attention_mask"].sum(-1).argmin())
    odd["labels"][row, -1] = 5                                                                # label after padding
    assert rp.packable(odd) is None
    assert rp.packed_hidden(tiny_model, [batch, odd]) is None                                  # one unfit: none packed


def test_per_row_attention_only_for_sdpa_on_cpu_without_activation_checkpointing(tiny_model):
    """Checkpointed layers recompute after the packed call has switched the implementation back, so they keep
    the block-diagonal mask, as do models on an accelerator; flash attention reads packed position ids itself."""
    from unlearnkit.packing import SEGMENT_ATTENTION, attention_kind, segment_attention

    assert tiny_model.config._attn_implementation == "eager" and attention_kind(tiny_model) == "mask"
    tiny_model.config._attn_implementation = "sdpa"
    assert attention_kind(tiny_model) == "segments"
    tiny_model.config._attn_implementation = "flash_attention_2"
    assert attention_kind(tiny_model) == "varlen"
    tiny_model.config._attn_implementation = "sdpa"
    tiny_model.gradient_checkpointing_enable()
    assert attention_kind(tiny_model) == "mask"
    tiny_model.gradient_checkpointing_disable()
    assert attention_kind(tiny_model) == "segments"
    tiny_model.to("meta")                                          # not on CPU (as on an accelerator): the mask
    assert attention_kind(tiny_model) == "mask"
    with pytest.raises(RuntimeError, match=SEGMENT_ATTENTION):
        q = torch.zeros(1, 2, 3, 4)
        segment_attention(None, q, q, q, None)


def test_per_row_attention_keeps_a_sliding_window(tiny_tokenizer, people, plain_format, monkeypatch):
    """A Mistral whose window (4) is shorter than its rows: packed rows with per-row attention give the padded
    pass's log-probs, which differ from full causal attention's (so the window really is applied)."""
    from transformers import MistralConfig, MistralForCausalLM

    import unlearnkit.packing as rp

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=4,
                           pad_token_id=tiny_tokenizer.pad_token_id, attn_implementation="sdpa")
    model = MistralForCausalLM(config).eval()
    batch = _batch(tiny_tokenizer, people, plain_format, n=4)
    assert int(batch["attention_mask"].sum(-1).min()) > 4
    with rp.row_packing(False):
        padded = answer_logprobs(model, batch)
    monkeypatch.setattr(rp, "packing_pays", lambda *a, **k: True)
    assert rp.attention_kind(model) == "segments"
    packed = answer_logprobs(model, batch)
    torch.testing.assert_close(packed.token_logprobs, padded.token_logprobs, rtol=1e-5, atol=1e-6)
    model.config.sliding_window = None
    with rp.row_packing(False):
        full = answer_logprobs(model, batch)
    assert float((full.token_logprobs - padded.token_logprobs).abs().max()) > 1e-3


def test_sliding_causal_mask_by_hand():
    from unlearnkit.packing import sliding_causal_mask

    want = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(sliding_causal_mask(4, 2)[0, 0], want)
