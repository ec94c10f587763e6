"""UNDIAL: self-distillation towards the reference's distribution with the answer token's logit lowered.

Dong et al. 2024, "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large
Language Models", arXiv 2402.10052; as in open-unlearning's `compute_undial_loss`:

    q_t = softmax(z_ref,t − β·onehot(y_t))                     (teacher: reference logits, detached)
    L   = (1/N) Σ_{answer tokens t} −Σ_v q_t(v) log π_θ(v | x, y_<t)

averaged over the answer tokens of the batch. β (the adjustment strength) defaults to 10 here; choose it
per model. Unlike GA the loss is bounded below (by the teacher's entropy), so it does not diverge.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..logprobs import model_forward
from .base import ObjectiveConfig, UnweightedObjective, hp, register_objective
from .reduce import token_mean
from .reference import answer_label_mask


def undial_loss(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Token-mean CE to softmax(ref_logits − β·onehot(label)); logits/ref_logits (B,T,V), labels (B,T), unshifted."""
    logits, ref_logits = logits[:, :-1].float(), ref_logits[:, :-1].detach().float()
    target = labels[:, 1:]
    mask = answer_label_mask(labels)
    safe = torch.where(mask, target, torch.zeros_like(target))
    adjusted = ref_logits - beta * F.one_hot(safe, ref_logits.shape[-1]).to(ref_logits) * mask.unsqueeze(-1)
    teacher = F.softmax(adjusted, dim=-1)
    ce = -(teacher * F.log_softmax(logits, dim=-1)).sum(-1)  # (B, T-1)
    return token_mean(ce, mask)


@dataclass
class UNDIALConfig(ObjectiveConfig):
    beta: float = hp(10.0, "β: how much the answer token's logit is lowered in the teacher distribution.")

    def __post_init__(self):
        super().__post_init__()
        self.require("beta", self.beta >= 0, "must be >= 0 (0 distils the reference unchanged)")


@register_objective("undial")
class UNDIAL(UnweightedObjective):
    """Distil the reference with the forget answer's token made less likely."""

    Config = UNDIALConfig
    paper = "Dong et al. 2024, arXiv 2402.10052"
    forget_reference = ("forget_logits",)

    def forget_loss(self, model, batch, ref):
        logits = model_forward(model, batch.forget).logits
        ref_logits = ref.forget_logits(batch.forget)
        return undial_loss(logits, ref_logits, batch.forget["labels"], self.config.beta), {}
