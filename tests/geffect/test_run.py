"""geffect_run over a run directory (full and LoRA checkpoints), CSVs, plots, compare, callback, errors."""
from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import pytest
import torch

from unlearnkit.data import PromptFormat, write_qa_jsonl
from unlearnkit.geffect import (GEffectCallback, GEffectError, build_slices, compare, compute_geffect, geffect_run,
                                parameter_groups, read_csv)
from unlearnkit.logprobs import sequence_logprobs
from unlearnkit.objectives import FrozenModelReference, build_objective
from unlearnkit.runs import RunDir



@pytest.fixture()
def run_dir(tmp_path, tiny_tokenizer, theta_ini_state, people, new_model):
    """θ_ini on disk, data as jsonl, and two GA checkpoints written as step-N safetensors folders."""
    recs = people.records()
    write_qa_jsonl(recs[:4], tmp_path / "forget.jsonl")
    write_qa_jsonl(recs[40:44], tmp_path / "retain.jsonl")
    ini = new_model()
    ini.load_state_dict(theta_ini_state)
    ini.save_pretrained(tmp_path / "theta_ini")
    tiny_tokenizer.save_pretrained(tmp_path / "theta_ini")
    run = RunDir(tmp_path / "run")
    run.write_config("unlearn", {"model": str(tmp_path / "theta_ini"), "forget": str(tmp_path / "forget.jsonl"),
                                 "retain": str(tmp_path / "retain.jsonl"), "method": "npo",
                                 "params": {"beta": 0.5}, "template": "plain", "max_length": 128})
    slices = build_slices(tiny_tokenizer, str(tmp_path / "forget.jsonl"), str(tmp_path / "retain.jsonl"), 4, 4,
                          fmt=PromptFormat(template="plain", max_length=128))
    opt = torch.optim.SGD(ini.parameters(), lr=0.05)
    for step in (1, 2):
        loss = sequence_logprobs(ini, slices.forget[0]).mean.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ini.save_pretrained(run.checkpoints / f"step-{step}")
    return run.path


def test_geffect_run_writes_csvs_matching_direct_computation(run_dir, tiny_tokenizer, theta_ini_state, new_model):
    summary = geffect_run(run_dir, groups="each", n_forget=4, n_retain=4)
    rows = read_csv(run_dir / "geffect" / "geffect.csv")
    groups = ["embed", "block_00", "block_01", "block_02", "norm", "lm_head", "total"]
    assert summary["groups"] == groups[:-1]
    assert len(rows) == 2 * 4 * len(groups)  # unlearn, retain (total) and unlearn_forget, retain_forget
    assert {r["checkpoint"] for r in rows} == {"step-1", "step-2"}
    # the same numbers from a model loaded by hand
    ckpt = new_model()
    ckpt.load_state_dict(_load(run_dir / "checkpoints" / "step-2"))
    ini = new_model()
    ini.load_state_dict(theta_ini_state)
    slices = build_slices(tiny_tokenizer, summary["forget"], summary["retain"], 4, 4,
                          fmt=PromptFormat(template="plain", max_length=128))
    eff = compute_geffect(ckpt, build_objective("npo", {"beta": 0.5}), slices, FrozenModelReference(ini),
                          groups=parameter_groups(ckpt, "each"))
    got = {(r["group"], r["kind"]): r["value"] for r in rows if r["step"] == 2}
    for g in groups:
        assert got[(g, "unlearn")] == pytest.approx(eff.unlearn[g], rel=1e-5)
        assert got[(g, "retain")] == pytest.approx(eff.retain[g], rel=1e-5)
        assert got[(g, "retain_forget")] == pytest.approx(eff.retain[g], rel=1e-5)  # NPO here has no regulariser
    inst = read_csv(run_dir / "geffect" / "instances.csv")
    assert len(inst) == 8 and all(0 < r["weight"] < 2 for r in inst)
    assert (run_dir / "plots" / "geffect_curves.png").is_file()
    assert (run_dir / "plots" / "geffect_instances_step-2.png").is_file()
    out = compare([run_dir, run_dir], run_dir.parent / "cmp")
    assert out.is_file() and out.with_suffix(".csv").is_file()


