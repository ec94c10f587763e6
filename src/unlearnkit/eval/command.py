"""`unlearnkit evaluate`: the settings dataclass the CLI (and sweeps) map onto `evaluate_run`.

The forget split and the prompt format (template, masking) default to the run's own, read from its run record
(`runs.read_run_record`): an unlearning run made with `forget=tofu:forget05 template=plain` is evaluated on
forget05 with plain prompts without restating either. A value given explicitly wins; when it differs from the
run's, a warning names both. `max_length` is not inherited: a training run's truncation (256 by default) is a
training budget, while the evaluation scores TOFU at 512 as its authors do and as the oracle's stats were made.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Optional

from ..data.collate import PromptFormat
from ..runs import RunRecord, read_run_record

log = logging.getLogger(__name__)

# what an unset setting becomes when the run did not record it either
FALLBACKS = {"forget": "forget01", "template": "auto", "masking": "exact"}


@dataclass
class EvaluateConfig:
    """Evaluate a run directory's model and write `<run>/eval/<suite>.json`."""

    run: str = field(default="", metadata={"help": "run directory (results go to its eval/)"})
    suite: str = field(default="tofu", metadata={"help": "tofu | related | muse | lm_eval"})
    corpus: str = field(default="news", metadata={"help": "suite=muse: news | books (muse-bench/MUSE-<Corpus>, or $UNLEARNKIT_MUSE_DIR)"})
    forget: Optional[str] = field(default=None, metadata={"help": "TOFU forget split (forget01/05/10; names the holdout split for MIA); default: the run's (forget=tofu:<split>), else forget01"})
    model: Optional[str] = field(default=None, metadata={"help": "model spec to evaluate (default: the run's model/ or newest checkpoint)"})
    oracle: Optional[str] = field(default=None, metadata={"help": "retain-oracle run dir, its oracle_stats.json, or open-unlearning's TOFU_EVAL.json of a retain model (forget quality, PrivLeak)"})
    save_oracle_stats: bool = field(default=False, metadata={"help": "this run is the retain oracle: write eval/oracle_stats.json"})
    limit: Optional[int] = field(default=None, metadata={"help": "cap every evaluation set (quick checks)"})
    retain_limit: Optional[int] = field(default=400, metadata={"help": "retain questions (TOFU's default: the first 400)"})
    batch_size: int = field(default=32, metadata={"help": "scoring / generation batch size"})
    max_new_tokens: int = field(default=200, metadata={"help": "greedy generation length for ROUGE"})
    truth_ratio_mean: str = field(default="geometric", metadata={"help": "geometric (TOFU forget-quality code) | arithmetic"})
    related_people: int = field(default=50, metadata={"help": "suite=related: people in the synthetic set"})
    related_seed: int = field(default=0, metadata={"help": "suite=related: its seed"})
    forget_fraction: float = field(default=0.1, metadata={"help": "suite=related: its forget fraction"})
    related_who: str = field(default="forget", metadata={"help": "suite=related: forget | retain | all"})
    template: Optional[str] = field(default=None, metadata={"help": "prompt template: auto | chat | plain; default: the run's, else auto"})
    masking: Optional[str] = field(default=None, metadata={"help": "exact | open-unlearning; default: the run's, else exact"})
    max_length: int = field(default=512, metadata={"help": "truncate scored sequences beyond this"})
    tasks: str = field(default="", metadata={"help": "suite=lm_eval: harness task names, comma-separated (wmdp_bio,wmdp_cyber,mmlu)"})
    num_fewshot: Optional[int] = field(default=None, metadata={"help": "suite=lm_eval: few-shot examples (unset: each task's default)"})
    lm_eval_include: Optional[str] = field(default=None, metadata={"help": "suite=lm_eval: a directory of local task YAMLs (offline tasks)"})
    precision: str = field(default="fp32", metadata={"help": "fp32 (exact) | bf16 | auto (bf16 autocast where fast: ~2x, third-decimal differences)"})

    def __post_init__(self):
        if self.suite not in ("tofu", "related", "muse", "lm_eval"):
            raise ValueError(f"suite={self.suite!r}: expected 'tofu', 'related', 'muse' or 'lm_eval'")
        if self.suite == "lm_eval" and not self.tasks.strip():
            raise ValueError("suite=lm_eval needs tasks=<harness task names>, e.g. tasks=wmdp_bio,wmdp_cyber,mmlu")
        PromptFormat(template=self.template or FALLBACKS["template"], masking=self.masking or FALLBACKS["masking"])
        from ..precision import resolve_precision

        resolve_precision(self.precision)


def _recorded(cfg: EvaluateConfig, rec: RunRecord) -> dict[str, Optional[str]]:
    """The run's own forget split (TOFU suite only) and prompt format, None where it recorded none."""
    return {"forget": rec.forget_split if cfg.suite == "tofu" else None, "template": rec.template,
            "masking": rec.masking}


def resolve_from_run(cfg: EvaluateConfig) -> EvaluateConfig:
    """`cfg` with the unset forget split and prompt format taken from the run record (else `FALLBACKS`); an
    explicit value that differs from the run's is kept, with a warning naming both."""
    rec = read_run_record(cfg.run, missing_ok=True)
    fill = {}
    for key, from_run in _recorded(cfg, rec).items():
        given = getattr(cfg, key)
        if given is None:
            fill[key] = FALLBACKS[key] if from_run is None else from_run
        elif from_run is not None and given != from_run:
            log.warning("evaluate: %s=%r was given, but the run %s was made with %s=%r; evaluating with %s=%r "
                        "(drop %s= to use the run's)", key, given, rec.path, key, from_run, key, given, key)
    return replace(cfg, **fill)


# the settings each suite takes besides the request's own (forget, oracle, format, precision, related people)
SUITE_OPTIONS = {"tofu": ("limit", "retain_limit", "batch_size", "max_new_tokens", "truth_ratio_mean"),
                 "lm_eval": ("tasks", "num_fewshot", "limit", "batch_size", "lm_eval_include"),
                 "muse": ("corpus", "limit", "batch_size"),
                 "related": ("batch_size", "max_new_tokens", "truth_ratio_mean")}


def run_evaluate(cfg: EvaluateConfig) -> dict:
    from .suite import RelatedSettings, SuiteRequest, evaluate_request

    if not cfg.run:
        raise ValueError("run=<run directory> is required")
    cfg = resolve_from_run(cfg)
    request = SuiteRequest(
        suite=cfg.suite, forget=cfg.forget, oracle_stats=cfg.oracle, save_oracle_stats=cfg.save_oracle_stats,
        fmt=PromptFormat(template=cfg.template, masking=cfg.masking, max_length=cfg.max_length),
        precision=cfg.precision, options={k: getattr(cfg, k) for k in SUITE_OPTIONS[cfg.suite]},
        related=RelatedSettings(cfg.related_people, cfg.related_seed, cfg.forget_fraction, cfg.related_who))
    return evaluate_request(cfg.run, request, model=cfg.model)
