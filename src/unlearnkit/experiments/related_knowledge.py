"""`unlearnkit experiment related-knowledge`: UIPE's design on synthetic people with a tiny from-scratch Llama.

UIPE (arXiv 2503.04693) claims (1) a model can *reconstruct* an unlearned target from related knowledge it still
holds, (2) related knowledge is close to the target in parameter space (aligned gradients), and therefore (3)
extrapolating the unlearning update, θ_un + α(θ_un − θ_ini), removes related knowledge too. This experiment
reproduces that design on `generate_related_knowledge` data, at toy scale (a tiny Llama trained from scratch on
CPU; not the paper's LLaMA-2-7B on TOFU):

1. **Reconstruction (Mechanism 1).** P1 is fine-tuned on targets + related + world + unrelated facts, P2 on
   targets + world + unrelated only (same people, same tokenizer, same initialisation, same number of steps).
   Both unlearn the forget people's targets (same method and steps). Recoverability of the target is measured by
   multi-hop questions (probability, ROUGE-L recall, value recall) and by an explicit two-step chain through
   related facts (greedy related answer names the clue ∧ greedy world answer names the value). P3 unlearns
   targets + related facts together on P1.
2. **Gradient similarity (Mechanism 2).** On P1, per-pair cosines of ∇ log p(fact) between a target and its
   related fact, unrelated facts, the world bridge, and other people's facts; mean and 95 % t-interval
   (`uipe.gradient_similarity`).
3. **Base vs UIPE vs trained longer.** For GA, GradDiff, KL and NPO on P1: θ_un; θ_uipe with the best α of a small
   grid (lowest forget probe score among α with utility ≥ `utility_floor`·utility(θ_un); this uses the forget
   people, as the paper's hand-picked α does); θ_uipe with the automatic α (`uipe.auto_alpha`, held-out retain
   slice only); and the base run *trained longer* from θ_un (same objective, same constant learning rate, fresh
   AdamW state) until ‖θ − θ_ini‖ first reaches ‖θ_uipe − θ_ini‖, measured after every extra step.

Outputs under `out`: `p1/`, `p2/` (finetune runs), `unlearn/<name>/` (unlearning runs, each with
`uipe/alpha_probe.json` and `uipe/tradeoff.png`), `longer/<method>/` (continuation runs: `log.jsonl` with the norm
per step, `models/<variant>/`), `results.json`, `results.md` and `plots/*.png`. Finished sub-runs are reused when the
experiment is run again with the same `out`.

The pieces it assembles live with their kind: the probe in `eval/related_probe.py`, the continuation in
`train/continuation.py` (through `UnlearnTrainer`), the tables and plots in `report/related_knowledge.py`.
"""
from __future__ import annotations

import copy
import logging
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..config import to_dict
from ..data.collate import PromptFormat
from ..data.synthetic import generate_related_knowledge
from ..eval.related_probe import P1_KINDS, P2_KINDS, Probe
from ..report.related_knowledge import results_markdown, write_plots
from ..runs import atomic_write_text, open_run, write_json
from ..train.continuation import continue_until_norm, param_distance

log = logging.getLogger(__name__)

METHODS = ("ga", "grad_diff", "kl", "npo")

# settings left at None take the preset's value (`quick` for tests and smoke runs, `full` otherwise)
PRESETS: dict[str, dict[str, Any]] = {
    "full": dict(people=50, hidden=128, layers=4, vocab=1024, ft_epochs=25.0, ft_lr=2e-3, unlearn_steps=20,
                 unlearn_lr=1e-4, alphas=[0.25, 0.5, 1.0, 2.0], max_extra_steps=200, grad_people=20,
                 eval_retain_people=15, auto_n=64, auto_max_evals=8, max_new_tokens=20),
    "quick": dict(people=6, hidden=64, layers=2, vocab=384, ft_epochs=6.0, ft_lr=3e-3, unlearn_steps=2,
                  unlearn_lr=5e-4, alphas=[1.0], max_extra_steps=3, grad_people=2, eval_retain_people=2,
                  auto_n=8, auto_max_evals=3, max_new_tokens=8),
}


