"""Teach refusals: NLL on "I don't know" answers (PO), and DPO preferring them over the forget answer.

`idk_nll` (TOFU's "IdK" / the G-effect paper's PO, Eq. 7; Maini et al. 2024, arXiv 2401.06121):

    L = E_{x∈D_f} −log π_θ(y_idk|x)        token-averaged over the batch, like `outputs.loss`

`idk_dpo` (Rafailov et al. 2023 DPO, arXiv 2305.18290, with y_w = IdK answer, y_l = forget answer, as
in TOFU / NPO paper; methods.md D.1), log π summed over answer tokens:

    L = −(2/β) E log σ(β [(log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))])

The 2/β scale is open-unlearning's `compute_dpo_loss`, whose numbers methods.md B.7 reports; the DPO
paper's loss is the same times β/2 (same minimiser, gradients rescaled). β = 0.1 (NPO paper, DPO/KTO).
`batch.idk[i]` must hold the IdK answer to the question of `batch.forget[i]`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..label_logprobs import answer_logprobs
from .base import ObjectiveConfig, UnweightedObjective, hp, register_objective
from .reduce import row_mean
from .retain import nll_loss


def dpo_loss(chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, beta: float) -> torch.Tensor:
    """−(2/β)·mean log σ(β(chosen − rejected)); inputs (B,) log π_θ − log π_ref, sequence-summed."""
    return -(2.0 / beta) * row_mean(F.logsigmoid(beta * (chosen_logratio - rejected_logratio)))


@register_objective("idk_nll")
class IdkNLL(UnweightedObjective):
    """Fine-tune on refusal answers to the forget questions."""

    Config = ObjectiveConfig
    paper = "Maini et al. 2024 (TOFU), arXiv 2401.06121"
    needs_idk = True
    scores_answers = ("idk",)

    def forget_loss(self, model, batch, ref):
        slp = answer_logprobs(model, batch.idk)
        return nll_loss(slp.token_logprobs, slp.mask), {}


@dataclass
class IdkDPOConfig(ObjectiveConfig):
    beta: float = hp(0.1, "β: DPO inverse temperature on the sequence-summed log-ratios.")

    def __post_init__(self):
        super().__post_init__()
        self.require("beta", self.beta > 0, "must be > 0 (the loss divides by β)")


@register_objective("idk_dpo")
class IdkDPO(UnweightedObjective):
    """DPO with the IdK answer preferred and the forget answer rejected."""

    Config = IdkDPOConfig
    paper = "Rafailov et al. 2023, arXiv 2305.18290; TOFU IdK-DPO (Maini et al. 2024)"
    forget_reference = ("forget_logprobs", "idk_logprobs")
    needs_idk = True
    scores_answers = ("idk", "forget")

    def forget_loss(self, model, batch, ref):
        n_f, n_i = batch.forget["input_ids"].shape[0], batch.idk["input_ids"].shape[0]
        if n_f != n_i:
            raise ValueError(f"idk_dpo pairs batch.idk[i] with batch.forget[i], but they have {n_i} and {n_f} rows; "
                             f"collate the IdK answers of the same forget questions in the same order")
        chosen = answer_logprobs(model, batch.idk).sum - ref.idk_logprobs(batch.idk).sum.detach()
        rejected = answer_logprobs(model, batch.forget).sum - ref.forget_logprobs(batch.forget).sum.detach()
        logs = {"chosen_logratio": chosen.mean().item(), "rejected_logratio": rejected.mean().item()}
        return dpo_loss(chosen, rejected, self.config.beta), logs
