"""G-effect speed: our path vs the authors' scheme implemented naively, same model, data and process.

    python benchmarks/geffect.py [--model default|tiny] [--method npo] [--n 8] [--checkpoints 3]

Ours (`compute_geffect`): one forward pass of the forget batch serves L_u and R(D_u) (two backward passes),
one retain forward, dot products per parameter on the device with risk gradients freed as they land, and
the reference's forget log-probs computed once for all checkpoints (`CachedReference`, as `geffect_run` does).

Naive (tmlr-group/G-effect `dataloader_ge.py` `compute_loss`, methods.md B.3): per batch, three separate
forward/backward passes (NLL on forget, the objective on forget — running the reference model each time — and
NLL on retain), each gradient flattened per parameter, copied to the host and EMA-smoothed there, dotted there;
then the forward + backward of `outputs.loss * 0` that the HF Trainer runs as its (lr 0) training step. Each
checkpoint starts with empty gradient dicts (their script is one process per checkpoint), so with one batch the
EMA is a plain store and both paths must give the same numbers.

Both run on the same model object with the same "checkpoints" (θ_ini plus small random perturbations, loaded in
place), alternating, after one warm-up call each; the script prints per-checkpoint times, the ratio and the
largest relative difference of the two results.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from unlearnkit.data import PromptFormat, QADataset
from unlearnkit.data.specs import load_records
from unlearnkit.geffect import compute_geffect, make_slices, nll_risk, parameter_groups
from unlearnkit.objectives import (CachedReference, FrozenModelReference, UnlearnBatch, build_objective,
                                   precompute_token_logprobs)


class NaiveState:
    """The authors' module-level gradient dicts (objective / unlearn / retain), EMA-smoothed across calls."""

    def __init__(self):
        self.objective: dict = {}
        self.unlearn: dict = {}
        self.retain: dict = {}


def naive_geffect(model, objective, forget, retain, ref_model, groups, state: NaiveState):
    """One `compute_loss` call of the authors' scheme (`dataloader_ge.py`).

    1. forward the forget batch, backward its NLL, copy every gradient to the host (`.view(-1).cpu()`) and
       EMA it there (0.6·old + 0.4·new), zero the grads; 2. forward again for the objective (running the
       reference model each time), backward, same bookkeeping; 3. forward + backward the retain NLL, same;
    4. dot the host copies per parameter and sum per group; 5. forward the forget batch once more and
       return `outputs.loss * 0`, which the HF Trainer back-propagates as its training step (SGD, lr 0;
    the optimizer step itself is left out here, in the naive path's favour).
    """
    ref = FrozenModelReference(ref_model) if objective.needs_reference else None
    named = [(n, g, p) for n, g, p in groups.parameters(model)]

    def to_host(loss, store: dict):
        model.zero_grad(set_to_none=True)
        loss.backward()
        for name, _, p in named:
            cur = p.grad.view(-1).cpu() if p.grad is not None else torch.zeros(p.numel())
            store[name] = cur if name not in store else 0.6 * store[name] + 0.4 * cur
        model.zero_grad(set_to_none=True)

    to_host(nll_risk(model, forget)[0], state.unlearn)
    loss, _ = objective.loss(model, UnlearnBatch(forget=forget), ref)
    to_host(loss, state.objective)
    to_host(nll_risk(model, retain)[0], state.retain)
    e_u = dict.fromkeys(groups.names, 0.0)
    e_r = dict.fromkeys(groups.names, 0.0)
    for name, g, _ in named:
        o = state.objective[name]
        e_u[g] += float((o * state.unlearn[name]).sum())
        e_r[g] += float((o * state.retain[name]).sum())
    e_u["total"], e_r["total"] = sum(e_u.values()), sum(e_r.values())
    (nll_risk(model, forget)[0] * 0).backward()   # the Trainer's own step on `loss * 0`
    model.zero_grad(set_to_none=True)
    return e_u, e_r


