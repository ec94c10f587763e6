"""runs.atomic_dir: a directory is replaced whole or not at all."""
from __future__ import annotations

import pytest

from unlearnkit.runs import atomic_dir


def test_atomic_dir_replaces_on_success_and_keeps_the_old_on_error(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (out / "a.txt").read_text() == "one"
    with atomic_dir(out) as tmp:                      # replaces the whole directory
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_dir(out) as tmp:
            (tmp / "c.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]   # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]   # no temp or old dirs left behind
