"""`unlearnkit demo`: the end-to-end offline demo on the default SmolLM2 (a tiny model with `quick`).

1. build a synthetic related-knowledge set (fictitious people; the last `forget_fraction` are forgotten);
2. fine-tune the target model on everyone and the retain oracle on the retain people only (SmolLM2: through a
   LoRA adapter, so the model keeps what it knew and model utility stays meaningful);
3. unlearn the forget people's target facts with each method (GradDiff and NPO by default), from its preset;
4. apply UIPE to each with the automatic α (held-out retain utility rule) and write θ_uipe;
5. evaluate every model with the TOFU metrics on the synthetic sets (forget targets vs oracle → forget
   quality; retain people, world facts and TOFU's real authors → model utility, the benchmark's harmonic
   mean of nine numbers; unseen people as MIA non-members; `quick` leaves out real authors, which a
   from-scratch model never saw, so it reports no model utility), exact-match recall of the forget and retain
   people's facts, and the related-knowledge probe (targets / related facts / multi-hop questions);
6. write the report (tables, plots, a self-contained HTML page), print the summary table and two or three
   sentences worded from its numbers. Each phase prints its time.

Every step writes a normal run directory under `out`, so `unlearnkit report` can redo the report and a
rerun skips finished steps.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..data.collate import PromptFormat
from ..data.synthetic import generate_related_knowledge
from ..data.tofu import default_local_dir, load_tofu
from ..eval.metric_registry import metric
from ..markdown import markdown_table
from ..runs import EVAL_DIR, open_run, write_json
from ..train.finetune import FinetuneConfig, finetune


@dataclass
class DemoConfig:
    """End-to-end demo settings."""

    out: str = field(default="runs/demo", metadata={"help": "folder for the demo's run directories"})
    quick: bool = field(default=False, metadata={"help": "tiny from-scratch model instead of SmolLM2 (a few minutes)"})
    people: int = field(default=0, metadata={"help": "synthetic people (0: 30, or 20 with quick)"})
    forget_fraction: float = field(default=0.1, metadata={"help": "share of people to forget"})
    seed: int = field(default=0, metadata={"help": "seed for data and training"})
    epochs: float = field(default=8.0, metadata={"help": "fine-tuning epochs (SmolLM2; 6 reached 87% recall, 8 reached 99%)"})
    lr: float = field(default=1e-3, metadata={"help": "fine-tuning learning rate (SmolLM2, LoRA; 1.5e-3 and 2e-3 memorised less)"})
    batch_size: int = field(default=8, metadata={"help": "fine-tuning batch (SmolLM2): 8 memorises more than 16 for the same compute (twice the updates)"})
    lora: bool = field(default=True, metadata={"help": "fine-tune SmolLM2 through a LoRA adapter on every linear layer (merged after): it learns the people without overwriting what the model knew, so model utility stays meaningful"})
    lora_r: int = field(default=32, metadata={"help": "LoRA rank of the fine-tuning adapter"})
    methods: list[str] = field(default_factory=lambda: ["grad_diff", "npo"], metadata={"help": "unlearning methods (each adds about 3.5 min with UIPE, SmolLM2 on 2 cores: with ga as well the demo takes about 23 min)"})
    unlearn_steps: int = field(default=24, metadata={"help": "unlearning optimizer steps per method"})
    unlearn_lr: float = field(default=2e-5, metadata={"help": "unlearning learning rate (SmolLM2; GradDiff at 3e-5 forgot all but lost more retain recall: 0.85 against 0.89)"})
    retain_batch: int = field(default=8, metadata={"help": "retain rows per unlearning step (the retain term's batch)"})
    uipe: bool = field(default=True, metadata={"help": "apply UIPE with the automatic α"})
    tolerance: float = field(default=0.05, metadata={"help": "automatic α: allowed relative drop of retain utility"})
    alpha_evals: int = field(default=6, metadata={"help": "automatic α: most α values evaluated per method (about 11 s each on SmolLM2)"})
    retain_eval: int = field(default=30, metadata={"help": "retain questions in the evaluation"})
    real_authors_eval: int = field(default=30, metadata={"help": "TOFU real-authors questions in the evaluation (0: all 100)"})
    max_new_tokens: int = field(default=32, metadata={"help": "generation length for ROUGE"})
    eval_precision: str = field(default="auto", metadata={"help": "evaluation precision: auto (bf16 autocast where fast) | fp32 (exact) | bf16"})
    recall_sample: int = field(default=0, metadata={"help": "records used for the fine-tuning recall figure (0: all)"})

    def __post_init__(self):
        if self.people == 0:
            self.people = 20 if self.quick else 30
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
    # the retain term reads the retain people's target facts: they share the forget targets' wording and values
    # ("… has diabetes."), so unlearning bleeds into them first (measured on SmolLM2, GradDiff 24 steps: retain
    # recall 0.82 with these rows against 0.76 with target + related + world facts at 5× the weight, lr 3e-5 on a
    # 50-people target). The rest of
    # the retain people's facts are what UIPE's automatic α keeps as held-out rows the run never trained on.
    return _Plan(f"synthetic:train,{opts}", f"synthetic:retain,{opts}", f"synthetic:forget,{opts}", fmt,
                 f"synthetic:train,kinds=target,who=retain,{opts}")


LINEAR_LAYERS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def finetune_config(cfg: DemoConfig, data: str, run: Path, recall: bool, tokenizer: Path | None = None) -> FinetuneConfig:
    recall_max = cfg.recall_sample if recall else -1
    if cfg.quick:
        return FinetuneConfig(model="tiny", data=data, run=str(run), epochs=40, lr=2e-3, batch_size=16, warmup=0.05,
                              tiny_hidden=128, tiny_layers=2, tiny_vocab=1024, precision="fp32", keep_checkpoints=1,
                              recall_before=recall, recall_max=recall_max, seed=cfg.seed,
                              tiny_tokenizer=str(tokenizer) if tokenizer else "")
    lora = dict(lora=True, lora_r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, lora_targets=LINEAR_LAYERS) if cfg.lora else {}
    return FinetuneConfig(model="default", data=data, run=str(run), epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                          warmup=0.05, keep_checkpoints=1, recall_before=recall, recall_max=recall_max, seed=cfg.seed,
                          template="plain", freeze_embeddings=True, recall_before_max=100, **lora)


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


def recall_records(cfg: DemoConfig) -> dict:
    """The answer-recall sets: every forget person's and every retain person's target facts."""
    ds = generate_related_knowledge(cfg.people, cfg.seed)
    forget_ids, retain_ids = ds.split(cfg.forget_fraction)
    return {"forget": ds.records(kinds=("target",), people=forget_ids),
            "retain": ds.records(kinds=("target",), people=retain_ids)}


def evaluate_recall(run_dir: Path, cfg: DemoConfig, fmt: PromptFormat, model, tok) -> dict:
    """Exact-match recall of the forget and the retain people's target facts → `eval/recall.json`."""
    import torch

    from ..eval.recall import recall_metric
    from ..precision import autocast, resolve_precision

    device = next(model.parameters()).device.type
    precision = resolve_precision(cfg.eval_precision, device)
    with torch.no_grad(), autocast(precision, device):
        metrics = {f"{name}/exact_match": recall_metric(model, tok, recs, fmt).to_json()
                   for name, recs in recall_records(cfg).items()}
    write_json(Path(run_dir) / EVAL_DIR / "recall.json",
               {"suite": "recall", "settings": {"template": fmt.template, "precision": precision}, "metrics": metrics})
    return metrics


