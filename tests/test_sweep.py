"""Sweeps: validation before any run, hashed run dirs, skip / failure markers, emitted commands, and an end-to-end
2×2 unlearning sweep on a tiny model that is killed after its first run and resumed."""
from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from unlearnkit.cli import app
from unlearnkit.config import ConfigError, load_config, to_dict
from unlearnkit import sweep as sw
from unlearnkit.sweep import (COMMANDS, SweepCommand, SweepConfig, config_hash, emit_commands, plan,
                                          register_command, run_sweep)

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


# -- a fake command: sweeps without models -----------------------------------------------------------------
@dataclass
class FakeConfig:
    run: str = "runs/fake"
    x: int = 0
    lr: float = 0.1
    fail: bool = False
    seed: int = 0
    tags: dict = field(default_factory=dict)


def fake_run(cfg: FakeConfig) -> dict:
    run = Path(cfg.run)
    run.mkdir(parents=True, exist_ok=True)
    with (run.parent / "calls.txt").open("a") as fh:
        fh.write(run.name + "\n")
    if cfg.fail:
        raise RuntimeError(f"boom in x={cfg.x}")
    (run / "config.yaml").write_text(yaml.safe_dump({"kind": "fake", "config": to_dict(cfg), "seed": cfg.seed}))
    return {"x": cfg.x}


if "fake" not in COMMANDS:
    register_command(SweepCommand("fake", lambda: (FakeConfig, fake_run)))


def spec(tmp_path, **kw) -> SweepConfig:
    return SweepConfig(**{"command": "fake", "out": str(tmp_path / "out"), "report": False, **kw})


def calls(tmp_path) -> list[str]:
    p = tmp_path / "out" / "calls.txt"
    return p.read_text().split() if p.is_file() else []


# -- planning and validation ------------------------------------------------------------------------------
def test_grid_is_cartesian_with_seeds_and_readable_hashed_dirs(tmp_path):
    runs = plan(spec(tmp_path, grid={"x": [1, 2], "lr": [0.1, 0.3], "tags.kind": ["a"]}, seeds=[0, 7]))
    assert len(runs) == 8
    assert [r.name for r in runs[:2]] == ["x1-lr0.1-s0", "x1-lr0.1-s7"]  # single-valued keys are not in names
    r = runs[1]
    assert r.seed == 7 and r.config["seed"] == 7 and r.config["tags"] == {"kind": "a"}
    assert r.dir == tmp_path / "out" / f"x1-lr0.1-s7-{r.hash}" and len(r.hash) == 8
    assert r.hash == config_hash(r.config)
    assert len({x.hash for x in runs}) == 8


def test_hash_depends_on_resolved_config_not_on_run_dir(tmp_path):
    a = plan(spec(tmp_path, runs=[{"x": 1}]))[0]
    b = plan(spec(tmp_path, out=str(tmp_path / "elsewhere"), runs=[{"x": 1, "lr": 0.1}]))[0]  # lr=0.1 is the default
    c = plan(spec(tmp_path, runs=[{"x": 1, "lr": 0.2}]))[0]
    assert a.hash == b.hash != c.hash


def test_list_of_runs_and_duplicates(tmp_path):
    runs = plan(spec(tmp_path, base={"lr": 0.5}, runs=[{"x": 1}, {"x": 2, "lr": 0.1}]))
    assert [(r.config["x"], r.config["lr"]) for r in runs] == [(1, 0.5), (2, 0.1)]
    with pytest.raises(ConfigError, match=r"runs\[1\] resolves to the same config as runs\[0\]"):
        plan(spec(tmp_path, runs=[{"x": 1}, {"x": 1, "lr": 0.1}]))


UNLEARN_BASE = {"model": "runs/target/model", "forget": "synthetic:forget,people=8", "max_steps": 2}


