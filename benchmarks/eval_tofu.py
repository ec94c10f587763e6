"""Speed of the TOFU forget01 suite: batched path vs a naive reference-style path, in one process.

Full suite: forget01_perturbed (40) + holdout01 MIA (40) + first 400 retain_perturbed + real_authors_perturbed
(100) + world_facts_perturbed (117); greedy generation with `--max-new-tokens` (default 200) on both paths.

* batched: `unlearnkit.eval.run_tofu` — one padded forward per batch of questions (all perturbed answers of a
  question in the same batch), every metric read from that forward, generation batched with left padding and
  the KV cache, once per set.
* naive: what reference implementations do — batch size 1 and a separate scoring pass per metric
  (probability, paraphrase, perturbed, normalised probability, EM, ES, each MIA attack), generation one
  question at a time (still with the KV cache). Same `max_new_tokens`.

Default model: a fresh ~5M-parameter tiny Llama with a BPE tokenizer trained on the TOFU text (only speed
matters; a random model rarely emits EOS, so nearly every answer runs to `max_new_tokens` — realistic as a
worst case, and the same for both paths). `--model <spec>` evaluates any `load_model` spec instead.

    python benchmarks/eval_tofu.py [--model SPEC] [--max-new-tokens 200] [--batch-size 32] [--naive-limit N]

`--naive-limit N` runs the naive path on only the first N questions of each set and scales its time by the
set sizes (printed as an estimate); the default runs it in full.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

from unlearnkit.data import PromptFormat, load_tofu
from unlearnkit.eval import memorization, mia, tofu_metrics
from unlearnkit.eval.generation import generate_answers
from unlearnkit.eval.scoring import score_records
from unlearnkit.eval.tofu import OracleStats, load_tofu_sets, run_tofu


def tiny_tofu_model():
    from unlearnkit.models import tiny_llama, train_tokenizer

    texts = []
    for split in ("full", "real_authors_perturbed", "world_facts_perturbed"):
        texts += [f"Question: {r.question}\nAnswer: {r.answer}" for r in load_tofu(split)]
    tok = train_tokenizer(texts, vocab_size=4096)
    model = tiny_llama(len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id).eval()
    return model, tok


def naive_suite(model, tok, sets, fmt, max_new_tokens, k=0.4):
    """Batch size 1, one scoring pass per metric, per-question generation. Returns {metric: value}."""
    one = dict(batch_size=1)
    out = {}
    for name in ("forget", "retain", "real_authors", "world_facts"):
        recs = sets[name]
        if not recs:
            continue
        ans = [s.answer.mean_lp for s in score_records(model, tok, recs, fmt, fields=("answer",), **one)]
        if name in ("real_authors", "world_facts"):
            pert_n = [[p.mean_lp for p in s.perturbed] for s in score_records(model, tok, recs, fmt, fields=("perturbed",), **one)]
            ans_n = [s.answer.mean_lp for s in score_records(model, tok, recs, fmt, fields=("answer",), **one)]
            out[f"{name}/probability"] = tofu_metrics.normalized_probability(ans_n, pert_n).value
            base = [s.answer.mean_lp for s in score_records(model, tok, recs, fmt, fields=("answer",), **one)]
        else:
            out[f"{name}/probability"] = tofu_metrics.probability(ans).value
            base = [s.paraphrased.mean_lp for s in score_records(model, tok, recs, fmt, fields=("paraphrased",), **one)]
        pert = [[p.mean_lp for p in s.perturbed] for s in score_records(model, tok, recs, fmt, fields=("perturbed",), **one)]
        gens = generate_answers(model, tok, [r.question for r in recs], fmt, max_new_tokens, batch_size=1)
        out[f"{name}/rouge_l_recall"] = tofu_metrics.rouge_l_recall(gens, [r.answer for r in recs]).value
        agg = "forget" if name == "forget" else "retain"
        out[f"{name}/truth_ratio"] = tofu_metrics.truth_ratio_score(tofu_metrics.truth_ratios(base, pert), agg).value
        if name == "forget":
            hits = [s.answer.hits for s in score_records(model, tok, recs, fmt, fields=("answer",), **one)]
            out["forget/exact_memorization"] = memorization.exact_memorization(hits).value
            hits = [s.answer.hits for s in score_records(model, tok, recs, fmt, fields=("answer",), **one)]
            out["forget/extraction_strength"] = memorization.extraction_strength(hits).value
    if sets["forget"] and sets["holdout"]:
        def scored(recs, stats=False):
            return [s.answer for s in score_records(model, tok, recs, fmt, fields=("answer",), token_stats=stats, **one)]

        f, h = sets["forget"], sets["holdout"]
        ft, ht = [r.answer for r in f], [r.answer for r in h]
        out["mia/loss"] = mia.roc_auc(*(mia.loss_scores([s.mean_lp for s in scored(x)]) for x in (f, h))).value
        out["mia/zlib"] = mia.roc_auc(*(mia.zlib_scores([s.mean_lp for s in scored(x)], t) for x, t in ((f, ft), (h, ht)))).value
        out["mia/min_k"] = mia.roc_auc(*(mia.min_k_scores([s.logprobs for s in scored(x)], k) for x in (f, h))).value
        pp = []
        for x in (f, h):
            s = scored(x, stats=True)
            pp.append(mia.min_k_plus_plus_scores([a.logprobs for a in s], [a.mu for a in s], [a.sigma for a in s], k))
        out["mia/min_k_plus_plus"] = mia.roc_auc(*pp).value
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="load_model spec; default: fresh tiny Llama + TOFU tokenizer")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--naive-limit", type=int, default=None, help="naive path on the first N questions per set only")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:
        from unlearnkit.models import load_model

        model, tok = load_model(args.model)
        model.eval()
    else:
        model, tok = tiny_tofu_model()
    fmt = PromptFormat(template="plain", max_length=512) if not getattr(tok, "chat_template", None) else PromptFormat()
    n_params = sum(p.numel() for p in model.parameters())
    sets = load_tofu_sets("forget01", retain_limit=400)
    sizes = {k: len(v) for k, v in sets.items()}
    print(f"model: {args.model or 'tiny Llama (fresh)'}  params={n_params / 1e6:.2f}M  vocab={len(tok)}  "
          f"threads={torch.get_num_threads()}  cpus={os.cpu_count()}")
    print(f"sets: {sizes}  max_new_tokens={args.max_new_tokens}  batch_size={args.batch_size}")

    oracle = OracleStats("forget01", "geometric", [1.0] * 40)  # placeholder oracle: timing only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = run_tofu(model, tok, "forget01", oracle, fmt, records=sets, batch_size=args.batch_size,
                       max_new_tokens=args.max_new_tokens)
        t_batched = time.perf_counter() - t0
    gen_chars = [len(g) for gs in res.generations.values() for g in gs]
    print(f"batched: {t_batched:8.1f} s  ({len(res.metrics)} metrics; {len(gen_chars)} generations, mean "
          f"{np.mean(gen_chars):.0f} characters — a random model rarely emits EOS, so most run to the cap)")

    naive_sets = sets if args.naive_limit is None else {k: v[:args.naive_limit] for k, v in sets.items()}
    t0 = time.perf_counter()
    naive = naive_suite(model, tok, naive_sets, fmt, args.max_new_tokens)
    t_naive = time.perf_counter() - t0
    if args.naive_limit is None:
        diffs = {k: abs(v - res.metrics[k].value) for k, v in naive.items()}
        worst = max(diffs, key=diffs.get)
        print(f"naive:   {t_naive:8.1f} s  (metrics agree with batched: max |diff| = {diffs[worst]:.2e} on {worst})")
        print(f"speed-up: {t_naive / t_batched:.2f}x")
    else:
        scale = sum(sizes.values()) / sum(len(v) for v in naive_sets.values())
        print(f"naive:   {t_naive:8.1f} s on {args.naive_limit} questions per set -> estimated full "
              f"{t_naive * scale:.1f} s")
        print(f"speed-up (estimated): {t_naive * scale / t_batched:.2f}x")


if __name__ == "__main__":
    main()
