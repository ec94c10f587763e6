"""N processes = 1 process (issue 21.5): the loss and gradient of every objective on 2 DDP ranks with B rows each
equal those of one process with 2·B rows, for token-mean and row-mean objectives and every retain term."""
from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

import ddp_worker as w

WORLD, PER_RANK = 2, 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    out = tmp / "rank0.pt"
    mp.spawn(w.run, args=(WORLD, PER_RANK, str(tmp / "init"), str(out)), nprocs=WORLD, join=True)
    return torch.load(out)


@pytest.mark.parametrize("name,params", w.OBJECTIVES, ids=[f"{n}{p}" for n, p in w.OBJECTIVES])
def test_two_ranks_equal_one_process_with_the_global_batch(ranks, name, params):
    model, ref = w.make_models()
    objective = w.build_objective(name, params)
    single = w.make_batch(w.global_rows(WORLD * PER_RANK), 0, WORLD * PER_RANK)
    loss, grads = w.loss_and_grads(model, objective, single, ref)
    got = ranks[f"{name}{params}"]
    assert got["loss"] == pytest.approx(float(loss), abs=2e-6)   # fp32 round-off of terms of size ~4
    for k, g in grads.items():
        torch.testing.assert_close(got["grads"][k], g, rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")


def test_the_batches_would_catch_per_rank_means(ranks):
    """Per-rank token means averaged over ranks (the behaviour before the fix) differ here, because the ranks
    hold different numbers of answer tokens, so the test above bites."""
    differ = [k for k, r in ranks.items() if abs(r["plain_loss"] - r["loss"]) > 1e-4]
    assert {"ga{}", "grad_diff{}", "kl{}"} <= set(differ), differ


def _unlearn_cmd(run, theta, forget, retain, batch: int, method: str) -> list[str]:
    return ["-m", "unlearnkit.cli", "unlearn", f"model={theta}", f"forget={forget}", f"retain={retain}",
            f"method={method}", f"run={run}", "max_steps=3", "lr=1e-3", f"forget_batch_size={batch}",
            f"retain_batch_size={batch}", "grad_accum=2",
            "precision=fp32", "save_steps=0", "logging_steps=1", "seed=3", "template=plain", "max_grad_norm=0"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grad_diff", "npo"])
def test_torchrun_two_processes_train_like_one(tmp_path, tiny_tokenizer, method):
    """End to end: `torchrun --nproc_per_node 2` with batch 2 per process and one process with batch 4 log the
    same loss at every step and end with the same weights (3 AdamW steps with 2 accumulation micro-steps)."""
    import json
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from unlearnkit.data import QARecord, write_qa_jsonl
    from unlearnkit.models import tiny_llama
    from unlearnkit.runs import save_model_atomically

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    recs = [QARecord(question=f"Who is person {i}?", answer=" ".join(words[: 1 + (7 * i) % 11]) + ".")
            for i in range(24)]
    write_qa_jsonl(recs[:12], tmp_path / "forget.jsonl")
    write_qa_jsonl(recs[12:], tmp_path / "retain.jsonl")
    model = tiny_llama(len(tiny_tokenizer), hidden=32, layers=2, heads=2, intermediate=64, seed=0,
                       pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id)
    theta = save_model_atomically(model, tiny_tokenizer, tmp_path / "theta")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    args = (theta, tmp_path / "forget.jsonl", tmp_path / "retain.jsonl")
    one = subprocess.run([sys.executable, *_unlearn_cmd(tmp_path / "one", *args, 4, method)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(29500 + os.getpid() % 1000), *_unlearn_cmd(tmp_path / "two", *args, 2, method)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / d / "log.jsonl").read_text().splitlines())
               if "loss" in r and "train_loss" not in r] for d in ("one", "two")]
    # fp32 round-off, relative: with its preset's retain NLL term the NPO loss is about 20 (per-rank means
    # were off by 7.8e-4 at step 1, so this still catches them)
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-6, abs=1e-6), losses
    # before the fix the step-1 loss (identical weights) differed by 7.8e-4. Weights: Adam divides by √v, which
    # turns fp32 round-off in the all-reduce into up to ~1e-5 on the few weights whose gradients are ~0
    # (lm_head rows of unseen tokens); every other weight agrees to 1e-6
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("one", "two"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-5, msg=lambda m: f"{k}: {m}")
        assert ((b[k] - a[k]).abs() > 1e-6).float().mean() < 1e-3, k


def test_global_batch_is_a_no_op_on_one_process_and_needs_a_process_group_beyond():
    from unlearnkit.objectives.reduce import global_batch, row_mean, token_mean

    values, mask = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]]), torch.tensor([[1, 1, 1], [1, 0, 0]])
    with global_batch(1):
        assert float(token_mean(values, mask)) == 2.5 and float(row_mean(values[:, 0])) == 2.5
    with pytest.raises(RuntimeError, match="process group"):
        with global_batch(2):
            pass
