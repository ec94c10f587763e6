"""UIPE over an unlearning run directory: α search (a trade-off table and plot) and the automatic α.

`alpha_search(run_dir, alphas, ...)` loads θ_ini once and θ_un once per checkpoint (`checkpoints`: the
final model by default, or `step-N` ones: UIPE's authors first pick a checkpoint before utility collapses,
then extrapolate it, so checkpoints × α can be searched in one call), then for each α sets the model's
weights to θ_un + α(θ_un − θ_ini) in memory and evaluates a fast subset of the evaluation suite:

* `suite="tofu"`: forget quality, model utility and forget ROUGE on `limit` questions per set;
* `suite="related"`: the related-knowledge probe (target / related / multi-hop probability and ROUGE)
  on the forget people, and the mean answer probability on the retain people as utility.

With `auto=True` it also runs `auto_alpha` (see that module) on held-out retain rows and records the
chosen α per checkpoint. Held-out means rows the run never trained on. The run's `RetainStream` draws
its retain batches from permutations of the *whole* retain set it loaded (`inputs.retain` in config.yaml,
empty when the method used no retain term), so after ⌈N/B⌉ draws every one of its N rows has been a
training row; which rows a shorter run drew depends on seed, batch size and process count. So no row of
the trained retain spec counts as held out: the rows are those of `auto_retain` (default: the run's retain
spec) whose (question, answer) is in neither the trained retain set nor the forget set; the last `auto_n`
of them are used. A run that trained on all of its retain spec needs `auto_retain=<other rows>`. Results: `<run>/uipe/alpha_search.json`, `alpha_search.csv`, `tradeoff.png`; the model for the
chosen α can be written with `extrapolate_run` (streaming for full checkpoints, rescaled adapter for LoRA).
"""
from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..data.collate import PromptFormat
from ..precision import autocast, resolve_precision
from ..runs import (FINAL_MODEL_DIRS, RunDir, checkpoint_step, last_checkpoint, list_checkpoints, open_run,
                    read_run_record, write_json)
from .auto_alpha import AutoAlphaResult, auto_alpha
from .extrapolate import extrapolate_checkpoint, extrapolate_state_dict

log = logging.getLogger(__name__)


@dataclass
class UnlearnRunInputs:
    """What UIPE needs from an unlearning run: θ_ini, θ_un and how the run was set up."""

    run: RunDir
    theta_ini: str
    theta_un: Path
    method: str
    forget: str
    retain: str
    template: str = "auto"
    masking: str = "exact"
    max_length: int = 256
    is_adapter: bool = False
    trained_retain: str = ""   # the retain spec the run's RetainStream drew from ("" if it read none)
    checkpoint: str = "final"

    @property
    def prompt_format(self) -> PromptFormat:
        return PromptFormat(template=self.template, masking=self.masking, max_length=self.max_length)


def read_unlearn_run(run_dir: str | Path, checkpoint: str | None = None) -> UnlearnRunInputs:
    """θ_ini from the run's record; θ_un = the final model/adapter, or `checkpoints/<checkpoint>`
    (`checkpoint` None or 'final': model/, adapter/, else the last step-N)."""
    run = open_run(run_dir, create=False)
    rec = read_run_record(run.path)
    if rec.kind != "unlearn":
        raise ValueError(f"{run.path}: kind={rec.kind!r}; UIPE extrapolates an unlearning run "
                         "(made by `unlearnkit unlearn`)")
    theta_un = _theta_un(run, checkpoint)
    fmt = rec.prompt_format(max_length=256)
    return UnlearnRunInputs(run=run, theta_ini=str(rec.theta_ini), theta_un=Path(theta_un), method=rec.method or "?",
                            forget=rec.forget or "", retain=rec.retain or "", template=fmt.template,
                            masking=fmt.masking, max_length=fmt.max_length,
                            is_adapter=(Path(theta_un) / "adapter_config.json").is_file(),
                            trained_retain=rec.trained_retain, checkpoint=checkpoint or "final")