@pytest.mark.parametrize("kw,match", [
    (dict(base={**UNLEARN_BASE, "lerning_rate": 1e-5}, grid={"method": ["ga"]}),
     r"grid \{method: ga\}: config key 'lerning_rate'"),
    (dict(base=UNLEARN_BASE, grid={"method": ["ga"], "bogus": [1]}), r"grid\.bogus: unknown key 'bogus'"),
    (dict(base=UNLEARN_BASE, runs=[{"method": "ga"}, {"method": "npo", "epochz": 2}]), r"runs\[1\]: config key 'epochz'"),
    (dict(base=UNLEARN_BASE, grid={"method": ["ga", "nppo"]}),
     r"grid \{method: nppo\}: config key 'method': unknown objective 'nppo'; did you mean 'npo'\? available: .*ga"),
    (dict(base=UNLEARN_BASE, grid={"method": ["ga"], "lr": [1e-5, "fast"]}), r"grid \{method: ga, lr: fast\}: config key 'lr'"),
    (dict(base={**UNLEARN_BASE, "max_steps": "many"}), r"config key 'max_steps'"),
    (dict(base=UNLEARN_BASE, grid={"method": ["npo"], "params.betta": [0.1]}), r"betta"),
    (dict(base=UNLEARN_BASE, evaluate={"suite": "related", "limitt": 3}), r"evaluate: config key 'limitt'"),
    (dict(base=UNLEARN_BASE, evaluate={"suite": "related", "batch_size": "big"}), r"evaluate: config key 'batch_size'"),
], ids=["unknown-base-key", "unknown-grid-key", "unknown-run-key", "unknown-method", "wrong-type-grid",
        "wrong-type-base", "unknown-param", "unknown-eval-key", "wrong-type-eval"])
def test_validation_names_the_key_before_any_run(tmp_path, kw, match):
    s = SweepConfig(command="unlearn", out=str(tmp_path / "out"), **kw)
    with pytest.raises(ConfigError, match=match):
        run_sweep(s, echo=lambda _: None)
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was created


