"""The answer-positions-only loss equals the model's own causal-LM loss, value and gradients."""
from __future__ import annotations

import pytest
import torch

from unlearnkit.data import QADataset, pad_batch
from unlearnkit.label_logprobs import supports_label_head
from unlearnkit.train.answer_loss import answer_only_loss


def _batch(tok, people, fmt, n=5):
    ds = QADataset(people.records(kinds=("target", "related"))[:n], tok, fmt)
    return pad_batch([ds[i] for i in range(len(ds))], tok.pad_token_id)   # right padding, mixed lengths


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("num_items", [None, 37])
def test_same_loss_and_gradients_as_the_model(tiny_model, tiny_tokenizer, people, plain_format, num_items):
    torch.manual_seed(0)
    batch = _batch(tiny_tokenizer, people, plain_format)
    batch.pop("index", None)
    assert supports_label_head(tiny_model)
    kw = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    ref = tiny_model(**batch, **kw).loss
    ref.backward()
    g_ref = _grads(tiny_model)
    tiny_model.zero_grad(set_to_none=True)
    ours = answer_only_loss(tiny_model, batch, kw.get("num_items_in_batch"))
    ours.backward()
    g_ours = _grads(tiny_model)
    assert float(ours) == pytest.approx(float(ref), rel=1e-5, abs=1e-6)
    assert g_ours.keys() == g_ref.keys()
    for name in g_ref:
        torch.testing.assert_close(g_ours[name], g_ref[name], rtol=1e-4, atol=1e-6, msg=name)
    if num_items is None:  # a hand computation: mean over answer positions of -log softmax at the label
        logits = tiny_model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1].float()
        tgt = batch["labels"][:, 1:]
        keep = tgt != -100
        lp = torch.log_softmax(logits, -1)[keep].gather(-1, tgt[keep].unsqueeze(-1))
        assert float(ours) == pytest.approx(float(-lp.mean()), rel=1e-5)


def test_only_plain_heads_take_the_fast_path(tiny_model):
    assert supports_label_head(tiny_model)
    tiny_model.config.model_type = "gemma2"          # soft-capped logits: the model's own loss is used
    try:
        assert not supports_label_head(tiny_model)
    finally:
        tiny_model.config.model_type = "llama"
    assert not supports_label_head(torch.nn.Linear(2, 2))


def test_finetune_uses_it_under_the_trainers_precision(monkeypatch, tmp_path):
    """The fast path skips the accelerate-wrapped `forward`, so it must enter the Trainer's autocast itself."""
    import unlearnkit.train.finetune as ft

    seen = []

    def spy(model, inputs, num_items_in_batch=None):
        seen.append(torch.is_autocast_enabled("cpu"))
        return answer_only_loss(model, inputs, num_items_in_batch)

    monkeypatch.setattr(ft, "answer_only_loss", spy)
    for precision, expected in (("bf16", True), ("fp32", False)):
        seen.clear()
        ft.finetune(ft.FinetuneConfig(model="tiny", data="synthetic:train,people=3", run=str(tmp_path / precision),
                                      max_steps=1, tiny_hidden=32, tiny_layers=1, tiny_vocab=300, recall_max=-1,
                                      precision=precision, template="plain", logging_steps=1))
        assert seen == [expected], precision
