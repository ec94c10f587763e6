"""FLOP counting of training steps against a hand computation, and the measured matmul peak."""
from __future__ import annotations

import pytest
import torch

from unlearnkit.models import tiny_llama
from unlearnkit.train.throughput import ThroughputCallback, linear_weights, matmul_peak_flops, throughput_callback


def _hand_n(vocab: int, hidden=64, layers=2, intermediate=128) -> int:
    """q, k, v, o (4 heads of 16, as many KV heads) + gate, up, down per layer, and the untied LM head."""
    return layers * (4 * hidden * hidden + 3 * hidden * intermediate) + vocab * hidden


class _Steps:
    """Drive a callback the way the Trainer does: train begin, then steps (begin, work, end), then a log."""

    def __init__(self, cb, model):
        self.cb, self.model = cb, model
        cb.on_train_begin(None, None, None, model=model)

    def step(self, work):
        self.cb.on_step_begin(None, None, None)
        work()
        self.cb.on_step_end(None, None, None)

    def log(self) -> dict:
        logs = {"loss": 1.0}
        self.cb.on_log(None, None, None, logs=logs)
        return logs


def test_flops_of_a_step_equal_the_hand_count(tiny_tokenizer):
    vocab = len(tiny_tokenizer)
    model = tiny_llama(vocab, hidden=64, layers=2, heads=4, intermediate=128, seed=0)
    n = _hand_n(vocab)
    assert linear_weights(model) == (n, n)
    ids = torch.randint(0, vocab, (3, 11))
    reference = tiny_llama(vocab, hidden=64, layers=2, heads=4, intermediate=128, seed=1).requires_grad_(False)
    cb = ThroughputCallback(reference_models=[reference, model])     # `model` twice: counted once

    def work():   # a trained forward + backward of 3×11 tokens, a reference forward of 2×11 without grad
        model(input_ids=ids).logits.sum().backward()
        with torch.no_grad():
            reference(input_ids=ids[:2])

    steps = _Steps(cb, model)
    steps.step(work)
    steps.step(work)
    logs = steps.log()
    per_step = 6 * n * 33 + 2 * n * 22
    totals = cb.totals()
    assert totals["flops"] == 2 * per_step and totals["steps_timed"] == 2
    assert logs["flops_per_s"] == pytest.approx(2 * per_step / totals["step_seconds"])
    assert logs["peak_share"] == pytest.approx(logs["flops_per_s"] / cb.peak)
    cb.on_train_end(None, None, None)
    steps.step(work)                                                  # hooks removed: nothing more counted
    assert cb.totals()["flops"] == 2 * per_step


def test_frozen_weights_skip_their_weight_gradient(tiny_tokenizer):
    """LoRA-like: with only the LM head trainable, the backward costs 2N + 2·N_head per token."""
    vocab = len(tiny_tokenizer)
    model = tiny_llama(vocab, hidden=64, layers=2, heads=4, intermediate=128, seed=0).requires_grad_(False)
    model.get_output_embeddings().requires_grad_(True)
    n, head = _hand_n(vocab), vocab * 64
    cb = ThroughputCallback()
    steps = _Steps(cb, model)
    steps.step(lambda: model(input_ids=torch.randint(0, vocab, (2, 5))).logits.sum().backward())
    assert cb.totals()["flops"] == (4 * n + 2 * head) * 10


def test_a_packed_label_head_step_counts_real_tokens_and_label_positions(tiny_tokenizer):
    """The fast path runs the blocks on the real tokens of a padded batch (packed) and the head on the label
    positions only: that, not the padded batch's positions, is what is counted."""
    from unlearnkit.label_logprobs import label_nll

    vocab = len(tiny_tokenizer)
    model = tiny_llama(vocab, hidden=64, layers=2, heads=4, intermediate=128, seed=0)
    head = vocab * 64
    ids = torch.randint(0, vocab, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 4:] = 0                                                   # 14 real tokens of 20 positions
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :2] = -100                                              # 8 + 2 label positions after the shift
    cb = ThroughputCallback()
    steps = _Steps(cb, model)
    steps.step(lambda: label_nll(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})[0].sum().backward())
    assert cb.totals()["flops"] == 6 * (_hand_n(vocab) - head) * 14 + 6 * head * 10


def test_peak_is_measured_once_at_the_runs_dtype():
    peak = matmul_peak_flops(torch.float32, n=128, budget_s=0.01)
    assert peak > 1e6
    assert matmul_peak_flops(torch.float32, n=128, budget_s=0.01) == peak      # cached in-process
    assert throughput_callback("bf16").dtype == torch.bfloat16
    assert throughput_callback("fp32").dtype == torch.float32


def test_rmu_counts_the_blocks_its_forwards_run(tiny_tokenizer):
    """RMU's forwards stop after block ℓ: blocks 0..ℓ are counted (the trained forget and retain forwards with
    their backward, the frozen reference's retain forward without), never the later blocks or the LM head."""
    from unlearnkit.objectives import FrozenModelReference, UnlearnBatch, build_objective

    vocab, hidden, intermediate, layer = len(tiny_tokenizer), 64, 128, 1
    model = tiny_llama(vocab, hidden=hidden, layers=4, heads=4, intermediate=intermediate, seed=0)
    reference = FrozenModelReference(
        tiny_llama(vocab, hidden=hidden, layers=4, heads=4, intermediate=intermediate, seed=1).requires_grad_(False))

    def rows(n, t):
        ids = torch.randint(0, vocab, (n, t))
        return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}

    batch = UnlearnBatch(forget=rows(3, 7), retain=rows(2, 9))
    objective = build_objective("rmu", {"layer": layer})
    cb = throughput_callback("fp32", reference)
    steps = _Steps(cb, model)
    steps.step(lambda: objective.loss(model, batch, reference)[0].backward())
    block = 4 * hidden * hidden + 3 * hidden * intermediate           # q, k, v, o + gate, up, down
    executed = (layer + 1) * block
    trained_tokens, reference_tokens = 3 * 7 + 2 * 9, 2 * 9
    assert cb.totals()["flops"] == 6 * executed * trained_tokens + 2 * executed * reference_tokens
    assert cb.totals()["flops"] < 6 * _hand_n(vocab, layers=4) * trained_tokens   # the old full-forward count
