"""Collect run directories (shared/DESIGN.md §3) into records: config, metrics, training log, G-effects, UIPE α,
Reveal-and-Release rounds.

Everything is read from disk; nothing depends on the process that produced the runs.

    records = collect_runs(["runs/sweep-npo"])     # a run dir, or any folder holding run dirs
    rows = flat_rows(records)                        # one flat dict per run: config.* and <suite>/<metric>
"""
from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from ..runs import (ALPHA_SEARCH, CONFIG_FILE, EVAL_DIR, GEFFECT_CSV, LOG_FILE, RUN_PARTS, SUMMARY_FILES, SWEEP_DONE,
                    SWEEP_ERROR, lock_held, read_run_record)

log = logging.getLogger(__name__)

SKIP_DIRS = RUN_PARTS   # a run's own parts are never run folders


@dataclass
class RunRecord:
    """What one run directory holds, as plain data."""

    path: Path
    kind: str
    config: dict
    seed: Any = None
    inputs: dict = field(default_factory=dict)
    metrics: dict[str, dict[str, Optional[float]]] = field(default_factory=dict)   # suite -> metric -> value
    eval_settings: dict[str, dict] = field(default_factory=dict)                     # suite -> settings
    log: list[dict] = field(default_factory=list)
    geffect: list[dict] = field(default_factory=list)
    alpha_search: Optional[dict] = None
    reveal: list[dict] = field(default_factory=list)   # Reveal-and-Release: rounds/round-<k>/round.json, by round
    status: str = "unknown"  # finished | running | interrupted | diverged | failed | unknown (see `run_status`)
    error: Optional[str] = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> str:
        """The unlearning method, else the command (finetune, ...)."""
        return str(self.inputs.get("method") or self.config.get("method") or self.kind or "?")

    @property
    def split(self) -> str:
        """The forget split: the TOFU evaluation's, else the run's forget spec (without a `tofu:` prefix)."""
        tofu = self.eval_settings.get("tofu", {})
        spec = tofu.get("forget") or self.config.get("forget") or self.config.get("data") or ""
        return str(spec).removeprefix("tofu:")

    def metric(self, suite: str, name: str) -> Optional[float]:
        return self.metrics.get(suite, {}).get(name)