def evaluate_model(run_dir: Path, cfg: DemoConfig, fmt: PromptFormat, oracle: Path | None, model=None, tok=None) -> dict:
    """TOFU-style metrics on the synthetic sets, the related-knowledge probe and answer recall, written to the
    run's eval/ (the model is loaded once for the three)."""
    from ..eval.suite import evaluate_run, resolve_model_dir

    if model is None:
        from ..models import load_model

        model, tok = load_model(str(resolve_model_dir(run_dir)))
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
    recall = evaluate_recall(run_dir, cfg, fmt, model, tok)
    return {**tofu, **{f"related/{k}": v for k, v in related.items()}, **{f"recall/{k}": v for k, v in recall.items()}}


def unlearn_config(cfg: DemoConfig, plan: _Plan, method: str, target: Path, run: Path):
    """The method's preset (its retain term and β/γ, as `unlearnkit unlearn method=…` takes them) under the demo's
    short schedule: `unlearn_steps` steps of 4 forget + `retain_batch` retain rows at `unlearn_lr`."""
    from ..presets import load_with_preset
    from ..train.unlearn import UnlearnConfig

    demo = dict(model=str(target / "model"), forget=plan.forget, retain=plan.unlearn_retain, method=method,
                run=str(run), max_steps=cfg.unlearn_steps, forget_batch_size=4, retain_batch_size=cfg.retain_batch,
                grad_accum=1, save_steps=cfg.unlearn_steps, seed=cfg.seed, template=plan.fmt.template,
                lr=2e-4 if cfg.quick else cfg.unlearn_lr)
    if cfg.quick:
        demo["precision"] = "fp32"
    config = load_with_preset(UnlearnConfig, base=demo)
    if not config.objective().needs_retain:  # GA: no retain term, so no retain data (and no warning about it)
        config.retain = ""
    return config


