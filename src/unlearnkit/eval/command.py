"""`unlearnkit evaluate`: the settings dataclass the CLI (and sweeps) map onto `evaluate_run`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..data.collate import PromptFormat


@dataclass
class EvaluateConfig:
    """Evaluate a run directory's model and write `<run>/eval/<suite>.json`."""

    run: str = field(default="", metadata={"help": "run directory (results go to its eval/)"})
    suite: str = field(default="tofu", metadata={"help": "tofu | related | muse | lm_eval"})
    corpus: str = field(default="news", metadata={"help": "suite=muse: news | books (muse-bench/MUSE-<Corpus>, or $UNLEARNKIT_MUSE_DIR)"})
    forget: str = field(default="forget01", metadata={"help": "TOFU forget split (forget01/05/10); names the holdout split for MIA"})
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
    template: str = field(default="auto", metadata={"help": "prompt template: auto | chat | plain"})
    masking: str = field(default="exact", metadata={"help": "exact | open-unlearning"})
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
        PromptFormat(template=self.template, masking=self.masking)
        from ..precision import resolve_precision

        resolve_precision(self.precision)


def run_evaluate(cfg: EvaluateConfig) -> dict:
    from .suite import evaluate_run

    if not cfg.run:
        raise ValueError("run=<run directory> is required")
    fmt = PromptFormat(template=cfg.template, masking=cfg.masking, max_length=cfg.max_length)
    common = dict(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, truth_ratio_mean=cfg.truth_ratio_mean,
                  precision=cfg.precision)
    if cfg.suite == "tofu":
        return evaluate_run(cfg.run, "tofu", cfg.forget, model=cfg.model, oracle_stats=cfg.oracle,
                            save_oracle_stats=cfg.save_oracle_stats, fmt=fmt, limit=cfg.limit,
                            retain_limit=cfg.retain_limit, **common)
    if cfg.suite == "muse":
        return evaluate_run(cfg.run, "muse", model=cfg.model, oracle_stats=cfg.oracle, fmt=fmt, corpus=cfg.corpus,
                            save_oracle_stats=cfg.save_oracle_stats, limit=cfg.limit, batch_size=cfg.batch_size,
                            precision=cfg.precision)
    if cfg.suite == "lm_eval":
        return evaluate_run(cfg.run, "lm_eval", model=cfg.model, tasks=cfg.tasks, num_fewshot=cfg.num_fewshot,
                            limit=cfg.limit, batch_size=cfg.batch_size, lm_eval_include=cfg.lm_eval_include,
                            precision=cfg.precision)
    return evaluate_run(cfg.run, "related", model=cfg.model, fmt=fmt, related_people=cfg.related_people,
                        related_seed=cfg.related_seed, forget_fraction=cfg.forget_fraction,
                        related_who=cfg.related_who, **common)