def _theta_un(run: RunDir, checkpoint: str | None) -> Path:
    if checkpoint and checkpoint != "final":
        theta_un = run.checkpoints / checkpoint
        if not theta_un.is_dir():
            found = ", ".join(p.name for _, p in list_checkpoints(run.checkpoints)) or "none"
            raise FileNotFoundError(f"{run.path}: checkpoint={checkpoint!r} is not in {run.checkpoints} "
                                    f"(saved: {found}); pass checkpoint=final or one of them")
        return theta_un
    for final in FINAL_MODEL_DIRS:
        if (run.path / final).is_dir():
            return run.path / final
    theta_un = last_checkpoint(run.checkpoints)
    if theta_un is None or not Path(theta_un).is_dir():
        raise FileNotFoundError(f"{run.path}: no final model/, adapter/ or checkpoint to extrapolate")
    return theta_un


def load_pair(inputs: UnlearnRunInputs, base_sd: dict | None = None):
    """(model holding θ_un, tokenizer, θ_ini state dict, θ_un state dict); LoRA adapters are merged in memory.
    Pass `base_sd` (θ_ini's, from an earlier call) to skip loading θ_ini again."""
    from ..models.loading import load_model

    model, tok = load_model(str(inputs.theta_un))
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if base_sd is None:
        base, _ = load_model(inputs.theta_ini)
        base_sd = {k: v.detach().clone() for k, v in base.state_dict().items()}
        del base
    un_sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return model.eval(), tok, base_sd, un_sd


def set_alpha(model, base_sd, un_sd, alpha: float) -> None:
    """Load θ_un + α(θ_un − θ_ini) into `model` (α = 0 restores θ_un exactly)."""
    sd = un_sd if alpha == 0 else extrapolate_state_dict(base_sd, un_sd, alpha)
    model.load_state_dict(sd, strict=True)


def retain_utility_fn(model, tok, records, fmt: PromptFormat, base_sd, un_sd, batch_size: int = 32,
                      precision: str = "fp32") -> Callable[[float], float]:
    """u(α): mean answer probability exp(−mean NLL) on `records`, teacher-forced (no generation).

    Each call scores in its own autocast region, entered after the weights are set: autocast caches the
    bf16 copies of the weights for the length of a region, so one region around several α would keep
    scoring the first α's weights."""
    from ..eval.scoring import score_records

    device = next(model.parameters()).device.type

    def u(alpha: float) -> float:
        set_alpha(model, base_sd, un_sd, alpha)
        with autocast(precision, device):
            scores = score_records(model, tok, records, fmt, fields=("answer",), batch_size=batch_size)
        return sum(math.exp(s.answer.mean_lp) for s in scores) / len(scores)

    return u


def heldout_retain_slice(pool: str, n: int, trained: Sequence[str] = ()) -> list:
    """The last `n` records of spec `pool` that no spec in `trained` holds (same question and answer).

    `trained`: the specs the run trained on (its retain spec, if its RetainStream read one) or forgot; every
    row of a trained retain spec counts, since the stream cycles through all of them (module docstring)."""
    from ..data.specs import load_records

    if not pool:
        raise ValueError("automatic α needs retain data: the run has no retain spec, pass auto_retain=<data spec>")
    seen = {(r.question, r.answer) for spec in trained if spec for r in load_records(spec)}
    held = [r for r in load_records(pool) if (r.question, r.answer) not in seen]
    if not held:
        raise ValueError(f"automatic α: every record of {pool!r} is one the run trained on or forgot "
                         f"({', '.join(t for t in trained if t)}): its RetainStream draws from the whole retain set, "
                         f"so no row of it is held out. Pass auto_retain=<data spec of retain-like rows outside the "
                         f"run's retain set> (e.g. a JSONL of rows kept out of retain=), or auto=false")
    return held[-n:]


def resolve_checkpoints(run_dir: str | Path, names: Sequence[str]) -> list[str]:
    """Checkpoint names to search: 'final', 'step-N', or 'all' (every saved step-N, then final)."""
    names = [n.strip() for n in names if n.strip()] or ["final"]
    if "all" in names:
        names = [p.name for _, p in list_checkpoints(Path(run_dir) / "checkpoints")] + ["final"]
    bad = [n for n in names if n != "final" and checkpoint_step(n) is None]
    if bad:
        raise ValueError(f"checkpoint={bad[0]!r}: expected final, step-N, a comma list of them, or all")
    return list(dict.fromkeys(names))


