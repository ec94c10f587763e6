"""`EvalCallback`: evaluate a light subset every N training steps and keep the best checkpoint by a criterion.

A `transformers.TrainerCallback`, so `train/` can plug it in without `eval` importing `train` (imports point
down). The evaluation is any `model -> metrics dict` function; `light_tofu_evaluator` builds the usual one
(a few questions per TOFU set, short generations, no MIA). On a new best the callback asks the Trainer to save
that step (`control.should_save = True`) and, with a run dir, records it in `<run>/eval/best.json`; every
evaluation is appended to `<run>/eval/callback.jsonl`.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

from transformers import TrainerCallback

from ..data.collate import PromptFormat
from ..runs import write_json

Evaluator = Callable[[object], Mapping[str, Mapping]]


@dataclass
class BestCriterion:
    """Best = highest (`mode="max"`) or lowest `metric` among evaluations with `floor_metric` ≥ `floor`.
    Default: highest forget quality with model utility ≥ 0 (raise `floor` to demand utility)."""

    metric: str = "forget_quality"
    mode: str = "max"
    floor_metric: str | None = "model_utility"
    floor: float = 0.0

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode={self.mode!r}: expected 'max' or 'min'")

    def admissible(self, values: Mapping[str, float]) -> bool:
        v = values.get(self.metric)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return False
        if self.floor_metric is not None:
            f = values.get(self.floor_metric)
            if f is None or f < self.floor:
                return False
        return True

    def better(self, new: float, old: float | None) -> bool:
        return old is None or (new > old if self.mode == "max" else new < old)


class EvalCallback(TrainerCallback):
    """Run `evaluate(model)` every `every_n_steps` optimiser steps; track `history` and `best` ({step, values})."""

    def __init__(self, evaluate: Evaluator, every_n_steps: int, criterion: BestCriterion | None = None,
                 run_dir: str | Path | None = None, save_best: bool = True):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps}: must be ≥ 1")
        self.evaluate = evaluate
        self.every_n_steps = every_n_steps
        self.criterion = criterion or BestCriterion()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.save_best = save_best
        self.history: list[dict] = []
        self.best: dict | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step == 0 or step % self.every_n_steps or model is None:
            return control
        metrics = self.evaluate(model)
        values = {k: m["value"] for k, m in metrics.items()}
        record = {"step": step, "values": values}
        self.history.append(record)
        if self.run_dir is not None:
            (self.run_dir / "eval").mkdir(parents=True, exist_ok=True)
            with (self.run_dir / "eval" / "callback.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        if self.criterion.admissible(values) and self.criterion.better(
                values[self.criterion.metric], None if self.best is None else self.best["values"][self.criterion.metric]):
            self.best = record
            if self.save_best:
                control.should_save = True
            if self.run_dir is not None:
                write_json(self.run_dir / "eval" / "best.json",
                           {**record, "checkpoint": f"checkpoints/step-{step}" if self.save_best else None,
                            "criterion": asdict(self.criterion)})
        return control


def light_tofu_evaluator(tokenizer, oracle_stats=None, forget: str = "forget01", fmt: PromptFormat | None = None,
                         limit: int = 20, max_new_tokens: int = 32, batch_size: int = 32, source=None) -> Evaluator:
    """A `model -> metrics` function over the first `limit` questions of each TOFU set (records loaded once),
    short generations and no MIA; forget quality only when `oracle_stats` is given."""
    from .tofu import OracleStats, load_tofu_sets, run_tofu

    records = load_tofu_sets(forget, None, source, with_holdout=False, limit=limit)
    if isinstance(oracle_stats, (str, Path)):
        oracle_stats = OracleStats.load(oracle_stats)
    if oracle_stats is not None:  # the KS test compares like with like: the oracle's first `limit` questions
        oracle_stats = oracle_stats.head(limit)

    def evaluate(model):
        return run_tofu(model, tokenizer, forget, oracle_stats, fmt, records=records, batch_size=batch_size,
                        max_new_tokens=max_new_tokens, forget_quality=oracle_stats is not None,
                        mia_attacks=False).to_json()

    return evaluate
