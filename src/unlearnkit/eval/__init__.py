"""Evaluation: batched scoring and generation, pure TOFU / MIA / memorisation metrics, suites, a Trainer callback.

Scoring (`scoring`, `generation`) is separate from aggregation (`tofu_metrics`, `mia`, `memorization`), so every
metric is a pure function of numbers testable without a model. Suites (`tofu`, `related`) glue the two;
`suite.evaluate_run` is the run-directory shell.
"""
from .generation import generate_answers
from .recall import answer_recall, exact_match, normalize_answer
from .result import MetricResult
from .scoring import RecordScores, TokenScores, score_features, score_records
from .suite import evaluate_run, format_summary
from .tofu import OracleStats, OracleStatsMissing, evaluate_tofu, load_tofu_sets, run_tofu
from .related import evaluate_related, run_related

__all__ = ["generate_answers", "answer_recall", "exact_match", "normalize_answer", "MetricResult", "RecordScores",
           "TokenScores", "score_features", "score_records", "evaluate_run", "format_summary", "OracleStats",
           "OracleStatsMissing", "evaluate_tofu", "load_tofu_sets", "run_tofu", "evaluate_related", "run_related"]