@dataclass
class ExtrapolateConfig:
    """`unlearnkit extrapolate` and `alpha_search`: α search (+ automatic α) over one unlearning run, optionally
    saving θ_uipe (`save`, `run`: the command only)."""

    run: str = field(default="", metadata={"help": "unlearning run directory (θ_ini and θ_un are read from it)"})
    alphas: str = field(default="0,0.5,1,2", metadata={"help": "comma-separated α values to evaluate"})
    suite: str = field(default="related", metadata={"help": "fast evaluation: related | tofu"})
    limit: Optional[int] = field(default=40, metadata={"help": "questions per evaluation set (null: all)"})
    oracle_stats: Optional[str] = field(default=None, metadata={"help": "suite=tofu: oracle run dir or oracle_stats.json (forget quality)"})
    tofu_forget: str = field(default="forget01", metadata={"help": "suite=tofu: forget split"})
    related_people: int = field(default=50, metadata={"help": "suite=related: people in the synthetic set the run used"})
    related_seed: int = field(default=0, metadata={"help": "suite=related: its seed"})
    forget_fraction: float = field(default=0.1, metadata={"help": "suite=related: its forget fraction"})
    max_new_tokens: int = field(default=48, metadata={"help": "generation length for ROUGE"})
    batch_size: int = field(default=32, metadata={"help": "evaluation batch size"})
    auto: bool = field(default=True, metadata={"help": "also choose α automatically (held-out retain utility rule)"})
    auto_retain: str = field(default="", metadata={"help": "data spec of the held-out retain slice (default: the run's retain spec)"})
    auto_n: int = field(default=64, metadata={"help": "records in the held-out retain slice"})
    tolerance: float = field(default=0.05, metadata={"help": "automatic α: allowed relative drop of retain utility"})
    alpha_max: float = field(default=8.0, metadata={"help": "automatic α: upper bound"})
    save: str = field(default="none", metadata={"help": "write θ_uipe to <run>/uipe/alpha-<α>: none | auto | <α>"})
    precision: str = field(default="fp32", metadata={"help": "scoring precision: fp32 | bf16 | auto (bf16 autocast where fast)"})
    auto_max_evals: int = field(default=12, metadata={"help": "automatic α: utility evaluations at most"})
    checkpoint: str = field(default="final", metadata={"help": "θ_un to extrapolate: final (model/, adapter/ or the "
                            "last step-N), step-N, a comma list (checkpoints × α are searched), or all"})

    def __post_init__(self):
        if any(a < -1 for a in self.alpha_values):
            raise ValueError(f"alphas={list(self.alpha_values)}: α below −1 would reverse the update past θ_ini")

    @property
    def alpha_values(self) -> tuple[float, ...]:
        """`alphas` as numbers (the CLI gives a comma list, Python callers may give a sequence)."""
        if not isinstance(self.alphas, str):
            return tuple(float(a) for a in self.alphas)
        try:
            return tuple(float(a) for a in self.alphas.split(",") if a.strip())
        except ValueError:
            raise ValueError(f"alphas={self.alphas!r}: expected comma-separated numbers, e.g. 0,0.5,1") from None

    @property
    def checkpoint_names(self) -> tuple[str, ...]:
        """`checkpoint` as names (a comma list or a sequence)."""
        return tuple(self.checkpoint.split(",")) if isinstance(self.checkpoint, str) else tuple(self.checkpoint)


SearchSettings = ExtrapolateConfig   # the name Python callers of `alpha_search` know it by


def _evaluate(model, tok, fmt, s: ExtrapolateConfig, dataset=None) -> dict[str, float]:
    if s.suite == "tofu":
        from ..eval.tofu import run_tofu

        res = run_tofu(model, tok, s.tofu_forget, s.oracle_stats, fmt, limit=s.limit, batch_size=s.batch_size,
                       max_new_tokens=s.max_new_tokens, forget_quality=s.oracle_stats is not None,
                       mia_attacks=False)
        return {k: m.value for k, m in res.metrics.items()}
    if s.suite == "related":
        from ..eval.related import run_related

        forget, retain = dataset.split(s.forget_fraction)
        out = {f"forget/{k}": m.value for k, m in run_related(
            model, tok, dataset, forget, fmt, kinds=("target", "related", "multihop"), batch_size=s.batch_size,
            max_new_tokens=s.max_new_tokens).items()}
        keep = retain[: s.limit] if s.limit else retain
        ret = run_related(model, tok, dataset, keep, fmt, kinds=("target", "related", "unrelated"),
                          batch_size=s.batch_size, max_new_tokens=s.max_new_tokens)
        out.update({f"retain/{k}": m.value for k, m in ret.items()})
        probs = [m.value for k, m in ret.items() if k.endswith("/probability")]
        out["utility"] = sum(probs) / len(probs)
        return out
    raise ValueError(f"suite={s.suite!r}: expected 'tofu' or 'related'")


