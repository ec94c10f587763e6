"""Outputs never replace inputs: `refuse_overwriting_inputs` and the run folder an input belongs to."""
from __future__ import annotations

from pathlib import Path

from .layout import CONFIG_FILE, RUN_RECORD_DIRS


def enclosing_run(path: str | Path, levels: int = 3) -> Path | None:
    """The run folder a model/checkpoint dir belongs to (`<run>/model`, `<run>/checkpoints/step-N`), if any."""
    p = Path(path).resolve()
    for parent in list(p.parents)[:levels]:
        if (parent / CONFIG_FILE).is_file():
            return parent
    return None


def refuse_overwriting_inputs(out_dir: str | Path, inputs, what: str = "out_dir") -> None:
    """Raise ValueError when writing `out_dir` (which an overwrite replaces whole) would destroy an input.

    Refused: `out_dir` is, contains or lies inside an input directory; is or contains the run folder an input
    belongs to; or lies inside that run's model/, adapter/ or checkpoints/. Writing elsewhere inside a run
    (e.g. `<run>/uipe/alpha-1`) is fine. `inputs` may hold None and hub ids (ignored unless they are paths)."""
    out = Path(out_dir).resolve()

    def overlaps(a: Path, b: Path) -> bool:
        return a == b or a in b.parents or b in a.parents

    for given in filter(None, inputs):
        src = Path(given).resolve()
        if not src.exists():
            continue  # a hub id, or nothing on disk to destroy
        if overlaps(out, src):
            raise ValueError(f"{what}={str(out_dir)!r} is one of the inputs or overlaps one ({src}: it is, contains "
                             f"or lies inside it), so writing there would destroy it; choose a new directory")
        run = enclosing_run(src)
        if run is None:
            continue
        inside_record = any(d in out.parents or d == out for d in (run / n for n in RUN_RECORD_DIRS))
        if out == run or out in run.parents or inside_record:
            raise ValueError(f"{what}={str(out_dir)!r} would replace (part of) the run {run} that the input {src} "
                             f"belongs to; write to a new directory, e.g. {run / 'uipe'}/<name>")
