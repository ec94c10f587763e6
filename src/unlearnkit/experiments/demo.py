"""`unlearnkit demo`: the end-to-end offline demo on the default SmolLM2 (a tiny model with `quick`).

1. build a synthetic related-knowledge set (fictitious people; the last `forget_fraction` are forgotten);
2. fine-tune the target model on everyone and the retain oracle on the retain people only;
3. unlearn the forget people's target facts with GA, GradDiff and NPO;
4. apply UIPE to each with the automatic α (held-out retain utility rule) and write θ_uipe;
5. evaluate every model with the TOFU metrics on the synthetic sets (forget targets vs oracle → forget
   quality; retain people, world facts and TOFU's real authors → model utility, the benchmark's harmonic
   mean of nine numbers; unseen people as MIA non-members; `quick` leaves out real authors, which a
   from-scratch model never saw, so it reports no model utility) and the related-knowledge probe (targets / related facts / multi-hop questions);
6. write the report (tables, plots, a self-contained HTML page) and print the summary table.

Every step writes a normal run directory under `out`, so `unlearnkit report` can redo the report and a
rerun skips finished steps.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..data.collate import PromptFormat
from ..data.synthetic import generate_related_knowledge
from ..data.tofu import default_local_dir, load_tofu
from ..eval.metric_registry import metric
from ..markdown import markdown_table
from ..runs import open_run, write_json
from ..train.finetune import FinetuneConfig, finetune


@dataclass
class DemoConfig:
    """End-to-end demo settings."""

    out: str = field(default="runs/demo", metadata={"help": "folder for the demo's run directories"})
    quick: bool = field(default=False, metadata={"help": "tiny from-scratch model instead of SmolLM2 (a few minutes)"})
    people: int = field(default=0, metadata={"help": "synthetic people (0: 50, or 20 with quick)"})
    forget_fraction: float = field(default=0.1, metadata={"help": "share of people to forget"})
    seed: int = field(default=0, metadata={"help": "seed for data and training"})
    epochs: float = field(default=6.0, metadata={"help": "fine-tuning epochs (SmolLM2; 5 reached 85.7% recall, 6 reached 96.1%)"})
    lr: float = field(default=5e-4, metadata={"help": "fine-tuning learning rate (SmolLM2)"})
    methods: list[str] = field(default_factory=lambda: ["ga", "grad_diff", "npo"], metadata={"help": "unlearning methods"})
    unlearn_steps: int = field(default=12, metadata={"help": "unlearning optimizer steps per method"})
    unlearn_lr: float = field(default=2e-5, metadata={"help": "unlearning learning rate (SmolLM2)"})
    uipe: bool = field(default=True, metadata={"help": "apply UIPE with the automatic α"})
    tolerance: float = field(default=0.05, metadata={"help": "automatic α: allowed relative drop of retain utility"})
    retain_eval: int = field(default=30, metadata={"help": "retain questions in the evaluation"})
    real_authors_eval: int = field(default=30, metadata={"help": "TOFU real-authors questions in the evaluation (0: all 100)"})
    max_new_tokens: int = field(default=32, metadata={"help": "generation length for ROUGE"})
    eval_precision: str = field(default="auto", metadata={"help": "evaluation precision: auto (bf16 autocast where fast) | fp32 (exact) | bf16"})
    recall_sample: int = field(default=0, metadata={"help": "records used for the fine-tuning recall figure (0: all)"})

    def __post_init__(self):
        if self.people == 0:
            self.people = 20 if self.quick else 50
        if self.people < 2:
            raise ValueError(f"people={self.people}: the demo needs at least 2 (one to forget, one to retain)")


@dataclass
class _Plan:
    data: str
    retain: str
    forget: str
    fmt: PromptFormat
    unlearn_retain: str = ""  # what unlearning's retain term reads; `retain` minus it is UIPE's held-out rows


def _plan(cfg: DemoConfig) -> _Plan:
    opts = f"people={cfg.people},seed={cfg.seed},forget_fraction={cfg.forget_fraction}"
    # the plain `Question: … Answer:` template for SmolLM2 too: its chat template adds a 20-token system turn
    # to every row, which nearly doubles the cost of each fine-tuning step (54 vs 29 tokens a row)
    fmt = PromptFormat(template="plain")
    # unlearning reads the retain people's facts except their unrelated ones, which UIPE's automatic α keeps
    # as held-out rows the run never trained on (its RetainStream draws from every row of its retain set)
    return _Plan(f"synthetic:train,{opts}", f"synthetic:retain,{opts}", f"synthetic:forget,{opts}", fmt,
                 f"synthetic:train,kinds=target+related+world,who=retain,{opts}")


def finetune_config(cfg: DemoConfig, data: str, run: Path, recall: bool, tokenizer: Path | None = None) -> FinetuneConfig:
    recall_max = cfg.recall_sample if recall else -1
    if cfg.quick:
        return FinetuneConfig(model="tiny", data=data, run=str(run), epochs=40, lr=2e-3, batch_size=16, warmup=0.05,
                              tiny_hidden=128, tiny_layers=2, tiny_vocab=1024, precision="fp32", keep_checkpoints=1,
                              recall_before=recall, recall_max=recall_max, seed=cfg.seed,
                              tiny_tokenizer=str(tokenizer) if tokenizer else "")
    return FinetuneConfig(model="default", data=data, run=str(run), epochs=cfg.epochs, lr=cfg.lr, batch_size=16,
                          warmup=0.05, keep_checkpoints=1, recall_before=recall, recall_max=recall_max, seed=cfg.seed,
                          template="plain", freeze_embeddings=True, recall_before_max=100)


def eval_records(cfg: DemoConfig) -> dict:
    """The evaluation sets, TOFU roles filled with synthetic data (real authors from TOFU when available)."""
    ds = generate_related_knowledge(cfg.people, cfg.seed)
    forget_ids, retain_ids = ds.split(cfg.forget_fraction)
    unseen = generate_related_knowledge(max(2, len(forget_ids)), cfg.seed + 1000)
    records = {
        "forget": ds.records(kinds=("target",), people=forget_ids),
        "retain": ds.records(kinds=("target", "related", "unrelated"), people=retain_ids)[: cfg.retain_eval],
        "world_facts": ds.world_records(),
        "holdout": unseen.records(kinds=("target",)),
    }
    if default_local_dir() is not None and not cfg.quick:  # a tiny from-scratch model knows no real authors
        real = load_tofu("real_authors_perturbed")
        records["real_authors"] = real[: cfg.real_authors_eval] if cfg.real_authors_eval > 0 else real
    return records


def evaluate_model(run_dir: Path, cfg: DemoConfig, fmt: PromptFormat, oracle: Path | None, model=None, tok=None) -> dict:
    """TOFU-style metrics on the synthetic sets + the related-knowledge probe, written to the run's eval/."""
    from ..eval.suite import evaluate_run

    records = eval_records(cfg)
    sets = tuple(s for s in ("forget", "retain", "real_authors", "world_facts") if s in records)
    kw = dict(batch_size=32, max_new_tokens=cfg.max_new_tokens, fmt=fmt, precision=cfg.eval_precision)
    if oracle is None:
        tofu = evaluate_run(run_dir, "tofu", "synthetic", model=model, tokenizer=tok, save_oracle_stats=True,
                            records=records, sets=sets, **kw)
    else:
        tofu = evaluate_run(run_dir, "tofu", "synthetic", model=model, tokenizer=tok,
                            oracle_stats=oracle / "eval" / "oracle_stats.json", records=records, sets=sets, **kw)
    related = evaluate_run(run_dir, "related", model=model, tokenizer=tok, related_people=cfg.people,
                           related_seed=cfg.seed, forget_fraction=cfg.forget_fraction, related_who="forget", **kw)
    return {**tofu, **{f"related/{k}": v for k, v in related.items()}}