def alpha_search(run_dir: str | Path, settings: ExtrapolateConfig | None = None, echo=log.info) -> dict:
    """Evaluate each checkpoint × α (and each checkpoint's automatic α); write the table, json and plot."""
    s = settings or ExtrapolateConfig()
    names = resolve_checkpoints(run_dir, s.checkpoint_names)
    runs = [read_unlearn_run(run_dir, n) for n in names]  # every name checked before any model is loaded
    dataset = None
    if s.suite == "related":
        from ..data.synthetic import generate_related_knowledge

        dataset = generate_related_knowledge(s.related_people, s.related_seed)
    heldout = None
    if s.auto:
        inputs = runs[0]
        heldout = heldout_retain_slice(s.auto_retain or inputs.retain, s.auto_n, (inputs.trained_retain, inputs.forget))
    result: dict = {"base_run": str(runs[0].run.path), "method": runs[0].method, "suite": s.suite,
                    "checkpoints": names, "points": [], "auto_by_checkpoint": {}}
    base_sd = None
    for inputs in runs:
        model, tok, base_sd, un_sd = load_pair(inputs, base_sd)
        device = next(model.parameters()).device.type
        result["precision"] = resolve_precision(s.precision, device)
        auto = _search_checkpoint(model, tok, base_sd, un_sd, inputs, s, dataset, heldout, result, echo)
        if auto is not None:
            result["auto_by_checkpoint"][inputs.checkpoint] = auto
        del model, un_sd
    if len(names) == 1 and result["auto_by_checkpoint"]:
        result["auto"] = result["auto_by_checkpoint"][names[0]]
    out = runs[0].run.path / "uipe"
    write_json(out / "alpha_search.json", result)
    _write_csv(out / "alpha_search.csv", result["points"])
    plot_tradeoff(result, out / "tradeoff.png")
    return result


def _search_checkpoint(model, tok, base_sd, un_sd, inputs: UnlearnRunInputs, s: ExtrapolateConfig, dataset,
                       heldout, result: dict, echo) -> dict | None:
    """One θ_un: its automatic α on the held-out rows (if any), then every α; appends to result['points']."""
    fmt, device, name = inputs.prompt_format, next(model.parameters()).device.type, inputs.checkpoint
    auto: AutoAlphaResult | None = None
    if heldout is not None:
        auto = auto_alpha(retain_utility_fn(model, tok, heldout, fmt, base_sd, un_sd, s.batch_size, s.precision),
                          tolerance=s.tolerance, alpha_max=s.alpha_max, max_evals=s.auto_max_evals)
        echo(f"{name}: automatic α = {auto.alpha:.3g} ({auto.stopped}; {len(auto.evaluations)} evaluations)")
    for a in sorted(set(s.alpha_values) | ({auto.alpha} if auto else set())):
        set_alpha(model, base_sd, un_sd, a)
        with autocast(s.precision, device):   # a fresh region per α (see retain_utility_fn)
            metrics = _evaluate(model, tok, fmt, s, dataset)
        result["points"].append({"checkpoint": name, "alpha": a, "metrics": metrics,
                                 "auto": bool(auto and a == auto.alpha)})
        echo(f"{name} α = {a:.3g}: " + ", ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:6]))
    if auto is None:
        return None
    return {**auto.to_json(), "rule": f"largest α with held-out retain probability ≥ (1 − {s.tolerance})·(its value "
            f"at α = 0)", "retain_slice": s.auto_retain or inputs.retain,
            "excluded": [t for t in (inputs.trained_retain, inputs.forget) if t], "n": len(heldout)}


def _write_csv(path: Path, points: list[dict]) -> None:
    keys = sorted({k for p in points for k in p["metrics"]})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["checkpoint", "alpha", "auto", *keys])
        for p in points:
            w.writerow([p.get("checkpoint", "final"), p["alpha"], p["auto"], *[p["metrics"].get(k, "") for k in keys]])


