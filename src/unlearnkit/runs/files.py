"""Atomic writes: a file, a folder or a saved model appears whole or not at all (a killed write leaves only
hidden temp names, which `clean_stale_temps` removes)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


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
    from ..models.portable import make_portable

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        make_portable(tmp)
    return out_dir


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


_STALE = re.compile(r"^\..+\.(tmp-.+|tmp\d+|old-.+)$")   # atomic_dir / atomic_write_text leftovers


def clean_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temp files and folders a killed write left at the top of a run dir (`.model.tmp-*`,
    `.config.yaml.tmp<pid>`, `.model.old-*`). Only safe while holding the run's lock; returns what went."""
    p = Path(path)
    gone = [c for c in p.iterdir() if _STALE.match(c.name)] if p.is_dir() else []
    for c in gone:
        shutil.rmtree(c, ignore_errors=True) if c.is_dir() else c.unlink(missing_ok=True)
    return gone
