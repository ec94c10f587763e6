"""Achieved FLOP/s of a training run, and its share of this machine's measured matmul peak.

"Is this fast?" has an answer only against what the hardware can do. `ThroughputCallback` counts the model
FLOPs of every optimizer step with the usual transformer convention (Kaplan et al. 2020; PaLM's MFU), per
token of every forward through the model (padding included: it is computed):

    forward 2·N,  backward 2·N (input gradients) + 2·N_trainable (weight gradients)
    → 6·N per trained token for full fine-tuning, ≈ 4·N with LoRA; a no-grad forward (a reference that is
      the model itself, e.g. LoRA adapters disabled, or a frozen copy passed as `reference_models`) 2·N

where N counts the weights of the linear layers (LM head included, tied or not; the embedding lookup and
the attention-score products are left out, as in 6·N·D). Tokens are counted by a hook on each model's input
embedding, so every forward an objective makes is seen (forget, retain, IdK, reference). Each part is counted
when it runs: every decoder block and the LM head through a pre-hook of its own (linear layers outside both,
if a model has any, with the embedding). RMU's forward stops after block ℓ (`reference.block_output`), so
its forwards count blocks 0..ℓ only: no later block and no head, which never run. The label-position head
(`label_logprobs`) and the answer window compute the head at some positions only; the count keeps every
position of a part that runs, as MFU does.

The peak is measured once per process (`matmul_peak_flops`): the best of a few square `torch.matmul`s at the
run's dtype and the current thread count. Each log record gains `flops_per_s` (over the steps since the
previous record; step time from `on_step_begin` to `on_step_end`: forward, backward and optimizer) and
`peak_share`; `totals()` gives the run's figures for its summary.
"""
from __future__ import annotations

import functools
import time

import torch
from transformers import TrainerCallback

from ..objectives.reference import decoder_blocks


@functools.lru_cache(maxsize=8)
def _peak(dtype: torch.dtype, threads: int, n: int, budget_s: float) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.matmul(a, b)                                          # warm-up (packing, thread pool)
    best, spent = float("inf"), 0.0
    while spent < budget_s or best == float("inf"):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return 2.0 * n ** 3 / best


def matmul_peak_flops(dtype: torch.dtype = torch.float32, n: int = 1024, budget_s: float = 0.3) -> float:
    """FLOP/s of the fastest of a few n×n `torch.matmul`s at `dtype` on this process's threads (cached)."""
    return _peak(dtype, torch.get_num_threads(), n, budget_s)


def linear_weights(model: torch.nn.Module) -> tuple[int, int]:
    """(N, N_trainable): elements of the weights of every `nn.Linear` in `model` (each tensor once)."""
    seen, total, trainable = set(), 0, 0
    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and w is not None and id(w) not in seen:
            seen.add(id(w))
            total += w.numel()
            trainable += w.numel() if w.requires_grad else 0
    return total, trainable


def forward_flops(n: int, n_trainable: int, tokens: int, grad: bool) -> int:
    """Model FLOPs of `tokens` tokens through a model with N linear weights: 2N forward, + 2N + 2N_trainable
    backward when the forward builds a graph."""
    per_token = 2 * n + ((2 * n + 2 * n_trainable) if grad else 0)
    return per_token * tokens