def _load(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_regulariser_rows_disjoint_from_measured_retain(run_dir, tiny_tokenizer, theta_ini_state, new_model):
    """grad_diff's NLL regulariser reads retain rows [2:4]; e_r is measured on rows [0:2] (never the same rows)."""
    params = {"retain": "nll", "retain_weight": 0.5}
    summary = geffect_run(run_dir, method="grad_diff", params=params, groups=1, n_forget=4, n_retain=2,
                          per_instance=False, plots=False, out=run_dir / "gd")
    assert summary["regulariser_rows"] == [2, 4]
    rows = {(r["step"], r["kind"]): r["value"] for r in read_csv(run_dir / "gd" / "geffect.csv") if r["group"] == "total"}
    ckpt = new_model()
    ckpt.load_state_dict(_load(run_dir / "checkpoints" / "step-2"))
    fmt = PromptFormat(template="plain", max_length=128)
    slices = build_slices(tiny_tokenizer, summary["forget"], summary["retain"], 4, 2, fmt=fmt, regulariser=(2, 4))
    eff = compute_geffect(ckpt, build_objective("grad_diff", params), slices)
    assert rows[(2, "retain")] == pytest.approx(eff.retain["total"], rel=1e-5)
    assert rows[(2, "retain_forget")] == pytest.approx(eff.forget_retain["total"], rel=1e-5)
    assert rows[(2, "retain")] != pytest.approx(rows[(2, "retain_forget")], rel=1e-3)
    with pytest.raises(GEffectError, match=r"rows \[1:4\] overlap the measured retain slice \[0:2\]"):
        geffect_run(run_dir, method="grad_diff", params=params, n_forget=4, n_retain=2, regulariser_offset=1,
                    per_instance=False, plots=False, out=run_dir / "bad")


def test_regulariser_rows_skip_the_first_400_when_there_are_more():
    from unlearnkit.geffect.run import regulariser_rows

    assert regulariser_rows(3600, 0, 16, 16) == (400, 416)      # TOFU retain90: the authors' iloc[400:]
    assert regulariser_rows(100, 0, 16, 16) == (16, 32)         # a short retain set: right after the measured rows
    with pytest.raises(GEffectError, match="none left for the retain regulariser"):
        regulariser_rows(16, 0, 16, 4)


def test_ema_smoothing(run_dir):
    geffect_run(run_dir, n_forget=4, n_retain=4, groups=1, per_instance=False, plots=False, out=run_dir / "raw")
    geffect_run(run_dir, n_forget=4, n_retain=4, groups=1, per_instance=False, plots=False, smooth="ema",
                out=run_dir / "ema")
    raw = {(r["step"], r["group"], r["kind"]): r["value"] for r in read_csv(run_dir / "raw" / "geffect.csv")}
    ema = {(r["step"], r["group"], r["kind"]): r["value"] for r in read_csv(run_dir / "ema" / "geffect.csv")}
    k1, k2 = (1, "total", "unlearn"), (2, "total", "unlearn")
    assert ema[k1] == pytest.approx(raw[k1])
    assert ema[k2] == pytest.approx(0.6 * raw[k1] + 0.4 * raw[k2])


def test_lora_checkpoints(tmp_path, run_dir):
    from unlearnkit.models import LoraSettings, apply_lora
    from unlearnkit.models.loading import load_model

    base, _ = load_model(str(tmp_path / "theta_ini"), attn_implementation="eager")
    peft_model = apply_lora(base, LoraSettings(r=2, alpha=4))
    lora_run = RunDir(tmp_path / "lora_run")
    cfg = RunDir(run_dir).read_config()["config"]
    lora_run.write_config("unlearn", cfg)
    for step in (3, 6):
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if "lora_B" in n:
                    p.add_(0.05 * torch.randn_like(p))
        peft_model.save_pretrained(lora_run.checkpoints / f"step-{step}")
    summary = geffect_run(lora_run.path, n_forget=4, n_retain=4, groups=3, plots=False)
    assert summary["groups"] == ["shallow", "middle", "deep"]  # adapters only, in q/v of each block
    rows = read_csv(lora_run.path / "geffect" / "geffect.csv")
    by_step = {s: [r["value"] for r in rows if r["step"] == s and r["group"] == "total"] for s in (3, 6)}
    assert by_step[3] != by_step[6] and all(math.isfinite(v) for vs in by_step.values() for v in vs)


def test_no_checkpoints_is_a_clear_error(tmp_path, run_dir):
    empty = RunDir(tmp_path / "empty")
    empty.write_config("unlearn", RunDir(run_dir).read_config()["config"])
    with pytest.raises(GEffectError, match="has no checkpoints"):
        geffect_run(empty.path)


def test_missing_settings_named(tmp_path):
    (tmp_path / "checkpoints" / "step-1").mkdir(parents=True)
    with pytest.raises(GEffectError, match="'method'"):
        geffect_run(tmp_path)


def test_callback_every_n_steps(tmp_path, model_t, slices):
    cb = GEffectCallback(build_objective("ga"), slices, every_n_steps=2, run_dir=tmp_path, groups=1,
                         per_instance=True)
    for step in (1, 2, 3, 4):
        cb.on_step_end(None, SimpleNamespace(global_step=step), None, model=model_t)
    assert sorted({r["step"] for r in cb.rows}) == [2, 4]
    assert (tmp_path / "geffect" / "live.csv").is_file() and len(cb.instance_rows) == 8


def test_callback_module_does_not_import_train():
    import subprocess

    code = ("import sys, unlearnkit.geffect.run as r; from unlearnkit.geffect import GEffectCallback; "
            "print(any(m.startswith('unlearnkit.train') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_cli(run_dir, tmp_path):
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    res = CliRunner().invoke(app, ["geffect", f"run={run_dir}", "groups=1", "n_forget=4", "n_retain=4",
                                   "per_instance=false", "plots=false", "smooth=ema"])
    assert res.exit_code == 0, res.output
    assert (run_dir / "geffect" / "geffect.csv").is_file()
    res = CliRunner().invoke(app, ["geffect-compare", f"runs={run_dir},{run_dir}", f"out={tmp_path / 'c.png'}"])
    assert res.exit_code == 0 and (tmp_path / "c.png").is_file(), res.output
    res = CliRunner().invoke(app, ["geffect", f"run={run_dir}", "smooth=sometimes"])
    assert res.exit_code == 2 and "smooth" in res.output


def test_geffect_run_takes_its_config_whole(tmp_path):
    from unlearnkit.config import load_config
    from unlearnkit.geffect.run import GEffectConfig

    cfg = load_config(GEffectConfig, overrides=["run=" + str(tmp_path / "nope"), "params.beta=0.2",
                                                "checkpoints=[a,b]", "n_forget=3"])
    assert cfg.params == {"beta": 0.2} and cfg.checkpoints == ["a", "b"] and cfg.n_forget == 3
    with pytest.raises(GEffectError, match="does not exist"):
        geffect_run(cfg)
    with pytest.raises(TypeError, match="set \\['n_retain'\\] on the config"):
        geffect_run(cfg, n_retain=2)