def tradeoff_axes(suite: str) -> tuple[str, str, bool]:
    """(x = utility metric, y = forgetting metric, log-scale y) for a suite's trade-off plot."""
    if suite == "tofu":
        return "model_utility", "forget_quality", True
    return "utility", "forget/target/probability", False


def plot_tradeoff(result: dict, path: Path) -> Path:
    """Forgetting vs utility, one point per α and one line per checkpoint; α = 0 and the automatic α marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xk, yk, logy = tradeoff_axes(result["suite"])
    pts = [p for p in result["points"] if xk in p["metrics"] and yk in p["metrics"]]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ys = [p["metrics"][yk] for p in pts]
    names = list(dict.fromkeys(p.get("checkpoint", "final") for p in pts))
    for name in names:
        line = [p for p in pts if p.get("checkpoint", "final") == name]
        xs_c, ys_c = [p["metrics"][xk] for p in line], [p["metrics"][yk] for p in line]
        ax.plot(xs_c, ys_c, "-o", zorder=1, label=name if len(names) > 1 else None)
        for p, x, y in zip(line, xs_c, ys_c):
            ax.annotate(f"α={p['alpha']:.2g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            if p["alpha"] == 0:
                ax.scatter([x], [y], s=120, facecolors="none", edgecolors="black", zorder=2, label="_base")
            if p.get("auto"):
                ax.scatter([x], [y], s=120, marker="*", color="tab:red", zorder=3, label="_auto")
    handles, labels = ax.get_legend_handles_labels()
    rename = {"_base": "base run (α=0)", "_auto": "automatic α"}
    keep = {}
    for h, lab in zip(handles, labels):
        keep.setdefault(rename.get(lab, lab), h)
    if logy and all(y > 0 for y in ys):
        ax.set_yscale("log")
    ax.set_xlabel(xk)
    ax.set_ylabel(yk)
    ax.set_title(f"UIPE α trade-off: {result['method']}")
    ax.legend(list(keep.values()), list(keep.keys()), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def extrapolate_run(run_dir: str | Path, alpha: float, out_dir: str | Path | None = None, *, select=None,
                    group_alphas=None, overwrite: bool = False, checkpoint: str = "final") -> Path:
    """Write θ_un + α(θ_un − θ_ini) of a run to disk, streamed and atomic; θ_un is the final model or
    `checkpoints/<checkpoint>`. Default out: `<run>/uipe/alpha-<α>`, or `<run>/uipe/<checkpoint>/alpha-<α>`."""
    inputs = read_unlearn_run(run_dir, checkpoint)
    where = inputs.run.path / "uipe" if checkpoint == "final" else inputs.run.path / "uipe" / checkpoint
    out = Path(out_dir) if out_dir else where / f"alpha-{alpha:g}"
    base = None if inputs.is_adapter else _model_dir(inputs.theta_ini)
    return extrapolate_checkpoint(base, inputs.theta_un, out, alpha, select, group_alphas, overwrite=overwrite)


def _model_dir(spec: str) -> str:
    from ..models.loading import resolve_model_path

    where, gguf = resolve_model_path(spec)
    if gguf:
        raise ValueError(f"θ_ini {spec!r} is a GGUF file; streaming needs safetensors (convert it first)")
    if not Path(where).is_dir():
        raise ValueError(f"θ_ini {spec!r} is not a local directory; download it first (streaming reads local shards)")
    return where


def run_extrapolate(cfg: ExtrapolateConfig, echo=print) -> dict:
    if not cfg.run:
        raise ValueError("run=<unlearning run directory> is required")
    names = resolve_checkpoints(cfg.run, cfg.checkpoint_names)
    if cfg.save != "none" and len(names) > 1:
        raise ValueError(f"save={cfg.save}: checkpoint={cfg.checkpoint!r} names {len(names)} checkpoints; search "
                         f"them without save, then rerun with checkpoint=<the chosen step-N> save=...")
    result = alpha_search(cfg.run, cfg, echo=echo)
    if cfg.save != "none":
        alpha = result.get("auto", {}).get("alpha") if cfg.save == "auto" else float(cfg.save)
        if alpha is None:
            raise ValueError("save=auto needs auto=true")
        result["saved"] = str(extrapolate_run(cfg.run, alpha, overwrite=True, checkpoint=names[0]))
        echo(f"θ_uipe (α = {alpha:g}) written to {result['saved']}")
    return result
