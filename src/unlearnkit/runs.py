"""Run directories: the unit of record (shared/DESIGN.md §3).

    runs/<name>/config.yaml   resolved config + versions, git commit, seed
    runs/<name>/checkpoints/step-N/
    runs/<name>/log.jsonl
    runs/<name>/eval/<suite>.json
    runs/<name>/plots/*.png
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml


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


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a hidden temp dir beside `out_dir`. When the block succeeds the temp dir replaces `out_dir` (an
    existing one is moved aside, then deleted); on any error it is deleted and `out_dir` is left as it was.
    So a model, adapter or checkpoint directory is never half-written."""
    out = Path(out_dir).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing left to delete after the rename


def save_model_atomically(model, tokenizer, out_dir: str | Path) -> Path:
    """save_pretrained (safetensors, + tokenizer) through `atomic_dir`, with configs that transformers 4.x
    loads too (`models.portable`: 5.x-only names are rewritten before the folder appears)."""
    from .models.portable import make_portable

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        make_portable(tmp)
    return out_dir


RUN_RECORD_DIRS = ("model", "adapter", "checkpoints")  # what a run folder holds that no output may replace


def enclosing_run(path: str | Path, levels: int = 3) -> Path | None:
    """The run folder a model/checkpoint dir belongs to (`<run>/model`, `<run>/checkpoints/step-N`), if any."""
    p = Path(path).resolve()
    for parent in list(p.parents)[:levels]:
        if (parent / "config.yaml").is_file():
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


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@dataclass
class RunDir:
    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def write_config(self, kind: str, config: dict, seed: int | None = None) -> None:
        record = {"kind": kind, "config": config, "seed": seed, "versions": _versions(), "git_commit": _git_commit(),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_text(self.config_path, yaml.safe_dump(record, sort_keys=False))

    def read_config(self) -> dict:
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.path}: not a run directory (no config.yaml)")
        return yaml.safe_load(self.config_path.read_text())

    def log(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / "log.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=float) + "\n")

    def read_log(self) -> list[dict]:
        p = self.path / "log.jsonl"
        if not p.is_file():
            return []
        return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]


def open_run(path: str | Path, create: bool = True) -> RunDir:
    p = Path(path)
    if create:
        p.mkdir(parents=True, exist_ok=True)
    elif not p.is_dir():
        raise FileNotFoundError(f"run directory {p} does not exist")
    return RunDir(p)
