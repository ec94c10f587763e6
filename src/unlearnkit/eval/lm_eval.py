"""`suite=lm_eval`: any lm-evaluation-harness task (WMDP, MMLU, ...) on the model unlearnkit already loaded.

WMDP (Li et al. 2024), MMLU and the other utility benchmarks are scored the way papers score them: by
EleutherAI's lm-evaluation-harness (`lm-eval` on PyPI), not by a re-implementation. This module only adapts:
the run's loaded model (full or a peft LoRA adapter, under the run's precision autocast) is wrapped in the
harness's `HFLM`, the harness's `simple_evaluate` runs the named tasks, and its results are reshaped into
unlearnkit's `{"value", "definition", "n", "stderr"}` records (`harness_metrics`, a pure function) so the
report reads them like any other suite. The harness's own results dict is written beside it
(`eval/lm_eval_results.json`, per-sample records left out).

Task names are the harness's own (`wmdp_bio`, `wmdp_cyber`, `mmlu`, ...). Local task YAMLs (a directory passed
as `include`, e.g. the offline WMDP-style tasks of `experiments/wmdp_offline.py`) are indexed first; the
harness's built-in index (~15k tasks, tens of seconds to build) is only read when a name is not local. Hub
tasks download their data as in the harness, so they need the network (or a filled HF cache).

Metric names: `<task>/<metric>` (e.g. `wmdp_bio/acc`, `mmlu/acc`), with `[<filter>]` appended when the
harness's filter is not `none`. `n` is the number of documents scored (a group's is the sum of its subtasks').
Log-likelihoods are reduced with a float32 softmax whatever the model's dtype (`softmax_dtype`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..names import did_you_mean
from ..runs import write_json

log = logging.getLogger(__name__)
RESULTS_FILE = "lm_eval_results.json"
INSTALL_HINT = "pip install 'unlearnkit[lm-eval]'"


class LmEvalMissing(ImportError):
    """lm-eval is an optional extra; raised with the install command when it is absent."""


def require_lm_eval():
    """The `lm_eval` package, or `LmEvalMissing` naming the extra to install."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401  (the adapter we need)
    except ImportError as exc:
        raise LmEvalMissing(f"suite=lm_eval needs EleutherAI's lm-evaluation-harness, which is not installed "
                            f"({exc}); install the optional extra: {INSTALL_HINT}") from None
    return lm_eval


def parse_tasks(tasks: str | Sequence[str]) -> list[str]:
    """`"wmdp_bio,mmlu"` or a list → task names (whitespace stripped, empty items dropped, order kept)."""
    items = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    names = list(dict.fromkeys(t.strip() for t in items if str(t).strip()))
    if not names:
        raise ValueError("suite=lm_eval: tasks= is empty; name harness tasks, e.g. tasks=wmdp_bio,wmdp_cyber,mmlu")
    return names


@dataclass
class HarnessSettings:
    """What the harness is asked: task names, few-shot count, per-task document limit, batch size, local tasks."""

    tasks: list[str]
    num_fewshot: int | None = None
    limit: float | None = None
    batch_size: int = 8
    include: str | None = None

    def __post_init__(self):
        self.tasks = parse_tasks(self.tasks)
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ValueError(f"num_fewshot={self.num_fewshot}: must be >= 0 (or unset: each task's default)")
        if self.limit is not None and not self.limit > 0:
            raise ValueError(f"limit={self.limit}: must be > 0 (documents per task, or a fraction < 1)")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be >= 1")
        if self.include is not None and not Path(self.include).is_dir():
            raise ValueError(f"lm_eval_include={self.include!r}: not a directory (it should hold task YAML files)")

    def to_json(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "num_fewshot": self.num_fewshot, "limit": self.limit,
                "batch_size": self.batch_size, "include": self.include}