@dataclass
class RelatedKnowledgeConfig:
    """UIPE's related-knowledge experiment on synthetic people with a tiny from-scratch model."""

    out: str = field(default="runs/rk", metadata={"help": "folder for every sub-run and the results"})
    quick: bool = field(default=False, metadata={"help": "tiny sizes for a smoke test (well under a minute)"})
    seed: int = field(default=0, metadata={"help": "seed for data, initialisation and training"})
    forget_fraction: float = field(default=0.1, metadata={"help": "share of people to forget (the last ones)"})
    people: Optional[int] = field(default=None, metadata={"help": "synthetic people (preset: 50 / quick 6)"})
    hidden: Optional[int] = field(default=None, metadata={"help": "tiny Llama hidden size"})
    layers: Optional[int] = field(default=None, metadata={"help": "tiny Llama layers"})
    vocab: Optional[int] = field(default=None, metadata={"help": "tokenizer vocabulary (trained on P1's data)"})
    ft_epochs: Optional[float] = field(default=None, metadata={"help": "P1 fine-tuning epochs (P2: the same steps)"})
    ft_lr: Optional[float] = field(default=None, metadata={"help": "fine-tuning learning rate"})
    ft_batch_size: int = field(default=16, metadata={"help": "fine-tuning batch size"})
    mech1_method: str = field(default="grad_diff", metadata={"help": "unlearning method of the P1/P2/P3 comparison"})
    methods: list[str] = field(default_factory=lambda: list(METHODS), metadata={"help": "base methods for UIPE"})
    unlearn_steps: Optional[int] = field(default=None, metadata={"help": "unlearning optimizer steps (every run)"})
    unlearn_lr: Optional[float] = field(default=None, metadata={"help": "unlearning learning rate (constant)"})
    unlearn_batch_size: int = field(default=8, metadata={"help": "forget (and retain) rows per step"})
    alphas: Optional[list[float]] = field(default=None, metadata={"help": "UIPE α grid (α = 0 is always added)"})
    utility_floor: float = field(default=0.9, metadata={"help": "best α: utility ≥ floor · utility(θ_un)"})
    tolerance: float = field(default=0.05, metadata={"help": "automatic α: allowed relative drop of held-out retain probability"})
    alpha_max: float = field(default=8.0, metadata={"help": "automatic α: upper bound"})
    auto_n: Optional[int] = field(default=None, metadata={"help": "automatic α: records in the held-out retain slice"})
    auto_max_evals: Optional[int] = field(default=None, metadata={"help": "automatic α: utility evaluations"})
    max_extra_steps: Optional[int] = field(default=None, metadata={"help": "trained longer: cap on extra steps"})
    grad_people: Optional[int] = field(default=None, metadata={"help": "gradient similarity: people (from the start)"})
    eval_retain_people: Optional[int] = field(default=None, metadata={"help": "retain people scored for utility"})
    max_new_tokens: Optional[int] = field(default=None, metadata={"help": "greedy answer length (ROUGE, recall)"})
    threads: int = field(default=0, metadata={"help": "torch.set_num_threads (0: leave torch's default); 1 is much "
                                                      "faster on a shared 2-core machine"})

    def __post_init__(self):
        if not 0 < self.forget_fraction < 1:
            raise ValueError(f"forget_fraction={self.forget_fraction}: must be in (0, 1)")
        if not 0 <= self.utility_floor <= 1:
            raise ValueError(f"utility_floor={self.utility_floor}: must be in [0, 1] (a fraction of θ_un's utility)")
        from ..objectives import OBJECTIVES

        for m in [self.mech1_method, *self.methods]:
            try:
                OBJECTIVES.get(m)
            except KeyError as exc:
                raise ValueError(f"methods: {exc}") from None
        if self.alphas is not None and any(a < 0 for a in self.alphas):
            raise ValueError(f"alphas={self.alphas}: UIPE extrapolates forward, α must be ≥ 0")

    def resolved(self) -> "RelatedKnowledgeConfig":
        """A copy with every None setting filled from the `quick` or `full` preset."""
        preset = PRESETS["quick" if self.quick else "full"]
        cfg = copy.deepcopy(self)
        for f in fields(cfg):
            if getattr(cfg, f.name) is None and f.name in preset:
                setattr(cfg, f.name, copy.deepcopy(preset[f.name]))
        return cfg


