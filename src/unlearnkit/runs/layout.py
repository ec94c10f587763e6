"""The run directory's layout (shared/DESIGN.md §3): every file and folder name a command writes or reads in a run,
named once here so that writers and readers (report, sweep, UIPE, G-effect) cannot drift apart.

    <run>/config.yaml            CONFIG_FILE: kind, resolved config, `inputs`, seed, versions, git commit
    <run>/checkpoints/step-N/    CHECKPOINTS_DIR
    <run>/log.jsonl              LOG_FILE
    <run>/eval/<suite>.json      EVAL_DIR
    <run>/plots/*.png            PLOTS_DIR
    <run>/model/ | adapter/      the final model (full) or LoRA adapter
    <run>/<kind>.json            SUMMARY_FILES[kind]: the command's summary, written last (the run finished)
    <run>/sweep_done.json | sweep_error.json   SWEEP_DONE / SWEEP_ERROR: a sweep's per-run marker
"""
from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
LOCK_NAME = ".lock"
CHECKPOINTS_DIR = "checkpoints"
EVAL_DIR = "eval"
PLOTS_DIR = "plots"
MODEL_DIR = "model"
ADAPTER_DIR = "adapter"
FINAL_MODEL_DIRS = (MODEL_DIR, ADAPTER_DIR)   # where a run's final weights land, in the order readers look
RUN_RECORD_DIRS = (MODEL_DIR, ADAPTER_DIR, CHECKPOINTS_DIR)   # what a run folder holds that no output may replace

# `evaluate` of a given model into a folder no command made writes its config.yaml after the evaluation: there,
# the record itself marks the run finished
EVALUATE_KIND = "evaluate"
# a command's summary (its presence marks the run finished), by the run's kind: the commands' SUMMARY constants,
# the demo's extrapolation record and the related-knowledge experiment's files
SUMMARY_FILES = {"unlearn": "unlearn.json", "finetune": "finetune.json", "reveal": "reveal.json",
                 "extrapolate": "uipe.json", "unlearn_continue": "continue.json",
                 "experiment/related-knowledge": "results.json", EVALUATE_KIND: CONFIG_FILE}

# parts of a run folder that are never run folders themselves (`report.collect.find_runs` skips them)
RUN_PARTS = frozenset({CHECKPOINTS_DIR, MODEL_DIR, ADAPTER_DIR, "reference", EVAL_DIR, PLOTS_DIR, "geffect", "uipe",
                       "tokenizer", "report", "rounds"})
GEFFECT_CSV = Path("geffect") / "geffect.csv"
ALPHA_SEARCH = Path("uipe") / "alpha_search.json"

# the sweep's files: per run (the marker written last, or the failure) and per sweep
SWEEP_DONE = "sweep_done.json"
SWEEP_ERROR = "sweep_error.json"
SWEEP_RECORD = "sweep.json"