def unlearn_config(cfg: DemoConfig, plan: _Plan, method: str, target: Path, run: Path):
    from ..train.unlearn import UnlearnConfig

    common = dict(model=str(target / "model"), forget=plan.forget, retain=plan.unlearn_retain, method=method,
                  run=str(run),
                  max_steps=cfg.unlearn_steps, forget_batch_size=4, retain_batch_size=4, grad_accum=1,
                  save_steps=cfg.unlearn_steps, seed=cfg.seed, template=plan.fmt.template)
    if cfg.quick:
        return UnlearnConfig(lr=2e-4, precision="fp32", **common)
    return UnlearnConfig(lr=cfg.unlearn_lr, **common)


def _done(run: Path) -> bool:
    return (run / "eval" / "related.json").is_file() and (run / "eval" / "tofu.json").is_file()


def run_demo(cfg: DemoConfig, echo=print) -> dict:
    t0 = time.time()
    out = Path(cfg.out)
    plan = _plan(cfg)
    n_steps = 4 + len(cfg.methods) * (2 if cfg.uipe else 1)
    step = iter(range(1, n_steps + 1))
    model_name = "a tiny from-scratch Llama" if cfg.quick else "SmolLM2-135M-Instruct"

    echo(f"[{next(step)}/{n_steps}] fine-tuning the target ({model_name}) on {cfg.people} synthetic people")
    target = out / "target"
    summary = finetune(finetune_config(cfg, plan.data, target, recall=True))
    echo(f"        exact-match recall of the answers: before {summary.get('recall_before', float('nan')):.1%} "
         f"({summary.get('recall_before_n', '?')} answers) -> after {summary.get('recall_after', float('nan')):.1%} "
         f"({summary.get('recall_after_n', '?')} answers; {summary['steps']} steps, {summary['train_seconds']:.0f}s)")

    echo(f"[{next(step)}/{n_steps}] fine-tuning the retain oracle (never sees the forget people)")
    oracle = out / "oracle"
    finetune(finetune_config(cfg, plan.retain, oracle, recall=False, tokenizer=target / "model"))

    echo(f"[{next(step)}/{n_steps}] evaluating the target and the oracle")
    for run in (oracle, target):
        if not _done(run):
            evaluate_model(run, cfg, plan.fmt, None if run == oracle else oracle)

    from ..train.unlearn import unlearn
    from ..uipe.search import ExtrapolateConfig, alpha_search, extrapolate_run

    for method in cfg.methods:
        run = out / f"unlearn-{method}"
        echo(f"[{next(step)}/{n_steps}] unlearning with {method} ({cfg.unlearn_steps} steps) and evaluating")
        unlearn(unlearn_config(cfg, plan, method, target, run))
        if not _done(run):
            evaluate_model(run, cfg, plan.fmt, oracle)
        if cfg.uipe:
            echo(f"[{next(step)}/{n_steps}] UIPE on {method}: automatic α, then evaluating θ_uipe")
            uipe_run = out / f"uipe-{method}"
            if not _done(uipe_run):
                s = ExtrapolateConfig(alphas=(0.0,), suite="related", related_people=cfg.people,
                                      related_seed=cfg.seed, forget_fraction=cfg.forget_fraction,
                                      max_new_tokens=cfg.max_new_tokens, auto=True, auto_retain=plan.retain,
                                      tolerance=cfg.tolerance, limit=10, precision=cfg.eval_precision,
                                      auto_max_evals=8)
                res = alpha_search(run, s, echo=lambda m: echo("        " + m))
                alpha = res["auto"]["alpha"]
                model_dir = extrapolate_run(run, alpha, uipe_run / "model", overwrite=True)
                rd = open_run(uipe_run)
                rd.write_config("extrapolate", {"base_run": str(run), "method": method, "alpha": alpha,
                                                "alpha_rule": res["auto"]["rule"], "model": str(model_dir)}, cfg.seed)
                write_json(uipe_run / "uipe.json", {"method": method, "alpha": alpha, "auto": res["auto"]})
                evaluate_model(uipe_run, cfg, plan.fmt, oracle)

    echo(f"[{next(step)}/{n_steps}] writing the report")
    from ..report import build_report

    report = build_report([out], out / "report", title="unlearnkit demo")["html"]
    table = summary_table(out)
    echo("")
    echo(table)
    echo("")
    total = time.time() - t0
    echo(f"demo finished in {total / 60:.1f} min; HTML report: {report}")
    write_json(out / "demo.json", {"seconds": total, "finetune": summary, "report": str(report)})
    return {"seconds": total, "finetune": summary, "report": str(report), "table": table}


