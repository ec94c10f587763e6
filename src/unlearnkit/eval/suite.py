"""`evaluate_run`: evaluate a run directory's model and write `<run>/eval/<suite>.json`; `format_summary`.

This is the I/O shell around `tofu.run_tofu` / `related.run_related` (the CLI's `evaluate` command maps onto it).
The json written is `{"suite", "model", "settings", "metrics": {name: {"value", "definition", "n", ...}}}`;
per-question metrics also hold `value_by_index` (row index in the dataset -> value).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..data.collate import PromptFormat
from ..runs import EVALUATE_KIND, last_checkpoint, open_run, write_json
from .tofu import ORACLE_STATS_FILE, OracleStats, run_tofu

SUITES = ("tofu", "related", "muse", "lm_eval")


def resolve_model_dir(run_dir: str | Path) -> Path:
    """The run's final `model/` (or LoRA `adapter/`), else its newest complete `checkpoints/step-N`, else the
    run folder itself if it holds a model."""
    run_dir = Path(run_dir)
    for final in ("model", "adapter"):
        if (run_dir / final / "config.json").is_file() or (run_dir / final / "adapter_config.json").is_file():
            return run_dir / final
    newest = last_checkpoint(run_dir / "checkpoints")
    if newest is not None:
        return newest
    if (run_dir / "config.json").is_file() or (run_dir / "adapter_config.json").is_file():
        return run_dir
    raise FileNotFoundError(f"run={str(run_dir)!r}: no checkpoints/step-N and no model files; pass model=<spec>")


@dataclass(frozen=True)
class RelatedSettings:
    """The `related` suite's people: `generate_related_knowledge(people, seed)`, split by `forget_fraction`;
    `who` = "forget" | "retain" | "all" is whom the probe asks about."""

    people: int = 20
    seed: int = 0
    forget_fraction: float = 0.1
    who: str = "forget"

    KEYWORDS = {"related_people": "people", "related_seed": "seed", "forget_fraction": "forget_fraction",
                "related_who": "who"}   # `evaluate_run`'s keyword → field

    @classmethod
    def take(cls, kwargs: dict) -> "RelatedSettings":
        """Pop `related_people`, `related_seed`, `forget_fraction`, `related_who` out of `kwargs`."""
        return cls(**{f: kwargs.pop(k) for k, f in cls.KEYWORDS.items() if k in kwargs})


@dataclass(frozen=True)
class SuiteRequest:
    """What to evaluate and how, passed whole from `evaluate_run` (or the `evaluate` command) to the suite.

    suite              "tofu", "related" or "muse".
    forget             TOFU forget split (forget01/05/10); also names the holdout split for MIA.
    oracle_stats       path to an `oracle_stats.json` (or to the oracle's run dir), or open-unlearning's
                       TOFU_EVAL.json of a retain model, for forget quality / PrivLeak; refused when made with
                       another masking, template, max_length or precision.
    save_oracle_stats  this run is the retain oracle: skip forget quality, write `eval/oracle_stats.json`.
    fmt                prompt format (`PromptFormat()`: chat template if the tokenizer has one).
    precision          fp32 (the benchmark's numbers to the last digit) | bf16 | auto (bf16 autocast where the
                       hardware is fast at it: ~2× faster scoring, log-probs still reduced in fp32, values differ
                       from fp32 in the third decimal). Recorded in the settings.
    related            the `related` suite's people.
    options            passed to `run_tofu` / `run_related` / `run_muse_suite` (batch_size, max_new_tokens,
                       retain_limit, limit, truth_ratio_mean, mia_k, forget_quality, extraction_variant, ...).
    """

    suite: str = "tofu"
    forget: str = "forget01"
    oracle_stats: Any = None
    save_oracle_stats: bool = False
    fmt: PromptFormat = field(default_factory=PromptFormat)
    precision: str = "fp32"
    related: RelatedSettings = field(default_factory=RelatedSettings)
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.suite not in SUITES:
            raise ValueError(f"suite={self.suite!r}: expected one of {SUITES}")


def evaluate_run(run_dir: str | Path, suite: str = "tofu", forget: str = "forget01", model: Any = None,
                 tokenizer: Any = None, oracle_stats: str | Path | OracleStats | None = None,
                 save_oracle_stats: bool = False, fmt: PromptFormat | None = None, *, precision: str = "fp32",
                 **suite_kwargs) -> dict[str, dict]:
    """Evaluate a run and write `<run_dir>/eval/<suite>.json`; returns the metrics dict.

    The arguments are `SuiteRequest`'s (`related_people`, `related_seed`, `forget_fraction`, `related_who` make
    its `RelatedSettings`, the other keywords its `options`), plus:
      run_dir            the run directory (results go to its `eval/`).
      model              None: the run's final model or newest `checkpoints/step-N` (else the run dir itself); a
                         str: any `load_model` spec (hub id, local dir, .gguf, "default"); or a loaded model (then
                         pass `tokenizer`).
      tokenizer          a loaded tokenizer, when `model` is a loaded model.
    """
    related = RelatedSettings.take(suite_kwargs)
    request = SuiteRequest(suite, forget, oracle_stats, save_oracle_stats, fmt or PromptFormat(), precision,
                           related, suite_kwargs)
    return evaluate_request(run_dir, request, model, tokenizer)


def evaluate_request(run_dir: str | Path, request: SuiteRequest, model: Any = None, tokenizer: Any = None) -> dict:
    """`evaluate_run` with the request made already: load the model if needed, run the suite, write the json."""
    from ..precision import autocast, resolve_precision

    resolve_precision(request.precision)  # a bad name fails before the model loads
    given_spec = isinstance(model, (str, Path))
    run = open_run(run_dir, create=given_spec)   # `model=<spec> run=<new folder>`: an evaluation-only run
    model_name = None
    if model is None or given_spec:
        from ..models import load_model

        spec = str(model) if model is not None else _recorded_model(run) or str(resolve_model_dir(run.path))
        model, loaded_tok = load_model(spec)
        tokenizer = tokenizer or loaded_tok
        model_name = spec
    elif tokenizer is None:
        raise ValueError("evaluate_run: a loaded `model` needs `tokenizer=` as well")
    model.eval()
    device = next(model.parameters()).device.type
    precision = resolve_precision(request.precision, device)
    with autocast(precision, device):
        metrics, settings = _run_suite(run, request, model, tokenizer, model_name)
    settings = {**settings, "precision": precision}
    write_json(run.eval_dir / f"{request.suite}.json", {"suite": request.suite, "model": model_name,
                                                       "settings": settings, "metrics": metrics})
    if given_spec and not run.config_path.is_file():
        # a folder no command made (e.g. a baseline model's): record what was evaluated, last, so `report` lists it
        # as a finished `evaluate` run and a later `evaluate run=<it>` finds the model again
        run.write_config(EVALUATE_KIND, {"model": model_name})
    return metrics


def _recorded_model(run) -> str | None:
    """The model spec an evaluation-only run folder recorded (`kind: evaluate`), else None."""
    if not run.config_path.is_file():
        return None
    record = run.read_config() or {}
    return (record.get("config") or {}).get("model") if record.get("kind") == EVALUATE_KIND else None


def _run_suite(run, req: SuiteRequest, model, tokenizer, model_name) -> tuple[dict, dict]:
    options = dict(req.options)
    if req.suite == "lm_eval":  # harness tasks (WMDP, MMLU, local YAMLs): eval/lm_eval.py
        from .lm_eval import run_lm_eval_suite

        return run_lm_eval_suite(run, model, tokenizer, options)
    if req.suite == "muse":
        from .muse import run_muse_suite

        return run_muse_suite(run, model, tokenizer, model_name, req.oracle_stats, req.save_oracle_stats, req.fmt,
                              options)
    if req.suite == "tofu":
        if req.save_oracle_stats:
            options["forget_quality"] = False
        result = run_tofu(model, tokenizer, req.forget, req.oracle_stats, req.fmt, **options)
        if req.save_oracle_stats:
            stats = result.oracle_stats()
            stats.meta = {"run": str(run.path), "model": model_name, "source": str(run.eval_dir / ORACLE_STATS_FILE)}
            stats.save(run.eval_dir / ORACLE_STATS_FILE)
        return result.to_json(), result.settings
    return _run_related(model, tokenizer, req.related, req.fmt, options)


def _run_related(model, tokenizer, rel: RelatedSettings, fmt, options: dict) -> tuple[dict, dict]:
    from ..data.synthetic import generate_related_knowledge
    from .related import run_related

    ds = generate_related_knowledge(rel.people, rel.seed)
    forget_ids, retain_ids = ds.split(rel.forget_fraction)
    who = {"forget": forget_ids, "retain": retain_ids, "all": forget_ids + retain_ids}
    if rel.who not in who:
        raise ValueError(f"related_who={rel.who!r}: expected one of {sorted(who)}")
    metrics = {k: m.to_json() for k, m in run_related(model, tokenizer, ds, who[rel.who], fmt, **options).items()}
    settings = dict(people=rel.people, seed=rel.seed, forget_fraction=rel.forget_fraction, who=rel.who,
                    **{k: v for k, v in options.items() if isinstance(v, (int, float, str))})
    return metrics, settings


def format_summary(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """A fixed-width table: metric, value, n, definition name (the part before ':')."""
    rows = [(name, m.get("value"), m.get("n"), str(m.get("definition", "")).split(":")[0]) for name, m in metrics.items()]
    w = max([len("metric")] + [len(r[0]) for r in rows])
    lines = [f"{'metric':<{w}}  {'value':>10}  {'n':>5}  definition", "-" * (w + 32)]
    for name, value, n, definition in rows:
        v = "nan" if value is None else f"{value:10.4f}"
        lines.append(f"{name:<{w}}  {v:>10}  {n if n is not None else '':>5}  {definition}")
    return "\n".join(lines)