def test_sweep_file_errors(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("command: unlearn\ngrdi: {lr: [1]}\n")
    with pytest.raises(ConfigError, match="grdi"):
        sw.load_sweep(bad)
    with pytest.raises(KeyError, match="unknown sweep command 'unlern'; did you mean 'unlearn'"):
        plan(SweepConfig(command="unlern"))
    with pytest.raises(ValueError, match="either `grid:`"):
        SweepConfig(grid={"x": [1]}, runs=[{"x": 2}])
    with pytest.raises(ValueError, match="grid.x: expected a non-empty list"):
        SweepConfig(grid={"x": 3})
    res = runner.invoke(app, ["sweep", str(bad)])
    assert res.exit_code == 2 and "grdi" in res.output


# -- running: skip, failure, record ---------------------------------------------------------------------------
def test_completed_runs_are_skipped_and_failures_recorded(tmp_path):
    s = spec(tmp_path, runs=[{"x": 1}, {"x": 2, "fail": True}, {"x": 3}])
    rec = run_sweep(s, echo=lambda _: None)
    assert [r["status"] for r in rec["runs"]] == ["done", "failed", "done"]  # the failure did not stop run 3
    runs = plan(s)
    err = json.loads((runs[1].dir / sw.ERROR).read_text())
    assert "RuntimeError: boom in x=2" in err["error"] and "Traceback" in err["traceback"] and "fake_run" in err["traceback"]
    assert not (runs[1].dir / sw.DONE).exists()
    done = json.loads((runs[0].dir / sw.DONE).read_text())
    assert done["hash"] == runs[0].hash and done["summary"] == {"x": 1} and done["seed"] == 0
    mtime = (runs[0].dir / sw.DONE).stat().st_mtime_ns
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["runs"][1]["error"].startswith("RuntimeError")

    # rerun: the two completed runs are skipped, the failed one is retried
    lines = []
    rec = run_sweep(s, echo=lines.append)
    assert [r["status"] for r in rec["runs"]] == ["skipped", "failed", "skipped"]
    assert calls(tmp_path) == [runs[0].dir.name, runs[1].dir.name, runs[2].dir.name, runs[1].dir.name]
    assert (runs[0].dir / sw.DONE).stat().st_mtime_ns == mtime
    assert any(l.startswith("skip") and runs[0].dir.name in l for l in lines)


def test_only_and_dry_run(tmp_path):
    s = spec(tmp_path, grid={"x": [1, 2, 3]})
    rec = run_sweep(s, dry_run=True, echo=lambda _: None)
    assert [r["status"] for r in rec["runs"]] == ["todo"] * 3 and not (tmp_path / "out").exists()
    rec = run_sweep(s, only=["1"], echo=lambda _: None)  # a Slurm array index
    assert [r["name"] for r in rec["runs"]] == ["x2"] and calls(tmp_path) == [plan(s)[1].dir.name]
    assert not (tmp_path / "out" / "sweep.json").exists()  # written by the full sweep only
    rec = run_sweep(s, echo=lambda _: None)
    assert [r["status"] for r in rec["runs"]] == ["done", "skipped", "done"]
    assert (tmp_path / "out" / "sweep.json").is_file()
    with pytest.raises(ValueError, match="no such run"):
        run_sweep(s, only=["x9"], echo=lambda _: None)


def test_changed_evaluation_reruns(tmp_path):
    s = spec(tmp_path, runs=[{"x": 1}])
    run_sweep(s, echo=lambda _: None)
    r = plan(s)[0]
    assert sw.is_done(r, {}) and not sw.is_done(r, {"suite": "related"})


@pytest.mark.parametrize("split", ["01", "05", "10"])
def test_tofu_sweep_cells_resolve_to_the_method_presets(split):
    """Every cell of the shipped TOFU sweeps trains its method's preset: lr, batch, schedule and every params key."""
    from unlearnkit.presets import load_preset

    runs = plan(sw.load_sweep(REPO / "configs" / "experiments" / f"tofu_forget{split}.yaml"))
    assert len(runs) == 10
    for r in runs:
        preset = load_preset(r.config["method"])
        assert r.config["preset"] == r.config["method"]
        assert {k: r.config[k] for k in preset} == preset, r.name
        assert (r.config["forget"], r.config["retain"]) == (f"tofu:forget{split}", f"tofu:retain{100 - int(split)}")


def test_sweep_cell_overrides_preset_params_one_by_one(tmp_path):
    s = SweepConfig(command="unlearn", out=str(tmp_path / "out"), base={**UNLEARN_BASE, "lr": 2e-5},
                    grid={"method": ["npo", "simnpo"], "params.beta": [0.5]})
    npo, simnpo = (r.config for r in plan(s))
    assert npo["params"] == {"beta": 0.5, "retain": "nll", "retain_weight": 1.0} and npo["lr"] == 2e-5
    assert simnpo["params"] == {"beta": 0.5, "delta": 0.0, "forget_weight": 0.125, "retain": "nll",
                                "retain_weight": 1.0}
    assert npo["warmup"] == simnpo["warmup"] == 0.1 and npo["preset"] == "npo"
    bare = plan(SweepConfig(command="unlearn", out=str(tmp_path / "out"), base={**UNLEARN_BASE, "preset": "none"},
                            grid={"method": ["npo"]}))[0].config
    assert bare["params"] == {} and bare["preset"] == "none"


# -- commands for a scheduler ------------------------------------------------------------------------------
def test_emit_commands_round_trip(tmp_path):
    from unlearnkit.presets import load_with_preset
    from unlearnkit.train.unlearn import UnlearnConfig

    s = SweepConfig(command="unlearn", out=str(tmp_path / "out"), base={**UNLEARN_BASE, "params": {"retain": "none"}},
                    grid={"method": ["ga", "npo"], "lr": [1e-4, 3e-4]}, seeds=[3],
                    evaluate={"suite": "related", "related_people": 8, "oracle_stats": "runs/oracle"})
    lines = emit_commands(s)
    runs = plan(s)
    assert len(lines) == 4
    for line, r in zip(lines, runs):
        train, evaluate = line.split(" && ")
        argv = shlex.split(train)
        assert argv[:2] == ["unlearnkit", "unlearn"] and f"run={r.dir}" in argv and "seed=3" in argv
        cfg = load_with_preset(UnlearnConfig, None, argv[2:])  # the command rebuilds exactly the planned config
        assert config_hash(to_dict(cfg)) == r.hash
        eargv = shlex.split(evaluate)
        assert eargv[:2] == ["unlearnkit", "evaluate"]
        assert {f"run={r.dir}", f"model={r.dir / 'model'}", "suite=related", "oracle=runs/oracle"} <= set(eargv)
    assert not (tmp_path / "out").exists()
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"command": "unlearn", "out": str(tmp_path / "out"), "base": UNLEARN_BASE,
                                    "grid": {"method": ["ga", "npo"]}}))
    res = runner.invoke(app, ["sweep", str(path), "--emit-commands"])
    assert res.exit_code == 0, res.output
    out = [l for l in res.output.splitlines() if l.startswith("unlearnkit ")]
    assert len(out) == 2 and "method=ga" in out[0] and "method=npo" in out[1]