def _finite(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("skipping %s: %s", path, exc)
        return None


def read_log(path: Path) -> list[dict]:
    """log.jsonl rows; a half-written last line (a killed run) is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("%s: skipping a malformed line", path)
    return rows


def read_geffect(path: Path) -> list[dict]:
    """geffect.csv (checkpoint, step, group, kind, value) with numeric step and value."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        step, value = _finite(r.get("step")), _finite(r.get("value"))
        if step is not None and value is not None:
            out.append({**r, "step": int(step), "value": value})
    return out


def read_reveal_rounds(path: Path) -> list[dict]:
    """A reveal run's finished rounds (`rounds/round-<k>/round.json`), in round order."""
    rows = []
    for f in (path / "rounds").glob("round-*/round.json") if (path / "rounds").is_dir() else []:
        data = _read_json(f)
        if isinstance(data, dict) and _finite(data.get("round")) is not None:
            rows.append(data)
    return sorted(rows, key=lambda r: int(r["round"]))


def read_run(path: str | Path) -> RunRecord:
    """One run directory → a RunRecord (FileNotFoundError if it has no config.yaml)."""
    path = Path(path)
    run = read_run_record(path)
    rec = RunRecord(path=path, kind=str(run.kind or "?"), config=dict(run.config), seed=run.seed,
                    inputs=dict(run.inputs))
    rec.metrics, rec.eval_settings = read_eval(path)
    rec.log = read_log(path / LOG_FILE)
    rec.geffect = read_geffect(path / GEFFECT_CSV)
    rec.reveal = read_reveal_rounds(path)
    if (path / ALPHA_SEARCH).is_file():
        rec.alpha_search = _read_json(path / ALPHA_SEARCH)
    rec.status, rec.error = run_status(path, rec.kind, rec.log)
    return rec


def read_eval(path: str | Path) -> tuple[dict[str, dict[str, Optional[float]]], dict[str, dict]]:
    """A run's `eval/<suite>.json` files → ({suite: {metric key: value, None if not finite}}, {suite: settings});
    oracle_stats.json and other files without a `metrics` table are skipped."""
    metrics, settings = {}, {}
    eval_dir = Path(path) / EVAL_DIR
    for p in sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []:
        data = _read_json(p)
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
            continue
        suite = str(data.get("suite") or p.stem)
        metrics[suite] = {k: _finite(m.get("value") if isinstance(m, dict) else m) for k, m in data["metrics"].items()}
        settings[suite] = dict(data.get("settings") or {})
    return metrics, settings


def run_status(path: Path, kind: str, log_rows: list[dict]) -> tuple[str, Optional[str]]:
    """(status, detail) of a run directory, from what the commands record:

    * `failed`: a sweep recorded an error (`sweep_error.json`; detail: the error), `diverged` when it was a
      divergence;
    * `diverged`: log.jsonl holds a `"diverged": true` row (the divergence guard's stop; detail: its message);
    * `finished`: the command's summary (`runs.SUMMARY_FILES[kind]`) or the sweep's `sweep_done.json` is there;
    * `running`: a live process holds the run's lock;
    * `interrupted`: none of these — a killed or stopped command (it resumes from its last checkpoint);
    * `unknown`: a kind without a known summary file and no sweep marker (nothing says whether it finished).
    """
    if (path / SWEEP_ERROR).is_file():
        err = str((_read_json(path / SWEEP_ERROR) or {}).get("error") or "")
        return ("diverged" if "DivergenceError" in err else "failed"), err or None
    diverged = next((r for r in reversed(log_rows) if r.get("diverged") is True), None)
    marker = SUMMARY_FILES.get(kind)
    if (path / SWEEP_DONE).is_file() or (marker and (path / marker).is_file()):
        return "finished", None
    if diverged is not None:
        return "diverged", str(diverged.get("message") or f"at step {diverged.get('step')}")
    if lock_held(path):
        return "running", None
    if marker is None:
        return "unknown", None
    return "interrupted", None


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (folders with config.yaml) at or below `paths`, not descending into a run's own parts."""
    found: list[Path] = []

    def walk(p: Path) -> None:
        if (p / CONFIG_FILE).is_file():
            found.append(p)
        for child in sorted(c for c in p.iterdir() if c.is_dir()) if p.is_dir() else []:
            if child.name not in SKIP_DIRS and not child.name.startswith("."):
                walk(child)

    for p in paths:
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        walk(p)
    return sorted(dict.fromkeys(found))


def collect_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Every run directory at or below `paths`, read from disk, in path order."""
    return [read_run(p) for p in find_runs(paths)]


def _flatten(d: dict, prefix: str) -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def flat_rows(records: list[RunRecord]) -> list[dict]:
    """One flat row per run: run, path, kind, method, split, seed, status, config.<key>, <suite>/<metric>,
    final training-log values (log.<key>)."""
    rows = []
    for r in records:
        row: dict[str, Any] = {"run": r.name, "path": str(r.path), "kind": r.kind, "method": r.method,
                               "split": r.split, "seed": r.seed, "status": r.status}
        row.update(_flatten(r.config, "config."))
        for suite, metrics in r.metrics.items():
            row.update({f"{suite}/{k}": v for k, v in metrics.items()})
        if r.log:
            last = [x for x in r.log if "loss" in x]
            if last:
                row.update({f"log.{k}": v for k, v in last[-1].items() if isinstance(v, (int, float))})
        if r.alpha_search and isinstance(r.alpha_search.get("auto"), dict):
            row["uipe.alpha"] = r.alpha_search["auto"].get("alpha")
        rows.append(row)
    return rows


def write_table(rows: list[dict], out: str | Path) -> dict[str, Path]:
    """`runs.csv` (always) and `runs.parquet` (when pyarrow imports) in folder `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    paths = {"csv": out / "runs.csv"}
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return paths
    data = {}
    for c in columns:
        vals = [r.get(c) for r in rows]
        kinds = {type(v) for v in vals if v is not None}
        if kinds and kinds <= {int, float} and bool not in kinds:
            data[c] = pa.array([None if v is None else float(v) for v in vals], pa.float64())
        else:
            data[c] = pa.array([None if v is None else str(v) for v in vals], pa.string())
    pq.write_table(pa.table(data), out / "runs.parquet")
    paths["parquet"] = out / "runs.parquet"
    return paths
