"""Where an unlearning step's time goes: torch.profiler over a few steps, grouped into matmuls, attention,
the optimiser and everything else (element-wise and memory-bound work).

Setup as `benchmarks/row_packing.py` (SmolLM2-135M or `--tiny`, TOFU forget01 + retain90 rows, batch 4 + 4,
fused AdamW, fp32, the cached reference for NPO). Prints each group's share of the steps' operator self time
and the top operators, so a speed shortfall can be read off: a step that is mostly matmul at a good share of
the machine's peak is compute-bound, and only less arithmetic makes it faster.

    python benchmarks/profile_step.py [--tiny] [--method grad_diff] [--steps 3]
"""
from __future__ import annotations

import argparse
import time

import torch

from unlearn_step import objective_step_setup

GROUPS = {  # operator name → group; first match wins, in this order
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul"),
    "attention": ("aten::_scaled_dot_product", "aten::scaled_dot_product"),
    "optimiser": ("aten::_fused_adamw", "aten::_foreach", "Optimizer."),
}


def group_of(name: str) -> str:
    return next((g for g, prefixes in GROUPS.items() if name.startswith(prefixes)), "other")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny from-scratch model instead of SmolLM2-135M")
    ap.add_argument("--method", default="grad_diff", choices=["grad_diff", "npo", "simnpo", "ga"])
    ap.add_argument("--steps", type=int, default=3, help="profiled steps (after one warm-up step)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from unlearnkit.allocator import keep_freed_memory

    keep_freed_memory()                  # as the `unlearnkit` command does: no page faults on each step's tensors
    model, objective, batch, ref, _, name = objective_step_setup(args.tiny, args.method, args.batch)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)

    def step() -> None:
        loss, _ = objective.loss(model, batch, ref)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    wall = (time.perf_counter() - t0) / args.steps
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    groups: dict[str, float] = {}
    for e in events:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total
    print(f"{name}, {args.method}, batch {args.batch} + {args.batch}, torch threads {torch.get_num_threads()}: "
          f"{wall:.2f} s per profiled step (the profiler adds its own overhead)")
    for g, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {g:10s} {t / total:6.1%} of operator self time")
    print("top operators by self time:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"  {e.key:45s} {e.self_cpu_time_total / total:6.1%}  calls {e.count}")


if __name__ == "__main__":
    main()
