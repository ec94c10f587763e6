"""Qualitative reproduction of the G-effect paper's findings on a tiny model (methods.md B.6).

    python tests/geffect/qualitative.py [workdir] [--steps 12] [--every 3]

1. θ_ini: a tiny Llama fine-tuned on synthetic people (`finetune(FinetuneConfig(model="tiny", ...))`).
2. For GA, NPO, WGA, TNPO: a plain torch loop of unlearning on the forget people's targets (AdamW, no retain
   term), saving `checkpoints/step-N` safetensors folders and a `config.yaml` like the trainer's.
3. `geffect_run` on each run, then a table of e_u / e_r (total and per group) and `compare` on one figure.
Expected (paper): GA's e_u and e_r both strongly negative and growing in magnitude; NPO smaller; WGA / TNPO
keep e_r closer to 0 than GA for a similar e_u.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from unlearnkit.data import PromptFormat, QADataset, pad_batch
from unlearnkit.data.specs import load_records
from unlearnkit.geffect import compare, geffect_run, read_csv
from unlearnkit.models.loading import load_model
from unlearnkit.objectives import FrozenModelReference, UnlearnBatch, build_objective
from unlearnkit.runs import RunDir

PEOPLE = 20
FORGET = f"synthetic:forget,people={PEOPLE},forget_fraction=0.2"
RETAIN = f"synthetic:retain,people={PEOPLE},forget_fraction=0.2"
METHODS = {"ga": {}, "npo": {"beta": 0.5}, "wga": {"beta": 1.0}, "tnpo": {}}


def make_target(work: Path) -> Path:
    from unlearnkit.train.finetune import FinetuneConfig, finetune

    run = work / "target"
    summary = finetune(FinetuneConfig(model="tiny", data=f"synthetic:train,people={PEOPLE}", run=str(run), epochs=12,
                                      lr=2e-3, batch_size=16, tiny_hidden=128, tiny_layers=6, tiny_vocab=2048,
                                      template="plain", max_length=128, logging_steps=20, save_steps=0,
                                      keep_checkpoints=1, recall_max=-1, warmup=0.05))
    print("θ_ini:", json.dumps({k: summary.get(k) for k in ("records", "steps", "train_loss", "train_seconds")}))
    return run / "model"


def unlearn(theta_ini: Path, work: Path, method: str, params: dict, steps: int, every: int, lr: float) -> Path:
    run = RunDir(work / method)
    run.write_config("unlearn", {"model": str(theta_ini), "forget": FORGET, "retain": RETAIN, "method": method,
                                 "params": params, "template": "plain", "max_length": 128, "lr": lr})
    model, tok = load_model(str(theta_ini), attn_implementation="eager")
    ref = FrozenModelReference(load_model(str(theta_ini), attn_implementation="eager")[0])
    fmt = PromptFormat(template="plain", max_length=128)
    ds = QADataset(load_records(FORGET), tok, fmt)
    batch = pad_batch([ds[i] for i in range(len(ds))], tok.pad_token_id)
    obj = build_objective(method, params)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    torch.manual_seed(0)
    for step in range(1, steps + 1):
        loss, logs = obj.loss(model, UnlearnBatch(forget=batch), ref)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0 or step == 1:
            model.save_pretrained(run.checkpoints / f"step-{step}")
    return run.path


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("work", nargs="?", default="/tmp/geffect_qual")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    work = Path(args.work)
    t0 = time.time()
    theta_ini = make_target(work)
    runs = []
    for method, params in METHODS.items():
        run = unlearn(theta_ini, work, method, params, args.steps, args.every, args.lr)
        geffect_run(run, n_forget=args.n, n_retain=args.n, groups=3, per_instance=True)
        runs.append(run)
    out = compare(runs, work / "compare.png")
    groups = None
    print(f"\nG-effects (total; per group shallow/middle/deep/lm_head), n_forget=n_retain={args.n}, lr={args.lr}")
    for run in runs:
        rows = read_csv(run / "geffect" / "geffect.csv")
        summ = json.loads((run / "geffect" / "summary.json").read_text())
        groups = [g for g in summ["groups"]]
        print(f"\n{run.name}")
        print(f"{'step':>5} {'NLL_f':>7} {'NLL_r':>7} {'e_u':>11} {'e_r':>11}   e_u/e_r by group " + "/".join(groups))
        for info in summ["steps"]:
            s = info["step"]
            val = {(r["group"], r["kind"]): r["value"] for r in rows if r["step"] == s}
            per = " ".join(f"{val[(g, 'unlearn')]:.3g}/{val[(g, 'retain')]:.3g}" for g in groups)
            print(f"{s:>5} {info['risk_forget']:7.3f} {info['risk_retain']:7.3f} {val[('total', 'unlearn')]:11.4g} "
                  f"{val[('total', 'retain')]:11.4g}   {per}")
        inst = read_csv(run / "geffect" / "instances.csv")
        last = max(r["step"] for r in inst)
        w = [r["weight"] for r in inst if r["step"] == last]
        print(f"  instance weights at step {last}: min {min(w):.3g} mean {sum(w) / len(w):.3g} max {max(w):.3g}")
    print(f"\nfigure: {out}   total time {time.time() - t0:.0f}s")


if __name__ == "__main__":
    sys.exit(main())
