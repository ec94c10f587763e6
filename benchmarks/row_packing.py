"""Unlearning step time with padded batches, packed rows (masked or per-row attention) and one shared pass.

Setup as `benchmarks/unlearn_step.py`: SmolLM2-135M-Instruct (`--tiny`: a from-scratch tiny Llama), TOFU forget01
rows (synthetic rows without local TOFU), fused AdamW, fp32. Each step is one objective's loss (`--method`,
default grad_diff) with the NLL retain term on as many TOFU retain90 rows, its backward and an optimiser step; the
reference of NPO is the cached one `unlearn` uses. Variants (`unlearnkit.packing`, `unlearnkit.label_logprobs`):

* padded: every batch runs padded (`row_packing(False)`);
* masked: each batch runs as one packed row, rows kept apart by a block-diagonal mask over the whole packed
  square (`per_row_attention(False)`, `shared_passes(False)`: the default until 2026-11-30);
* per-row: the same with each row's attention on its own slice (`shared_passes(False)`);
* default: per-row attention and the forget and retain batches in one decoder pass and one head.

The same model object trains under every variant, in turn step by step after a warm-up each, so load from
other processes hits all alike; the reported time is the median step. The losses before training are printed
side by side (they agree to float rounding).

    python benchmarks/row_packing.py [--tiny] [--method grad_diff] [--steps 6] [--batch 4]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from unlearn_step import objective_step_setup


def variants() -> dict:
    """name → a function returning the context manager that sets that variant's switches."""
    from unlearnkit.label_logprobs import shared_passes
    from unlearnkit.packing import per_row_attention, row_packing

    def settings(pack: bool, per_row: bool, share: bool):
        stack = contextlib.ExitStack()
        for switch in (row_packing(pack), per_row_attention(per_row), shared_passes(share)):
            stack.enter_context(switch)
        return stack

    return {"padded": lambda: settings(False, False, False), "masked": lambda: settings(True, False, False),
            "per-row": lambda: settings(True, True, False), "default": lambda: settings(True, True, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny from-scratch model instead of SmolLM2-135M")
    ap.add_argument("--method", default="grad_diff", choices=["grad_diff", "npo", "simnpo", "ga"])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    ap.add_argument("--batch", type=int, default=4, help="forget rows (and retain rows) per step")
    args = ap.parse_args()

    from unlearnkit.allocator import keep_freed_memory

    keep_freed_memory()                  # as the `unlearnkit` command does: no page faults on each step's tensors
    model, objective, batch, ref, source, name = objective_step_setup(args.tiny, args.method, args.batch)
    parts = [p for p in (batch.forget, batch.retain) if p is not None]
    real = sum(int(p["attention_mask"].sum()) for p in parts)
    cells = sum(p["attention_mask"].numel() for p in parts)
    print(f"model {name}, data {source}, {args.method}: {len(parts)} batch(es) of {args.batch} rows, {real} tokens "
          f"in {cells} padded positions ({1 - real / cells:.0%} padding), torch threads {torch.get_num_threads()}",
          flush=True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    settings = variants()

    def step(variant: str) -> float:
        t = time.perf_counter()
        with settings[variant]():
            loss, _ = objective.loss(model, batch, ref)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    with torch.no_grad():
        first = {}
        for variant in settings:
            with settings[variant]():
                first[variant] = float(objective.loss(model, batch, ref)[0])
    print("loss before training: " + ", ".join(f"{v} {x:.8f}" for v, x in first.items()))
    for variant in settings:   # warm-up
        step(variant)
    times = {v: [] for v in settings}
    for i in range(args.steps):
        for variant in settings:
            times[variant].append(step(variant))
        print(f"  round {i + 1}: " + ", ".join(f"{v} {t[-1]:.2f} s" for v, t in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.method} step, median: " + ", ".join(f"{v} {t:.3f} s" for v, t in med.items()))
    print("speed-up against padded: " + ", ".join(f"{v} {med['padded'] / t:.2f}x" for v, t in med.items()))
    print(f"default against masked (the previous default): {med['masked'] / med['default']:.2f}x")


if __name__ == "__main__":
    main()