# -- data specs ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Specs:
    """The data specs of every run (P1 and P2 share people, seed and split)."""

    opts: str

    @classmethod
    def of(cls, cfg: RelatedKnowledgeConfig) -> "Specs":
        return cls(f"people={cfg.people},seed={cfg.seed},forget_fraction={cfg.forget_fraction}")

    def __getattr__(self, name):  # p1, p2, forget, forget_related_too, retain_p1, retain_p2
        table = {"p1": "synthetic:train", "p2": "synthetic:targets_only", "forget": "synthetic:forget",
                 "forget_related_too": "synthetic:forget,kinds=target+related", "retain_p1": "synthetic:retain",
                 "retain_p2": "synthetic:targets_only,who=retain"}
        if name not in table:
            raise AttributeError(name)
        return f"{table[name]},{self.opts}"




# -- the pieces ------------------------------------------------------------------------------------------------
def _finetune_config(cfg: RelatedKnowledgeConfig, data: str, run: Path, max_steps: int = -1):
    from ..train.finetune import FinetuneConfig

    return FinetuneConfig(model="tiny", data=data, run=str(run), epochs=cfg.ft_epochs, max_steps=max_steps,
                          lr=cfg.ft_lr, batch_size=cfg.ft_batch_size, warmup=0.05, tiny_hidden=cfg.hidden,
                          tiny_layers=cfg.layers, tiny_vocab=cfg.vocab, precision="fp32", keep_checkpoints=1,
                          recall_max=0, seed=cfg.seed, logging_steps=50,
                          save_steps=500)


def train_models(cfg: RelatedKnowledgeConfig, specs: Specs, out: Path, echo) -> dict:
    """P1 (targets + related) and P2 (targets only): same tokenizer (P1's), same init, same number of steps."""
    from ..train.finetune import finetune

    echo(f"[P1] fine-tuning on {specs.p1}")
    p1 = finetune(_finetune_config(cfg, specs.p1, out / "p1"))
    tok_dst = out / "p2" / "tokenizer"
    if not tok_dst.is_dir():  # finetune reuses a tokenizer found in the run dir: P2 scores the same token ids
        tok_dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(out / "p1" / "tokenizer", tok_dst)
    echo(f"[P2] fine-tuning on {specs.p2} for the same {p1['steps']} steps")
    p2 = finetune(_finetune_config(cfg, specs.p2, out / "p2", max_steps=int(p1["steps"])))
    return {"P1": p1, "P2": p2}


def _unlearn(cfg: RelatedKnowledgeConfig, model_dir: Path, method: str, forget: str, retain: str, run: Path) -> dict:
    from ..train.unlearn import UnlearnConfig, unlearn

    return unlearn(UnlearnConfig(
        model=str(model_dir), forget=forget, retain=retain, method=method, run=str(run), max_steps=cfg.unlearn_steps,
        lr=cfg.unlearn_lr, scheduler="constant", forget_batch_size=cfg.unlearn_batch_size, grad_accum=1,
        precision="fp32", save_steps=cfg.unlearn_steps, keep_checkpoints=1, seed=cfg.seed, logging_steps=1))


def _load(path: Path):
    from ..models.loading import load_model

    model, tok = load_model(str(path))
    return model.eval(), tok


def choose_best_alpha(points: dict[float, dict], floor: float) -> float:
    """Lowest `forget/score` among the α whose utility ≥ floor · utility(α = 0) (α = 0 always qualifies)."""
    if 0.0 not in points:
        raise ValueError("choose_best_alpha: the points must include α = 0 (θ_un)")
    base = points[0.0]["utility"]
    ok = [a for a, m in points.items() if m["utility"] >= floor * base]
    return min(ok, key=lambda a: (points[a]["forget/score"], a))


