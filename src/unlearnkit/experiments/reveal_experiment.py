"""Reveal-and-Release end to end: forget a person given only the name, judged against the true facts.

    python -m unlearnkit.experiments.reveal_experiment --out runs/reveal_exp [--skip-smollm]

Part 1 (tiny Llama fine-tuned on synthetic people): the method sees only one person's name. Its true
records (never shown to the method) judge it: per round, the share of the person's fact values that the
self-generated forget set covers (a value counts as covered if its string appears in a kept generation),
forget probability / ROUGE-L recall on the person's true QA, and utility = probability on the other
people's QA (people 0–7; the retain term of every method uses people 8–18, and the entity-contrast
scorer contrasts with three of them). Compared with (a) `unlearn()` on the person's true records with the
same objective, LoRA rank, lr and total steps, (b) one round with uniformly random instructions (no
bandit), same total pulls and steps, and (c) one NeuralUCB round with the same totals (bandit without
iteration).

Part 2 (default SmolLM2-135M): skill:code and behaviour:toxicity, up to two small rounds each; the scorer's mean
on a fixed set of greedy generations before/after and a utility probability on synthetic world facts.
Everything is kept small for a CPU; run dirs are reused, so a rerun only measures.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..data import generate_related_knowledge
from ..data.collate import PromptFormat
from ..data.records import QARecord, read_qa_jsonl, write_qa_jsonl
from ..eval.generation import generate_answers
from ..eval.scoring import score_records
from ..eval.tofu_metrics import probability, rouge_l_recall
from ..models.loading import load_model
from ..reveal.instructions import seed_instructions
from ..reveal.loop import RevealConfig, make_scorer, reveal_and_release
from ..reveal.rounds import load_round_adapters
from ..reveal.selfdata import score_texts
from ..runs import open_run, write_json
from ..train.finetune import FinetuneConfig, finetune
from ..train.unlearn import UnlearnConfig, unlearn

PLAIN = PromptFormat(template="plain", max_length=256)


def fact_values(records: list[QARecord]) -> list[str]:
    """The person's fact strings: each category value and each clue (from the related answers)."""
    vals = {r.tags["value"] for r in records if "value" in r.tags}
    from ..data.synthetic import LINKED

    for cat in LINKED:
        for value, clue in cat.pairs:
            if value in vals:
                vals.add(clue)
    return sorted(vals)


def coverage(values: list[str], texts: list[str]) -> float:
    low = [t.casefold() for t in texts]
    return sum(any(v.casefold() in t for t in low) for v in values) / len(values)


def qa_metrics(model, tok, forget: list[QARecord], utility: list[QARecord], fmt=PLAIN) -> dict:
    model.eval()
    f_lp = [s.answer.mean_lp for s in score_records(model, tok, forget, fmt, fields=("answer",))]
    u_lp = [s.answer.mean_lp for s in score_records(model, tok, utility, fmt, fields=("answer",))]
    gens = generate_answers(model, tok, [r.question for r in forget], fmt, max_new_tokens=32)
    ugens = generate_answers(model, tok, [r.question for r in utility], fmt, max_new_tokens=32)
    return {"forget_prob": probability(f_lp).value, "forget_rouge": rouge_l_recall(gens, [r.answer for r in forget]).value,
            "utility_prob": probability(u_lp).value,
            "utility_rouge": rouge_l_recall(ugens, [r.answer for r in utility]).value}


def _rounds_metrics(cfg: RevealConfig, forget, utility, values) -> list[dict]:
    """Per trained round: coverage of the round's forget set (and cumulative), QA metrics with rounds 0..k."""
    run = open_run(cfg.run, create=False)
    summary = json.loads((run.path / "reveal.json").read_text())
    out, seen = [], []
    for r in summary["rounds"]:
        k = r["round"]
        rdir = run.path / "rounds" / f"round-{k}"
        f = rdir / "forget.jsonl"
        texts = [x.answer for x in read_qa_jsonl(f)] if f.is_file() and f.stat().st_size else []
        seen += texts
        row = {"round": k, "mean_score": r["mean_score"], "n_forget": r["n_forget"],
               "coverage": coverage(values, texts), "coverage_cum": coverage(values, seen), "trained": r["trained"]}
        if r["trained"]:
            model, tok = load_model(cfg.model)
            model = load_round_adapters(model, run, k + 1)
            row.update(qa_metrics(model, tok, forget, utility))
        out.append(row)
    return out


PART1_COLUMNS = ["setting", "mean_score", "n_forget", "coverage", "coverage_cum", "forget_prob", "forget_rouge",
                 "utility_prob", "utility_rouge"]