def _done(run: Path) -> bool:
    return all((run / EVAL_DIR / f"{suite}.json").is_file() for suite in ("tofu", "related", "recall"))


class _Phases:
    """Numbered progress lines, each phase closed by its wall time (`with phases("fine-tuning …"):`)."""

    def __init__(self, total: int, echo):
        self.total, self.echo, self.done = total, echo, 0

    @contextmanager
    def __call__(self, title: str):
        self.done += 1
        self.echo(f"[{self.done}/{self.total}] {title}")
        t0 = time.time()
        yield
        self.echo(f"        ({time.time() - t0:.0f} s)")


def _uipe(cfg: DemoConfig, plan: _Plan, run: Path, uipe_run: Path, method: str, oracle: Path, echo) -> None:
    """UIPE on one unlearned run: the automatic α (held-out retain utility rule), θ_uipe written and evaluated."""
    from ..uipe.search import ExtrapolateConfig, alpha_search, extrapolate_run

    s = ExtrapolateConfig(alphas=(0.0,), suite="related", related_people=cfg.people, related_seed=cfg.seed,
                          forget_fraction=cfg.forget_fraction, max_new_tokens=cfg.max_new_tokens, auto=True,
                          auto_retain=plan.retain, tolerance=cfg.tolerance, limit=10, precision=cfg.eval_precision,
                          auto_max_evals=cfg.alpha_evals)
    res = alpha_search(run, s, echo=lambda m: echo("        " + m))
    alpha = res["auto"]["alpha"]
    model_dir = extrapolate_run(run, alpha, uipe_run / "model", overwrite=True)
    rd = open_run(uipe_run)
    rd.write_config("extrapolate", {"base_run": str(run), "method": method, "alpha": alpha,
                                    "alpha_rule": res["auto"]["rule"], "model": str(model_dir)}, cfg.seed)
    write_json(uipe_run / "uipe.json", {"method": method, "alpha": alpha, "auto": res["auto"]})
    evaluate_model(uipe_run, cfg, plan.fmt, oracle)


def run_demo(cfg: DemoConfig, echo=print) -> dict:
    t0 = time.time()
    out = Path(cfg.out)
    plan = _plan(cfg)
    phases = _Phases(4 + len(cfg.methods) * (2 if cfg.uipe else 1), echo)
    model_name = "a tiny from-scratch Llama" if cfg.quick else "SmolLM2-135M-Instruct"

    target, oracle = out / "target", out / "oracle"
    with phases(f"fine-tuning the target ({model_name}) on {cfg.people} synthetic people"):
        summary = finetune(finetune_config(cfg, plan.data, target, recall=True))
        echo(f"        exact-match recall of the answers: before {summary.get('recall_before', float('nan')):.1%} "
             f"({summary.get('recall_before_n', '?')} answers) -> after {summary.get('recall_after', float('nan')):.1%} "
             f"({summary.get('recall_after_n', '?')} answers; {summary['steps']} steps)")
    with phases("fine-tuning the retain oracle (never sees the forget people)"):
        finetune(finetune_config(cfg, plan.retain, oracle, recall=False, tokenizer=target / "model"))
    with phases("evaluating the target and the oracle"):
        for run in (oracle, target):
            if not _done(run):
                evaluate_model(run, cfg, plan.fmt, None if run == oracle else oracle)

    from ..train.unlearn import unlearn

    for method in cfg.methods:
        run = out / f"unlearn-{method}"
        with phases(f"unlearning with {method} ({cfg.unlearn_steps} steps) and evaluating"):
            unlearn(unlearn_config(cfg, plan, method, target, run))
            if not _done(run):
                evaluate_model(run, cfg, plan.fmt, oracle)
        if cfg.uipe:
            with phases(f"UIPE on {method}: automatic α, then evaluating θ_uipe"):
                if not _done(out / f"uipe-{method}"):
                    _uipe(cfg, plan, run, out / f"uipe-{method}", method, oracle, echo)

    with phases("writing the report"):
        from ..report import build_report

        report = build_report([out], out / "report", title="unlearnkit demo")["html"]
    table, story = summary_table(out), summary_text(out)
    total = time.time() - t0
    echo("")
    echo(table)
    echo("")
    echo(story)
    echo("")
    echo(f"demo finished in {total / 60:.1f} min; HTML report: {report}")
    write_json(out / "demo.json", {"seconds": total, "finetune": summary, "report": str(report), "summary": story})
    return {"seconds": total, "finetune": summary, "report": str(report), "table": table, "summary": story}


