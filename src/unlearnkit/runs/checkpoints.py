"""Reading a run's checkpoints (`checkpoints/step-N/`); `train/checkpoints.py` writes them."""
from __future__ import annotations

import re
from pathlib import Path

from .layout import EVAL_DIR


CHECKPOINT_STEP_RE = re.compile(r"step-(\d+)$")


def checkpoint_step(name: str) -> int | None:
    """N for a `step-N` checkpoint folder name, else None (staging and temp folders are not checkpoints)."""
    m = CHECKPOINT_STEP_RE.match(name)
    return int(m.group(1)) if m else None


def list_checkpoints(checkpoints_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the complete checkpoints in a run's `checkpoints/`, oldest first (numeric order).

    It lives in the run layer so that evaluation, UIPE and the G-effect read checkpoints without importing
    the training package; `train/checkpoints.py` writes them (staging folder, then an atomic rename)."""
    d = Path(checkpoints_dir)
    if not d.is_dir():
        return []
    return sorted((step, p) for p in d.iterdir() if (step := checkpoint_step(p.name)) is not None and p.is_dir())


def last_checkpoint(checkpoints_dir: str | Path) -> Path | None:
    """The newest complete `step-N` checkpoint, or None."""
    cks = list_checkpoints(checkpoints_dir)
    return cks[-1][1] if cks else None


def find_eval_file(path: str | Path, name: str, *alternatives: str) -> Path:
    """`path` itself when it is not a folder; for a run folder the first existing of `eval/<name>`, `<name>`
    and `alternatives` inside it, else `eval/<name>` (so the caller's missing-file error names where it goes)."""
    path = Path(path)
    if not path.is_dir():
        return path
    cands = [path / EVAL_DIR / name, path / name, *(path / a for a in alternatives)]
    return next((c for c in cands if c.is_file()), cands[0])