def seed_summary(runs: list[list[dict]]) -> list[dict]:
    """Mean ± sd over seeds per setting; R&R is represented by its last trained round."""
    import statistics

    def key(row: dict) -> str | None:
        name = row["setting"]
        if name.startswith("R&R round"):
            return None if "stopped" in name else "R&R (last trained round)"
        return name

    groups: dict[str, list[dict]] = {}
    for rows in runs:
        per_run: dict[str, dict] = {}
        for row in rows:
            k = key(row)
            if k is not None:
                per_run[k] = row          # later R&R rounds overwrite earlier ones
        for k, row in per_run.items():
            groups.setdefault(k, []).append(row)
    out = []
    for k, rows in groups.items():
        line: dict = {"setting": f"{k} (n={len(rows)})"}
        for c in ("coverage_cum", "forget_prob", "forget_rouge", "utility_prob", "utility_rouge"):
            vals = [float(r[c]) for r in rows if isinstance(r.get(c), (int, float))]
            if vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                line[c] = f"{statistics.mean(vals):.3f} ± {sd:.3f}"
        out.append(line)
    return out


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(rows: list[dict], cols: list[str]) -> str:
    widths = [max(len(c), *(len(_fmt(r.get(c, ""))) for r in rows)) for c in cols]
    line = lambda vals: "  ".join(str(v).ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line([_fmt(r.get(c, "")) for c in cols])
                                                                      for r in rows])


# -- part 1: entity on a tiny model ---------------------------------------------------------------------
def entity_part(out: Path, people: int, rounds: int, steps: int, pulls: int, seed: int = 0) -> dict:
    ft = FinetuneConfig(model="tiny", data=f"synthetic:train,people={people},seed={seed}", run=str(out / "target"),
                        tiny_hidden=128, tiny_layers=2, tiny_vocab=1024, precision="fp32", epochs=30, lr=3e-3,
                        batch_size=16, warmup=0.05, keep_checkpoints=1, recall_max=80, logging_steps=50, seed=seed)
    t0 = time.time()
    ft_summary = finetune(ft)
    model_dir = str(out / "target" / "model")
    ds = generate_related_knowledge(people, seed)
    victim = people - 1
    name = ds.people[victim].name
    forget = ds.records(kinds=("target", "related", "unrelated", "multihop"), people=[victim])
    n_util = min(people - 1, 8)
    utility = ds.records(kinds=("target", "related", "unrelated"), people=list(range(n_util)))
    # retain data for every method's NLL term: the other people, disjoint from the utility people
    retain_path = out / "retain.jsonl"
    write_qa_jsonl(ds.records(kinds=("target", "related", "unrelated"), people=list(range(n_util, victim))),
                   retain_path)
    values = fact_values(forget)
    base_model, tok = load_model(model_dir)
    base = qa_metrics(base_model, tok, forget, utility)
    del base_model

    params = {"beta": 0.1, "retain": "nll"}
    # the entity-contrast scorer compares against people the model knows: three retain people
    contrast = [ds.people[i].name for i in range(n_util, min(n_util + 3, victim))]
    common = dict(target=f"entity:{name}", model=model_dir, method="npo", params=params, retain=str(retain_path), lr=1e-3,
                  batch_size=8, lora_r=8, samples=4, max_new_tokens=32, n_recombined=30, score_threshold=0.2,
                  stop_score=0.02, precision="fp32", seed=seed, export=False, scorer="entity_contrast",
                  contrast_names=contrast)
    rr_cfg = RevealConfig(run=str(out / "reveal"), rounds=rounds, steps=steps, pulls=pulls, ortho_weight=0.5, **common)
    reveal_and_release(rr_cfg)
    rr = _rounds_metrics(rr_cfg, forget, utility, values)
    one_cfg = RevealConfig(run=str(out / "bandit_1round"), rounds=1, steps=steps * rounds, pulls=pulls * rounds,
                           **common)
    reveal_and_release(one_cfg)
    one = _rounds_metrics(one_cfg, forget, utility, values)
    rand_cfg = RevealConfig(run=str(out / "random_1round"), rounds=1, steps=steps * rounds, pulls=pulls * rounds,
                            bandit="random", **common)
    reveal_and_release(rand_cfg)
    rnd = _rounds_metrics(rand_cfg, forget, utility, values)

    true_path = out / "true_forget.jsonl"
    write_qa_jsonl(forget, true_path)
    un_cfg = UnlearnConfig(model=model_dir, forget=str(true_path), method="npo", params=params, retain=str(retain_path),
                           run=str(out / "true_data_npo"), lora=True, lora_r=8, lora_alpha=16, lr=1e-3,
                           max_steps=steps * rounds, forget_batch_size=8, grad_accum=1, precision="fp32",
                           template="plain", save_steps=10_000, logging_steps=5, seed=seed, weight_decay=0.0,
                           scheduler="constant", warmup=0)   # as a reveal round trains: constant lr, no warm-up
    unlearn(un_cfg)
    m, tok = load_model(str(out / "true_data_npo" / "adapter"))
    true_row = qa_metrics(m, tok, forget, utility)

    rows = [{"setting": "θ_ini (before)", **base}]
    for r in rr:
        rows.append({"setting": f"R&R round {r['round']}" + ("" if r["trained"] else " (stopped)"), **r})
    rows.append({"setting": "NeuralUCB 1 round", **one[0]})
    rows.append({"setting": "random 1 round", **rnd[0]})
    rows.append({"setting": "NPO on true forget data", "coverage": 1.0, "coverage_cum": 1.0, **true_row})
    return {"person": name, "facts": values, "finetune": {k: ft_summary.get(k) for k in ("recall_after", "steps",
                                                                                         "train_loss")},
            "rows": rows, "seconds": round(time.time() - t0, 1)}