# the demo table's columns: registered metrics (`eval.metric_registry`), shown by their short names
SUMMARY_METRICS = ("tofu:forget_quality", "tofu:model_utility", "tofu:retain/probability", "tofu:forget/rouge_l_recall",
                   "related:target/probability", "related:related/probability", "related:multihop/probability",
                   "tofu:privleak")


def summary_table(out: Path) -> str:
    """A Markdown table of the demo's runs, read back from their eval/*.json files."""
    columns = [metric(name) for name in SUMMARY_METRICS]
    rows = []
    order = {"target": 0, "oracle": 1}
    runs = sorted((p for p in Path(out).iterdir() if (p / "eval" / "tofu.json").is_file()),
                  key=lambda p: (order.get(p.name, 2), p.name.split("-", 1)[-1], not p.name.startswith("unlearn")))
    for run in runs:
        suites = {s: json.loads((run / "eval" / f"{s}.json").read_text())["metrics"] for s in dict.fromkeys(c.suite for c in columns)}
        extra = ""
        if (run / "uipe.json").is_file():
            extra = f" (α={json.loads((run / 'uipe.json').read_text())['alpha']:.2g})"
        rows.append([run.name + extra] + [_fmt(suites[c.suite].get(c.key, {}).get("value")) for c in columns])
    head = ["run"] + [c.short for c in columns]
    return markdown_table(head, rows)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e3 else f"{v:.3f}"