def _counted_parts(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The parts counted only when they run: the decoder blocks (none found: the whole model is counted at
    the embedding, as one part) and the LM head."""
    try:
        parts = list(decoder_blocks(model))
    except ValueError:
        return []
    head = model.get_output_embeddings()
    return parts + ([head] if isinstance(head, torch.nn.Module) else [])


class _TokenCounter:
    """Counts the FLOPs of every forward of one model: the input embedding's pre-hook notes the forward's
    tokens (and counts any linear layers outside the blocks and the head); each block's pre-hook counts that
    part's weights for those tokens and the head's for the positions it is given, so a forward that stops early
    or reads the head at label positions only counts what ran."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.flops, self.handles, self.tokens = model, 0, [], 0

    def attach(self) -> None:
        """Count from now on (the weights are counted here: after LoRA and freezing, before training)."""
        parts = _counted_parts(self.model)
        total, counted = linear_weights(self.model), [linear_weights(p) for p in parts]
        rest = (total[0] - sum(n for n, _ in counted), total[1] - sum(t for _, t in counted))
        embed = self.model.get_input_embeddings()
        self.handles = [embed.register_forward_pre_hook(functools.partial(self._start, rest))]
        head = self.model.get_output_embeddings()
        self.handles += [p.register_forward_pre_hook(functools.partial(self._count_rows if p is head else self._count, w))
                         for p, w in zip(parts, counted)]

    def _start(self, weights, _module, args):
        self.tokens = int(args[0].numel())
        self._count(weights, _module, args)

    def _count(self, weights, _module, _args):
        self.flops += forward_flops(*weights, self.tokens, torch.is_grad_enabled())

    def _count_rows(self, weights, _module, args):
        """The head: the positions it is given (the label positions only, on the fast path), not the forward's."""
        rows = args[0].numel() // max(args[0].shape[-1], 1)
        self.flops += forward_flops(*weights, rows, torch.is_grad_enabled())

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


class ThroughputCallback(TrainerCallback):
    """Adds `flops_per_s` and `peak_share` (of `matmul_peak_flops` at `dtype`) to each Trainer log record."""

    def __init__(self, dtype: torch.dtype = torch.float32, reference_models=()):
        self.dtype, self.reference_models = dtype, [m for m in reference_models if m is not None]
        self.counters: list[_TokenCounter] = []
        self.peak = None
        self._t0 = None
        self._window = [0, 0.0]           # flops, seconds since the last log record
        self._total = [0, 0.0, 0]         # flops, seconds, steps
        self.step_seconds: list[float] = []

    def _flops_now(self) -> int:
        return sum(c.flops for c in self.counters)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.peak = matmul_peak_flops(self.dtype)
        models, embeddings = [], set()
        for m in [model, *self.reference_models]:   # one counter per embedding: LoRA's reference is the model
            if m is not None and id(m.get_input_embeddings()) not in embeddings:
                embeddings.add(id(m.get_input_embeddings()))
                models.append(m)
        self.counters = [_TokenCounter(m) for m in models]
        for c in self.counters:
            c.attach()

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0, self._f0 = time.perf_counter(), self._flops_now()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is None:
            return
        dt, df = time.perf_counter() - self._t0, self._flops_now() - self._f0
        self._window[0] += df
        self._window[1] += dt
        self._total = [self._total[0] + df, self._total[1] + dt, self._total[2] + 1]
        self.step_seconds.append(dt)
        self._t0 = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        flops, seconds = self._window
        if logs is None or seconds <= 0:
            return
        logs["flops_per_s"] = flops / seconds
        logs["peak_share"] = flops / seconds / self.peak if self.peak else None
        self._window = [0, 0.0]

    def on_train_end(self, args, state, control, **kwargs):
        for c in self.counters:
            c.detach()

    def totals(self) -> dict:
        """The run's model FLOPs, step seconds, FLOP/s, the peak and the share (for the run summary)."""
        flops, seconds, steps = self._total
        rate = flops / seconds if seconds > 0 else None
        return {"flops": flops, "step_seconds": seconds, "steps_timed": steps, "flops_per_s": rate,
                "matmul_peak_flops_per_s": self.peak, "dtype": str(self.dtype).replace("torch.", ""),
                "threads": torch.get_num_threads(), "step_s": [round(t, 4) for t in self.step_seconds],
                "peak_share": rate / self.peak if rate is not None and self.peak else None}


def throughput_callback(precision: str, reference=None) -> ThroughputCallback:
    """The callback for a run at `precision` ('fp32' | 'bf16', resolved); `reference`: an objective's reference
    provider, whose model (a frozen copy, or the trained model with adapters disabled) is counted too."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    fallback = getattr(reference, "fallback", reference)
    model = getattr(fallback, "model", None)
    return ThroughputCallback(dtype, reference_models=[model] if isinstance(model, torch.nn.Module) else [])
