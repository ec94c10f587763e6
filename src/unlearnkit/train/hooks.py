"""What a caller plugs into `UnlearnTrainer` besides the objective, so every training path is the same step.

* a **penalty**: `penalty(model) -> (scalar, {name: float})`, added to the objective's loss inside the same
  autocast and divergence guard, and logged with the objective's terms (Reveal's O-LoRA orthogonality term);
* a **stop condition**: `StopWhen(check)`, the HF way (`control.should_training_stop`), checked after every
  optimizer step with the updated model (train on until ‖θ − θ_ini‖ reaches a target);
* a **fixed batch order**: `fixed_batches` / `FixedDraws`, for callers whose data order is their own (a reveal
  round's shuffles, a continuation that replays a seeded loader) instead of the Trainer's sampler;
* `OffsetDraws`: a retain stream that starts at another draw (a continuation picks up where its base run stopped).
"""
from __future__ import annotations

import random
from typing import Callable, Iterator, Sequence

import torch
from transformers import TrainerCallback

from ..data.collate import pad_batch

Penalty = Callable[[torch.nn.Module], "tuple[torch.Tensor, dict[str, float]]"]


class StopWhen(TrainerCallback):
    """Stop training after the optimizer step at which `check(model, step)` first returns True."""

    def __init__(self, check: Callable[[torch.nn.Module, int], bool]):
        self.check = check

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.check(model, state.global_step):
            control.should_training_stop = True
        return control


class FixedDraws:
    """Draw k = the rows `order[k]` of `dataset`, padded: a retain source with the caller's own order."""

    def __init__(self, dataset, order: Sequence[Sequence[int]], pad_id: int):
        self.dataset, self.order, self.pad_id = dataset, [list(b) for b in order], pad_id

    def batch(self, k: int) -> dict:
        return pad_batch([self.dataset[i] for i in self.order[k]], self.pad_id)


class OffsetDraws:
    """`stream.batch(k + offset)`: a retain stream continued from draw `offset`."""

    def __init__(self, stream, offset: int):
        self.stream, self.offset = stream, offset

    def batch(self, k: int) -> dict:
        return self.stream.batch(k + self.offset)


def shuffled_batches(n: int, batch_size: int, rng: random.Random) -> Iterator[list[int]]:
    """Endless index batches over range(n), reshuffled with `rng` at the start of every pass."""
    while True:
        order = list(range(n))
        rng.shuffle(order)
        for i in range(0, n, batch_size):
            yield order[i:i + batch_size]


def loader_batches(n: int, batch_size: int, generator: torch.Generator, steps: int) -> list[list[int]]:
    """The first `steps` index batches of `DataLoader(range(n), batch_size, shuffle=True, generator=generator)`
    iterated epoch after epoch (what a hand-written `for batch in loader` loop sees; each pass draws from
    `generator` as the DataLoader does, its worker seed included)."""
    loader = torch.utils.data.DataLoader(range(n), batch_size=batch_size, shuffle=True, generator=generator,
                                         collate_fn=list)
    out: list[list[int]] = []
    while len(out) < steps:
        out += list(loader)[: steps - len(out)]
    return out
