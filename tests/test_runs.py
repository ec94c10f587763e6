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


def test_log_writes_strict_json_and_reads_non_finite_numbers_back(tmp_path):
    import json
    import math

    from unlearnkit.runs import RunDir

    run = RunDir(tmp_path)
    run.log({"step": 1, "loss": float("nan"), "grad_norm": float("inf"), "lr": -float("inf"), "note": "ok"})
    line = (tmp_path / "log.jsonl").read_text().splitlines()[0]
    strict = json.loads(line, parse_constant=lambda name: pytest.fail(f"bare {name} in log.jsonl"))
    assert strict["loss"] == "NaN" and strict["grad_norm"] == "Infinity" and strict["lr"] == "-Infinity"
    with (tmp_path / "log.jsonl").open("a") as fh:
        fh.write('{"step": 2, "loss": NaN}\n{"step": 3, "lo')   # an older log's bare NaN, a half-written line
    rows = run.read_log()
    assert [r["step"] for r in rows] == [1, 2]
    assert math.isnan(rows[0]["loss"]) and rows[0]["grad_norm"] == math.inf and rows[0]["lr"] == -math.inf
    assert math.isnan(rows[1]["loss"]) and rows[0]["note"] == "ok"


def test_truncate_log_keeps_the_steps_up_to_a_checkpoint(tmp_path):
    from unlearnkit.runs import RunDir

    run = RunDir(tmp_path)
    for step in (1, 2, 3, 4, 3):
        run.log({"step": step, "loss": float(step)})
    run.log({"message": "no step"})
    assert run.truncate_log(2) == 3
    assert [r.get("step") for r in run.read_log()] == [1, 2, None]
    assert run.truncate_log(2) == 0


def test_locked_run_is_exclusive_reentrant_and_leaves_no_empty_folder(tmp_path):
    import os
    import subprocess
    import sys

    from unlearnkit.runs import locked_run

    run = tmp_path / "run"
    probe = ("import sys\nfrom unlearnkit.runs import locked_run, RunLockedError\ntry:\n    with locked_run(sys.argv[1]):"
             "\n        print('got it')\nexcept RunLockedError as e:\n    print(e)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with locked_run(run) as rd:
        assert (run / ".lock").read_text().startswith(f"pid {os.getpid()} ")
        with locked_run(run):   # the same process may nest (a command calling another on its run)
            pass
        out = subprocess.run([sys.executable, "-c", probe, str(run)], capture_output=True, text=True, env=env).stdout
        assert f"is in use by another command (pid {os.getpid()} " in out
        (rd.path / "config.yaml").write_text("kind: x\n")
    out = subprocess.run([sys.executable, "-c", probe, str(run)], capture_output=True, text=True, env=env).stdout
    assert out.strip() == "got it", "released when the block ends"
    with pytest.raises(RuntimeError, match="refused"):
        with locked_run(tmp_path / "new"):
            raise RuntimeError("refused before writing anything")
    assert not (tmp_path / "new").exists()
    with pytest.raises(RuntimeError):
        with locked_run(run):
            raise RuntimeError("a failure in an existing run keeps it")
    assert (run / "config.yaml").is_file()


def test_clean_stale_temps_removes_only_killed_writes(tmp_path):
    from unlearnkit.runs import clean_stale_temps

    for name in (".model.tmp-ab12", ".model.old-cd34", ".adapter.tmp-x"):
        (tmp_path / name).mkdir()
    for name in (".config.yaml.tmp123", "config.yaml", ".lock", "model.tmp-keep"):
        (tmp_path / name).write_text("x")
    (tmp_path / "model").mkdir()
    clean_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "config.yaml", "model", "model.tmp-keep"]
