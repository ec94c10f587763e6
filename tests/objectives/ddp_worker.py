"""One rank of the data-parallel equality check (tests/objectives/test_data_parallel.py), run by
`torch.multiprocessing.spawn` on CPU with gloo: rank r takes rows [r·B, (r+1)·B) of every part of the global
batch (padded on its own, as a rank's collator does), computes each objective's loss inside `global_batch`
under DDP, and saves the rank-averaged loss and the averaged gradients for the parent to compare."""
from __future__ import annotations

import copy

import torch

from unlearnkit.data.collate import pad_batch
from unlearnkit.models import tiny_llama
from unlearnkit.objectives import FrozenModelReference, UnlearnBatch, build_objective
from unlearnkit.objectives.reduce import global_batch

VOCAB, PAD = 64, 0
# (objective, params): one of each reduction (token mean, row mean) and each retain term
OBJECTIVES = (("ga", {}), ("ga", {"reduction": "sequence_sum"}), ("grad_diff", {}), ("kl", {}), ("npo", {}),
              ("simnpo", {"retain": "nll"}), ("idk_dpo", {}), ("rmu", {"layer": 1}), ("tnpo", {}), ("undial", {}))


def rows(seed: int, n: int) -> list[dict]:
    """`n` rows with different prompt and answer lengths (so the ranks hold different token counts)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt, answer = 3 + i % 3, 2 + (5 * i + seed) % 7
        ids = torch.randint(1, VOCAB, (prompt + answer,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def global_rows(n: int) -> dict[str, list[dict]]:
    return {"forget": rows(1, n), "retain": rows(2, n), "idk": rows(3, n)}


def make_batch(parts: dict[str, list[dict]], lo: int, hi: int) -> UnlearnBatch:
    return UnlearnBatch(**{k: pad_batch(v[lo:hi], PAD) for k, v in parts.items()})


def make_models():
    model = tiny_llama(VOCAB, hidden=32, layers=2, heads=2, intermediate=64, seed=0, attn_implementation="eager",
                       pad_token_id=PAD, eos_token_id=1)
    ref = tiny_llama(VOCAB, hidden=32, layers=2, heads=2, intermediate=64, seed=1, attn_implementation="eager",
                     pad_token_id=PAD, eos_token_id=1)
    return model.eval(), FrozenModelReference(ref.requires_grad_(False))


def loss_and_grads(model, objective, batch, ref) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss, _ = objective.loss(model, batch, ref)
    loss.backward()
    module = getattr(model, "module", model)
    grads = {k: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
             for k, p in module.named_parameters()}
    return loss.detach(), grads


def run(rank: int, world: int, per_rank: int, init_file: str, out_file: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model, ref = make_models()
    parts = global_rows(world * per_rank)
    batch = make_batch(parts, rank * per_rank, (rank + 1) * per_rank)
    results = {}
    for name, params in OBJECTIVES:
        ddp = torch.nn.parallel.DistributedDataParallel(copy.deepcopy(model), find_unused_parameters=True)
        objective = build_objective(name, params)
        with global_batch(world):
            loss, grads = loss_and_grads(ddp, objective, batch, ref)
        torch.distributed.all_reduce(loss)                 # the Trainer logs the mean over processes
        plain, _ = objective.loss(model, batch, ref)       # this rank's own mean, as before the fix
        torch.distributed.all_reduce(plain.detach())
        results[f"{name}{params}"] = {"loss": float(loss) / world, "plain_loss": float(plain) / world,
                                      "grads": grads}
    if rank == 0:
        torch.save(results, out_file)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
