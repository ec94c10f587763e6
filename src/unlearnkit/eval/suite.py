"""`evaluate_run`: evaluate a run directory's model and write `<run>/eval/<suite>.json`; `format_summary`.

This is the I/O shell around `tofu.run_tofu` / `related.run_related` (the CLI's `evaluate` command maps onto it).
The json written is `{"suite", "model", "settings", "metrics": {name: {"value", "definition", "n", ...}}}`;
per-question metrics also hold `value_by_index` (row index in the dataset -> value).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..data.collate import PromptFormat
from ..runs import last_checkpoint, open_run, write_json
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


def evaluate_run(run_dir: str | Path, suite: str = "tofu", forget: str = "forget01", model: Any = None,
                 tokenizer: Any = None, oracle_stats: str | Path | OracleStats | None = None,
                 save_oracle_stats: bool = False, fmt: PromptFormat | None = None, *, related_people: int = 20,
                 related_seed: int = 0, forget_fraction: float = 0.1, related_who: str = "forget",
                 precision: str = "fp32", **suite_kwargs) -> dict[str, dict]:
    """Evaluate a run and write `<run_dir>/eval/<suite>.json`; returns the metrics dict.

    Arguments:
      run_dir            the run directory (results go to its `eval/`).
      suite              "tofu" or "related".
      forget             TOFU forget split (forget01/05/10); also names the holdout split for MIA.
      model              None: the run's newest `checkpoints/step-N` (else the run dir itself); a str: any
                         `load_model` spec (hub id, local dir, .gguf, "default"); or a loaded model (then pass
                         `tokenizer`).
      tokenizer          a loaded tokenizer, when `model` is a loaded model.
      oracle_stats       path to an `oracle_stats.json` (or to the oracle's run dir), or open-unlearning's
                         TOFU_EVAL.json of a retain model, for forget quality / PrivLeak; refused when made with
                         another masking, template, max_length or precision.
      save_oracle_stats  this run is the retain oracle: skip forget quality, write `eval/oracle_stats.json`.
      fmt                prompt format (default `PromptFormat()`: chat template if the tokenizer has one).
      related_people, related_seed, forget_fraction, related_who
                         the `related` suite's people: `generate_related_knowledge(related_people, related_seed)`,
                         split by `forget_fraction`; `related_who` = "forget" | "retain" | "all".
      precision          fp32 (default: the benchmark's numbers to the last digit) | bf16 | auto (bf16 autocast
                         where the hardware is fast at it: ~2× faster scoring, log-probs still reduced in fp32,
                         values differ from fp32 in the third decimal). Recorded in the settings.
      **suite_kwargs     passed to `run_tofu` / `run_related` (batch_size, max_new_tokens, retain_limit, limit,
                         truth_ratio_mean, mia_k, forget_quality, extraction_variant, ...).
    """
    from ..precision import autocast, resolve_precision

    resolve_precision(precision)  # a bad name fails before the model loads
    if suite not in SUITES:
        raise ValueError(f"suite={suite!r}: expected one of {SUITES}")
    run = open_run(run_dir, create=False)
    model_name = None
    if model is None or isinstance(model, (str, Path)):
        from ..models import load_model

        spec = str(model) if model is not None else str(resolve_model_dir(run.path))
        model, loaded_tok = load_model(spec)
        tokenizer = tokenizer or loaded_tok
        model_name = spec
    elif tokenizer is None:
        raise ValueError("evaluate_run: a loaded `model` needs `tokenizer=` as well")
    model.eval()
    fmt = fmt or PromptFormat()
    device = next(model.parameters()).device.type
    precision = resolve_precision(precision, device)
    with autocast(precision, device):
        metrics, settings = _run_suite(run, suite, model, tokenizer, model_name, forget, oracle_stats,
                                       save_oracle_stats, fmt, related_people, related_seed, forget_fraction,
                                       related_who, suite_kwargs)
    settings = {**settings, "precision": precision}
    write_json(run.eval_dir / f"{suite}.json", {"suite": suite, "model": model_name, "settings": settings,
                                               "metrics": metrics})
    return metrics


def _run_suite(run, suite, model, tokenizer, model_name, forget, oracle_stats, save_oracle_stats, fmt,
               related_people, related_seed, forget_fraction, related_who, suite_kwargs) -> tuple[dict, dict]:
    if suite == "lm_eval":  # harness tasks (WMDP, MMLU, local YAMLs): eval/lm_eval.py
        from .lm_eval import run_lm_eval_suite

        return run_lm_eval_suite(run, model, tokenizer, suite_kwargs)
    if suite == "muse":
        from .muse import run_muse_suite

        return run_muse_suite(run, model, tokenizer, model_name, oracle_stats, save_oracle_stats, fmt, suite_kwargs)
    if suite == "tofu":
        if save_oracle_stats:
            suite_kwargs["forget_quality"] = False
        result = run_tofu(model, tokenizer, forget, oracle_stats, fmt, **suite_kwargs)
        metrics = result.to_json()
        settings = result.settings
        if save_oracle_stats:
            stats = result.oracle_stats()
            stats.meta = {"run": str(run.path), "model": model_name, "source": str(run.eval_dir / ORACLE_STATS_FILE)}
            stats.save(run.eval_dir / ORACLE_STATS_FILE)
    else:
        from ..data.synthetic import generate_related_knowledge
        from .related import run_related

        ds = generate_related_knowledge(related_people, related_seed)
        forget_ids, retain_ids = ds.split(forget_fraction)
        who = {"forget": forget_ids, "retain": retain_ids, "all": forget_ids + retain_ids}
        if related_who not in who:
            raise ValueError(f"related_who={related_who!r}: expected one of {sorted(who)}")
        metrics = {k: m.to_json() for k, m in run_related(model, tokenizer, ds, who[related_who], fmt,
                                                          **suite_kwargs).items()}
        settings = dict(people=related_people, seed=related_seed, forget_fraction=forget_fraction, who=related_who,
                        **{k: v for k, v in suite_kwargs.items() if isinstance(v, (int, float, str))})
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
