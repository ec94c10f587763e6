"""Atomic checkpoints: written to a staging folder, then renamed to `checkpoints/step-N`.

A rename is atomic on one filesystem, so a `step-N` folder is always complete; a kill mid-save leaves
only the staging folder, which is removed on the next start. Weights are safetensors.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..runs import list_checkpoints

STAGING = ".staging"


def clean_staging(checkpoints_dir: str | Path) -> None:
    shutil.rmtree(Path(checkpoints_dir) / STAGING, ignore_errors=True)


def promote(staged: Path, checkpoints_dir: Path, step: int) -> Path:
    """Move a fully written staged checkpoint into place as `step-N` (atomic rename). Its configs are made
    portable first (`models.portable`), so a checkpoint loads in transformers 4.x as the final model does."""
    from ..models.portable import make_portable

    make_portable(staged)
    final = Path(checkpoints_dir) / f"step-{step}"
    if final.exists():
        shutil.rmtree(final)
    for f in staged.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    os.replace(staged, final)
    return final


def prune_checkpoints(checkpoints_dir: str | Path, keep: int | None) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (None: keep all); returns the deleted paths."""
    if keep is None:
        return []
    cks = list_checkpoints(checkpoints_dir)
    old = [p for _, p in cks[: max(0, len(cks) - max(1, keep))]]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return old


class AtomicCheckpointMixin:
    """Mixin for `transformers.Trainer`: save each checkpoint to staging, then promote it.

    `self.args.output_dir` must be the run's `checkpoints/` folder. HF's own rotation only sees the staging
    folder, so `save_total_limit` is applied here, to the promoted `step-N` folders.
    """

    def _get_output_dir(self, trial=None):  # noqa: D401 - Trainer hook
        return os.path.join(self.args.output_dir, STAGING)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        staged = Path(self.args.output_dir) / STAGING / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            promote(staged, Path(self.args.output_dir), self.state.global_step)
            prune_checkpoints(self.args.output_dir, self.args.save_total_limit)
        self.accelerator.wait_for_everyone()
