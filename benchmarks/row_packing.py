"""GradDiff / NPO step time with padded batches packed into one decoder row vs the padded batch, in one process.

Setup as `benchmarks/unlearn_step.py`: SmolLM2-135M-Instruct (`--tiny`: a from-scratch tiny Llama), TOFU forget01
rows (synthetic rows without local TOFU), fused AdamW, fp32. Each step is one objective's loss (`--method`,
default grad_diff) with the NLL retain term on as many TOFU retain90 rows), its backward and an optimiser step; the
reference of NPO is the cached one `unlearn` uses. The same model object trains under both settings,
alternating step by step after a warm-up each, so load from other processes hits both alike; the reported
time is the median step. The loss of the two settings before training is printed side by side (they agree to
float rounding).

    python benchmarks/row_packing.py [--tiny] [--method grad_diff] [--steps 6] [--batch 4]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from unlearn_step import objective_step_setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny from-scratch model instead of SmolLM2-135M")
    ap.add_argument("--method", default="grad_diff", choices=["grad_diff", "npo", "simnpo", "ga"])
    ap.add_argument("--steps", type=int, default=6, help="timed steps per setting")
    ap.add_argument("--batch", type=int, default=4, help="forget rows (and retain rows) per step")
    args = ap.parse_args()

    from unlearnkit.label_logprobs import row_packing

    model, objective, batch, ref, source, name = objective_step_setup(args.tiny, args.method, args.batch)
    parts = [p for p in (batch.forget, batch.retain) if p is not None]
    real = sum(int(p["attention_mask"].sum()) for p in parts)
    cells = sum(p["attention_mask"].numel() for p in parts)
    print(f"model {name}, data {source}, {args.method}: {len(parts)} batch(es) of {args.batch} rows, {real} tokens "
          f"in {cells} padded positions ({1 - real / cells:.0%} padding), torch threads {torch.get_num_threads()}",
          flush=True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)

    def step(pack: bool) -> float:
        t = time.perf_counter()
        with row_packing(pack):
            loss, _ = objective.loss(model, batch, ref)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    with torch.no_grad():
        first = {}
        for pack in (False, True):
            with row_packing(pack):
                first[pack] = float(objective.loss(model, batch, ref)[0])
    print(f"loss before training: padded {first[False]:.8f}, packed {first[True]:.8f}")
    for pack in (False, True):   # warm-up
        step(pack)
    times = {False: [], True: []}
    for i in range(args.steps):
        for pack in (False, True):
            times[pack].append(step(pack))
        print(f"  round {i + 1}: padded {times[False][-1]:.2f} s, packed {times[True][-1]:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.method} step: padded median {med[False]:.3f} s, packed {med[True]:.3f} s, "
          f"speed-up {med[False] / med[True]:.2f}x")


if __name__ == "__main__":
    main()
