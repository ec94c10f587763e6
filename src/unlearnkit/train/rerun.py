"""What a training command may do with a run directory that already holds a run: reuse, resume, or refuse.

A rerun must never quietly stand in for the run that was asked for. Before resuming a checkpoint or returning a
finished run's summary, the stored resolved config (config.yaml) is compared with the requested one; any
difference outside the keys below is refused, naming each key with its stored and requested value.

Keys that may differ (decided here, documented in README "Run directories"):
- always (`RERUN_FREE`): where and how much is logged, and the rerun switches themselves — `run` (the same
  folder may be reached by another path), `report_to`, `logging_steps`, `overwrite`, `resume`.
- only when resuming an unfinished run (`RESUME_FREE`): the run's length and what is kept on disk — `max_steps`,
  `epochs` (continue a run for longer, as a killed run's rerun with a larger budget does), `keep_checkpoints`,
  `keep_optimizer`, the reference pass's `ref_batch_size`, and fine-tuning's recall probes (measured after
  training). A finished run compares these too: its summary answers only the settings that produced it.

Two switches override: `overwrite=true` deletes the old contents and starts fresh; `resume=force` resumes (or
reuses the finished result) despite differences, and the differences are recorded in config.yaml.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from ..runs import RunDir, clear_run
from ..runs import list_checkpoints

log = logging.getLogger(__name__)

RERUN_FREE = frozenset({"run", "report_to", "logging_steps", "overwrite", "resume"})
RESUME_FREE = frozenset({"max_steps", "epochs", "keep_checkpoints", "keep_optimizer", "ref_batch_size",
                         "recall_before", "recall_max", "recall_before_max"})
RESUME_MODES = ("auto", "force")


class RunMismatchError(ValueError):
    """The run directory holds a run made with other settings than the ones requested."""


def check_rerun_options(overwrite: bool, resume: str) -> None:
    """Validate the two switches (called from the configs' __post_init__)."""
    if resume not in RESUME_MODES:
        raise ValueError(f"resume={resume!r}: expected 'auto' (resume or reuse only an identical run) or 'force' "
                         f"(resume despite differing settings)")
    if overwrite and resume == "force":
        raise ValueError("overwrite=true and resume=force contradict each other: overwrite deletes the old run, "
                         "force continues it; pass one of them")


def _normalised(config: dict) -> dict:
    return yaml.safe_load(yaml.safe_dump(config, sort_keys=True))   # what config.yaml would hold


def config_differences(stored: dict, requested: dict, ignore: frozenset[str] = frozenset()) -> list[str]:
    """'key: stored → requested' for every top-level key whose values differ, except those in `ignore`."""
    a, b = _normalised(stored or {}), _normalised(requested)
    keys = sorted((set(a) | set(b)) - ignore)
    missing = "<absent>"
    return [f"{k}: {a.get(k, missing)!r} → {b.get(k, missing)!r}" for k in keys if a.get(k, missing) != b.get(k, missing)]


def _stored(run: RunDir) -> tuple[str | None, dict | None]:
    if not run.config_path.is_file():
        return None, None
    record = yaml.safe_load(run.config_path.read_text(encoding="utf-8")) or {}
    return record.get("kind"), record.get("config")


def settle_rerun(run: RunDir, kind: str, requested: dict, summary_name: str, *, overwrite: bool = False,
                 resume: str = "auto") -> tuple[dict | None, list[str]]:
    """Decide what to do with `run` before a `kind` command with config `requested` writes anything.

    Returns (summary, forced): `summary` is the finished run's summary to return as it is (None: train, from the
    last checkpoint if any); `forced` lists the differences accepted by resume=force (record them). Raises
    `RunMismatchError` naming the differing keys. Hold the run's lock; on non-zero ranks only reads."""
    if overwrite:
        if run.path.is_dir() and any(c.name != ".lock" for c in run.path.iterdir()):
            log.info("overwrite=true: deleting the old contents of %s", run.path)
            clear_run(run.path)
        return None, []
    summary_path = run.path / summary_name
    finished = summary_path.is_file()
    has_checkpoints = bool(list_checkpoints(run.checkpoints))
    stored_kind, stored = _stored(run)
    if stored is None and not (finished or has_checkpoints):
        return None, []   # nothing here to reuse
    if stored is None:
        diffs = [f"config.yaml: missing, so the settings of the {'finished run' if finished else 'checkpoints'} "
                 f"cannot be checked"]
    else:
        ignore = RERUN_FREE if finished else RERUN_FREE | RESUME_FREE
        diffs = ([f"kind: {stored_kind!r} → {kind!r}"] if stored_kind != kind else [])
        diffs += config_differences(stored, requested, ignore)
    if diffs and resume != "force":
        what = "a finished" if finished else "an unfinished" if has_checkpoints else "a started"
        raise RunMismatchError(
            f"run={run.path} holds {what} run with other settings ({'; '.join(diffs)}). Rerun with its settings to "
            f"{'reuse' if finished else 'resume'} it, pass overwrite=true to delete it and start fresh, "
            f"resume=force to {'reuse its result' if finished else 'resume it'} anyway, or choose another run=")
    if diffs:
        log.warning("resume=force: %s %s despite: %s", "reusing" if finished else "resuming", run.path, "; ".join(diffs))
    if finished:
        log.info("run %s already finished with these settings; returning its summary (overwrite=true retrains)",
                 run.path)
        return json.loads(summary_path.read_text(encoding="utf-8")), diffs
    return None, diffs