def task_manager(settings: HarnessSettings):
    """A harness `TaskManager` that knows every requested name: local YAMLs alone when they suffice (fast,
    offline), else local + built-in; an unknown name is refused with the closest known one."""
    from lm_eval.tasks import TaskManager

    if settings.include:
        local = TaskManager(include_path=settings.include, include_defaults=False)
        if all(t in local.all_tasks for t in settings.tasks):
            return local
    manager = TaskManager(include_path=settings.include)
    for t in settings.tasks:
        if t not in manager.all_tasks:
            where = f" or in lm_eval_include={settings.include!r}" if settings.include else ""
            raise ValueError(f"tasks: unknown lm-eval task {t!r} (not a harness task{where}){did_you_mean(t, manager.all_tasks)}"
                             f" list them with `lm-eval ls tasks`, or pass lm_eval_include=<dir of task YAMLs>")
    return manager


def run_harness(model, tokenizer, settings: HarnessSettings, log_samples: bool = False) -> dict:
    """`lm_eval.simple_evaluate` on an already-loaded model (full or peft); returns the harness's results dict."""
    lm_eval = require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    manager = task_manager(settings)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size, softmax_dtype="float32")
    try:
        results = lm_eval.simple_evaluate(model=lm, tasks=settings.tasks, num_fewshot=settings.num_fewshot,
                                          limit=settings.limit, task_manager=manager, log_samples=log_samples,
                                          bootstrap_iters=1000)
    except (ConnectionError, OSError) as exc:
        raise RuntimeError(f"lm-eval could not load the data of tasks {settings.tasks} ({type(exc).__name__}: "
                           f"{exc}); hub tasks (wmdp_*, mmlu, ...) need the network or a filled HF cache. "
                           f"Offline, use local task YAMLs with lm_eval_include=<dir>") from exc
    if results is None:  # the harness returns None on non-zero ranks
        raise RuntimeError("lm-eval returned no results (run it on one process)")
    return results


def _group_sizes(results: Mapping[str, Any]) -> dict[str, int]:
    """Documents scored per task; a group's is the sum over its (possibly nested) subtasks."""
    sizes = {t: int(v.get("effective", v.get("original", 0))) for t, v in results.get("n-samples", {}).items()}
    groups = results.get("group_subtasks", {})

    def size(name: str, seen: frozenset = frozenset()) -> int:
        if name in sizes:
            return sizes[name]
        if name in seen:
            return 0
        return sum(size(s, seen | {name}) for s in groups.get(name, []))

    return {name: size(name) for name in results.get("results", {})}


def harness_metrics(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The harness's `results` reshaped to `{"<task>/<metric>": {"value", "definition", "n", "stderr"}}`.

    Harness keys are `"<metric>,<filter>"` and `"<metric>_stderr,<filter>"`; "N/A" stderrs become None."""
    sizes = _group_sizes(results)
    out: dict[str, dict[str, Any]] = {}
    for task, values in results.get("results", {}).items():
        for key, value in values.items():
            metric, sep, filt = key.partition(",")
            if not sep or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            name = f"{task}/{metric}" + ("" if filt == "none" else f"[{filt}]")
            stderr = values.get(f"{metric}_stderr,{filt}")
            out[name] = {"value": float(value), "definition": f"lm-eval:{task} {metric} (filter {filt})",
                         "n": sizes.get(task, 0),
                         "stderr": float(stderr) if isinstance(stderr, (int, float)) else None}
    return out


def run_lm_eval_suite(run, model, tokenizer, suite_kwargs: Mapping[str, Any]) -> tuple[dict, dict]:
    """`evaluate_run`'s lm_eval branch: (metrics json, settings); writes the harness's results file beside."""
    settings = HarnessSettings(tasks=suite_kwargs.get("tasks", ""), num_fewshot=suite_kwargs.get("num_fewshot"),
                               limit=suite_kwargs.get("limit"), batch_size=suite_kwargs.get("batch_size", 8),
                               include=suite_kwargs.get("lm_eval_include"))
    results = run_harness(model, tokenizer, settings)
    results.pop("samples", None)
    write_json(run.eval_dir / RESULTS_FILE, results)
    meta = {"lm_eval_version": results.get("lm_eval_version"), "results_file": RESULTS_FILE,
            "n_shot": results.get("n-shot", {})}
    return harness_metrics(results), {**settings.to_json(), **meta}
