"""How per-token and per-row values become one number — on one process or across data-parallel processes.

`token_mean` is the Hugging Face / TOFU convention: sum over every answer token of the batch divided by
the number of answer tokens of the batch (so long answers weigh more than short ones). This is what
`outputs.loss` is, and what the G-effect and open-unlearning code average their losses with. `row_mean` is
the mean over the rows (sequences) of a batch: NPO, SimNPO, DPO and RMU average per-sequence values.

Data parallelism. Under DDP each of N processes holds B rows of the global batch and DDP *averages* the N
gradients. A per-process token mean Σ_r/n_r averaged over processes is not the global Σ/n when the
processes hold different numbers of answer tokens (they nearly always do), so N processes would train a
different loss from one process with batch N·B. Inside `global_batch(N)` both reductions divide by the
count summed over every process (an all-reduce of one number) and multiply by N, which DDP's averaging
then cancels:

    loss_r = N · Σ_{tokens of r} v / Σ_{all processes} n      ⇒   (1/N) Σ_r ∇loss_r = ∇(Σ v / n)

so the gradient, and the loss averaged over processes (what the Trainer logs), equal the single-process
ones with the whole global batch. Rows: the same with row counts, so uneven last batches are right too.
Outside the context (one process, evaluation, the G-effect) nothing is exchanged and nothing is scaled.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

_WORLD: dict = {"size": 1, "group": None}


@contextlib.contextmanager
def global_batch(world_size: int, group=None) -> Iterator[None]:
    """Within the block, `token_mean` / `row_mean` normalise by counts all-reduced over `world_size`
    processes and scale by `world_size` (see the module docstring). Every process must make the same
    sequence of reduction calls (they do: the same objective runs on each), since each call is a collective.
    The trainer enters it around the objective's loss when it runs data-parallel."""
    if world_size > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise RuntimeError(f"global_batch(world_size={world_size}) needs an initialised torch.distributed "
                           f"process group (torchrun / accelerate launch)")
    previous = dict(_WORLD)
    _WORLD.update(size=int(world_size), group=group)
    try:
        yield
    finally:
        _WORLD.update(previous)


def _global_count(count: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(count summed over the processes, the scale N) inside `global_batch`; (count, 1) outside."""
    n = _WORLD["size"]
    if n <= 1:
        return count, 1
    total = count.detach().clone()
    torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM, group=_WORLD["group"])
    return total, n


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_{b,t} mask·values / Σ_{b,t} mask over the whole (global) batch; `values` is 0 where masked or not."""
    mask = mask.to(values.dtype)
    count, scale = _global_count(mask.sum())
    total = (values * mask).sum()
    return (total if scale == 1 else total * scale) / count.clamp(min=1)


def row_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over the rows of the (global) batch of per-row values, shape (B,)."""
    if _WORLD["size"] <= 1:
        return values.mean()
    count, scale = _global_count(torch.tensor(float(values.numel()), device=values.device))
    return values.sum() * scale / count


def sequence_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence masked mean, shape (B,): Σ_t mask·values / Σ_t mask (within a row: nothing to exchange)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
