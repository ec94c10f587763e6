"""Unlearning trainer: methods on a tiny θ_ini, reference cache, divergence guard, input errors, 2-process DDP."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from unlearnkit.data import PromptFormat, QADataset
from unlearnkit.data.specs import load_records
from unlearnkit.logprobs import sequence_logprobs
from unlearnkit.models import load_model, tiny_llama
from unlearnkit.objectives import reference as reference_mod
from unlearnkit.runs import list_checkpoints
from unlearnkit.train.checkpoints import STAGING
from unlearnkit.train.hf_glue import DivergenceError
from unlearnkit.train.unlearn import UnlearnConfig, unlearn

REPO = Path(__file__).resolve().parents[2]
FORGET = "synthetic:forget,people=20,forget_fraction=0.2"  # 12 rows, matches conftest's tokenizer corpus
RETAIN = "synthetic:retain_targets,people=20"
FAST = dict(forget=FORGET, retain=RETAIN, max_steps=4, save_steps=2, forget_batch_size=4, grad_accum=1, lr=1e-3,
            precision="fp32", logging_steps=1, warmup=0.0)


def forget_logprob(model_or_dir, tok=None) -> float:
    """Mean answer-token log-prob of the forget rows."""
    if isinstance(model_or_dir, (str, Path)):
        model, tok = load_model(str(model_or_dir))
    else:
        model = model_or_dir
    from unlearnkit.data.collate import pad_batch

    ds = QADataset(load_records(FORGET), tok, PromptFormat(template="auto", max_length=256))
    batch = pad_batch([ds[i] for i in range(len(ds))], tok.pad_token_id)
    batch.pop("index")
    with torch.no_grad():
        slp = sequence_logprobs(model.eval(), batch)
    return float((slp.token_logprobs.sum() / slp.mask.sum()).item())


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture()
def count_reference_forwards(monkeypatch):
    """Counts every model-backed reference call (frozen copy or disabled adapters)."""
    calls = {"n": 0}
    for name in ("_logprobs", "_logits", "hidden_states"):
        orig = getattr(reference_mod._ModelReference, name)

        def wrapped(self, *a, _orig=orig, **k):
            calls["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(reference_mod._ModelReference, name, wrapped)
    return calls


# -- methods -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,extra,terms", [
    ("ga", {"retain": ""}, ["forget_loss"]),
    ("npo", {}, ["forget_loss", "forget_logratio", "npo_weight"]),
    ("grad_diff", {}, ["forget_loss", "retain_loss"]),
    ("kl", {"lora": True, "lora_r": 4, "lr": 1e-2}, ["forget_loss", "retain_loss"]),
])
def test_method_unlearns_and_writes_checkpoints(theta_ini, tmp_path, method, extra, terms):
    run = tmp_path / method
    cfg = UnlearnConfig(model=theta_ini, method=method, run=str(run), **{**FAST, **extra})
    summary = unlearn(cfg)
    lora = extra.get("lora", False)
    out = run / ("adapter" if lora else "model")
    assert summary["steps"] == 4 and Path(summary["output"]) == out
    assert forget_logprob(out) < forget_logprob(theta_ini) - 0.01, "forget log-likelihood went down"
    # checkpoints at every save_steps, complete and loadable; optimizer state only in the newest
    steps = [s for s, _ in list_checkpoints(run / "checkpoints")]
    assert steps == [2, 4]
    ck2, ck4 = run / "checkpoints" / "step-2", run / "checkpoints" / "step-4"
    weights = "adapter_model.safetensors" if lora else "model.safetensors"
    assert (ck2 / weights).is_file() and (ck4 / weights).is_file()
    assert not (ck2 / "optimizer.pt").exists() and (ck4 / "optimizer.pt").is_file()
    load_model(str(ck2))
    # log.jsonl: one record per step, each objective term separately
    records = [r for r in read_log(run) if "learning_rate" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for term in terms:
        assert all(term in r for r in records), term
    # config.yaml records what UIPE and the G-effect need
    rec = yaml.safe_load((run / "config.yaml").read_text())
    assert rec["kind"] == "unlearn" and rec["config"]["method"] == method
    inputs = rec["inputs"]
    assert inputs["theta_ini"] == str(Path(theta_ini).resolve()) and inputs["method"] == method
    assert inputs["forget"] == FORGET and inputs["retain"] == ("" if method in ("ga", "npo") else RETAIN)
    if lora:
        assert not (run / "model").exists()
        adapter_cfg = json.loads((out / "adapter_config.json").read_text())
        assert Path(adapter_cfg["base_model_name_or_path"]).resolve() == Path(theta_ini).resolve()
        assert summary["reference"]["model"] == "disabled adapters"
    if method == "kl" or method == "grad_diff":
        assert summary["records"]["retain"] == len(load_records(RETAIN))


def test_idk_dpo_caches_forget_and_idk(theta_ini, tmp_path, count_reference_forwards):
    idk = tmp_path / "idk.jsonl"
    idk.write_text("I don't know.\n\"No idea, sorry.\"\n{\"answer\": \"I cannot say.\"}\n")
    run = tmp_path / "idk_dpo"
    summary = unlearn(UnlearnConfig(model=theta_ini, method="idk_dpo", idk=str(idk), run=str(run),
                                    keep_checkpoints=1, **{**FAST, "max_steps": 2, "save_steps": 1}))
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2], "keep_checkpoints=1 prunes step-1"
    assert summary["reference_cache"]["splits"] == ["forget", "idk"]
    assert summary["reference"]["model"] is None
    assert count_reference_forwards["n"] == 2  # one cache pass per split, none per step
    rec = yaml.safe_load((run / "config.yaml").read_text())
    assert rec["inputs"]["idk"] == str(idk.resolve())


# -- reference cache -----------------------------------------------------------------------------------
def test_reference_cache_is_written_once_and_reused(theta_ini, tmp_path, count_reference_forwards):
    run = tmp_path / "npo"
    base = dict(FAST, retain="", max_steps=2, save_steps=2, ref_batch_size=16)
    s1 = unlearn(UnlearnConfig(model=theta_ini, method="npo", run=str(run), **base))
    assert s1["reference_cache"]["status"] == "computed" and s1["reference"]["model"] is None
    assert count_reference_forwards["n"] == 1, "12 forget rows, ref_batch_size 16: one forward, zero per step"
    cache = run / "reference" / "logprobs.safetensors"
    stamp = cache.stat().st_mtime_ns
    first = read_log(run)[0]
    assert first["forget_logratio"] == pytest.approx(0.0, abs=1e-5), "cache = θ_ini's log-probs at step 0"

    # a longer rerun of the same command resumes from step-2 and reuses the cache: no reference forward at all
    (run / "unlearn.json").unlink()
    s2 = unlearn(UnlearnConfig(model=theta_ini, method="npo", run=str(run), **{**base, "max_steps": 4}))
    assert s2["reference_cache"]["status"] == "reused" and count_reference_forwards["n"] == 1
    assert s2["resumed_from"].endswith("step-2") and s2["steps"] == 4
    assert cache.stat().st_mtime_ns == stamp
    # another tokenisation (masking) changes the fingerprint: recomputed (resuming with another masking needs
    # resume=force: a plain rerun with other settings is refused, see test_faults)
    (run / "unlearn.json").unlink()
    s3 = unlearn(UnlearnConfig(model=theta_ini, method="npo", run=str(run), resume="force",
                               **{**base, "max_steps": 5, "masking": "open-unlearning"}))
    assert s3["reference_cache"]["status"] == "computed" and count_reference_forwards["n"] == 2


def test_reference_cache_fingerprint_and_table(tiny_tokenizer, plain_format, people, tmp_path):
    from unlearnkit.objectives import FrozenModelReference
    from unlearnkit.train.reference_cache import load_tables, model_fingerprint, reference_cache

    tok = tiny_tokenizer
    ds = QADataset(people.records()[:5], tok, plain_format)
    m0 = tiny_llama(len(tok), hidden=32, layers=1, heads=2, intermediate=64, seed=0, pad_token_id=tok.pad_token_id)
    m1 = tiny_llama(len(tok), hidden=32, layers=1, heads=2, intermediate=64, seed=1, pad_token_id=tok.pad_token_id)
    kw = dict(pad_id=tok.pad_token_id, batch_size=2, device="cpu")
    t0, st = reference_cache(tmp_path, FrozenModelReference(m0), model_fingerprint(m0), {"forget": ds}, **kw)
    assert st == "computed" and len(t0["forget"]) == 5
    from unlearnkit.data.collate import pad_batch

    one = pad_batch([ds[3]], tok.pad_token_id)
    want = sequence_logprobs(m0, one)
    assert torch.allclose(t0["forget"][3], want.token_logprobs[0][want.mask[0]], atol=1e-6)
    _, st = reference_cache(tmp_path, FrozenModelReference(m0), model_fingerprint(m0), {"forget": ds}, **kw)
    assert st == "reused"
    _, st = reference_cache(tmp_path, FrozenModelReference(m1), model_fingerprint(m1), {"forget": ds}, **kw)
    assert st == "computed", "other weights: stale"
    tables, meta = load_tables(tmp_path / "reference" / "logprobs.safetensors")
    assert meta["splits"] == "forget" and tables["forget"].nbytes > 0
    with pytest.raises(IndexError):
        tables["forget"][5]


# -- divergence guard ----------------------------------------------------------------------------------
def test_divergence_guard_stops_and_keeps_the_last_good_checkpoint(theta_ini, tmp_path):
    run = tmp_path / "ga"
    cfg = UnlearnConfig(model=theta_ini, method="ga", run=str(run), loss_bound=7.5,
                        **{**FAST, "retain": "", "max_steps": 40, "save_steps": 1, "lr": 1e-2})
    with pytest.raises(DivergenceError, match=r"diverged at step (\d+).*bound 7.5.*last good checkpoint kept") as err:
        unlearn(cfg)
    bad_step = int(err.value.args[0].split("step ")[1].split(":")[0])
    steps = [s for s, _ in list_checkpoints(run / "checkpoints")]
    assert steps and steps[-1] == bad_step - 1, "a checkpoint for every good step, none at or after the bad one"
    assert not (run / "checkpoints" / STAGING).exists() or not any((run / "checkpoints" / STAGING).iterdir())
    last = run / "checkpoints" / f"step-{steps[-1]}"
    assert json.loads((last / "trainer_state.json").read_text())["global_step"] == steps[-1]
    model, tok = load_model(str(last))
    assert abs(forget_logprob(model, tok)) <= 7.5 + 1.0
    assert not (run / "model").exists() and not (run / "unlearn.json").exists()
    assert read_log(run)[-1]["diverged"] is True


# -- errors before training ----------------------------------------------------------------------------
def test_input_errors_are_raised_before_training(theta_ini, tmp_path, tiny_tokenizer):
    from unlearnkit.config import load_config
    from unlearnkit.data.records import DataError
    from unlearnkit.models.tiny import train_tokenizer

    with pytest.raises(ValueError, match="unknown objective 'npx'; did you mean 'npo'.*available: .*grad_diff"):
        load_config(UnlearnConfig, overrides=["method=npx"])
    with pytest.raises(ValueError, match="no hyper-parameter 'betta'; did you mean 'beta'"):
        UnlearnConfig(method="npo", params={"betta": 1})
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="forget=.*empty"):
        unlearn(UnlearnConfig(model=theta_ini, run=str(tmp_path / "a"), **{**FAST, "forget": str(empty)}))
    with pytest.raises(ValueError, match="needs a retain set"):
        unlearn(UnlearnConfig(model=theta_ini, method="grad_diff", run=str(tmp_path / "b"), **{**FAST, "retain": ""}))
    with pytest.raises(FileNotFoundError, match="idk="):
        unlearn(UnlearnConfig(model=theta_ini, method="idk_nll", idk=str(tmp_path / "nope.txt"),
                              run=str(tmp_path / "c"), **FAST))
    other = tmp_path / "other_ref"
    tok2 = train_tokenizer(["completely different text for another vocabulary"] * 20, vocab_size=300)
    tiny_llama(len(tok2), hidden=32, layers=1, heads=2, intermediate=64).save_pretrained(other)
    tok2.save_pretrained(other)
    with pytest.raises(ValueError, match="ref_model=.*tokenizer differs"):
        unlearn(UnlearnConfig(model=theta_ini, ref_model=str(other), run=str(tmp_path / "d"), **FAST))
    for name in "abcd":
        assert not (tmp_path / name / "checkpoints").exists() and not (tmp_path / name / "config.yaml").exists()


# -- data plumbing -------------------------------------------------------------------------------------
def test_retain_stream_shards_like_one_big_batch(tiny_tokenizer, people, plain_format):
    from unlearnkit.train.unlearn_data import RetainStream

    ds = QADataset(people.records()[:7], tiny_tokenizer, plain_format)
    single = RetainStream(ds, 4, tiny_tokenizer.pad_token_id, seed=3)
    ranks = [RetainStream(ds, 2, tiny_tokenizer.pad_token_id, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for draw in range(6):  # crosses several reshuffles of the 7 rows
        assert single.indices(draw) == ranks[0].indices(draw) + ranks[1].indices(draw)
    seen = [i for d in range(7) for i in single.indices(d)]
    assert sorted(seen) == sorted(list(range(7)) * 4), "every row once per pass"
    assert RetainStream(ds, 4, 0, seed=3).indices(5) == single.indices(5), "a pure function of the draw"


def test_idk_records_are_seeded(people):
    from unlearnkit.train.unlearn_data import idk_records, load_idk_answers

    answers = ["a", "b", "c", "d"]
    forget = people.records()[:8]
    one, two = idk_records(forget, answers, 0), idk_records(forget, answers, 0)
    assert [r.answer for r in one] == [r.answer for r in two] and len({r.answer for r in one}) > 1
    assert [r.question for r in one] == [r.question for r in forget]
    shared = REPO.parent / "shared" / "data" / "tofu" / "idontknow.jsonl"
    if shared.is_file():
        assert len(load_idk_answers(shared)) >= 50


# -- presets, accelerate configs, CLI ------------------------------------------------------------------
def test_method_presets_load_and_follow_the_tofu_protocol():
    from unlearnkit.config import load_config
    from unlearnkit.objectives import OBJECTIVES

    presets = sorted((REPO / "configs" / "methods").glob("*.yaml"))
    assert {p.stem for p in presets} == set(OBJECTIVES.names())
    for p in presets:
        cfg = load_config(UnlearnConfig, p, ["params.retain_weight=2"])
        assert cfg.method == p.stem and cfg.lr == (1e-4 if p.stem == "undial" else 1e-5) and cfg.epochs == 10
        assert cfg.forget_batch_size * cfg.grad_accum == 32
        assert cfg.objective().config.retain_weight == 2.0


def test_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for name in ("ddp", "deepspeed_zero2", "fsdp"):
        cfg = load_config_from_file(str(REPO / "configs" / "accelerate" / f"{name}.yaml"))
        kinds[name] = str(cfg.distributed_type)
    assert kinds == {"ddp": "DistributedType.MULTI_GPU", "deepspeed_zero2": "DistributedType.DEEPSPEED",
                     "fsdp": "DistributedType.FSDP"}


def test_cli_unlearn_with_a_preset(theta_ini, tmp_path):
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    run = tmp_path / "cli"
    res = CliRunner().invoke(app, ["unlearn", "-c", str(REPO / "configs" / "methods" / "grad_diff.yaml"),
                                   f"model={theta_ini}", f"forget={FORGET}", f"retain={RETAIN}", f"run={run}",
                                   "max_steps=1", "forget_batch_size=2", "grad_accum=1", "precision=fp32"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "unlearn.json").read_text())["steps"] == 1
    res = CliRunner().invoke(app, ["unlearn", "method=nppo", f"run={tmp_path / 'x'}"])
    assert res.exit_code == 2 and "did you mean 'npo'" in res.output


# -- multi-process -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(theta_ini, tmp_path):
    """accelerate launch, 2 CPU processes (gloo), batch 2 each vs 1 process with batch 4: same loss curve."""
    common = [f"model={theta_ini}", f"forget={FORGET}", f"retain={RETAIN}", "method=npo", "preset=none",
              "params.retain=nll",
              "max_steps=5", "grad_accum=1", "lr=1e-3", "precision=fp32", "save_steps=5", "logging_steps=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launcher = Path(sys.executable).parent / "accelerate"
    ddp = tmp_path / "ddp"
    res = subprocess.run([str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                          "-m", "unlearnkit.cli", "unlearn", *common, f"run={ddp}", "forget_batch_size=2"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    single = tmp_path / "single"
    unlearn(UnlearnConfig(model=theta_ini, forget=FORGET, retain=RETAIN, method="npo", params={"retain": "nll"},
                          max_steps=5, grad_accum=1, lr=1e-3, precision="fp32", save_steps=5, logging_steps=1,
                          run=str(single), forget_batch_size=4))
    assert yaml.safe_load((ddp / "config.yaml").read_text())["inputs"]["processes"] == 2
    a = [r for r in read_log(ddp) if "learning_rate" in r]
    b = [r for r in read_log(single) if "learning_rate" in r]
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4, 5]
    # NPO's forget term is a mean over sequences: identical; the retain NLL is a token mean per process
    # (mean of two half-batch means vs one mean), so the total agrees to ~1e-3 only
    assert a[0]["forget_loss"] == pytest.approx(b[0]["forget_loss"], rel=1e-6)
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=5e-3), (ra, rb)
        assert ra["forget_loss"] == pytest.approx(rb["forget_loss"], rel=5e-3)
    assert (ddp / "model" / "model.safetensors").is_file()
    assert [s for s, _ in list_checkpoints(ddp / "checkpoints")] == [5]
