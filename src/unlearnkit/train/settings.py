"""The settings every training path shares, declared once: the field helper and the base of the training configs.

`TrainingSettings` holds what the HF Trainer needs for the optimisation (schedule, precision, checkpoints,
logging, seed); `FinetuneConfig` and `UnlearnConfig` extend it with their data and model fields, and the
paths without a config of their own (a reveal round, a continuation) build one directly.
`hf_glue.training_arguments(run, settings, batch_size=...)` turns it into `TrainingArguments`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

from ..precision import resolve_precision


def setting(default: Any, help: str, **kw) -> Any:
    """A config field with its `help` (what `unlearnkit <command> --help` shows); list and dict defaults are
    copied per instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainingSettings:
    """Optimisation, precision, checkpoint and logging settings of one HF-Trainer training."""

    epochs: float = setting(1.0, "training epochs")
    max_steps: int = setting(-1, "stop after this many optimizer steps (-1: use epochs)")
    lr: float = setting(1e-4, "peak learning rate")
    grad_accum: int = setting(1, "gradient accumulation steps")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    warmup: float = setting(0.0, "warm-up steps (int) or ratio of total steps (<1)")
    scheduler: str = setting("linear", "HF lr scheduler name")
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0: off)")
    precision: str = setting("auto", "auto | fp32 | bf16 (bf16 autocast, fp32 master weights; auto: bf16 only "
                                     "where fast)")
    save_steps: int = setting(0, "checkpoint every N optimizer steps (0: every epoch)")
    keep_checkpoints: Optional[int] = setting(None, "keep only the newest N checkpoints (null: all)")
    logging_steps: int = setting(10, "log every N optimizer steps")
    seed: int = setting(0, "random seed")
    report_to: str = setting("none", "HF report_to: none | tensorboard | wandb")

    def __post_init__(self):
        resolve_precision(self.precision)