def uipe_for_method(cfg: RelatedKnowledgeConfig, run_dir: Path, probe: Probe, specs: Specs, out: Path, echo) -> dict:
    """θ_un, the α grid, best α, automatic α, and θ trained longer to the UIPE norms, for one base run."""
    from ..uipe.auto_alpha import auto_alpha
    from ..uipe.search import heldout_retain_slice, load_pair, plot_tradeoff, read_unlearn_run, retain_utility_fn, set_alpha

    inputs = read_unlearn_run(run_dir)
    model, tok, base_sd, un_sd = load_pair(inputs)
    fmt = inputs.prompt_format
    norm_un = param_distance(un_sd, base_sd)
    points: dict[float, dict] = {}
    norms: dict[float, float] = {}

    def at(a: float) -> dict:
        if a not in points:
            set_alpha(model, base_sd, un_sd, a)
            norms[a] = param_distance(model.state_dict(), base_sd)
            points[a] = probe(model, tok, P1_KINDS)
        return points[a]

    for a in sorted({0.0, *map(float, cfg.alphas)}):
        at(a)
    recs = heldout_retain_slice(specs.retain_p1, cfg.auto_n)
    auto = auto_alpha(retain_utility_fn(model, tok, recs, fmt, base_sd, un_sd), tolerance=cfg.tolerance,
                      alpha_max=cfg.alpha_max, max_evals=cfg.auto_max_evals)
    at(auto.alpha)
    best = choose_best_alpha({a: points[a] for a in sorted({0.0, *map(float, cfg.alphas)})}, cfg.utility_floor)
    set_alpha(model, base_sd, un_sd, 0.0)
    echo(f"  {inputs.method}: ‖θ_un − θ_ini‖ = {norm_un:.4g}; best α = {best:g}, automatic α = {auto.alpha:.3g}")
    search = {"suite": "related", "method": inputs.method,
              "points": [{"alpha": a, "metrics": points[a], "auto": a == auto.alpha, "norm": norms[a]}
                         for a in sorted(points)]}
    write_json(run_dir / "uipe" / "alpha_probe.json", {**search, "best_alpha": best, "auto": auto.to_json()})
    plot_tradeoff(search, run_dir / "uipe" / "tradeoff.png")

    variants: dict[str, dict] = {"base": {"alpha": 0.0, "norm": norms[0.0], "metrics": points[0.0]},
                                 "uipe_best": {"alpha": best, "norm": norms[best], "metrics": points[best]},
                                 "uipe_auto": {"alpha": auto.alpha, "norm": norms[auto.alpha],
                                               "metrics": points[auto.alpha]}}
    targets = {f"longer_{k[5:]}": variants[k]["norm"] for k in ("uipe_best", "uipe_auto") if variants[k]["alpha"] > 0}
    if targets:
        hits = continue_until_norm(run_dir, targets, out / "longer" / inputs.method, cfg.max_extra_steps, echo)
        for name, hit in hits.items():
            m, t = _load(out / "longer" / inputs.method / "models" / name)
            variants[name] = {"alpha": None, "norm": hit["norm"], "extra_steps": hit["step"],
                              "reached": hit["reached"], "target_norm": hit["target"], "metrics": probe(m, t, P1_KINDS)}
    for k in ("best", "auto"):
        if f"longer_{k}" not in variants:
            variants[f"longer_{k}"] = {"alpha": None, "skipped": f"α_{k} = 0: no extra norm to match"}
    return {"norm_un": norm_un, "best_alpha": best, "auto_alpha": auto.alpha, "auto": auto.to_json(),
            "grid": {str(a): {"norm": norms[a], **points[a]} for a in sorted(points)}, "variants": variants}


def reconstruction(probe: Probe, m1: str, p1_model: Path, p2_model: Path, un: Path, echo) -> dict:
    """Mechanism 1: the probe on P1 and P2 before and after unlearning the targets, and on P3."""
    rows = [("P1 (targets + related), before unlearning", p1_model, P1_KINDS),
            (f"P1 after unlearning targets ({m1})", un / f"P1-{m1}" / "model", P1_KINDS),
            ("P2 (targets only), before unlearning", p2_model, P2_KINDS),
            (f"P2 after unlearning targets ({m1})", un / f"P2-{m1}" / "model", P2_KINDS),
            (f"P3 = P1 after unlearning targets + related ({m1})", un / f"P3-{m1}" / "model", P1_KINDS)]
    recon = []
    for label, path, trained in rows:
        echo(f"[probe] {label}")
        m, t = _load(path)
        recon.append({"model": label, "path": str(path), "metrics": probe(m, t, trained)})
    return {"method": m1, "rows": recon}


def gradient_similarity(cfg: RelatedKnowledgeConfig, ds, p1_model: Path, fmt: PromptFormat) -> dict:
    """Mechanism 2: cosines of ∇ log p(fact) on P1 between a target and each related kind of fact."""
    from ..uipe.gradient_similarity import RELATIONS, gradient_cosines, relation_pairs, similarity_table

    m, t = _load(p1_model)
    pairs = relation_pairs(ds, list(range(min(cfg.grad_people, cfg.people))), seed=cfg.seed)
    flat = [p for rel in RELATIONS for p in pairs[rel]]
    cos = gradient_cosines(m, t, flat, fmt)
    by_group: dict[str, dict] = {}
    for group, values in cos.items():
        per_rel, i = {}, 0
        for rel in RELATIONS:
            per_rel[rel] = values[i: i + len(pairs[rel])]
            i += len(pairs[rel])
        by_group[group] = {"table": similarity_table(per_rel), "cosines": per_rel}
    return {"model": "P1", "people": min(cfg.grad_people, cfg.people),
            "gradient": "∇_θ log p(answer | question), summed over answer tokens",
            "groups": {"all": "every parameter", "blocks": "transformer blocks only (no embeddings, no output head)"},
            **by_group}


