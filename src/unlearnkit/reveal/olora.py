"""Iterative LoRA rounds with the O-LoRA orthogonality penalty (Wang et al., "Orthogonal Subspace Learning for
Language Model Continual Learning", EMNLP Findings 2023, arXiv 2310.14152).

Reveal-and-Release unlearns in rounds, each with a new LoRA module (reference/methods.md §C). Round k's
adapter is added next to rounds 0..k-1 (`add_round_adapter`); all rounds stay active in the forward pass
(peft's `base_model.set_adapter([...])`, which sums the deltas of every listed adapter), only the newest
is trainable, and its loss adds λ₁ · `orthogonality_penalty` between the frozen rounds' `lora_A` and the
new one's, per target module (`lora_A_pairs`). `merge_rounds` folds every round into the base weights.

peft notes (0.21): `PeftModel.set_adapter` accepts only one name, but `PeftModel.base_model.set_adapter`
(the `LoraModel`) accepts a list and marks every listed adapter trainable; we then freeze the old ones with
`base_model.set_requires_grad(old, False)`. `PeftModel.active_adapter` stays the single name of the newest
round, so `active_peft_config` and saving keep working. `merge_and_unload(adapter_names=[...])` merges
several adapters at once.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch

from ..models.lora import LoraSettings

ROUND_PREFIX = "round_"
_ROUND = re.compile(rf"^{ROUND_PREFIX}(\d+)$")


def round_adapter_name(round_idx: int) -> str:
    if not isinstance(round_idx, int) or round_idx < 0:
        raise ValueError(f"round_idx={round_idx!r} must be an int >= 0")
    return f"{ROUND_PREFIX}{round_idx}"


def round_adapters(peft_model) -> list[str]:
    """Names of the round adapters of `peft_model`, in round order."""
    names = [n for n in getattr(peft_model, "peft_config", {}) if _ROUND.match(n)]
    return sorted(names, key=lambda n: int(_ROUND.match(n).group(1)))


def orthogonality_penalty(prev_A: Sequence[torch.Tensor], new_A: Sequence[torch.Tensor]) -> torch.Tensor:
    """O-LoRA's orthogonal loss: Σ_i Σ_jk |(A_prev,i · A_new,iᵀ)_jk|.

    prev_A[i] is [r_prev, d_in] (the `lora_A` weights of the earlier rounds on module i, concatenated along
    the rank axis), new_A[i] is [r_new, d_in] (the current round's `lora_A` on the same module). The penalty
    is the L1 norm of the entries of A_prev A_newᵀ, summed over modules, as in the official code
    (`cmnfriend/O-LoRA`, `src/uie_trainer_lora.py`, `training_step`: `torch.abs(torch.mm(lora_A,
    loranew_A.T)).sum()`); the paper's text writes a squared Frobenius norm, the code uses L1 and so do we.
    It is 0 exactly when the new rows of A are orthogonal to every previous row, i.e. the new round reads
    its input from a subspace the earlier rounds do not use.
    """
    prev_A, new_A = list(prev_A), list(new_A)
    if len(prev_A) != len(new_A):
        raise ValueError(f"orthogonality_penalty got {len(prev_A)} previous and {len(new_A)} new lora_A matrices; "
                         "they must be paired per module")
    if not new_A:
        raise ValueError("orthogonality_penalty needs at least one (previous, new) pair of lora_A matrices")
    total = None
    for i, (a_prev, a_new) in enumerate(zip(prev_A, new_A)):
        if a_prev.ndim != 2 or a_new.ndim != 2 or a_prev.shape[1] != a_new.shape[1]:
            raise ValueError(f"pair {i}: lora_A shapes {tuple(a_prev.shape)} and {tuple(a_new.shape)} must be "
                             "[r_prev, d_in] and [r_new, d_in] with the same d_in")
        term = (a_prev.to(a_new.dtype) @ a_new.T).abs().sum()   # [r_prev, r_new] -> scalar
        total = term if total is None else total + term
    return total


def _lora_layers(peft_model):
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in peft_model.named_modules() if isinstance(m, LoraLayer)]


def lora_A_pairs(peft_model, new: str, previous: Sequence[str] | None = None
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per target module, (concatenated `lora_A` of the `previous` adapters, `lora_A` of `new`).

    `previous` defaults to every round adapter before `new`. Modules where `new` has no LoRA, or where none
    of the previous adapters has one, are skipped. Previous weights are detached (they are frozen); the
    new ones keep their graph so the penalty trains them.
    """
    if new not in peft_model.peft_config:
        raise ValueError(f"adapter {new!r} not found; adapters: {list(peft_model.peft_config)}")
    if previous is None:
        rounds = round_adapters(peft_model)
        previous = rounds[:rounds.index(new)] if new in rounds else [r for r in rounds if r != new]
    missing = [p for p in previous if p not in peft_model.peft_config]
    if missing:
        raise ValueError(f"previous adapters {missing} not found; adapters: {list(peft_model.peft_config)}")
    prev_out, new_out = [], []
    for _, layer in _lora_layers(peft_model):
        if new not in layer.lora_A:
            continue
        olds = [layer.lora_A[p].weight.detach() for p in previous if p in layer.lora_A]
        if olds:
            prev_out.append(torch.cat(olds, dim=0))        # [Σ r_prev, d_in]
            new_out.append(layer.lora_A[new].weight)        # [r_new, d_in]
    return prev_out, new_out


def round_orthogonality_penalty(peft_model, new: str | None = None) -> torch.Tensor:
    """`orthogonality_penalty` of the newest round (or `new`) against all earlier rounds; 0 in round 0."""
    rounds = round_adapters(peft_model)
    new = new or (rounds[-1] if rounds else None)
    if new is None:
        raise ValueError("the model has no round adapters; call add_round_adapter first")
    prev, cur = lora_A_pairs(peft_model, new)
    if not prev:
        return torch.zeros((), device=next(peft_model.parameters()).device)
    return orthogonality_penalty(prev, cur)


def _lora_config(s: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=list(s.target_modules),
                      task_type="CAUSAL_LM", bias="none")


def activate_rounds(peft_model, trainable: str | None = None) -> list[str]:
    """Make every round adapter active in the forward pass, with only `trainable` (default: the newest)
    requiring gradients. Returns the active names."""
    rounds = round_adapters(peft_model)
    if not rounds:
        raise ValueError("the model has no round adapters; call add_round_adapter first")
    trainable = rounds[-1] if trainable is None else trainable
    if trainable not in rounds:
        raise ValueError(f"trainable={trainable!r} is not a round adapter: {rounds}")
    peft_model.base_model.set_adapter(rounds)                # all active; peft marks all of them trainable
    frozen = [r for r in rounds if r != trainable]
    if frozen:
        peft_model.base_model.set_requires_grad(frozen, requires_grad=False)
    peft_model.active_adapter = trainable                    # the single name PeftModel's own methods expect
    return rounds


def add_round_adapter(model, round_idx: int, lora_settings: LoraSettings | None = None):
    """Add round `round_idx`'s fresh LoRA adapter ('round_<idx>') and make it the only trainable one.

    `model` is a plain transformers model for round 0 (it is wrapped with `peft.get_peft_model`) or the
    `PeftModel` of earlier rounds (the adapter is added in place). Earlier rounds stay active but frozen.
    Rounds must be added in order 0, 1, 2, ... Returns the `PeftModel`.
    """
    from peft import PeftModel, get_peft_model

    name = round_adapter_name(round_idx)
    settings = lora_settings or LoraSettings()
    if isinstance(model, PeftModel):
        rounds = round_adapters(model)
        if name in model.peft_config:
            raise ValueError(f"adapter {name!r} already exists; rounds so far: {rounds}")
        if round_idx != len(rounds):
            raise ValueError(f"round_idx={round_idx} but the model has rounds {rounds}; add round {len(rounds)} next")
        model.add_adapter(name, _lora_config(settings))
    else:
        if round_idx != 0:
            raise ValueError(f"round_idx={round_idx} on a model without adapters; the first round must be 0")
        model = get_peft_model(model, _lora_config(settings), adapter_name=name)
    activate_rounds(model, trainable=name)
    return model


def merge_rounds(peft_model):
    """Merge every round adapter into the base weights and return the plain transformers model
    (`merge_and_unload`); the result has the base architecture and no peft wrappers."""
    rounds = round_adapters(peft_model)
    if not rounds:
        raise ValueError("the model has no round adapters to merge")
    peft_model.base_model.set_adapter(rounds)
    return peft_model.merge_and_unload(adapter_names=rounds)
