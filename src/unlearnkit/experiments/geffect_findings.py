"""The G-effect paper's qualitative findings, re-measured on a tiny Llama fine-tuned on synthetic people.

    python -m unlearnkit.experiments.geffect_findings --out runs/geffect_findings [--steps 24] [--every 4]

1. fine-tune a tiny from-scratch Llama on synthetic people (the target, θ_ini);
2. unlearn the forget people's facts with each method (GA, NPO, WGA, TNPO by default, with the authors'
   default hyper-parameters: NPO β=0.5, WGA β=5, TNPO β=4), same lr, steps and batches, saving a checkpoint
   every `every` steps;
3. `geffect_run` on every run (fixed forget and retain slices, per-group G-effects of the total loss);
4. print, per method and checkpoint, the unlearning G-effect e_u, the retaining G-effect e_r and their
   ratio e_r / e_u, and check the findings (Wang et al. 2025, arXiv 2502.19301):
   (a) GA: e_u and e_r both strongly negative and growing in magnitude over the steps;
   (b) NPO: smaller in magnitude than GA's;
   (c) WGA / TNPO: e_r closer to 0 than GA's for a similar e_u — compared scale-free as |e_r / e_u|.
Writes `results.json` (every number) and `geffect_compare.png` (all runs on one figure).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ..markdown import markdown_table
from ..runs import write_json

DEFAULT_METHODS = ("ga", "npo", "wga", "tnpo")
#: the G-effect authors' defaults (`dataloader.py` when no hyper-parameter is given; methods.md B.4)
AUTHOR_PARAMS = {"npo": {"beta": 0.5}, "wga": {"beta": 5.0}, "tnpo": {"beta": 4.0}, "wtnpo": {"beta": 4.0, "alpha": 1.5}}


def _unlearn(out: Path, method: str, target: Path, data: str, steps: int, every: int, lr: float, seed: int) -> Path:
    from ..train.unlearn import UnlearnConfig, unlearn

    run = out / f"unlearn-{method}"
    unlearn(UnlearnConfig(model=str(target / "model"), forget=f"synthetic:forget,{data}",
                          retain=f"synthetic:retain,{data}", method=method, params=dict(AUTHOR_PARAMS.get(method, {})),
                          run=str(run), max_steps=steps,
                          save_steps=every, keep_checkpoints=None, lr=lr, forget_batch_size=8, retain_batch_size=8,
                          grad_accum=1, precision="fp32", template="plain", seed=seed, scheduler="constant",
                          warmup=0, logging_steps=every))
    return run


def totals(summary_csv: Path) -> list[dict]:
    """Per checkpoint step: e_u and e_r of the `total` group, from geffect.csv."""
    from ..geffect.run import read_csv

    by_step: dict[int, dict] = {}
    for row in read_csv(summary_csv):
        if row["group"] == "total":
            by_step.setdefault(int(row["step"]), {"step": int(row["step"])})[f"e_{row['kind'][0]}"] = float(row["value"])
    return [by_step[k] for k in sorted(by_step)]


def findings(curves: dict[str, list[dict]]) -> dict[str, dict]:
    """The three checks, each with the numbers it was decided on."""
    def mean_abs_ratio(rows):
        return statistics.mean(abs(r["e_r"] / r["e_u"]) for r in rows if r["e_u"])

    out: dict[str, dict] = {}
    ga = curves.get("ga")
    if ga:
        first, last = ga[0], ga[-1]
        out["ga_both_negative_and_growing"] = {
            "holds": all(r["e_u"] < 0 and r["e_r"] < 0 for r in ga) and abs(last["e_u"]) > abs(first["e_u"])
            and abs(last["e_r"]) > abs(first["e_r"]),
            "first": first, "last": last}
    if ga and "npo" in curves:
        g = statistics.mean(abs(r["e_u"]) for r in ga)
        n = statistics.mean(abs(r["e_u"]) for r in curves["npo"])
        gr = statistics.mean(abs(r["e_r"]) for r in ga)
        nr = statistics.mean(abs(r["e_r"]) for r in curves["npo"])
        out["npo_smaller_than_ga"] = {"holds": n < g and nr < gr, "mean_abs_e_u": {"ga": g, "npo": n},
                                      "mean_abs_e_r": {"ga": gr, "npo": nr}}
    for m in ("wga", "tnpo"):
        if ga and m in curves:
            rg, rm = mean_abs_ratio(ga), mean_abs_ratio(curves[m])
            out[f"{m}_e_r_closer_to_0_than_ga"] = {"holds": rm < rg, "mean_abs_e_r_over_e_u": {"ga": rg, m: rm}}
    return out


def run(out: Path, methods=DEFAULT_METHODS, people: int = 20, steps: int = 24, every: int = 4, lr: float = 1e-4,
        seed: int = 0, echo=print) -> dict:
    from ..geffect.plots import compare
    from ..geffect.run import geffect_run
    from ..train.finetune import FinetuneConfig, finetune

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    data = f"people={people},seed={seed},forget_fraction=0.1"
    target = out / "target"
    ft = finetune(FinetuneConfig(model="tiny", data=f"synthetic:train,{data}", run=str(target), tiny_hidden=128,
                                 tiny_layers=4, tiny_vocab=1024, precision="fp32", epochs=30, lr=3e-3, batch_size=16,
                                 warmup=0.05, keep_checkpoints=1, recall_max=80, logging_steps=50, seed=seed))
    echo(f"target: recall {ft.get('recall_after', float('nan')):.1%} after {ft['steps']} steps")
    curves, runs = {}, []
    for m in methods:
        r = _unlearn(out, m, target, data, steps, every, lr, seed)
        if not (r / "geffect" / "geffect.csv").is_file():
            geffect_run(r, n_forget=16, n_retain=16, per_instance=False, plots=False)
        curves[m] = totals(r / "geffect" / "geffect.csv")
        runs.append(str(r))
    fig = compare(runs, out / "geffect_compare.png")
    result = {"people": people, "steps": steps, "every": every, "lr": lr, "target_recall": ft.get("recall_after"),
              "curves": curves, "findings": findings(curves), "figure": str(fig), "seconds": round(time.time() - t0, 1)}
    write_json(out / "results.json", result)
    echo("\n" + markdown_table(["method", "step", "e_u", "e_r", "e_r / e_u"],
                                [[m, r["step"], f"{r['e_u']:.4g}", f"{r['e_r']:.4g}", f"{r['e_r'] / r['e_u']:.3f}"]
                                 for m, rows in curves.items() for r in rows]))
    echo("")
    for name, f in result["findings"].items():
        nums = {k: v for k, v in f.items() if k != "holds"}
        echo(f"{name}: {'reproduces' if f['holds'] else 'does NOT reproduce'}  {json.dumps(nums, default=float)}")
    echo(f"figure: {fig}; {result['seconds']:.0f}s")
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/geffect_findings")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--people", type=int, default=20)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run(Path(args.out), [m for m in args.methods.split(",") if m], args.people, args.steps, args.every,
               args.lr)


if __name__ == "__main__":
    main()