# -- main path ---------------------------------------------------------------------------------------------------
def run_related_knowledge(cfg: RelatedKnowledgeConfig, echo: Callable[[str], Any] = print) -> dict:
    cfg = cfg.resolved()
    threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, echo)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: RelatedKnowledgeConfig, echo) -> dict:
    t0 = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    open_run(out).write_config("experiment/related-knowledge", to_dict(cfg), seed=cfg.seed)
    specs = Specs.of(cfg)
    ds = generate_related_knowledge(cfg.people, cfg.seed)
    forget_people, retain_people = ds.split(cfg.forget_fraction)
    results: dict[str, Any] = {
        "setup": {"model": f"tiny Llama from scratch: hidden {cfg.hidden}, {cfg.layers} layers, vocab {cfg.vocab}",
                  "people": cfg.people, "forget_people": len(forget_people), "retain_people": len(retain_people),
                  "specs": {k: getattr(specs, k) for k in ("p1", "p2", "forget", "forget_related_too",
                                                          "retain_p1", "retain_p2")}}}

    # 1. fine-tuning
    timings = {}
    results["finetune"] = train_models(cfg, specs, out, echo)
    timings["finetune"] = time.time() - t0
    for name in ("P1", "P2"):
        s = results["finetune"][name]
        echo(f"  {name}: {s['records']} records, {s['steps']} steps, recall after {s.get('recall_after', float('nan')):.1%}")
    p1_model = out / "p1" / "model"
    p2_model = out / "p2" / "model"

    # 2. unlearning runs
    un = out / "unlearn"
    m1 = cfg.mech1_method
    runs = {f"P1-{m}": (p1_model, m, specs.forget, specs.retain_p1) for m in dict.fromkeys([m1, *cfg.methods])}
    runs[f"P2-{m1}"] = (p2_model, m1, specs.forget, specs.retain_p2)
    runs[f"P3-{m1}"] = (p1_model, m1, specs.forget_related_too, specs.retain_p1)
    for name, (model_dir, method, forget, retain) in runs.items():
        echo(f"[unlearn] {name}: {method} on {forget}")
        s = _unlearn(cfg, model_dir, method, forget, retain, un / name)
        results.setdefault("unlearn", {})[name] = {"method": method, "forget": forget, "retain": retain,
                                                   "steps": s.get("steps"), "train_loss": s.get("train_loss")}
    timings["unlearn"] = time.time() - t0 - sum(timings.values())

    # 3. reconstruction (Mechanism 1)
    fmt = PromptFormat(template="plain", max_length=256)
    probe = Probe(ds, fmt, cfg.forget_fraction, cfg.eval_retain_people, cfg.max_new_tokens)
    results["reconstruction"] = reconstruction(probe, m1, p1_model, p2_model, un, echo)
    timings["reconstruction"] = time.time() - t0 - sum(timings.values())

    # 4. gradient similarity (Mechanism 2) on P1
    echo("[gradients] cosines of ∇ log p(fact) on P1")
    results["gradient_similarity"] = gradient_similarity(cfg, ds, p1_model, fmt)
    timings["gradient_similarity"] = time.time() - t0 - sum(timings.values())

    # 5. base vs UIPE vs trained longer
    results["uipe"] = {"utility_floor": cfg.utility_floor, "tolerance": cfg.tolerance, "alphas": cfg.alphas,
                       "methods": {}}
    for method in cfg.methods:
        echo(f"[uipe] {method}")
        results["uipe"]["methods"][method] = uipe_for_method(cfg, un / f"P1-{method}", probe, specs, out, echo)
    timings["uipe"] = time.time() - t0 - sum(timings.values())

    results["seconds"] = {**timings, "total": time.time() - t0}
    write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", results_markdown(results))
    results["plots"] = [str(p) for p in write_plots(results, out / "plots")]
    write_json(out / "results.json", results)
    echo(f"results: {out / 'results.json'}, {out / 'results.md'} ({results['seconds']['total']:.0f}s)")
    return results
