"""`unlearnkit demo`: the end-to-end offline demo on the default SmolLM2 (or a tiny model with `quick`).

Stage 1 (foundation): build a synthetic people set, fine-tune the target model on it and report
exact-match recall of the answers before and after.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..train.finetune import FinetuneConfig, finetune


@dataclass
class DemoConfig:
    """End-to-end demo settings."""

    out: str = field(default="runs/demo", metadata={"help": "folder for the demo's run directories"})
    quick: bool = field(default=False, metadata={"help": "tiny from-scratch model instead of SmolLM2 (about a minute)"})
    people: int = field(default=50, metadata={"help": "synthetic people"})
    seed: int = field(default=0, metadata={"help": "seed for data and training"})
    epochs: float = field(default=4.0, metadata={"help": "fine-tuning epochs (SmolLM2)"})
    lr: float = field(default=2e-4, metadata={"help": "fine-tuning learning rate (SmolLM2)"})
    recall_sample: int = field(default=120, metadata={"help": "records used for the recall figure (0: all)"})


def target_config(cfg: DemoConfig) -> FinetuneConfig:
    data = f"synthetic:train,people={cfg.people},seed={cfg.seed}"
    run = str(Path(cfg.out) / "target")
    if cfg.quick:
        return FinetuneConfig(model="tiny", data=data, run=run, epochs=40, lr=2e-3, batch_size=16, warmup=0.05,
                              tiny_hidden=128, tiny_layers=2, tiny_vocab=1024, precision="fp32",
                              keep_checkpoints=1, recall_before=True, recall_max=cfg.recall_sample, seed=cfg.seed)
    return FinetuneConfig(model="default", data=data, run=run, epochs=cfg.epochs, lr=cfg.lr, batch_size=16,
                          warmup=0.05, keep_checkpoints=1, recall_before=True, recall_max=cfg.recall_sample,
                          seed=cfg.seed)


def run_demo(cfg: DemoConfig, echo=print) -> dict:
    t0 = time.time()
    tcfg = target_config(cfg)
    echo(f"[1/1] fine-tuning the target model ({tcfg.model}) on {cfg.people} synthetic people -> {tcfg.run}")
    summary = finetune(tcfg)
    summary["demo_seconds"] = time.time() - t0
    echo("")
    echo(f"exact-match recall before fine-tuning: {summary.get('recall_before', float('nan')):.1%}")
    echo(f"exact-match recall after fine-tuning:  {summary.get('recall_after', float('nan')):.1%}")
    echo(f"records: {summary['records']}, steps: {summary['steps']}, train time: {summary['train_seconds']:.0f}s, "
         f"total: {summary['demo_seconds']:.0f}s")
    echo(f"model: {Path(tcfg.run) / 'model'}")
    return summary