# -- end to end: a 2×2 unlearning sweep on a tiny model, killed and resumed ---------------------------------
@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory) -> str:
    from unlearnkit.train.finetune import FinetuneConfig, finetune

    run = tmp_path_factory.mktemp("sweep_target") / "target"
    finetune(FinetuneConfig(model="tiny", data="synthetic:train,people=8", tiny_hidden=64, tiny_layers=2,
                            tiny_vocab=512, precision="fp32", max_steps=2, batch_size=16, lr=3e-3, run=str(run),
                            recall_max=-1, logging_steps=1, template="plain"))
    return str(run / "model")


def _sweep_proc(path: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "unlearnkit.cli", "sweep", str(path)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def test_sweep_end_to_end_killed_and_resumed(tiny_target, tmp_path):
    out = tmp_path / "sweep"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({
        "command": "unlearn", "out": str(out),
        "base": {"model": tiny_target, "forget": "synthetic:forget,people=8,forget_fraction=0.25", "max_steps": 2,
                 "forget_batch_size": 4, "grad_accum": 1, "precision": "fp32", "template": "plain",
                 "params": {"retain": "none"}, "save_steps": 2},
        "grid": {"method": ["ga", "npo"], "lr": [1.0e-4, 3.0e-4]},
        "seeds": [0],
        "evaluate": {"suite": "related", "related_people": 8, "forget_fraction": 0.125, "max_new_tokens": 4,
                     "template": "plain", "batch_size": 64}}))
    # first pass: killed as soon as one run is complete
    proc = _sweep_proc(path, tmp_path / "first.log")
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None and not list(out.glob(f"*/{sw.DONE}")):
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first_done = sorted(p.parent.name for p in out.glob(f"*/{sw.DONE}"))
    assert first_done, (tmp_path / "first.log").read_text()[-3000:]
    mtimes = {n: (out / n / sw.DONE).stat().st_mtime_ns for n in first_done}
    assert not (out / "sweep.json").exists() or len(first_done) == 4

    # second pass: completes the rest, skipping what is done
    proc = _sweep_proc(path, tmp_path / "second.log")
    assert proc.wait(timeout=400) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    for n in first_done:
        assert f"skip  {out / n}" in log
        assert (out / n / sw.DONE).stat().st_mtime_ns == mtimes[n]
    record = json.loads((out / "sweep.json").read_text())
    assert sorted(r["status"] for r in record["runs"]).count("skipped") == len(first_done)
    assert {r["status"] for r in record["runs"]} <= {"done", "skipped"} and len(record["runs"]) == 4

    # the report: 4 rows, every run evaluated with finite metrics, seeds and methods recorded
    import csv

    with (out / "report" / "runs.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    assert sorted((r["method"], float(r["config.lr"])) for r in rows) == [
        ("ga", 1e-4), ("ga", 3e-4), ("npo", 1e-4), ("npo", 3e-4)]
    for r in rows:
        assert r["seed"] == "0" and r["status"] == "finished"
        vals = [float(r[k]) for k in ("related/target/probability", "related/target/truth_ratio",
                                      "related/related/rouge_l_recall")]
        assert all(math.isfinite(v) for v in vals)
        assert math.isfinite(float(r["log.loss"]))  # GA's loss is −NLL: negative
    page = (out / "report" / "report.html").read_text()
    assert "Suite related: all metrics" in page and page.count("data:image/png;base64,") >= 1


@pytest.mark.slow
def test_workers_run_in_spawned_processes(tmp_path):
    """Two finetune runs in two spawned workers (plus a failing one that does not stop them)."""
    s = SweepConfig(command="finetune", out=str(tmp_path / "out"), workers=2, report=True,
                    base={"model": "tiny", "data": "synthetic:train,people=4", "tiny_hidden": 32, "tiny_layers": 1,
                          "tiny_vocab": 300, "precision": "fp32", "max_steps": 1, "recall_max": -1},
                    runs=[{"lr": 1e-3}, {"lr": 2e-3}, {"lr": 1e-3, "data": "synthetic:nope,people=4"}])
    rec = run_sweep(s, echo=lambda _: None)
    assert [r["status"] for r in rec["runs"]] == ["done", "done", "failed"]
    assert "unknown synthetic part" in rec["runs"][2]["error"]
    for r in plan(s)[:2]:
        assert (r.dir / "model" / "config.json").is_file() and (r.dir / sw.DONE).is_file()
    assert (tmp_path / "out" / "report" / "report.html").is_file()
