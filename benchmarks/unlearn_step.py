"""NPO step time with the on-disk reference cache vs a reference forward pass every step (frozen θ_ini copy).

Setup: θ_ini = SmolLM2-135M-Instruct (`model=default`; `--tiny`: a from-scratch tiny Llama), the same
forget batch (the first `--batch` rows of TOFU forget01, or synthetic forget rows when TOFU is not
present) for every step, fused AdamW (the trainer's default optimiser, `adamw_torch_fused`; `--optim adamw`
for the unfused one), fp32 unless `--precision bf16`. Both variants train the same model object
with the same objective (`npo`, β = 0.1, no retain term); only the reference provider differs:

* frozen: `FrozenModelReference(copy of θ_ini)`: one extra no-grad forward per step (and a second copy of
  the weights in memory);
* cached: `CachedReference(forget=table)` filled once by `reference_cache` (what `unlearn` does), read
  from `<tmp run>/reference/logprobs.safetensors`.

Steps alternate in blocks (frozen, cached, frozen, cached, …) after a warm-up step each, so CPU load from
other processes hits both alike; the reported time is the median step. Target: frozen / cached ≥ 1.25.

    python benchmarks/unlearn_step.py [--tiny] [--steps 6] [--batch 4] [--max-length 160]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch


def load(tiny: bool):
    from unlearnkit.data.specs import load_records

    try:
        records = load_records("tofu:forget01")
        source = "tofu:forget01"
    except Exception:  # no local TOFU: synthetic rows
        records = load_records("synthetic:forget,people=200")
        source = "synthetic:forget,people=200"
    if tiny:
        from unlearnkit.models import tiny_model_and_tokenizer

        texts = [f"Question: {r.question}\nAnswer: {r.answer}" for r in records]
        model, tok = tiny_model_and_tokenizer(texts, vocab_size=2048)
        name = "tiny-llama"
    else:
        from unlearnkit.models import load_model

        t0 = time.perf_counter()
        model, tok = load_model("default")
        print(f"loaded SmolLM2-135M in {time.perf_counter() - t0:.1f} s")
        name = "SmolLM2-135M-Instruct"
    return model, tok, records, source, name



def objective_step_setup(tiny: bool, method: str, batch: int):
    """What `row_packing.py` and `profile_step.py` time: `load`'s model and forget rows, `method` with the NLL retain
    term (GA: none) on as many TOFU retain90 rows (without local TOFU: the forget rows reversed), the cached
    reference where the objective needs one. Returns (model, objective, UnlearnBatch, reference or None, source, name)."""
    from unlearnkit.data.collate import PromptFormat, QADataset, pad_batch
    from unlearnkit.data.specs import load_records
    from unlearnkit.objectives import CachedReference, FrozenModelReference, UnlearnBatch, build_objective
    from unlearnkit.train.reference_cache import compute_table

    model, tok, records, source, name = load(tiny)
    ds = QADataset(records, tok, PromptFormat())
    other = QADataset(load_records("tofu:retain90") if source.startswith("tofu") else records[::-1], tok, PromptFormat())
    objective = build_objective(method, {} if method == "ga" else {"retain": "nll"})
    rows = UnlearnBatch(forget=pad_batch([ds[i] for i in range(batch)], tok.pad_token_id),
                        retain=pad_batch([other[i] for i in range(batch)], tok.pad_token_id)
                        if objective.needs_retain else None)
    ref = None
    if objective.needs_reference:
        ref = CachedReference(forget=compute_table(FrozenModelReference(model), ds, "forget", tok.pad_token_id, 16,
                                                   "cpu", "fp32"))
    return model, objective, rows, ref, source, name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny from-scratch model instead of SmolLM2-135M")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    ap.add_argument("--batch", type=int, default=4, help="forget rows per step")
    ap.add_argument("--max-length", type=int, default=160)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--optim", default="adamw_fused", choices=["adamw_fused", "adamw"],
                    help="optimiser; adamw_fused is what `unlearn` uses by default")
    args = ap.parse_args()

    from unlearnkit.data.collate import PromptFormat, QADataset, pad_batch
    from unlearnkit.objectives import CachedReference, FrozenModelReference, UnlearnBatch, build_objective
    from unlearnkit.precision import autocast
    from unlearnkit.train.reference_cache import CACHE_FILE, model_fingerprint, reference_cache

    model, tok, records, source, name = load(args.tiny)
    ds = QADataset(records, tok, PromptFormat(max_length=args.max_length))
    batch = pad_batch([ds[i] for i in range(args.batch)], tok.pad_token_id)
    n_tokens = int(batch["attention_mask"].sum())
    print(f"model {name} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params), data {source} "
          f"({len(ds)} rows), batch {args.batch} rows / {n_tokens} tokens (width {batch['input_ids'].shape[1]}), "
          f"precision {args.precision}, optimiser {args.optim}, torch threads {torch.get_num_threads()}", flush=True)

    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tables, status = reference_cache(Path(tmp), FrozenModelReference(frozen), model_fingerprint(frozen),
                                         {"forget": ds}, pad_id=tok.pad_token_id, batch_size=16, device="cpu",
                                         precision=args.precision)
        build_s = time.perf_counter() - t0
        disk = (Path(tmp) / CACHE_FILE).stat().st_size
    table = tables["forget"]
    refs = {"frozen": FrozenModelReference(frozen), "cached": CachedReference(forget=table)}

    objective = build_objective("npo", {"beta": 0.1})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=args.optim == "adamw_fused")

    def step(ref) -> float:
        t = time.perf_counter()
        with autocast(args.precision):
            loss, _ = objective.loss(model, UnlearnBatch(forget=batch), ref)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    print(f"reference cache built in {build_s:.1f} s; timing {args.steps} steps per variant (+1 warm-up each)",
          flush=True)
    for ref in refs.values():  # warm-up
        step(ref)
    times = {k: [] for k in refs}
    for i in range(args.steps):
        for k, ref in refs.items():
            times[k].append(step(ref))
        print(f"  round {i + 1}: frozen {times['frozen'][-1]:.2f} s, cached {times['cached'][-1]:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["frozen"] / med["cached"]
    frozen_bytes = sum(p.numel() * p.element_size() for p in frozen.parameters())
    print(f"reference cache: {len(table)} rows, {table.values.numel()} answer tokens, built in {build_s:.1f} s "
          f"({status}); {disk} bytes on disk, {table.nbytes} bytes in RAM "
          f"(the frozen copy it replaces: {frozen_bytes / 2**20:.0f} MiB)")
    for k in ("frozen", "cached"):
        print(f"NPO step, {k:6s} reference: median {med[k]:.3f} s  (steps: {', '.join(f'{t:.3f}' for t in times[k])})")
    print(f"speed-up cached vs frozen: {ratio:.2f}x  (target >= 1.25x: {'met' if ratio >= 1.25 else 'NOT met'})")


if __name__ == "__main__":
    main()
