"""`RunDir`: a run directory's paths, its config.yaml (written with versions and git commit) and its log.jsonl."""
from __future__ import annotations

import json
import math
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .files import atomic_write_text
from .layout import CHECKPOINTS_DIR, CONFIG_FILE, EVAL_DIR, LOCK_NAME, LOG_FILE, PLOTS_DIR


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("unlearnkit", "torch", "transformers", "peft", "accelerate", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class RunDir:
    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def eval_dir(self) -> Path:
        return self.path / EVAL_DIR

    @property
    def plots(self) -> Path:
        return self.path / PLOTS_DIR

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    def write_config(self, kind: str, config: dict, seed: int | None = None, extra: dict | None = None) -> None:
        """Write config.yaml: the resolved config plus versions; `extra` adds top-level keys (e.g. notes)."""
        record = {"kind": kind, "config": config, "seed": seed, "versions": _versions(), "git_commit": _git_commit(),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {})}
        atomic_write_text(self.config_path, yaml.safe_dump(record, sort_keys=False))

    def read_config(self) -> dict:
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.path}: not a run directory (no config.yaml)")
        return yaml.safe_load(self.config_path.read_text())

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    def log(self, record: dict) -> None:
        """Append one record to log.jsonl as strict JSON: NaN/±inf become the strings "NaN"/"Infinity"/"-Infinity"
        (bare `NaN` is not JSON; `read_log` turns the strings back into floats)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(_json_safe(record), allow_nan=False) + "\n")

    def read_log(self) -> list[dict]:
        """log.jsonl records, non-finite numbers restored; a half-written line (a killed run) is skipped."""
        return [{k: _NONFINITE.get(v, v) if isinstance(v, str) else v for k, v in rec.items()}
                for rec in _log_records(self.log_path)]

    def truncate_log(self, step: int) -> int:
        """Keep only the records of steps <= `step` (what a checkpoint at `step` saw); returns how many were
        dropped. A resumed run calls it so its log holds each step once, not the killed run's later steps too."""
        if not self.log_path.is_file():
            return 0
        lines = [l for l in self.log_path.read_text(encoding="utf-8").splitlines() if l.strip()]
        kept = []
        for line in lines:
            rec = _parse_line(line)
            if rec is not None and not (isinstance(rec.get("step"), (int, float)) and rec["step"] > step):
                kept.append(line)
        if len(kept) != len(lines):
            atomic_write_text(self.log_path, "".join(l + "\n" for l in kept))
        return len(lines) - len(kept)


_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _json_safe(obj: Any) -> Any:
    """`obj` with non-finite floats (and 0-d tensors / numpy scalars) as JSON-safe values."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    try:
        f = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    if math.isnan(f):
        return "NaN"
    return f if math.isfinite(f) else ("Infinity" if f > 0 else "-Infinity")


def _parse_line(line: str) -> dict | None:
    try:
        rec = json.loads(line)   # also reads the bare NaN that older logs hold
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) else None


def _log_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [r for r in (_parse_line(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip())
            if r is not None]


def clear_run(path: str | Path) -> None:
    """Delete everything in a run dir except its lock (overwrite=true: start fresh). Hold the lock."""
    p = Path(path)
    for c in p.iterdir() if p.is_dir() else []:
        if c.name != LOCK_NAME:
            shutil.rmtree(c) if c.is_dir() and not c.is_symlink() else c.unlink()


def open_run(path: str | Path, create: bool = True) -> RunDir:
    p = Path(path)
    if create:
        p.mkdir(parents=True, exist_ok=True)
    elif not p.is_dir():
        raise FileNotFoundError(f"run directory {p} does not exist")
    return RunDir(p)