# the demo table's columns: registered metrics (`eval.metric_registry`), shown by their short names
SUMMARY_METRICS = ("recall:forget/exact_match", "recall:retain/exact_match", "tofu:forget_quality", "tofu:model_utility",
                   "tofu:forget/rouge_l_recall",
                   "related:target/probability", "related:related/probability", "related:multihop/probability",
                   "tofu:privleak")


def _read_runs(out: Path) -> list[tuple[str, dict]]:
    """[(run name, {"suite:key": value} of every suite in its eval/, as the report reads them)] for the demo's evaluated runs, in table
    order: target, oracle, then each method's unlearned run followed by its UIPE run."""
    order = {"target": 0, "oracle": 1}
    runs = sorted((p for p in Path(out).iterdir() if (p / EVAL_DIR / "tofu.json").is_file()),
                  key=lambda p: (order.get(p.name, 2), p.name.split("-", 1)[-1], not p.name.startswith("unlearn")))
    from ..report.collect import read_eval

    rows = []
    for run in runs:
        values = {f"{suite}:{key}": v for suite, table in read_eval(run)[0].items() for key, v in table.items()}
        if (run / "uipe.json").is_file():
            values["alpha"] = json.loads((run / "uipe.json").read_text())["alpha"]
        rows.append((run.name, values))
    return rows


def summary_table(out: Path) -> str:
    """A Markdown table of the demo's runs, read back from their eval/*.json files."""
    columns = [metric(name) for name in SUMMARY_METRICS]
    rows = []
    for name, values in _read_runs(out):
        label = name + (f" (α={values['alpha']:.2g})" if "alpha" in values else "")
        rows.append([label] + [_fmt(values.get(c.name)) for c in columns])
    return markdown_table(["run"] + [c.short for c in columns], rows)


def summary_text(out: Path) -> str:
    """Two or three sentences saying what the table shows, worded from its numbers (nothing is assumed: a method
    that did not forget, or a UIPE step that changed nothing, is said to have done so)."""
    runs = dict(_read_runs(out))
    target, oracle = runs.get("target"), runs.get("oracle")
    base = {n: v for n, v in runs.items() if n.startswith("unlearn-")}
    if not target or not oracle or not base:
        return ""
    fr, rr, fq, mu = "recall:forget/exact_match", "recall:retain/exact_match", "tofu:forget_quality", "tofu:model_utility"
    lines = [f"Fine-tuning taught the target {_pct(target.get(fr))} of the forget people's facts and "
             f"{_pct(target.get(rr))} of the retain people's (model utility {_num(target.get(mu))}; the retain oracle, "
             f"which never saw the forget people, recalls {_pct(oracle.get(fr))} of them)."]
    # the best base method: highest forget quality, then lowest forget recall, then highest retain recall
    name, best = max(base.items(), key=lambda kv: (_or(kv[1].get(fq), -1.0), -_or(kv[1].get(fr), 1.0),
                                                   _or(kv[1].get(rr), 0.0)))
    method = name.split("-", 1)[1]
    verdict = ("indistinguishable from the oracle at p ≥ 0.05" if _or(best.get(fq), 0) >= 0.05
               else "still distinguishable from the oracle")
    forgot = _or(best.get(fr), 1.0) < _or(target.get(fr), 1.0) - 0.05
    recall = (f"cut forget recall from {_pct(target.get(fr))} to {_pct(best.get(fr))}" if forgot
              else f"left forget recall at {_pct(best.get(fr))}")
    lines.append(f"The best base method, {method}, {recall} with forget quality {_num(best.get(fq))} ({verdict}) "
                 f"while retain recall is {_pct(best.get(rr))} and model utility {_num(best.get(mu))}.")
    uipe = runs.get(f"uipe-{method}")
    if uipe is not None:
        moves = [f"{what} probability {_num(best.get(key))} → {_num(uipe.get(key))}"
                 for what, key in (("target", "related:target/probability"),
                                   ("related-fact", "related:related/probability"),
                                   ("multi-hop", "related:multihop/probability"))]
        lines.append(f"UIPE (α={_num(uipe.get('alpha'))}) extrapolates {method}'s update to erase the knowledge that "
                     f"could rebuild the facts: {', '.join(moves)}, forget recall {_pct(uipe.get(fr))}, retain recall "
                     f"{_pct(uipe.get(rr))}.")
    return " ".join(lines)


def _or(v, default: float) -> float:
    return default if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _pct(v) -> str:
    return "–" if _or(v, None) is None else f"{100 * v:.0f}%"


def _num(v) -> str:
    return "–" if _or(v, None) is None else f"{v:.2g}"


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e3 else f"{v:.3f}"
