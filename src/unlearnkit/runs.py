"""Run directories: the unit of record (shared/DESIGN.md §3).

    runs/<name>/config.yaml   resolved config + versions, git commit, seed
    runs/<name>/checkpoints/step-N/
    runs/<name>/log.jsonl
    runs/<name>/eval/<suite>.json
    runs/<name>/plots/*.png
    runs/<name>/.lock         held (flock) by the one command writing the run; holds its pid

One command at a time writes a run directory: `locked_run` holds an exclusive lock for the whole command, so
a second command on the same directory fails at once, naming the holder, instead of interleaving checkpoints,
logs and configs with the first.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import platform
import re
import shutil
import socket
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
    cands = [path / "eval" / name, path / name, *(path / a for a in alternatives)]
    return next((c for c in cands if c.is_file()), cands[0])


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
        return self.path / "log.jsonl"

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


# -- the run lock -----------------------------------------------------------------------------------------
LOCK_NAME = ".lock"
_HELD: dict[str, list] = {}   # real path of a locked run dir -> [fd, depth]: the lock is re-entrant per process


class RunLockedError(RuntimeError):
    """Another command holds the run directory."""


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def _holder(lock: Path) -> str:
    for _ in range(10):   # the holder writes its pid right after taking the lock
        try:
            text = lock.read_text(encoding="utf-8").strip()
        except OSError:
            text = ""
        if text:
            return text
        time.sleep(0.05)
    return "pid unknown"


def _acquire(path: Path) -> int:
    """flock(LOCK_EX | LOCK_NB) on `path/.lock`; retried when the file was replaced between open and lock."""
    lock = path / LOCK_NAME
    for _ in range(5):
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLockedError(
                f"run directory {path} is in use by another command ({_holder(lock)}); two commands writing one "
                f"run directory would mix their checkpoints and logs: wait for that one to finish (or stop it), "
                f"or pass another run=") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            info = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
            return fd
        os.close(fd)   # a failed command removed its empty run dir (and the lock file) meanwhile: start over
    raise RunLockedError(f"run directory {path}: could not take {lock} (it kept being replaced)")


@contextlib.contextmanager
def locked_run(path: str | Path) -> Iterator[RunDir]:
    """Create `path` if needed and hold it exclusively (flock on `path/.lock`, pid inside) for the whole block.

    A second holder — another process, or another command — gets `RunLockedError` naming the holder's pid. The
    lock is re-entrant within one process (a command calling another on the same run). Under torchrun /
    accelerate launch only global rank 0 (env RANK) locks: the other ranks of the same job must not fail on their
    own rank 0's lock, and they write nothing before the process group is up, which waits for rank 0 — so a
    second job fails on its rank 0 and the launcher stops its other ranks. If the block fails and the directory
    was created here and holds nothing but the lock, it is removed again, so a refused command leaves no
    empty run folder behind."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FileExistsError(f"run={p}: exists and is not a directory; pass a directory for run=")
    created = not p.exists()
    key = os.path.realpath(p)
    if _rank() != 0 or key in _HELD:
        if key in _HELD:
            _HELD[key][1] += 1
        try:
            yield RunDir(p)
        finally:
            if key in _HELD:
                _HELD[key][1] -= 1
        return
    fd = _acquire(p)
    _HELD[key] = [fd, 1]
    try:
        yield RunDir(p)
    except BaseException:
        if created and p.is_dir() and {c.name for c in p.iterdir()} <= {LOCK_NAME}:
            (p / LOCK_NAME).unlink(missing_ok=True)
            p.rmdir()
        raise
    finally:
        del _HELD[key]
        os.close(fd)   # closing the descriptor releases the flock


_STALE = re.compile(r"^\..+\.(tmp-.+|tmp\d+|old-.+)$")   # atomic_dir / atomic_write_text leftovers


def clean_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temp files and folders a killed write left at the top of a run dir (`.model.tmp-*`,
    `.config.yaml.tmp<pid>`, `.model.old-*`). Only safe while holding the run's lock; returns what went."""
    p = Path(path)
    gone = [c for c in p.iterdir() if _STALE.match(c.name)] if p.is_dir() else []
    for c in gone:
        shutil.rmtree(c, ignore_errors=True) if c.is_dir() else c.unlink(missing_ok=True)
    return gone


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
