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
"""
from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..config import to_dict
from ..data.collate import PromptFormat
from ..data.synthetic import LINKED, generate_related_knowledge
from ..markdown import markdown_table
from ..runs import last_checkpoint, open_run, write_json

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


P1_KINDS = ("target", "related", "unrelated", "world")
P2_KINDS = ("target", "unrelated", "world")


# -- evaluation ----------------------------------------------------------------------------------------------
class Probe:
    """The related-knowledge probe on the forget people and the utility on retain people, for one model.

    forget/<kind>/{probability, rouge_l_recall, truth_ratio}   `eval.related.run_related` (target, related, multihop)
    forget/<kind>/value_recall      greedy answer contains the value (target, multihop) or the clue (related)
    forget/chain_recovery           greedy related answer names the clue AND greedy world answer names the value:
                                    the target rebuilt through related knowledge in two explicit hops
    forget/score                    mean of the target, related and multi-hop probabilities (lower = more forgotten)
    retain/<kind>/probability       teacher-forced exp(−mean NLL) on the first `eval_retain_people` retain people
    utility                         mean of retain/<kind>/probability over the kinds the model was trained on
    """

    def __init__(self, cfg: RelatedKnowledgeConfig, dataset, fmt: PromptFormat):
        self.cfg, self.ds, self.fmt = cfg, dataset, fmt
        self.forget, retain = dataset.split(cfg.forget_fraction)
        self.retain = retain[: cfg.eval_retain_people]

    def __call__(self, model, tok, trained: tuple[str, ...] = P1_KINDS) -> dict[str, float]:
        from ..eval.related import run_related
        from ..eval.scoring import score_records

        model.eval()
        out = {f"forget/{k}": m.value for k, m in run_related(
            model, tok, self.ds, self.forget, self.fmt, kinds=("target", "related", "multihop"),
            max_new_tokens=self.cfg.max_new_tokens).items()}
        out.update(self._recall(model, tok))
        out["forget/score"] = sum(out[f"forget/{k}/probability"] for k in ("target", "related", "multihop")) / 3
        kinds = ("target", "related", "unrelated", "world")
        recs = self.ds.records(kinds=kinds, people=self.retain)
        scores = score_records(model, tok, recs, self.fmt, fields=("answer",))
        for kind in kinds:
            ps = [math.exp(s.answer.mean_lp) for r, s in zip(recs, scores) if r.tags["kind"] == kind]
            out[f"retain/{kind}/probability"] = sum(ps) / len(ps)
        out["utility"] = sum(out[f"retain/{k}/probability"] for k in trained) / len(trained)
        return out

    def _recall(self, model, tok) -> dict[str, float]:
        from ..eval.generation import generate_answers

        items = []  # (kind, question, expected substring)
        for i in self.forget:
            p = self.ds.people[i]
            for r in self.ds.records(kinds=("target", "related", "multihop"), people=[i]):
                value, clue = p.linked[r.tags["category"]]
                items.append((r.tags["kind"], r.question, clue if r.tags["kind"] == "related" else value))
        world = {(r.tags["category"], r.tags["value"]): r for r in self.ds.world_records(self.forget)}
        chain = []
        for i in self.forget:
            for cat in LINKED:
                value, clue = self.ds.people[i].linked[cat.name]
                items.append(("world", world[(cat.name, value)].question, value))
                chain.append((len(items) - 1, i, cat.name))
        gens = generate_answers(model, tok, [q for _, q, _ in items], self.fmt, self.cfg.max_new_tokens)
        hit = [want.lower() in g.lower() for (_, _, want), g in zip(items, gens)]
        out = {}
        for kind in ("target", "related", "multihop"):
            h = [x for (k, _, _), x in zip(items, hit) if k == kind]
            out[f"forget/{kind}/value_recall"] = sum(h) / len(h)
        related_hit = {(items[j][1]): hit[j] for j in range(len(items)) if items[j][0] == "related"}
        ok = []
        for j, i, cat in chain:
            rq = next(r.question for r in self.ds.records(kinds=("related",), people=[i]) if r.tags["category"] == cat)
            ok.append(related_hit[rq] and hit[j])
        out["forget/chain_recovery"] = sum(ok) / len(ok)
        return out


# -- the pieces ------------------------------------------------------------------------------------------------
def param_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """‖a − b‖₂ over the floating-point tensors the two state dicts share."""
    total = 0.0
    for k, v in a.items():
        if k in b and v.is_floating_point():
            total += float((v.detach().double() - b[k].detach().double()).pow(2).sum())
    return math.sqrt(total)


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


def continue_until_norm(run_dir: Path, targets: dict[str, float], out: Path, max_extra_steps: int,
                        echo=log.info) -> dict:
    """Continue an unlearning run from θ_un and stop at the first step where ‖θ − θ_ini‖ ≥ each target norm.

    Same objective, data, batch size, weight decay, clipping and (constant) learning rate as the base run, and the
    base run's AdamW moments from its last checkpoint (`_continued_optimizer`); the retain stream continues at the
    base run's draw count. The norm is
    measured after every step and logged to `<out>/log.jsonl`; the parameters at each target's first hit are saved
    as `<out>/models/<name>/`. A target not reached within `max_extra_steps` keeps the last state and is marked
    `reached: false`. Returns (and writes `<out>/continue.json`) `{name: {"target", "step", "norm", "reached"}}`.
    """
    from torch.utils.data import DataLoader

    from ..data.collate import QADataset
    from ..data.specs import load_records
    from ..objectives import FrozenModelReference, UnlearnBatch, build_objective
    from ..train.hf_glue import save_model_atomically
    from ..train.unlearn_data import ForgetDataset, RetainStream, UnlearnCollator
    from ..runs import read_run_record
    from ..uipe.search import read_unlearn_run

    summary_path = out / "continue.json"
    if summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if set(done["targets"]) >= set(targets) and all((out / "models" / n).is_dir() for n in targets):
            return {n: done["targets"][n] for n in targets}
    inputs = read_unlearn_run(run_dir)
    record = read_run_record(inputs.run.path)
    base_cfg = dict(record.config)
    torch.manual_seed(int(base_cfg.get("seed", 0)))
    objective = build_objective(inputs.method, dict(base_cfg.get("params") or {}))
    model, tok = _load(inputs.theta_un)
    ini, _ = _load(Path(inputs.theta_ini))
    ini.requires_grad_(False)
    ini_sd = {k: v.detach().clone() for k, v in ini.state_dict().items()}
    fmt = inputs.prompt_format
    forget = QADataset(load_records(inputs.forget), tok, fmt)
    bs = int(base_cfg["forget_batch_size"])
    gen = torch.Generator().manual_seed(int(base_cfg.get("seed", 0)))
    loader = DataLoader(ForgetDataset(forget), batch_size=bs, shuffle=True, generator=gen,
                        collate_fn=UnlearnCollator(tok.pad_token_id))
    retain = None
    if objective.needs_retain:
        retain = RetainStream(QADataset(load_records(inputs.retain), tok, fmt),
                              int(base_cfg.get("retain_batch_size") or bs), tok.pad_token_id, seed=base_cfg.get("seed", 0))
    if not record.summary:
        raise FileNotFoundError(f"{inputs.run.path}: no finished unlearn summary; finish the base run first")
    base_steps = int(record.summary.get("steps") or 0)
    reference = FrozenModelReference(ini) if objective.needs_reference else None
    opt, opt_source = _continued_optimizer(model, inputs.run.checkpoints, float(base_cfg["lr"]),
                                           float(base_cfg["weight_decay"]))
    clip = float(base_cfg.get("max_grad_norm") or 0)
    run = open_run(out)
    (out / "log.jsonl").unlink(missing_ok=True)
    run.write_config("unlearn_continue", {"base_run": str(inputs.run.path), "targets": targets,
                                          "max_extra_steps": max_extra_steps, "lr": base_cfg["lr"],
                                          "method": inputs.method, "params": base_cfg.get("params", {}),
                                          "scheduler": "constant", "optimizer": opt_source},
                     seed=base_cfg.get("seed"))
    model.train()
    result: dict[str, dict] = {}
    pending = dict(targets)
    norm0 = param_distance(model.state_dict(), ini_sd)
    run.log({"step": 0, "norm": norm0})
    step, norm = 0, norm0
    while pending and step < max_extra_steps:
        for batch in loader:
            if not pending or step >= max_extra_steps:
                break
            rb = retain.batch(base_steps + step) if retain is not None else None
            loss, terms = objective.loss(model, UnlearnBatch(forget=batch["forget"], retain=rb), reference)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{out}: loss {float(loss)} at extra step {step + 1}")
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            norm = param_distance(model.state_dict(), ini_sd)
            run.log({"step": step, "loss": float(loss.detach()), "norm": norm,
                     **{k: float(v) for k, v in terms.items() if k != "loss"}})
            for name, target in list(pending.items()):
                if norm >= target:
                    save_model_atomically(model, tok, out / "models" / name)
                    result[name] = {"target": target, "step": step, "norm": norm, "reached": True}
                    del pending[name]
                    echo(f"  trained longer [{name}]: ‖θ − θ_ini‖ = {norm:.4g} ≥ {target:.4g} after {step} extra steps")
    for name, target in pending.items():
        save_model_atomically(model, tok, out / "models" / name)
        result[name] = {"target": target, "step": step, "norm": norm, "reached": False}
        echo(f"  trained longer [{name}]: not reached within {max_extra_steps} steps (‖θ − θ_ini‖ = {norm:.4g} "
             f"< {target:.4g}); the last state is evaluated")
    write_json(summary_path, {"targets": result, "start_norm": norm0, "optimizer": opt_source})
    return result


def _continued_optimizer(model, checkpoints: Path, lr: float, weight_decay: float):
    """AdamW grouped as the HF Trainer groups it (decay / no decay), loaded with the state in the base run's last
    checkpoint when there is one (then the extra steps continue the same Adam moments)."""
    from transformers import Trainer


    decay = set(Trainer.get_decay_parameter_names(None, model))  # HF's rule; it does not use `self`
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr)
    ckpt = last_checkpoint(checkpoints) if checkpoints.is_dir() else None
    if ckpt is None or not (Path(ckpt) / "optimizer.pt").is_file():
        return opt, "AdamW, fresh state (the base run left no optimizer.pt)"
    state = torch.load(Path(ckpt) / "optimizer.pt", map_location="cpu", weights_only=False)
    sizes = [len(g["params"]) for g in state["param_groups"]]
    if sizes != [len(g["params"]) for g in groups]:
        raise ValueError(f"{ckpt}/optimizer.pt has parameter groups of sizes {sizes}, this model "
                         f"{[len(g['params']) for g in groups]}: it was not written for this model")
    flat = [p for g in groups for p in g["params"]]
    for idx, st in state["state"].items():
        if "exp_avg" in st and tuple(st["exp_avg"].shape) != tuple(flat[idx].shape):
            raise ValueError(f"{ckpt}/optimizer.pt: state {idx} has shape {tuple(st['exp_avg'].shape)}, the "
                             f"parameter {tuple(flat[idx].shape)}: parameter order differs from the Trainer's")
    opt.load_state_dict(state)
    for g in opt.param_groups:
        g["lr"] = lr
    return opt, f"AdamW continued from {Path(ckpt).name}/optimizer.pt"


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
    from ..uipe.gradient_similarity import RELATIONS, gradient_cosines, relation_pairs, similarity_table

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
    probe = Probe(cfg, ds, fmt)
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
    results["reconstruction"] = {"method": m1, "rows": recon}
    timings["reconstruction"] = time.time() - t0 - sum(timings.values())

    # 4. gradient similarity (Mechanism 2) on P1
    echo("[gradients] cosines of ∇ log p(fact) on P1")
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
    results["gradient_similarity"] = {"model": "P1", "people": min(cfg.grad_people, cfg.people),
                                      "gradient": "∇_θ log p(answer | question), summed over answer tokens",
                                      "groups": {"all": "every parameter", "blocks": "transformer blocks only "
                                                 "(no embeddings, no output head)"}, **by_group}
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
    (out / "results.md").write_text(results_markdown(results))
    results["plots"] = [str(p) for p in write_plots(results, out / "plots")]
    write_json(out / "results.json", results)
    echo(f"results: {out / 'results.json'}, {out / 'results.md'} ({results['seconds']['total']:.0f}s)")
    return results


# -- reporting -----------------------------------------------------------------------------------------------------
def _f(x, nd=3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


PROBE_COLS = [("target p", "forget/target/probability"), ("target rouge", "forget/target/rouge_l_recall"),
              ("target recall", "forget/target/value_recall"), ("related p", "forget/related/probability"),
              ("related recall", "forget/related/value_recall"), ("multihop p", "forget/multihop/probability"),
              ("multihop rouge", "forget/multihop/rouge_l_recall"), ("multihop recall", "forget/multihop/value_recall"),
              ("chain", "forget/chain_recovery"), ("utility", "utility"), ("retain world p", "retain/world/probability")]


def results_markdown(res: dict) -> str:
    s = res["setup"]
    parts = [f"# Related-knowledge experiment (UIPE design, toy scale)\n\n{s['model']}; {s['people']} people "
             f"({s['forget_people']} forget, {s['retain_people']} retain).\n"]
    ft = res["finetune"]
    parts.append(markdown_table(["model", "data", "records", "steps", "recall after fine-tuning"],
                        [[k, s["specs"]["p1" if k == "P1" else "p2"], str(v["records"]), str(v["steps"]),
                          _f(v.get("recall_after"))] for k, v in ft.items()]))
    parts.append("\n## 1. Reconstruction (Mechanism 1)\n\nForget people; `recall` = greedy answer contains the value "
                 "(target, multi-hop) or the clue (related); `chain` = related answer names the clue and the world "
                 "answer names the value; utility = retain people's probability on the kinds the model was trained on.\n")
    parts.append(markdown_table(["model"] + [c for c, _ in PROBE_COLS],
                        [[r["model"]] + [_f(r["metrics"].get(k)) for _, k in PROBE_COLS]
                         for r in res["reconstruction"]["rows"]]))
    g = res["gradient_similarity"]
    parts.append(f"\n## 2. Gradient similarity (Mechanism 2)\n\nCosine of {g['gradient']} on P1 between a target fact "
                 f"and another fact, {g['people']} people; mean and 95% t-interval.\n")
    for group, desc in g["groups"].items():
        parts.append(f"\n**{group}** ({desc})\n\n" + markdown_table(
            ["relation to the target", "mean cos", "95% CI", "pairs"],
            [[r["relation"], _f(r["mean"], 4), f"[{_f(r['ci_low'], 4)}, {_f(r['ci_high'], 4)}]", str(r["n"])]
             for r in g[group]["table"]]))
    u = res["uipe"]
    parts.append(f"\n## 3. Base vs UIPE vs trained longer (P1)\n\nbest α: lowest forget score (mean of target, related "
                 f"and multi-hop probability) with utility ≥ {u['utility_floor']}·utility(θ_un), grid {u['alphas']}; "
                 f"automatic α: held-out retain probability within {u['tolerance']:.0%} of θ_un's; trained longer: "
                 f"continue from θ_un until ‖θ − θ_ini‖ first reaches ‖θ_uipe − θ_ini‖.\n")
    cols = [("score", "forget/score")] + PROBE_COLS
    rows = []
    for method, r in u["methods"].items():
        for name, v in r["variants"].items():
            if "metrics" not in v:
                rows.append([method, name, "–", "–", "–"] + ["–"] * len(cols))
                continue
            extra = f"{v['extra_steps']}{'' if v.get('reached') else ' (not reached)'}" if "extra_steps" in v else "–"
            rows.append([method, name, _f(v["alpha"], 2), _f(v["norm"], 3), extra]
                        + [_f(v["metrics"].get(k)) for _, k in cols])
    parts.append(markdown_table(["method", "variant", "α", "‖θ − θ_ini‖", "extra steps"] + [c for c, _ in cols], rows))
    parts.append("\n### α grid per method\n")
    for method, r in u["methods"].items():
        parts.append(f"\n**{method}** (auto α = {_f(r['auto_alpha'], 3)}, {r['auto']['stopped']})\n\n" + markdown_table(
            ["α", "norm", "score", "target p", "related p", "multihop p", "utility"],
            [[a, _f(v["norm"]), _f(v["forget/score"]), _f(v["forget/target/probability"]),
              _f(v["forget/related/probability"]), _f(v["forget/multihop/probability"]), _f(v["utility"])]
             for a, v in r["grid"].items()]))
    parts.append(f"\nTime: {', '.join(f'{k} {v:.0f}s' for k, v in res['seconds'].items())}.\n")
    return "\n".join(parts) + "\n"


def write_plots(res: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    # reconstruction: forget probabilities per model
    rows = res["reconstruction"]["rows"]
    kinds = ["target", "related", "multihop"]
    fig, ax = plt.subplots(figsize=(8, 4))
    w = 0.8 / len(rows)
    for j, r in enumerate(rows):
        ax.bar([i + j * w for i in range(len(kinds))], [r["metrics"][f"forget/{k}/probability"] for k in kinds], w,
               label=r["model"])
    ax.set_xticks([i + 0.4 - w / 2 for i in range(len(kinds))], kinds)
    ax.set_ylabel("forget people: answer probability")
    ax.set_title("Reconstruction: P1 (targets + related) vs P2 (targets only)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(folder / "reconstruction.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # gradient similarity
    g = res["gradient_similarity"]
    groups = list(g["groups"])
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, group in zip(axes[0], groups):
        t = g[group]["table"]
        means = [r["mean"] for r in t]
        err = [[r["mean"] - r["ci_low"] for r in t], [r["ci_high"] - r["mean"] for r in t]]
        ax.barh(range(len(t)), means, xerr=err, color="tab:blue", capsize=3)
        ax.set_yticks(range(len(t)), [r["relation"] for r in t], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("cos(∇ log p(target), ∇ log p(other))")
        ax.set_title(f"P1 gradients ({group})")
    fig.tight_layout()
    paths.append(folder / "gradient_similarity.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # base vs UIPE vs longer: utility vs forget score
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = {"base": "o", "uipe_best": "*", "uipe_auto": "P", "longer_best": "s", "longer_auto": "D"}
    for c, (method, r) in enumerate(res["uipe"]["methods"].items()):
        color = f"C{c}"
        grid = r["grid"]
        ax.plot([v["utility"] for v in grid.values()], [v["forget/score"] for v in grid.values()], "-", color=color,
                alpha=0.4)
        for name, v in r["variants"].items():
            if "metrics" in v:
                ax.scatter(v["metrics"]["utility"], v["metrics"]["forget/score"], marker=markers.get(name, "x"),
                           color=color, s=60, label=f"{method} {name}")
    ax.set_xlabel("utility (retain people's probability)")
    ax.set_ylabel("forget score (mean target/related/multi-hop probability)")
    ax.set_title("Base vs UIPE vs trained longer (lower-right is better)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    paths.append(folder / "uipe_vs_longer.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
