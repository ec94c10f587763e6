"""Run directories: the unit of record (shared/DESIGN.md §3), as a layer below everything that reads runs.

    runs/<name>/config.yaml   resolved config + versions, git commit, seed
    runs/<name>/checkpoints/step-N/
    runs/<name>/log.jsonl
    runs/<name>/eval/<suite>.json
    runs/<name>/plots/*.png
    runs/<name>/.lock         held (flock) by the one command writing the run; holds its pid

One command at a time writes a run directory: `locked_run` holds an exclusive lock for the whole command, so
a second command on the same directory fails at once, naming the holder, instead of interleaving checkpoints,
logs and configs with the first.

The package: `layout` (every file and folder name), `record` (the typed run record and its one reader), `rundir`
(`RunDir`: config.yaml, log.jsonl), `checkpoints` (listing step-N), `files` (atomic writes), `lock`, `protect`
(outputs never replace inputs). Import from `unlearnkit.runs`.
"""
from __future__ import annotations

from .checkpoints import CHECKPOINT_STEP_RE, checkpoint_step, find_eval_file, last_checkpoint, list_checkpoints
from .files import atomic_dir, atomic_write_text, clean_stale_temps, save_model_atomically, write_json
from .layout import (ADAPTER_DIR, ALPHA_SEARCH, CHECKPOINTS_DIR, CONFIG_FILE, EVAL_DIR, EVALUATE_KIND, FINAL_MODEL_DIRS,
                     GEFFECT_CSV, LOCK_NAME, LOG_FILE, MODEL_DIR, PLOTS_DIR, RUN_PARTS, RUN_RECORD_DIRS, SUMMARY_FILES,
                     SWEEP_DONE, SWEEP_ERROR, SWEEP_RECORD)
from .lock import RunLockedError, lock_held, locked_run
from .protect import enclosing_run, refuse_overwriting_inputs
from .record import RunRecord, read_run_record
from .rundir import RunDir, clear_run, open_run

__all__ = ["ADAPTER_DIR", "ALPHA_SEARCH", "CHECKPOINTS_DIR", "CHECKPOINT_STEP_RE", "CONFIG_FILE", "EVAL_DIR",
           "EVALUATE_KIND", "FINAL_MODEL_DIRS", "GEFFECT_CSV", "LOCK_NAME", "LOG_FILE", "MODEL_DIR", "PLOTS_DIR",
           "RUN_PARTS", "RUN_RECORD_DIRS", "SUMMARY_FILES", "SWEEP_DONE", "SWEEP_ERROR", "SWEEP_RECORD", "RunDir",
           "RunLockedError", "lock_held",
           "RunRecord", "atomic_dir", "atomic_write_text", "checkpoint_step", "clean_stale_temps", "clear_run",
           "enclosing_run", "find_eval_file", "last_checkpoint", "list_checkpoints", "locked_run", "open_run",
           "read_run_record", "refuse_overwriting_inputs", "save_model_atomically", "write_json"]
