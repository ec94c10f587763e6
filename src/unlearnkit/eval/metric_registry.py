"""The metric registry: every reported metric once, with its suite, key, display name and which way is better.

Reports and the demo read their columns from here instead of keeping their own lists:

    columns = leaderboard_columns("tofu")      # MetricSpecs in the benchmark's order
    [c.header for c in columns]                # "Forget quality ↑", ..., "PrivLeak (→0)"

A metric's `key` is its name in `<run>/eval/<suite>.json` (what the suite writes), `source` names the function
that computes it ("module:function", resolved on demand so that reading the registry loads no scorer). The
built-in suites (TOFU, MUSE, the related-knowledge probe) are listed in `metrics.yaml` beside this module.

A new suite registers its own columns (from its module, or as an entry of metrics.yaml) without touching the
report:

    register_suite("lm_eval", "lm-eval tasks")
    register_metric(MetricSpec("lm_eval", "mmlu/acc", "MMLU acc.", UP, source="..."))

and `report.tables` shows a leaderboard for it as soon as a collected run holds that suite's metrics.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from ..objectives.registry import Registry

UP, DOWN, ZERO, NONE = "up", "down", "zero", ""   # higher / lower / closer to 0 is better / no preferred direction
DIRECTIONS = {"up": UP, "down": DOWN, "zero": ZERO, "none": NONE}   # as metrics.yaml spells them
BUILTIN = Path(__file__).with_name("metrics.yaml")
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


def _load_builtin(path: Path = BUILTIN) -> None:
    """Register the suites and metrics of `metrics.yaml` (TOFU, MUSE, the related-knowledge probe)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for suite, entry in data.items():
        register_suite(suite, entry["title"])
        for row in entry["metrics"]:
            direction = DIRECTIONS.get(row.get("direction", "none"), row.get("direction"))   # else refused below
            source = f"unlearnkit.eval.{row['source']}" if row.get("source") else ""
            register_metric(MetricSpec(suite, row["key"], row["display"], direction, row.get("short", ""), source,
                                       row.get("leaderboard", True)))


_load_builtin()
