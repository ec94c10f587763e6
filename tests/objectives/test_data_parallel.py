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