# -- part 2: code and toxicity on SmolLM2 ------------------------------------------------------------------
def smollm_part(out: Path, seed: int = 0) -> list[dict]:
    fmt = PromptFormat(template="auto", max_length=256)
    world = generate_related_knowledge(20, seed).records(kinds=("world",))[:8]
    rows = []
    for target in ("skill:code", "behaviour:toxicity"):
        t0 = time.time()
        kind, name = target.split(":")
        cfg = RevealConfig(target=target, model="default", run=str(out / f"smollm_{name}"), rounds=2, pulls=6,
                           samples=2, max_new_tokens=48, n_recombined=6, steps=10, batch_size=4, lr=1e-3,
                           method="npo", params={"beta": 0.1}, score_threshold=0.3, stop_score=0.0, seed=seed,
                           export=False, lora_r=8)
        from ..reveal.target import Target

        scorer = make_scorer(cfg, cfg.parsed_target())
        probe = seed_instructions(Target(kind, name))[1::5][:6]   # fixed greedy probe set
        model, tok = load_model("default")

        def measure(m):
            gens = generate_answers(m, tok, probe, fmt, max_new_tokens=32, batch_size=8)
            lp = [s.answer.mean_lp for s in score_records(m, tok, world, fmt, fields=("answer",))]
            return sum(score_texts(scorer, gens)) / len(gens), probability(lp).value

        before = measure(model)
        del model
        summary = reveal_and_release(cfg)
        row = {"target": target, "score_before": before[0], "utility_before": before[1],
               "reveal_mean_score": summary["rounds"][0]["mean_score"],
               "n_forget": sum(r.get("n_forget", 0) for r in summary["rounds"]), "rounds": summary["rounds_trained"]}
        if summary["rounds_trained"]:
            model, tok = load_model("default")
            model = load_round_adapters(model, open_run(cfg.run, create=False), summary["rounds_trained"])
            after = measure(model)
            row.update(score_after=after[0], utility_after=after[1])
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/reveal_exp")
    ap.add_argument("--people", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="unlearning steps per round")
    ap.add_argument("--pulls", type=int, default=12, help="bandit pulls per round")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds for Part 1 (data, target model, methods); "
                                                 "with several, each goes to <out>/seed-<s> and a mean/sd table follows")
    ap.add_argument("--skip-smollm", action="store_true")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results: dict = {}
    for seed in seeds:
        ent = entity_part(out if len(seeds) == 1 else out / f"seed-{seed}", args.people, args.rounds, args.steps,
                          args.pulls, seed=seed)
        print(f"\n== Part 1, seed {seed}: forget '{ent['person']}' given only the name (tiny Llama, {args.people} "
              f"people; fine-tune recall {ent['finetune']['recall_after']}) ==")
        print(f"true facts (judge only): {ent['facts']}")
        print(table(ent["rows"], PART1_COLUMNS))
        results["entity" if len(seeds) == 1 else f"entity_seed{seed}"] = ent
    if len(seeds) > 1:
        summary = seed_summary([results[f"entity_seed{s}"]["rows"] for s in seeds])
        print(f"\n== Part 1 over seeds {seeds}: mean ± sd of each setting's final row ==")
        print(table(summary, ["setting"] + [c for c in PART1_COLUMNS if c not in ("setting", "n_forget", "mean_score",
                                                                                   "coverage")]))
        results["entity_seed_summary"] = summary
    if not args.skip_smollm:
        sm = smollm_part(out)
        print("\n== Part 2: SmolLM2-135M-Instruct, up to 2 rounds (6 pulls x 2 samples, 10 steps each) ==")
        print(table(sm, ["target", "rounds", "score_before", "score_after", "reveal_mean_score", "n_forget",
                         "utility_before", "utility_after", "seconds"]))
        results["smollm"] = sm
    write_json(out / "results.json", results)
    return results


if __name__ == "__main__":
    main()