def load(model_name: str):
    if model_name == "tiny":
        from unlearnkit.models import tiny_model_and_tokenizer

        texts = [f"Question: {r.question}\nAnswer: {r.answer}" for r in load_records("synthetic:train,people=20")]
        model, tok = tiny_model_and_tokenizer(texts, vocab_size=2048)
        return model, tok, "tiny Llama (from scratch)"
    from unlearnkit.models.loading import load_model

    model, tok = load_model(model_name)
    return model, tok, f"{model_name} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters)"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--method", default="npo")
    ap.add_argument("--n", type=int, default=8, help="forget and retain rows (one batch each)")
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        model, tok, desc = load(args.model)
    except Exception as exc:  # the default model needs the offline package; say so and fall back
        print(f"could not load {args.model!r} ({exc}); falling back to the tiny model")
        model, tok, desc = load("tiny")
    model.eval()
    ref_model = copy.deepcopy(model).eval()
    fmt = PromptFormat(max_length=128)
    f = QADataset(load_records("synthetic:forget,people=40,forget_fraction=0.2")[: args.n], tok, fmt)
    r = QADataset(load_records("synthetic:retain,people=40,forget_fraction=0.2")[: args.n], tok, fmt)
    slices = make_slices([f[i] for i in range(len(f))], [r[i] for i in range(len(r))], tok.pad_token_id)
    fb, rb = slices.forget[0], slices.retain[0]
    objective = build_objective(args.method, {"beta": 0.5} if args.method in ("npo", "wga") else {})
    groups = parameter_groups(model, 3)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    ckpts = []
    for _ in range(args.checkpoints):
        ckpts.append({k: v + 1e-3 * v.abs().mean() * torch.randn_like(v) if v.is_floating_point() else v
                      for k, v in base.items()})

    t = time.perf_counter()
    ref = None
    if objective.needs_reference:
        frozen = FrozenModelReference(ref_model)
        ref = CachedReference(forget=precompute_token_logprobs(frozen, slices.forget), fallback=frozen)
    t_cache = time.perf_counter() - t

    ours_t, naive_t, worst = [], [], 0.0
    print(f"model: {desc}; method {args.method}; {args.n} forget + {args.n} retain rows "
          f"({fb['input_ids'].shape[1]} / {rb['input_ids'].shape[1]} tokens wide); {torch.get_num_threads()} threads")
    for i, sd in enumerate([ckpts[0]] + ckpts):  # the first is a warm-up for both
        model.load_state_dict(sd)
        t = time.perf_counter()
        ours = compute_geffect(model, objective, slices, ref, groups=groups)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        nu, nr = naive_geffect(model, objective, fb, rb, ref_model, groups, NaiveState())
        t_naive = time.perf_counter() - t
        for kind, mine, theirs in (("unlearn", ours.unlearn, nu), ("retain", ours.retain, nr)):
            worst = max(worst, abs(mine["total"] - theirs["total"]) / max(abs(theirs["total"]), 1e-12))
        tag = "warm-up" if i == 0 else f"checkpoint {i}"
        print(f"  {tag:>12}: ours {t_ours:6.2f}s   naive {t_naive:6.2f}s   e_u {ours.unlearn['total']:.4g} "
              f"(naive {nu['total']:.4g})   e_r {ours.retain['total']:.4g} (naive {nr['total']:.4g})")
        if i:
            ours_t.append(t_ours)
            naive_t.append(t_naive)
    mo, mn = statistics.median(ours_t), statistics.median(naive_t)
    print(f"per checkpoint (median of {len(ours_t)}): ours {mo:.2f}s, naive {mn:.2f}s, speed-up {mn / mo:.2f}x "
          f"(one-off reference cache {t_cache:.2f}s; with it spread over these checkpoints: "
          f"{mn / (mo + t_cache / len(ours_t)):.2f}x); max relative difference of totals {worst:.1e}")


if __name__ == "__main__":
    main()
