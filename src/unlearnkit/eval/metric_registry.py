"""The metric registry: every reported metric once, with its suite, key, display name and which way is better.

Reports and the demo read their columns from here instead of keeping their own lists:

    columns = leaderboard_columns("tofu")      # MetricSpecs in the benchmark's order
    [c.header for c in columns]                # "Forget quality ↑", ..., "PrivLeak (→0)"

A metric's `key` is its name in `<run>/eval/<suite>.json` (what the suite writes), `source` names the function
that computes it ("module:function", resolved on demand so that reading the registry loads no scorer).

A new suite registers its own columns, from its module or here, without touching the report:

    register_suite("lm_eval", "lm-eval tasks")
    register_metric(MetricSpec("lm_eval", "mmlu/acc", "MMLU acc.", UP, source="..."))

and `report.tables` shows a leaderboard for it as soon as a collected run holds that suite's metrics.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ..objectives.registry import Registry

UP, DOWN, ZERO, NONE = "up", "down", "zero", ""   # higher / lower / closer to 0 is better / no preferred direction
ARROWS = {UP: " ↑", DOWN: " ↓", ZERO: " (→0)", NONE: ""}


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric. `leaderboard`: a column of its suite's leaderboard; `short`: a compact header."""

    suite: str
    key: str
    display: str
    direction: str = NONE
    short: str = ""
    source: str = ""
    leaderboard: bool = True

    def __post_init__(self):
        if self.direction not in ARROWS:
            raise ValueError(f"metric {self.suite}:{self.key}: direction={self.direction!r}; expected one of "
                             f"{sorted(ARROWS)} (up, down, zero, or '' for none)")

    @property
    def name(self) -> str:
        return f"{self.suite}:{self.key}"

    @property
    def header(self) -> str:
        """The column header: display name and its direction ("Forget ROUGE ↓", "PrivLeak (→0)")."""
        return self.display + ARROWS[self.direction]

    def function(self) -> Callable:
        """The function that computes the metric (imported now)."""
        module, _, attr = self.source.partition(":")
        if not module or not attr:
            raise ValueError(f"metric {self.name}: no source function recorded")
        return getattr(importlib.import_module(module), attr)


METRICS: Registry[MetricSpec] = Registry("metric")
SUITES: dict[str, str] = {}   # suite -> its title in reports, in registration order
_ORDER: list[MetricSpec] = []  # every spec in registration order (a suite's columns keep the order given)


def register_suite(suite: str, title: str) -> None:
    if suite in SUITES:
        raise ValueError(f"suite {suite!r} is already registered (as {SUITES[suite]!r})")
    SUITES[suite] = title


def suite_title(suite: str) -> str:
    """The suite's name in report titles ("TOFU"); the suite's own name when it registered none."""
    return SUITES.get(suite, suite)


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Add `spec` (its suite must be registered); a name registered twice is refused."""
    if spec.suite not in SUITES:
        raise ValueError(f"metric {spec.name}: suite {spec.suite!r} is not registered; call register_suite first "
                         f"(registered: {', '.join(SUITES) or 'none'})")
    METRICS.register(spec.name)(spec)
    _ORDER.append(spec)
    return spec


def metric(name: str) -> MetricSpec:
    """The spec registered as `suite:key` ("tofu:forget_quality"); a miss says what is available."""
    return METRICS.get(name)


def leaderboard_columns(suite: str) -> list[MetricSpec]:
    """The suite's leaderboard columns, in registration order."""
    return [s for s in _ORDER if s.suite == suite and s.leaderboard]


def leaderboard_suites() -> list[str]:
    """The registered suites that have leaderboard columns, in registration order."""
    return [s for s in SUITES if leaderboard_columns(s)]


_TOFU = "unlearnkit.eval.tofu_metrics"
_MIA = "unlearnkit.eval.mia"
_MEM = "unlearnkit.eval.memorization"
_MUSE = "unlearnkit.eval.muse_metrics"

register_suite("tofu", "TOFU")
register_suite("muse", "MUSE")
register_suite("related", "related knowledge")
for _spec in (
    # TOFU's leaderboard (Maini et al. 2024), then the TOFU numbers only the demo shows
    MetricSpec("tofu", "forget_quality", "Forget quality", UP, "FQ", f"{_TOFU}:forget_quality"),
    MetricSpec("tofu", "model_utility", "Model utility", UP, "MU", f"{_TOFU}:model_utility"),
    MetricSpec("tofu", "forget/rouge_l_recall", "Forget ROUGE", DOWN, "forget ROUGE", f"{_TOFU}:rouge_l_recall"),
    MetricSpec("tofu", "forget/probability", "Forget prob.", DOWN, "forget P", f"{_TOFU}:probability"),
    MetricSpec("tofu", "forget/truth_ratio", "Forget truth ratio", NONE, "forget TR", f"{_TOFU}:truth_ratio_score"),
    MetricSpec("tofu", "privleak", "PrivLeak", ZERO, "PrivLeak", f"{_MIA}:privleak"),
    MetricSpec("tofu", "mia/min_k", "MIA min-k AUC", NONE, "min-k AUC", f"{_MIA}:roc_auc"),
    MetricSpec("tofu", "forget/extraction_strength", "Extraction", DOWN, "ES", f"{_MEM}:extraction_strength"),
    MetricSpec("tofu", "retain/rouge_l_recall", "Retain ROUGE", UP, "retain ROUGE", f"{_TOFU}:rouge_l_recall"),
    MetricSpec("tofu", "retain/probability", "Retain prob.", UP, "retain P", f"{_TOFU}:probability",
               leaderboard=False),
    # MUSE's six-way table (Shi et al. 2024): no verbatim / knowledge memorisation, no privacy leak, utility kept
    MetricSpec("muse", "verbmem_forget/rouge_l_f1", "VerbMem", DOWN, "VerbMem", f"{_MUSE}:rouge_l_f1"),
    MetricSpec("muse", "knowmem_forget/rouge_l_f1", "KnowMem forget", DOWN, "KnowMem f", f"{_MUSE}:rouge_l_f1"),
    MetricSpec("muse", "knowmem_retain/rouge_l_f1", "KnowMem retain", UP, "KnowMem r", f"{_MUSE}:rouge_l_f1"),
    MetricSpec("muse", "privleak", "PrivLeak", ZERO, "PrivLeak", f"{_MIA}:privleak"),
    MetricSpec("muse", "mia/min_k", "MIA min-k AUC", NONE, "min-k AUC", f"{_MIA}:roc_auc"),
    MetricSpec("muse", "forget/extraction_strength", "Extraction", DOWN, "ES", f"{_MEM}:extraction_strength"),
    # the related-knowledge probe (eval/related.py): shown in the demo, no leaderboard of its own
    MetricSpec("related", "target/probability", "Target prob.", DOWN, "target P", f"{_TOFU}:probability",
               leaderboard=False),
    MetricSpec("related", "related/probability", "Related prob.", NONE, "related P", f"{_TOFU}:probability",
               leaderboard=False),
    MetricSpec("related", "multihop/probability", "Multi-hop prob.", NONE, "multi-hop P", f"{_TOFU}:probability",
               leaderboard=False),
):
    register_metric(_spec)
